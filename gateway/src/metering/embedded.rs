//! The embedded default (docs/design.md §7): no Kafka, no Cassandra. Usage events are appended to
//! the log of one SQLite file by group commit, and a folder thread folds them into the ledgers of
//! the same file with the ledger consumer's own fold (`tollgate_ledger::embedded`), then
//! updates this gateway's budget view directly (it is the only gateway).
//!
//! [`EmbeddedSink`] keeps the same [`UsageSink`] contract as the Kafka sink, on the same
//! bookkeeping (`crate::metering::sink::SinkQueue`); only what its writer does with a batch differs.

use crate::config::{AnswerAfter, WhenFull};
use crate::limits::budget_view::BudgetView;
use crate::metering::sink::{
    encode_all, next_batch, Backlog, Message, Permit, SinkError, SinkQueue, UsageSink, Written, GROUP_COMMIT_INTERVAL,
};
use crossbeam_channel::Receiver;
use metrics::{counter, gauge};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_ledger::embedded::{fold_next, EmbeddedDb};
use tollgate_schemas::store::SpendSource;
use tollgate_schemas::tenancy::BudgetState;
use tollgate_schemas::UsageEvent;

/// Events folded per step.
const FOLD_BATCH: usize = 2_000;

/// The embedded default's server secret for hashing virtual keys: read from `path`, or made
/// (32 random bytes, hex) and written there readable by the owner only.
pub fn local_secret(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text.trim().as_bytes().to_vec()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    use std::io::{Read, Write};
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let secret = hex::encode(bytes);
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(secret.into_bytes())
}

/// [`UsageSink`] on the embedded log.
pub struct EmbeddedSink {
    queue: SinkQueue,
    db: Arc<EmbeddedDb>,
}

impl EmbeddedSink {
    /// Starts the log writer and the folder threads.
    pub fn start(
        db: Arc<EmbeddedDb>,
        view: Arc<BudgetView>,
        capacity: usize,
        when_full: WhenFull,
        answer_after: AnswerAfter,
    ) -> std::io::Result<EmbeddedSink> {
        let writer_db = db.clone();
        // Answers that wait for their event's commit get it at once, not after a gathering.
        let gather = if answer_after == AnswerAfter::Queued { GROUP_COMMIT_INTERVAL } else { Duration::ZERO };
        let queue =
            SinkQueue::start("tollgate-log-writer", (capacity, when_full, answer_after), move |receiver, backlog| {
                write_log(&writer_db, &receiver, &backlog, gather)
            })?;
        let folder_db = db.clone();
        std::thread::Builder::new()
            .name("tollgate-ledger-folder".into())
            .spawn(move || fold_loop(&folder_db, &view))?;
        Ok(EmbeddedSink { queue, db })
    }
}

fn write_log(db: &EmbeddedDb, receiver: &Receiver<Message>, backlog: &Backlog, gather: Duration) {
    // None: the sink is gone and everything is written.
    while let Some(mut batch) = next_batch(receiver, None, gather) {
        let deadline = batch.stop.as_ref().map(|stop| stop.deadline);
        let events = std::mem::take(&mut batch.events);
        let lost = if events.is_empty() { 0 } else { append(db, events, backlog, deadline) };
        // Committed (`synchronous=FULL`): written and synced at once.
        batch.release();
        if let Some(stop) = batch.stop {
            drain(db, stop.deadline);
            stop.report(lost);
            return;
        }
    }
}

/// Appends a batch to the log, retrying until it is written (an admitted event is never
/// dropped) or, at shutdown, until `deadline`; returns the events given up then. While the log
/// cannot be written (a full disk) the backlog refuses new requests: they get 503 instead of
/// waiting.
fn append(db: &EmbeddedDb, batch: Vec<UsageEvent>, backlog: &Backlog, deadline: Option<Instant>) -> u64 {
    let published = batch.len();
    let bodies: Vec<Vec<u8>> = encode_all(batch).into_iter().map(|(body, _)| body).collect();
    let mut backoff = Duration::from_millis(10);
    while let Err(e) = db.append(&bodies) {
        counter!("tollgate_usage_log_errors_total").increment(1);
        if !backlog.unavailable() {
            tracing::error!(error = %e, events = bodies.len(), "cannot append usage events to the embedded log; refusing new requests until it can");
        }
        backlog.set_unavailable(true);
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            tracing::error!(events = bodies.len(), "usage events could not be written before shutdown");
            backlog.written(published);
            return bodies.len() as u64;
        }
        // At shutdown, no sleep past the deadline: the flush waits for this thread's report.
        std::thread::sleep(deadline.map_or(backoff, |d| backoff.min(d.saturating_duration_since(now))));
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    if backlog.unavailable() {
        tracing::info!("the embedded usage log is writable again");
        backlog.set_unavailable(false);
    }
    counter!("tollgate_usage_events_total", "result" => "delivered").increment(bodies.len() as u64);
    backlog.written(published);
    0
}

/// Waits until the folder has folded the whole log, or `deadline` (what is left is folded at
/// the next start: the log is durable).
fn drain(db: &EmbeddedDb, deadline: Instant) {
    while unfolded(db) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Log records not folded yet: durable, and not delivered to the ledgers.
fn unfolded(db: &EmbeddedDb) -> u64 {
    db.backlog().ok().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// Folds the log forever; after each step, publishes the touched budgets' totals to the view.
fn fold_loop(db: &EmbeddedDb, view: &BudgetView) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the ledger folder");
            return;
        }
    };
    // Spend folded before a restart counts at once (the Kafka set-up gets the same from the
    // compacted budget-state topic).
    match tollgate_ledger::embedded::open_window_totals(db, chrono::Utc::now()) {
        Ok(totals) => {
            for (scope, window, spent) in totals {
                view.apply(&BudgetState::Spend {
                    scope,
                    window,
                    spent_nano_usd: spent,
                    max_budget_nano_usd: None,
                    exceeded: false,
                    threshold_pct: None,
                    at_ms: chrono::Utc::now().timestamp_millis(),
                });
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read the ledger's totals at start-up"),
    }
    view.set_caught_up();
    runtime.block_on(async {
        // Events not yet folded, as last counted (after a fold that found some).
        let mut lag = db.backlog().ok();
        loop {
            // The folder is this gateway's ledger consumer: while it runs, the view is fresh.
            view.apply(&BudgetState::Heartbeat {
                consumer: "embedded".into(),
                at_ms: chrono::Utc::now().timestamp_millis(),
                lag,
            });
            match fold_next(db, FOLD_BATCH).await {
                Ok(folded) if folded.messages.is_empty() => {
                    lag = Some(0);
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Ok(folded) => {
                    publish_budgets(db, view, &folded.messages.iter().map(|m| &m.event).collect::<Vec<_>>()).await;
                    lag = db.backlog().ok();
                    if let Some(n) = lag {
                        gauge!("tollgate_ledger_backlog_events").set(n as f64);
                    }
                }
                Err(e) => {
                    counter!("tollgate_ledger_apply_errors_total").increment(1);
                    tracing::warn!(error = %e, "ledger fold failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

async fn publish_budgets(db: &EmbeddedDb, view: &BudgetView, events: &[&UsageEvent]) {
    let touched: BTreeSet<(String, String)> =
        events.iter().flat_map(|e| tollgate_schemas::ledger::budgeted_rows_of(e)).collect();
    for (scope, window) in touched {
        match db.total(&scope, &window).await {
            Ok(t) => view.apply(&BudgetState::Spend {
                scope,
                window,
                spent_nano_usd: t.spent,
                max_budget_nano_usd: None,
                exceeded: false,
                threshold_pct: None,
                at_ms: chrono::Utc::now().timestamp_millis(),
            }),
            Err(e) => tracing::warn!(error = %e, "cannot read a budget total"),
        }
    }
}

impl UsageSink for EmbeddedSink {
    fn admit(&self) -> Result<Permit, SinkError> {
        self.queue.admit()
    }

    fn publish(&self, permit: Permit, event: UsageEvent) -> Written {
        self.queue.publish(permit, event)
    }

    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.queue.flush(timeout, || unfolded(&self.db))
    }
}
