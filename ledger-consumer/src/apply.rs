//! Applies one partition's batch to both ledger layers and the read model: Layer 1 inserts,
//! then for each touched bucket of Layer 2 one conditional write per step on the bucket's fence,
//! then the read-model copies of its rows. Generic over [`LedgerStore`] so the embedded ledger
//! runs the same steps. It never stores offsets: the caller does, once this returned Ok
//! (DESIGN §3 step 3).

use crate::fold::{pending_chunks, rows_by_bucket, select_fresh, BucketState, Message, RowKey, RowState};
use crate::ledger::{LedgerError, LedgerStore};
use futures::stream::{self, StreamExt, TryStreamExt};
use metrics::counter;
use std::collections::{BTreeMap, HashSet};

/// Attempts per bucket before giving up on a batch (it is then retried whole, never skipped).
const MAX_BUCKET_ATTEMPTS: usize = 50;
/// Buckets written in parallel per batch.
const BUCKET_CONCURRENCY: usize = 32;
/// Rows per conditional write: a step stays far below the batch size limits of Cassandra
/// (50 KiB by default) and ScyllaDB, at roughly 150 bytes a row.
pub const MAX_ROWS_PER_STEP: usize = 100;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Rows changed by this batch.
    pub rows_written: usize,
    /// Touched rows the bucket fence showed to hold the batch already (a replay).
    pub rows_already_applied: usize,
    /// Conditional batches that won (one per bucket step).
    pub conditional_batches: usize,
    /// Conditional writes that lost and were recomputed.
    pub conflicts: usize,
    /// Copies of events already counted at a lower offset.
    pub duplicates: usize,
}

/// Fault injection for tests (`TOLLGATE_FAULT_PAUSE_BEFORE_LEDGER_WRITE_MS`): during the first
/// batch, every bucket step waits this long between reading the bucket and its conditional
/// write, so a test can freeze the consumer (SIGSTOP) holding stale bucket states and prove the
/// fence rejects them. Off unless the variable is set.
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

    pub async fn before_bucket_write() {
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
/// layers and the read model hold it; the caller may then store the offset.
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
    let buckets = rows_by_bucket(batch);
    let results: Vec<Applied> = stream::iter(buckets)
        .map(|(bucket, rows)| apply_bucket(ledger, partition, bucket, rows))
        .buffer_unordered(BUCKET_CONCURRENCY)
        .try_collect()
        .await?;
    fault::batch_done();
    let mut total = Applied { duplicates, ..Applied::default() };
    for r in results {
        total.rows_written += r.rows_written;
        total.rows_already_applied += r.rows_already_applied;
        total.conditional_batches += r.conditional_batches;
        total.conflicts += r.conflicts;
    }
    counter!("tollgate_ledger_rows_written_total").increment(total.rows_written as u64);
    counter!("tollgate_ledger_rows_already_applied_total").increment(total.rows_already_applied as u64);
    counter!("tollgate_ledger_conditional_batches_total").increment(total.conditional_batches as u64);
    counter!("tollgate_ledger_lwt_conflicts_total").increment(total.conflicts as u64);
    Ok(total)
}

/// One bucket: read its fence and touched rows, fold what is beyond the fence in steps of at most
/// [`MAX_ROWS_PER_STEP`] rows, each one conditional write; on a lost condition re-read (serially)
/// and go on from what the winner wrote. Then copy every touched row to the read model, also
/// when the fence shows the batch was already folded: a writer may have died between its
/// conditional write and its copies.
async fn apply_bucket<L: LedgerStore>(
    ledger: &L,
    partition: i32,
    bucket: i32,
    rows: BTreeMap<RowKey, Vec<&Message>>,
) -> Result<Applied, LedgerError> {
    let keys: Vec<RowKey> = rows.keys().cloned().collect();
    let mut out = Applied::default();
    // Rows this call wrote itself; the other touched rows were folded by an earlier writer.
    let mut written: HashSet<&RowKey> = HashSet::new();
    let mut serial = false;
    for _ in 0..MAX_BUCKET_ATTEMPTS {
        let mut state = ledger.read_bucket(partition, bucket, &keys, serial).await?;
        let chunks = pending_chunks(&rows, state.fence, MAX_ROWS_PER_STEP);
        let mut lost = false;
        for chunk in &chunks {
            let step = crate::fold::fold_step(&state, chunk)
                .map_err(|e| LedgerError::Result(format!("bucket {bucket} of partition {partition}: {e}")))?;
            let Some(step) = step else { continue };
            fault::before_bucket_write().await;
            if !ledger.write_bucket(partition, bucket, &step).await? {
                lost = true;
                break;
            }
            out.conditional_batches += 1;
            out.rows_written += step.rows.len();
            written.extend(step.rows.iter().filter_map(|(k, _)| rows.get_key_value(k).map(|(k, _)| k)));
            state.advance(&step);
        }
        if lost {
            // Another writer (a consumer that now owns the partition, or a stale one) moved the
            // fence; its fence decides which events are left to count.
            tracing::info!(partition, bucket, "ledger bucket changed by another writer; re-reading");
            out.conflicts += 1;
            serial = true;
            continue;
        }
        out.rows_already_applied = keys.len().saturating_sub(written.len());
        copy_to_read_model(ledger, partition, &keys, &state).await?;
        return Ok(out);
    }
    Err(LedgerError::Result(format!("bucket {bucket} of partition {partition}: too many conflicting writers")))
}

/// Copies the touched rows, as the bucket now holds them, to the read model.
async fn copy_to_read_model<L: LedgerStore>(
    ledger: &L,
    partition: i32,
    keys: &[RowKey],
    state: &BucketState,
) -> Result<(), LedgerError> {
    let rows: Vec<(RowKey, RowState)> =
        keys.iter().filter_map(|k| state.rows.get(k).map(|r| (k.clone(), *r))).collect();
    ledger.write_read_model(partition, &rows).await
}
