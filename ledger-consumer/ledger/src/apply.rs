//! Folds one partition's batch of usage records into both ledger layers and the read model:
//! every record is checked, refused records are dead-lettered, and the rest is written (Layer 1
//! inserts, then for each touched bucket of Layer 2 one conditional write per step on the
//! bucket's fence, then the read-model copies of its rows). Generic over [`LedgerStore`] and
//! [`DeadLetterTopic`], so the embedded ledger runs the same steps. It never stores offsets: the
//! caller does, once [`fold_batch`] returned Ok (docs/design.md §4.6).
//!
//! Everything that can be known before writing is decided before the first write: a record that
//! does not decode or breaks a bound, and an event whose cost would overflow one of its rows, is
//! dead-lettered without leaving anything in either layer. Only a refusal nobody foresaw (the
//! database refuses a write for its values) is found while writing; see [`fold_piecewise`].

use crate::dead_letter::{check_record, classify, DeadLetter, DeadLetterTopic, Failure, Reason, Refusal};
use crate::fold::{pending_chunks, rows_by_bucket, rows_of, select, BucketState, Message, RowKey, RowState, Selection};
use crate::ledger::{LedgerError, LedgerStore};
use futures::stream::{self, StreamExt, TryStreamExt};
use metrics::counter;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use tollgate_schemas::ledger::ledger_bucket;

/// Attempts per bucket before giving up on a batch (it is then retried whole, never skipped).
const MAX_BUCKET_ATTEMPTS: usize = 50;
/// Buckets read or written in parallel per batch.
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

impl Applied {
    pub fn add(&mut self, other: &Applied) {
        self.rows_written += other.rows_written;
        self.rows_already_applied += other.rows_already_applied;
        self.conditional_batches += other.conditional_batches;
        self.conflicts += other.conflicts;
        self.duplicates += other.duplicates;
    }
}

/// A record of the usage log as read: its offset in its partition and its value.
#[derive(Clone, Copy, Debug)]
pub struct LogRecord<'a> {
    pub offset: i64,
    pub value: Option<&'a [u8]>,
}

/// What a partition's batch became.
#[derive(Debug, Default)]
pub struct Folded {
    /// The batch's events that the ledger holds now (duplicates included), in offset order.
    pub messages: Vec<Message>,
    pub applied: Applied,
    /// The records this call refused. A replay does not refuse again what an earlier run
    /// already put on record.
    pub dead_letters: Vec<DeadLetter>,
}

/// Why [`fold_batch`] did not finish. Always worth retrying: permanent failures are handled
/// inside by dead-lettering the event at fault.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot publish to the dead-letter topic: {0}")]
    DeadLetterTopic(Box<dyn std::error::Error + Send + Sync>),
}

impl FoldError {
    /// What failed, in a word, safe to log (see [`LedgerError::kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            FoldError::Ledger(e) => e.kind(),
            FoldError::DeadLetterTopic(_) => "dead_letter_topic",
        }
    }
}

/// Fault injection for tests, off unless the variables are set.
///
/// `TOLLGATE_FAULT_PAUSE_BEFORE_LEDGER_WRITE_MS`: during the first batch, every bucket step
/// waits this long between reading the bucket and its conditional write, so a test can freeze
/// the consumer (SIGSTOP) holding stale bucket states and prove the fence rejects them.
///
/// `TOLLGATE_FAULT_LEDGER_WRITE_TIMEOUT_MS`: every batch's first ledger write waits this long,
/// then fails as a client-side request timeout (a transient failure), so a test can stop a
/// consumer whose batch keeps failing.
mod fault {
    use crate::ledger::LedgerError;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    static TIMEOUT: OnceLock<Option<Duration>> = OnceLock::new();
    static ARMED: AtomicBool = AtomicBool::new(true);
    static ANNOUNCED: AtomicBool = AtomicBool::new(false);

    fn millis(var: &str) -> Option<Duration> {
        std::env::var(var).ok().and_then(|v| v.parse().ok()).map(Duration::from_millis)
    }

    pub async fn before_bucket_write() {
        let pause = *PAUSE.get_or_init(|| millis("TOLLGATE_FAULT_PAUSE_BEFORE_LEDGER_WRITE_MS"));
        if let Some(d) = pause.filter(|_| ARMED.load(Ordering::Relaxed)) {
            if !ANNOUNCED.swap(true, Ordering::Relaxed) {
                tracing::warn!("fault injection: pausing before ledger writes");
            }
            tokio::time::sleep(d).await;
        }
    }

    pub async fn before_ledger_write() -> Result<(), LedgerError> {
        match *TIMEOUT.get_or_init(|| millis("TOLLGATE_FAULT_LEDGER_WRITE_TIMEOUT_MS")) {
            Some(d) => {
                tokio::time::sleep(d).await;
                Err(scylla::errors::ExecutionError::RequestTimeout(d).into())
            }
            None => Ok(()),
        }
    }

    pub fn batch_done() {
        ARMED.store(false, Ordering::Relaxed);
    }
}

/// Folds `records` (one partition, ascending offsets) into the ledger. Returns only when both
/// layers and the read model hold every event of the batch that is not refused, and every
/// refused record is published to `topic` and recorded in the ledger's dead letters; the caller
/// may then store the offset. On an error nothing is lost: the batch is retried whole, and what
/// is already written (a prefix, as a crash would leave) is skipped by the fences.
pub async fn fold_batch<L: LedgerStore, T: DeadLetterTopic>(
    ledger: &L,
    topic: &T,
    partition: i32,
    records: &[LogRecord<'_>],
) -> Result<Folded, FoldError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else { return Ok(Folded::default()) };
    let mut refused = Vec::new();
    let mut messages = Vec::with_capacity(records.len());
    for r in records {
        match check_record(r.value) {
            Ok(event) => messages.push(Message { offset: r.offset, event }),
            Err(refusal) => refused.push(DeadLetter::new(partition, r.offset, refusal, r.value)),
        }
    }
    let plan = plan(ledger, partition, (first.offset, last.offset), &messages).await?;
    refused.retain(|l| !plan.known_dead.contains(&l.offset));
    refused.extend(plan.selection.overflowing.iter().map(|m| overflow_letter(partition, m, records)));
    refused.sort_by_key(|l| l.offset);
    // Every refusal found before writing is on record before the first write: a replay reads
    // them back instead of weighing those records again (see fold::select).
    for letter in &refused {
        dead_letter(ledger, topic, letter).await?;
    }
    let applied = match write(ledger, partition, &plan.selection, plan.states).await {
        Ok(applied) => applied,
        Err(e) => match classify(&e) {
            Failure::Transient => return Err(e.into()),
            Failure::Permanent(reason) => {
                tracing::warn!(
                    partition,
                    reason = reason.code(),
                    failure = e.kind(),
                    "the ledger refused a batch; applying it piece by piece to find the event at fault"
                );
                let mut applied = Applied { duplicates: plan.selection.duplicates, ..Applied::default() };
                let pieces = fold_piecewise(ledger, topic, partition, records, &plan.selection.fresh, &mut refused);
                applied.add(&pieces.await?);
                applied
            }
        },
    };
    let dead: HashSet<i64> = refused.iter().map(|l| l.offset).chain(plan.known_dead).collect();
    messages.retain(|m| !dead.contains(&m.offset));
    Ok(Folded { messages, applied, dead_letters: refused })
}

/// The fallback after the database refused a batch for its values, a refusal nothing checked
/// for beforehand: the events are applied in halves, each in offset order, a half refused again
/// in halves of its own, down to single events; an event refused on its own is dead-lettered.
/// Applying a prefix of a batch is what a crash does anyway, and the fences make it safe; the
/// database refuses the same event again on a replay, which then finds it on record. An event
/// refused this way may leave its Layer 1 row, and those of its Layer 2 rows the database
/// accepted before refusing another: `reconcile` leaves dead-lettered events out of the event
/// ledger's totals and reports any such row as a difference.
async fn fold_piecewise<L: LedgerStore, T: DeadLetterTopic>(
    ledger: &L,
    topic: &T,
    partition: i32,
    records: &[LogRecord<'_>],
    messages: &[Message],
    refused: &mut Vec<DeadLetter>,
) -> Result<Applied, FoldError> {
    let mut total = Applied::default();
    // Pieces still to apply, the next one last, so offset order is kept.
    let mut pieces: Vec<&[Message]> = vec![messages];
    while let Some(piece) = pieces.pop() {
        let (Some(first), Some(last)) = (piece.first(), piece.last()) else { continue };
        let plan = plan(ledger, partition, (first.offset, last.offset), piece).await?;
        for m in &plan.selection.overflowing {
            let letter = overflow_letter(partition, m, records);
            dead_letter(ledger, topic, &letter).await?;
            refused.push(letter);
        }
        match write(ledger, partition, &plan.selection, plan.states).await {
            Ok(applied) => total.add(&applied),
            Err(e) => match (classify(&e), piece) {
                (Failure::Transient, _) => return Err(e.into()),
                (Failure::Permanent(reason), [m]) => {
                    let letter =
                        DeadLetter::new(partition, m.offset, Refusal::new(reason, &e), value_of(records, m.offset));
                    dead_letter(ledger, topic, &letter).await?;
                    refused.push(letter);
                }
                (Failure::Permanent(_), _) => {
                    let (front, back) = piece.split_at(piece.len() / 2);
                    pieces.push(back);
                    pieces.push(front);
                }
            },
        }
    }
    refused.sort_by_key(|l| l.offset);
    Ok(total)
}

/// What writing a batch takes, read from the ledger before any write.
struct Plan {
    /// Offsets of the batch an earlier run already refused.
    known_dead: HashSet<i64>,
    selection: Selection,
    /// The touched buckets as they were read.
    states: HashMap<i32, BucketState>,
}

/// Reads what the decisions about `messages` depend on and makes them: which events are
/// duplicates, which were refused before, which would overflow a row.
async fn plan<L: LedgerStore>(
    ledger: &L,
    partition: i32,
    (first, last): (i64, i64),
    messages: &[Message],
) -> Result<Plan, LedgerError> {
    let seen = if messages.is_empty() { HashMap::new() } else { ledger.find_events(messages).await? };
    let rows: Vec<Vec<RowKey>> = messages.iter().map(|m| rows_of(&m.event)).collect();
    let states = read_buckets(ledger, partition, &rows).await?;
    // After the bucket states, never before (see LedgerStore::dead_letter_offsets).
    let known_dead = ledger.dead_letter_offsets(partition, first, last).await?;
    let candidates =
        messages.iter().zip(rows.iter().map(Vec::as_slice)).filter(|(m, _)| !known_dead.contains(&m.offset));
    let selection = select(candidates, partition, &seen, &states);
    Ok(Plan { known_dead, selection, states })
}

/// The fence and these rows of every bucket they are in.
async fn read_buckets<L: LedgerStore>(
    ledger: &L,
    partition: i32,
    rows: &[Vec<RowKey>],
) -> Result<HashMap<i32, BucketState>, LedgerError> {
    let mut keys: BTreeMap<i32, BTreeSet<&RowKey>> = BTreeMap::new();
    for key in rows.iter().flatten() {
        keys.entry(ledger_bucket(&key.0, &key.1)).or_default().insert(key);
    }
    stream::iter(keys)
        .map(|(bucket, keys)| async move {
            let keys: Vec<RowKey> = keys.into_iter().cloned().collect();
            ledger.read_bucket(partition, bucket, &keys, false).await.map(|state| (bucket, state))
        })
        .buffer_unordered(BUCKET_CONCURRENCY)
        .try_collect()
        .await
}

/// Writes the selected events: Layer 1, then every touched bucket from the state it was read in.
async fn write<L: LedgerStore>(
    ledger: &L,
    partition: i32,
    selection: &Selection,
    mut states: HashMap<i32, BucketState>,
) -> Result<Applied, LedgerError> {
    counter!("tollgate_ledger_duplicates_skipped_total").increment(selection.duplicates as u64);
    let mut total = Applied { duplicates: selection.duplicates, ..Applied::default() };
    if selection.fresh.is_empty() {
        return Ok(total);
    }
    fault::before_ledger_write().await?;
    ledger.insert_events(partition, &selection.fresh).await?;
    let buckets = rows_by_bucket(&selection.fresh);
    let results: Vec<Applied> = stream::iter(buckets)
        .map(|(bucket, rows)| {
            let state = states.remove(&bucket).unwrap_or_default();
            apply_bucket(ledger, partition, bucket, rows, state)
        })
        .buffer_unordered(BUCKET_CONCURRENCY)
        .try_collect()
        .await?;
    fault::batch_done();
    for r in &results {
        total.add(r);
    }
    counter!("tollgate_ledger_rows_written_total").increment(total.rows_written as u64);
    counter!("tollgate_ledger_rows_already_applied_total").increment(total.rows_already_applied as u64);
    counter!("tollgate_ledger_conditional_batches_total").increment(total.conditional_batches as u64);
    counter!("tollgate_ledger_lwt_conflicts_total").increment(total.conflicts as u64);
    Ok(total)
}

/// Publishes a refused record to the dead-letter topic, then records it in the ledger, then
/// counts it. The topic comes first: once the ledger holds a letter, a replay takes it as fully
/// handled (a crash in between publishes it twice, which readers deduplicate by source offset).
async fn dead_letter<L: LedgerStore, T: DeadLetterTopic>(
    ledger: &L,
    topic: &T,
    letter: &DeadLetter,
) -> Result<(), FoldError> {
    topic.publish(letter).await.map_err(FoldError::DeadLetterTopic)?;
    ledger.record_dead_letter(letter).await?;
    counter!("tollgate_ledger_dead_letters_total", "reason" => letter.reason.code()).increment(1);
    tracing::warn!(
        partition = letter.partition,
        offset = letter.offset,
        reason = letter.reason.code(),
        message = %letter.message,
        "usage record refused and dead-lettered"
    );
    Ok(())
}

fn overflow_letter(partition: i32, m: &Message, records: &[LogRecord<'_>]) -> DeadLetter {
    let message = format!("adding its cost of {} nano-USD would overflow a spend row", m.event.cost_nano_usd.0);
    DeadLetter::new(partition, m.offset, Refusal::new(Reason::MoneyOverflow, message), value_of(records, m.offset))
}

fn value_of<'a>(records: &[LogRecord<'a>], offset: i64) -> Option<&'a [u8]> {
    records.iter().find(|r| r.offset == offset).and_then(|r| r.value)
}

/// One bucket, from `state` as read: fold what is beyond the fence in steps of at most
/// [`MAX_ROWS_PER_STEP`] rows, each one conditional write; on a lost condition re-read (serially)
/// and go on from what the winner wrote. Then copy every touched row to the read model, also
/// when the fence shows the batch was already folded: a writer may have died between its
/// conditional write and its copies.
async fn apply_bucket<L: LedgerStore>(
    ledger: &L,
    partition: i32,
    bucket: i32,
    rows: BTreeMap<RowKey, Vec<&Message>>,
    state: BucketState,
) -> Result<Applied, LedgerError> {
    let keys: Vec<RowKey> = rows.keys().cloned().collect();
    let mut out = Applied::default();
    // Rows this call wrote itself; the other touched rows were folded by an earlier writer.
    let mut written: HashSet<&RowKey> = HashSet::new();
    let mut read = Some(state);
    for _ in 0..MAX_BUCKET_ATTEMPTS {
        let mut state = match read.take() {
            Some(state) => state,
            None => ledger.read_bucket(partition, bucket, &keys, true).await?,
        };
        let chunks = pending_chunks(&rows, state.fence, MAX_ROWS_PER_STEP);
        let mut lost = false;
        for chunk in &chunks {
            let step = crate::fold::fold_step(&state, chunk).map_err(|source| LedgerError::Overflow {
                partition,
                bucket,
                source,
            })?;
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
            // fence; its fence decides which events are left to count. Re-read serially to see
            // the winner's write.
            tracing::info!(partition, bucket, "ledger bucket changed by another writer; re-reading");
            out.conflicts += 1;
            continue;
        }
        out.rows_already_applied = keys.len().saturating_sub(written.len());
        copy_to_read_model(ledger, partition, &keys, &state).await?;
        return Ok(out);
    }
    Err(LedgerError::Contended { partition, bucket })
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

#[cfg(test)]
mod tests;
