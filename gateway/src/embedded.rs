//! The embedded default (DESIGN §5): no Kafka, no Cassandra. Usage events are appended to the
//! log of one SQLite file by group commit, and a folder thread folds them into the ledgers of the
//! same file with the ledger consumer's own code (`tollgate_ledger_consumer::embedded`), then
//! updates this gateway's budget view directly (it is the only gateway).

use crate::budget::BudgetView;
use crate::config::WhenFull;
use crate::events::{SinkError, UsageSink};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use metrics::{counter, gauge};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_ledger_consumer::embedded::{fold_next, EmbeddedDb};
use tollgate_schemas::store::SpendSource;
use tollgate_schemas::tenancy::BudgetState;
use tollgate_schemas::UsageEvent;

/// Events per log transaction at most; a transaction also closes after [`GROUP_COMMIT`].
const MAX_BATCH: usize = 1_024;
const GROUP_COMMIT: Duration = Duration::from_millis(5);
/// Events folded per step.
const FOLD_BATCH: usize = 2_000;

/// [`UsageSink`] on the embedded log.
pub struct EmbeddedSink {
    sender: Sender<Vec<u8>>,
    admit_below: usize,
    when_full: WhenFull,
    /// Events handed over and not yet committed to the log.
    pending: Arc<AtomicUsize>,
    db: Arc<EmbeddedDb>,
    closed: AtomicBool,
}

impl EmbeddedSink {
    /// Starts the log writer and the folder threads.
    pub fn start(
        db: Arc<EmbeddedDb>,
        view: Arc<BudgetView>,
        capacity: usize,
        when_full: WhenFull,
    ) -> std::io::Result<EmbeddedSink> {
        let (sender, receiver) = bounded(capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        let writer_db = db.clone();
        let writer_pending = pending.clone();
        std::thread::Builder::new()
            .name("tollgate-log-writer".into())
            .spawn(move || write_log(&writer_db, &receiver, &writer_pending))?;
        let folder_db = db.clone();
        std::thread::Builder::new()
            .name("tollgate-ledger-folder".into())
            .spawn(move || fold_loop(&folder_db, &view))?;
        Ok(EmbeddedSink {
            sender,
            admit_below: capacity * 9 / 10,
            when_full,
            pending,
            db,
            closed: AtomicBool::new(false),
        })
    }
}

fn write_log(db: &EmbeddedDb, receiver: &Receiver<Vec<u8>>, pending: &AtomicUsize) {
    loop {
        let first = match receiver.recv() {
            Ok(b) => b,
            Err(_) => return, // the sink is gone and everything is written
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + GROUP_COMMIT;
        while batch.len() < MAX_BATCH {
            match receiver.recv_deadline(deadline) {
                Ok(b) => batch.push(b),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // A failed commit is retried until it succeeds: an accepted event is never dropped.
        let mut backoff = Duration::from_millis(10);
        while let Err(e) = db.append(&batch) {
            counter!("tollgate_usage_log_errors_total").increment(1);
            tracing::error!(error = %e, events = batch.len(), "cannot append usage events to the embedded log; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        counter!("tollgate_usage_events_total", "result" => "delivered").increment(batch.len() as u64);
        pending.fetch_sub(batch.len(), Ordering::AcqRel);
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
    match tollgate_ledger_consumer::embedded::open_window_totals(db, chrono::Utc::now()) {
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
    fn admit(&self) -> Result<(), SinkError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SinkError::Closed);
        }
        if self.sender.len() < self.admit_below || self.when_full == WhenFull::Serve {
            Ok(())
        } else {
            counter!("tollgate_usage_backlog_rejections_total").increment(1);
            Err(SinkError::Full)
        }
    }

    fn publish(&self, event: UsageEvent) -> Result<(), SinkError> {
        let body = event.encode()?;
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.sender.try_send(body) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(body)) if self.when_full == WhenFull::Reject => {
                // Admitted requests always get their event in: wait for room.
                self.sender.send(body).map_err(|_| SinkError::Closed)
            }
            Err(TrySendError::Full(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                counter!("tollgate_usage_events_total", "result" => "dropped").increment(1);
                Err(SinkError::Full)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                Err(SinkError::Closed)
            }
        }
    }

    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.closed.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        // Committed to the log is durable; folding continues at the next start if cut short.
        while self.pending.load(Ordering::Acquire) > 0 || self.db.backlog().map(|n| n > 0).unwrap_or(false) {
            if Instant::now() > deadline {
                return Err(SinkError::Full);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}
