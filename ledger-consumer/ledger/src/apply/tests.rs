//! `fold_batch` against the embedded ledger (the real SQLite code), with ledgers that refuse or
//! fail on purpose.

use super::*;
use crate::dead_letter::{NoTopic, Reason};
use crate::embedded::{scan, EmbeddedDb, PARTITION};
use crate::fold::BucketStep;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tollgate_schemas::limits::MAX_COST_PER_REQUEST;
use tollgate_schemas::store::SpendSource;
use tollgate_schemas::{NanoUsd, UsageEvent};

fn event(key: &str, cost: i64) -> UsageEvent {
    let mut e: UsageEvent =
        serde_json::from_str(include_str!("../../../../schemas/fixtures/usage_event_v1_minimal.json")).unwrap();
    e.event_id = uuid::Uuid::now_v7();
    e.key_id = key.into();
    e.team_id = Some("t".into());
    e.cost_nano_usd = NanoUsd(cost);
    e
}

fn memory() -> Arc<EmbeddedDb> {
    EmbeddedDb::open(std::path::Path::new(":memory:")).unwrap()
}

/// A log of values at offsets 1, 2, 3, ...
fn log(values: &[Option<Vec<u8>>]) -> Vec<LogRecord<'_>> {
    values.iter().enumerate().map(|(i, v)| LogRecord { offset: i as i64 + 1, value: v.as_deref() }).collect()
}

/// A dead-letter topic that keeps what it is sent.
#[derive(Default)]
struct Recorded(Mutex<Vec<(i64, Reason)>>);

impl DeadLetterTopic for Recorded {
    async fn publish(&self, letter: &DeadLetter) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push((letter.offset, letter.reason));
        Ok(())
    }
}

async fn total(db: &EmbeddedDb, scope: &str) -> i64 {
    db.total(scope, "all").await.unwrap().spent.0
}

async fn dead_offsets(db: &EmbeddedDb) -> Vec<i64> {
    let mut offsets: Vec<i64> = db.dead_letter_offsets(PARTITION, 0, i64::MAX).await.unwrap().into_iter().collect();
    offsets.sort_unstable();
    offsets
}

/// Puts the team row `team/t` of all time `headroom` short of overflowing, as if folded up to
/// offset 0.
async fn nearly_full_team(db: &EmbeddedDb, headroom: i64) {
    let key = ("team/t".to_owned(), "all".to_owned());
    let row = RowState { spent: NanoUsd(i64::MAX - headroom), events: 9_000, applied_offset: 0, ..RowState::NEW };
    let step = BucketStep { expected: None, fence: 0, rows: vec![(key.clone(), row)] };
    assert!(db.write_bucket(PARTITION, ledger_bucket(&key.0, &key.1), &step).await.unwrap());
}

#[tokio::test]
async fn every_refusal_is_on_record_before_the_first_write_and_the_rest_folds() {
    let db = memory();
    nearly_full_team(&db, MAX_COST_PER_REQUEST.0 + 15).await;
    let mut long_key = event("a", 1);
    long_key.key_id = "k".repeat(70_000);
    let values = vec![
        Some(event("a", 10).encode().unwrap()),
        None,
        Some(b"{not json".to_vec()),
        Some(long_key.encode().unwrap()),
        Some(event("a", MAX_COST_PER_REQUEST.0).encode().unwrap()), // fits: 5 short of the brim
        Some(event("b", 11).encode().unwrap()),                     // overflows the team row
        Some(event("b", 5).encode().unwrap()),                      // fits to the nano-dollar
    ];
    let topic = Recorded::default();
    let folded = fold_batch(db.as_ref(), &topic, PARTITION, &log(&values)).await.unwrap();
    let expected =
        vec![(2, Reason::NoValue), (3, Reason::NotJson), (4, Reason::SchemaViolation), (6, Reason::MoneyOverflow)];
    assert_eq!(*topic.0.lock().unwrap(), expected);
    assert_eq!(folded.dead_letters.iter().map(|l| (l.offset, l.reason)).collect::<Vec<_>>(), expected);
    assert_eq!(folded.messages.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![1, 5, 7]);
    assert_eq!(dead_offsets(&db).await, vec![2, 3, 4, 6]);
    assert_eq!(total(&db, "key/a").await, 10 + MAX_COST_PER_REQUEST.0);
    assert_eq!(total(&db, "key/b").await, 5);
    assert_eq!(total(&db, "team/t").await, i64::MAX);
    let (events, _) = scan(&db).unwrap();
    assert_eq!(events.len(), 3, "no Layer 1 row for any refused record");

    // A replay refuses nothing new, publishes nothing again and counts nothing twice.
    let again = Recorded::default();
    let folded = fold_batch(db.as_ref(), &again, PARTITION, &log(&values)).await.unwrap();
    assert!(folded.dead_letters.is_empty() && again.0.lock().unwrap().is_empty());
    assert_eq!(total(&db, "team/t").await, i64::MAX);
}

/// The embedded ledger, refusing (as the database would for its values) the Layer 1 insert of
/// any event of `key/<refuse_key>`, or the bucket steps of the rows of `refuse_scope`; and
/// failing transiently once `fail_after` further calls were made.
struct Faulty {
    db: Arc<EmbeddedDb>,
    refuse_key: Option<&'static str>,
    refuse_scope: Option<&'static str>,
    calls: AtomicUsize,
    fail_after: usize,
}

impl Faulty {
    fn new(db: Arc<EmbeddedDb>) -> Faulty {
        Faulty { db, refuse_key: None, refuse_scope: None, calls: AtomicUsize::new(0), fail_after: usize::MAX }
    }

    fn call(&self) -> Result<(), LedgerError> {
        if self.calls.fetch_add(1, Ordering::Relaxed) >= self.fail_after {
            return Err(scylla::errors::ExecutionError::RequestTimeout(std::time::Duration::from_secs(2)).into());
        }
        Ok(())
    }

    fn refused() -> LedgerError {
        let refusal = scylla::errors::RequestAttemptError::DbError(
            scylla::errors::DbError::Invalid,
            "Key length of 65540 is longer than maximum of 65535".into(),
        );
        scylla::errors::ExecutionError::LastAttemptError(refusal).into()
    }
}

impl LedgerStore for Faulty {
    async fn insert_events(&self, partition: i32, messages: &[Message]) -> Result<(), LedgerError> {
        self.call()?;
        if messages.iter().any(|m| Some(m.event.key_id.as_str()) == self.refuse_key) {
            return Err(Faulty::refused());
        }
        self.db.insert_events(partition, messages).await
    }
    async fn find_events(&self, messages: &[Message]) -> Result<HashMap<uuid::Uuid, (i32, i64)>, LedgerError> {
        self.call()?;
        self.db.find_events(messages).await
    }
    async fn read_bucket(
        &self,
        partition: i32,
        bucket: i32,
        keys: &[RowKey],
        serial: bool,
    ) -> Result<BucketState, LedgerError> {
        self.call()?;
        self.db.read_bucket(partition, bucket, keys, serial).await
    }
    async fn write_bucket(&self, partition: i32, bucket: i32, step: &BucketStep) -> Result<bool, LedgerError> {
        self.call()?;
        if step.rows.iter().any(|((scope, _), _)| Some(scope.as_str()) == self.refuse_scope) {
            return Err(Faulty::refused());
        }
        self.db.write_bucket(partition, bucket, step).await
    }
    async fn write_read_model(&self, partition: i32, rows: &[(RowKey, RowState)]) -> Result<(), LedgerError> {
        self.db.write_read_model(partition, rows).await
    }
    async fn dead_letter_offsets(&self, partition: i32, first: i64, last: i64) -> Result<HashSet<i64>, LedgerError> {
        self.call()?;
        self.db.dead_letter_offsets(partition, first, last).await
    }
    async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<(), LedgerError> {
        self.call()?;
        self.db.record_dead_letter(letter).await
    }
}

#[tokio::test]
async fn a_refusal_nobody_foresaw_dead_letters_that_event_alone() {
    let db = memory();
    let mut ledger = Faulty::new(db.clone());
    ledger.refuse_key = Some("poison");
    let values: Vec<Option<Vec<u8>>> =
        (0..23).map(|i| Some(event(if i == 13 { "poison" } else { "a" }, i + 1).encode().unwrap())).collect();
    let topic = Recorded::default();
    let folded = fold_batch(&ledger, &topic, PARTITION, &log(&values)).await.unwrap();
    assert_eq!(*topic.0.lock().unwrap(), vec![(14, Reason::RefusedByDatabase)]);
    assert!(folded.dead_letters[0].message.contains("Key length"), "{}", folded.dead_letters[0].message);
    let expected: i64 = (1..=23).filter(|c| *c != 14).sum();
    assert_eq!(total(&db, "key/a").await, expected);
    assert_eq!(total(&db, "team/t").await, expected);
    assert_eq!(folded.messages.len(), 22);
    // The replay finds it on record and the batch goes through whole.
    let again = Recorded::default();
    fold_batch(&ledger, &again, PARTITION, &log(&values)).await.unwrap();
    assert!(again.0.lock().unwrap().is_empty());
    assert_eq!(total(&db, "team/t").await, expected);
}

#[tokio::test]
async fn a_refusal_in_layer_2_may_leave_the_rows_written_before_it() {
    let db = memory();
    let mut ledger = Faulty::new(db.clone());
    ledger.refuse_scope = Some("user/poison");
    let mut poison = event("a", 1_000);
    poison.user_id = Some("poison".into());
    let values = vec![
        Some(event("a", 1).encode().unwrap()),
        Some(poison.encode().unwrap()),
        Some(event("a", 2).encode().unwrap()),
    ];
    let topic = Recorded::default();
    fold_batch(&ledger, &topic, PARTITION, &log(&values)).await.unwrap();
    assert_eq!(*topic.0.lock().unwrap(), vec![(2, Reason::RefusedByDatabase)]);
    assert_eq!(total(&db, "user/poison").await, 0);
    // The documented leftover: its Layer 1 row, which reconcile's scan leaves out.
    let (events, _) = scan(&db).unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.event_id != poison.event_id));
}

/// Folds `records` in consecutive batches of the given sizes (cycled), as a consumer that
/// commits each batch; on a failure, the index of the first record of the failed batch: where
/// that consumer resumes.
async fn fold_all(ledger: &Faulty, records: &[LogRecord<'_>], sizes: &[usize]) -> Result<(), usize> {
    let mut start = 0;
    let mut sizes = sizes.iter().cycle();
    while start < records.len() {
        let end = (start + sizes.next().copied().unwrap_or(1)).min(records.len());
        fold_batch(ledger, &NoTopic, PARTITION, &records[start..end]).await.map_err(|_| start)?;
        start = end;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Transient failures at any call, each followed by a restart from the last committed batch
    /// (or from the very start), give the same totals and the same dead letters as one clean
    /// pass, with refused records of every kind in the log.
    #[test]
    fn crashes_and_replays_refuse_the_same_records(
        kinds in proptest::collection::vec(0u8..8, 1..40),
        sizes in proptest::collection::vec(1usize..9, 1..4),
        fail_after in proptest::collection::vec(0usize..200, 0..6),
        from_the_start in any::<bool>(),
    ) {
        let values: Vec<Option<Vec<u8>>> = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| match kind {
                0 => None,
                1 => Some(b"[]".to_vec()),
                2 => Some(event("a", -1).encode().unwrap()),
                3 | 4 => Some(event("b", MAX_COST_PER_REQUEST.0 / 2 + i as i64).encode().unwrap()),
                _ => Some(event("a", i as i64).encode().unwrap()),
            })
            .collect();
        let records = log(&values);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (clean, faulty) = runtime.block_on(async {
            let clean = memory();
            nearly_full_team(&clean, MAX_COST_PER_REQUEST.0).await;
            fold_all(&Faulty::new(clean.clone()), &records, &sizes).await.unwrap();
            let db = memory();
            nearly_full_team(&db, MAX_COST_PER_REQUEST.0).await;
            let mut resume = 0;
            for n in fail_after.iter().copied().chain([usize::MAX]) {
                let ledger = Faulty { fail_after: n, ..Faulty::new(db.clone()) };
                match fold_all(&ledger, &records[resume..], &sizes).await {
                    Ok(()) => break,
                    Err(at) => resume = if from_the_start { 0 } else { resume + at },
                }
            }
            (clean, db)
        });
        runtime.block_on(async {
            prop_assert_eq!(dead_offsets(&faulty).await, dead_offsets(&clean).await);
            for scope in ["key/a", "key/b", "team/t"] {
                prop_assert_eq!(total(&faulty, scope).await, total(&clean, scope).await);
            }
            Ok(())
        })?;
        let refused = kinds.iter().filter(|k| **k < 3).count();
        prop_assert!(runtime.block_on(dead_offsets(&clean)).len() >= refused);
    }
}
