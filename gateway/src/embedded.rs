//! The embedded default (docs/design.md §7): no Kafka, no Cassandra. Usage events are appended to
//! the log of one SQLite file by group commit, and a folder thread folds them into the ledgers of
//! the same file with the ledger consumer's own code (`tollgate_ledger::embedded`), then
//! updates this gateway's budget view directly (it is the only gateway).

use crate::budget::BudgetView;
use crate::config::WhenFull;
use crate::events::{stop_writer, Backlog, Message, Permit, SinkError, UsageSink};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use metrics::{counter, gauge};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_ledger::embedded::{fold_next, EmbeddedDb};
use tollgate_schemas::store::SpendSource;
use tollgate_schemas::tenancy::BudgetState;
use tollgate_schemas::UsageEvent;

/// Events per log transaction at most; a transaction also closes after [`GROUP_COMMIT`].
const MAX_BATCH: usize = 1_024;
const GROUP_COMMIT: Duration = Duration::from_millis(5);
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
    sender: Sender<Message>,
    backlog: Arc<Backlog>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl EmbeddedSink {
    /// Starts the log writer and the folder threads.
    pub fn start(
        db: Arc<EmbeddedDb>,
        view: Arc<BudgetView>,
        capacity: usize,
        when_full: WhenFull,
    ) -> std::io::Result<EmbeddedSink> {
        let (sender, receiver) = unbounded();
        let backlog = Backlog::new(capacity, when_full);
        let writer_db = db.clone();
        let writer_backlog = backlog.clone();
        let writer = std::thread::Builder::new()
            .name("tollgate-log-writer".into())
            .spawn(move || write_log(&writer_db, &receiver, &writer_backlog))?;
        let folder_db = db.clone();
        std::thread::Builder::new()
            .name("tollgate-ledger-folder".into())
            .spawn(move || fold_loop(&folder_db, &view))?;
        Ok(EmbeddedSink { sender, backlog, writer: Mutex::new(Some(writer)) })
    }
}

fn write_log(db: &EmbeddedDb, receiver: &Receiver<Message>, backlog: &Backlog) {
    loop {
        let mut stop = None;
        let mut batch = Vec::new();
        match receiver.recv() {
            Ok(Message::Event(e)) => batch.push(e),
            Ok(Message::Stop { deadline, done }) => stop = Some((deadline, done)),
            Err(_) => return, // the sink is gone and everything is written
        }
        let gather_until = Instant::now() + GROUP_COMMIT;
        while stop.is_none() && batch.len() < MAX_BATCH {
            match receiver.recv_deadline(gather_until) {
                Ok(Message::Event(e)) => batch.push(e),
                Ok(Message::Stop { deadline, done }) => stop = Some((deadline, done)),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        if !batch.is_empty() {
            append(db, &batch, backlog, stop.as_ref().map(|(deadline, _)| *deadline));
        }
        if let Some((deadline, done)) = stop {
            let _ = done.send(drain(db, deadline));
            return;
        }
    }
}

/// Appends a batch to the log, retrying until it is written (an admitted event is never
/// dropped) or, at shutdown, until `deadline`. While the log cannot be written (a full disk)
/// the backlog refuses new requests: they get 503 instead of waiting.
fn append(db: &EmbeddedDb, batch: &[UsageEvent], backlog: &Backlog, deadline: Option<Instant>) {
    let bodies: Vec<Vec<u8>> = batch
        .iter()
        .filter_map(|e| match e.encode() {
            Ok(b) => Some(b),
            Err(err) => {
                counter!("tollgate_usage_events_total", "result" => "unencodable").increment(1);
                tracing::error!(event_id = %e.event_id, error = %err, "usage event cannot be encoded");
                None
            }
        })
        .collect();
    let mut backoff = Duration::from_millis(10);
    while let Err(e) = db.append(&bodies) {
        counter!("tollgate_usage_log_errors_total").increment(1);
        if !backlog.unavailable() {
            tracing::error!(error = %e, events = bodies.len(), "cannot append usage events to the embedded log; refusing new requests until it can");
        }
        backlog.set_unavailable(true);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            counter!("tollgate_usage_events_total", "result" => "undelivered").increment(bodies.len() as u64);
            tracing::error!(events = bodies.len(), "usage events could not be written before shutdown");
            backlog.written(batch.len());
            return;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    if backlog.unavailable() {
        tracing::info!("the embedded usage log is writable again");
        backlog.set_unavailable(false);
    }
    counter!("tollgate_usage_events_total", "result" => "delivered").increment(bodies.len() as u64);
    backlog.written(batch.len());
}

/// Waits until the folder has folded the whole log, or `deadline`; returns what is left (it is
/// folded at the next start: the log is durable).
fn drain(db: &EmbeddedDb, deadline: Instant) -> u64 {
    loop {
        let left = db.backlog().unwrap_or(0);
        if left == 0 || Instant::now() >= deadline {
            return u64::try_from(left).unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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
        loop {
            // The folder is this gateway's ledger consumer: while it runs, the view is fresh.
            view.apply(&BudgetState::Heartbeat {
                consumer: "embedded".into(),
                at_ms: chrono::Utc::now().timestamp_millis(),
            });
            match fold_next(db, FOLD_BATCH).await {
                Ok(folded) if folded.messages.is_empty() => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(folded) => {
                    publish_budgets(db, view, &folded.messages.iter().map(|m| &m.event).collect::<Vec<_>>()).await;
                    if let Ok(n) = db.backlog() {
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
        self.backlog.admit()
    }

    fn publish(&self, permit: Permit, event: UsageEvent) {
        if !self.backlog.accept(permit, &event) {
            return;
        }
        if self.sender.send(Message::Event(event)).is_err() {
            self.backlog.written(1);
            counter!("tollgate_usage_events_total", "result" => "dropped").increment(1);
        }
    }

    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.backlog.close();
        stop_writer(&self.sender, &self.writer, timeout)
    }
}
