//! Applies one partition's batch to both ledger layers: Layer 1 inserts, then each touched
//! Layer 2 row written once with the applied-offset fence. Generic over [`LedgerStore`] so the
//! embedded ledger runs the same steps.

use crate::fold::{fold_row, rows_by_key, select_fresh, Message, RowKey, RowState};
use crate::ledger::{LedgerError, LedgerStore};
use futures::stream::{self, StreamExt, TryStreamExt};
use metrics::counter;

/// Attempts per row before giving up on a batch (it is then retried whole, never skipped).
const MAX_ROW_ATTEMPTS: usize = 50;
/// Rows written in parallel per batch.
const ROW_CONCURRENCY: usize = 32;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Rows changed by this batch.
    pub rows_written: usize,
    /// Rows whose fence showed the batch was already applied (a replay).
    pub rows_already_applied: usize,
    /// Conditional writes that lost and were recomputed.
    pub conflicts: usize,
    /// Copies of events already counted at a lower offset.
    pub duplicates: usize,
}

/// Fault injection for tests (`TOLLGATE_FAULT_PAUSE_BEFORE_LEDGER_WRITE_MS`): during the first
/// batch, every row waits this long between reading its state and its conditional write, so a
/// test can freeze the consumer (SIGSTOP) holding stale row states and prove the fence rejects
/// them. Off unless the variable is set.
mod fault {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    static ARMED: AtomicBool = AtomicBool::new(true);
    static ANNOUNCED: AtomicBool = AtomicBool::new(false);

    fn pause() -> Option<Duration> {
        *PAUSE.get_or_init(|| {
            std::env::var("TOLLGATE_FAULT_PAUSE_BEFORE_LEDGER_WRITE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
        })
    }

    pub async fn before_row_write() {
        if let Some(d) = pause().filter(|_| ARMED.load(Ordering::Relaxed)) {
            if !ANNOUNCED.swap(true, Ordering::Relaxed) {
                tracing::warn!("fault injection: pausing before ledger writes");
            }
            tokio::time::sleep(d).await;
        }
    }

    pub fn batch_done() {
        ARMED.store(false, Ordering::Relaxed);
    }
}

/// Folds `batch` (one partition, ascending offsets) into the ledger. Returns only when both
/// layers hold it; the caller may then store the offset.
pub async fn apply_batch<L: LedgerStore>(
    ledger: &L,
    partition: i32,
    batch: &[Message],
) -> Result<Applied, LedgerError> {
    if batch.is_empty() {
        return Ok(Applied::default());
    }
    let seen = ledger.find_events(batch).await?;
    let (fresh, duplicates) = select_fresh(batch, partition, &seen);
    counter!("tollgate_ledger_duplicates_skipped_total").increment(duplicates as u64);
    let batch = fresh.as_slice();
    ledger.insert_events(partition, batch).await?;
    let rows = rows_by_key(batch);
    let results: Vec<Applied> = stream::iter(rows)
        .map(|(key, messages)| apply_row(ledger, partition, key, messages))
        .buffer_unordered(ROW_CONCURRENCY)
        .try_collect()
        .await?;
    fault::batch_done();
    let mut total = Applied { duplicates, ..Applied::default() };
    for r in results {
        total.rows_written += r.rows_written;
        total.rows_already_applied += r.rows_already_applied;
        total.conflicts += r.conflicts;
    }
    counter!("tollgate_ledger_rows_written_total").increment(total.rows_written as u64);
    counter!("tollgate_ledger_rows_already_applied_total").increment(total.rows_already_applied as u64);
    counter!("tollgate_ledger_lwt_conflicts_total").increment(total.conflicts as u64);
    Ok(total)
}

/// Read, fold, conditional write; on a lost condition re-read (serially) and fold again.
async fn apply_row<L: LedgerStore>(
    ledger: &L,
    partition: i32,
    key: RowKey,
    messages: Vec<&Message>,
) -> Result<Applied, LedgerError> {
    let mut out = Applied::default();
    let mut serial = false;
    for _ in 0..MAX_ROW_ATTEMPTS {
        let current = ledger.read_row(&key, partition, serial).await?;
        let base = current.unwrap_or(RowState::NEW);
        let next = fold_row(base, &messages).map_err(|e| LedgerError::Result(format!("{key:?}: {e}")))?;
        let Some(next) = next else {
            out.rows_already_applied += 1;
            return Ok(out);
        };
        fault::before_row_write().await;
        let won = match current {
            None => ledger.create_row(&key, partition, &next).await?,
            Some(cur) => ledger.update_row(&key, partition, cur.applied_offset, &next).await?,
        };
        if won {
            out.rows_written += 1;
            return Ok(out);
        }
        // Another writer (a consumer that now owns the partition, or a stale one) changed the
        // row; recompute from what it wrote. Its fence decides which events are left to count.
        tracing::info!(scope = %key.0, window = %key.1, partition, "ledger row changed by another writer; re-reading");
        out.conflicts += 1;
        serial = true;
    }
    Err(LedgerError::Result(format!("row {key:?} of partition {partition}: too many conflicting writers")))
}
