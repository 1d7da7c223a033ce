//! The backlog's bookkeeping, and the [`UsageSink`] contract run against each sink: the same
//! test functions, once for the Kafka sink and once for the embedded one.

use super::*;
use crate::config::{AnswerAfter, KafkaConfig, SpoolConfig};
use crate::limits::budget_view::BudgetView;
use crate::metering::embedded::EmbeddedSink;
use crate::metering::kafka::KafkaSink;
use std::collections::BTreeMap;
use std::path::Path;
use tollgate_ledger::embedded::EmbeddedDb;

fn event() -> UsageEvent {
    let mut e: UsageEvent = serde_json::from_str(include_str!("../../../../schemas/fixtures/usage_event_v1.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    e.event_id = uuid::Uuid::now_v7();
    e
}

/// Polls `f` every 10 ms until it gives a value or `within` passes.
fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// === the backlog ===

#[test]
fn the_backlog_refuses_beyond_its_bound_and_frees_unused_room() {
    let b = Backlog::new(2, WhenFull::Reject);
    let p1 = b.admit().unwrap();
    let p2 = b.admit().unwrap();
    assert!(matches!(b.admit(), Err(SinkError::Full)));
    drop(p1); // a request that never reached a provider
    let p3 = b.admit().unwrap();
    assert!(b.accept(p2, &event()));
    assert_eq!(b.taken(), 2, "a queued event keeps its place until written");
    b.written(1);
    assert_eq!(b.taken(), 1);
    drop(p3);
    assert_eq!(b.taken(), 0);
    b.close();
    assert!(matches!(b.admit(), Err(SinkError::Closed)));
}

#[test]
fn policy_serve_admits_without_room_and_drops_those_events() {
    let b = Backlog::new(1, WhenFull::Serve);
    let with_room = b.admit().unwrap();
    let without = b.admit().unwrap();
    assert!(!b.accept(without, &event()));
    assert!(b.accept(with_room, &event()));
    assert_eq!(b.taken(), 1);
}

#[test]
fn an_unwritable_log_refuses_new_requests() {
    let b = Backlog::new(10, WhenFull::Reject);
    b.set_unavailable(true);
    assert!(matches!(b.admit(), Err(SinkError::Unavailable)));
    b.set_unavailable(false);
    assert!(b.admit().is_ok());
}

#[test]
fn a_stop_takes_the_events_queued_behind_it() {
    let (tx, rx) = unbounded();
    let (done, _report) = crossbeam_channel::bounded(1);
    tx.send(Message::Event(event(), None)).unwrap();
    tx.send(Message::Stop(Stop { deadline: Instant::now(), done })).unwrap();
    tx.send(Message::Event(event(), None)).unwrap();
    let batch = next_batch(&rx, None, GROUP_COMMIT_INTERVAL).unwrap();
    assert_eq!(batch.events.len(), 2);
    assert!(batch.stop.is_some());
    drop(tx);
    assert!(next_batch(&rx, None, GROUP_COMMIT_INTERVAL).is_none(), "the sink is gone");
}

#[test]
fn a_batch_that_does_not_gather_takes_what_is_queued_and_its_waiters() {
    let (tx, rx) = unbounded();
    let (w1, mut r1) = tokio::sync::oneshot::channel();
    let (w2, mut r2) = tokio::sync::oneshot::channel();
    tx.send(Message::Event(event(), Some(w1))).unwrap();
    tx.send(Message::Event(event(), None)).unwrap();
    tx.send(Message::Event(event(), Some(w2))).unwrap();
    let started = Instant::now();
    let mut batch = next_batch(&rx, None, Duration::ZERO).unwrap();
    assert_eq!((batch.events.len(), batch.waiters.len()), (3, 2));
    assert!(started.elapsed() < GROUP_COMMIT_INTERVAL, "no gathering");
    assert!(r1.try_recv().is_err(), "nobody released yet");
    batch.release();
    assert!(r1.try_recv().is_ok() && r2.try_recv().is_ok());
    // A batch dropped unreleased lets its answers go too (the receiver sees the sender gone).
    let (w3, mut r3) = tokio::sync::oneshot::channel::<()>();
    tx.send(Message::Event(event(), Some(w3))).unwrap();
    drop(next_batch(&rx, None, Duration::ZERO));
    assert!(matches!(r3.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Closed)));
}

// === the contract, for every sink ===

/// Counters by `name{label=value}`, as the contract names them.
#[derive(Default, Clone)]
struct Counted(Arc<Mutex<BTreeMap<String, u64>>>);

struct Cell(Arc<Mutex<BTreeMap<String, u64>>>, String);

impl metrics::CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.0.lock().unwrap().insert(self.1.clone(), value);
    }
}

impl metrics::Recorder for Counted {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        metrics::Counter::from_arc(Arc::new(Cell(self.0.clone(), name)))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

impl Counted {
    fn get(&self, name: &str) -> u64 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// A sink the contract is checked on.
trait Subject: UsageSink + Sized {
    /// A sink keeping its durable state in `dir`, with a backlog of `capacity`.
    fn start(dir: &Path, capacity: usize, when_full: WhenFull) -> Self {
        Self::start_answering(dir, capacity, when_full, AnswerAfter::Written)
    }
    /// [`Subject::start`], answers waiting for their events as `answer_after` says.
    fn start_answering(dir: &Path, capacity: usize, when_full: WhenFull, answer_after: AnswerAfter) -> Self;
    /// Whether the durable store holds `n` events (written, not necessarily delivered).
    fn holds(dir: &Path, n: usize) -> bool;
}

impl Subject for KafkaSink {
    /// Towards a broker that does not exist: events reach the spool and are never acknowledged.
    fn start_answering(dir: &Path, capacity: usize, when_full: WhenFull, answer_after: AnswerAfter) -> KafkaSink {
        let kafka: KafkaConfig = serde_yaml::from_str("bootstrap_servers: 127.0.0.1:1").unwrap();
        let spool = SpoolConfig {
            dir: dir.join("spool"),
            queue_capacity: capacity,
            when_full,
            answer_after,
            ..SpoolConfig::default()
        };
        KafkaSink::new(&kafka, &spool, "contract").unwrap()
    }
    /// The spool's records, read as a restart would (from a copy: the live spool is locked).
    fn holds(dir: &Path, n: usize) -> bool {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir.join("spool")).unwrap().flatten() {
            if entry.path().extension().is_some_and(|x| x == "spool") {
                std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
            }
        }
        let (_, leftovers) = crate::metering::spool::Spool::open(copy.path(), 1 << 20).unwrap();
        leftovers.count() == n as u64
    }
}

impl Subject for EmbeddedSink {
    fn start_answering(dir: &Path, capacity: usize, when_full: WhenFull, answer_after: AnswerAfter) -> EmbeddedSink {
        let db = EmbeddedDb::open(&dir.join("tollgate.db")).unwrap();
        EmbeddedSink::start(db, Arc::new(BudgetView::new()), capacity, when_full, answer_after).unwrap()
    }
    /// Appended to the log (the folder may have folded them since: folded records stay).
    fn holds(dir: &Path, n: usize) -> bool {
        let db = EmbeddedDb::open(&dir.join("tollgate.db")).unwrap();
        db.appended().unwrap() == n as i64
    }
}

/// Admission takes room from one bounded backlog; policy `reject` refuses beyond it, counted
/// under the one refusal counter; room comes back when a permit is dropped unused or its event
/// is durable; after a flush nothing is admitted and a late event is counted as dropped.
fn admission_is_bounded_and_closes_at_flush<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let counted = Counted::default();
    metrics::with_local_recorder(&counted, || {
        let sink = S::start(dir.path(), 2, WhenFull::Reject);
        let (a, b) = (sink.admit().unwrap(), sink.admit().unwrap());
        assert!(a.has_room() && b.has_room());
        assert!(matches!(sink.admit(), Err(SinkError::Full)));
        assert_eq!(counted.get("tollgate_requests_rejected_total{reason=metering_backlog}"), 1);
        drop(a); // a request that never reached a provider
        let c = sink.admit().unwrap();
        let _ = sink.publish(b, event());
        let _ = sink.publish(c, event());
        assert_eq!(counted.get("tollgate_usage_events_total{result=accepted}"), 2);
        // The writer makes both durable and gives their room back.
        let admitted = eventually(Duration::from_secs(10), || sink.admit().ok());
        assert!(admitted.is_some(), "room came back once the events were written");
        drop(admitted);
        let late = sink.admit().unwrap();
        let _ = sink.flush(Duration::from_millis(300));
        assert!(matches!(sink.admit(), Err(SinkError::Closed)));
        let _ = sink.publish(late, event()); // never blocks, never panics: dropped
        assert_eq!(counted.get("tollgate_usage_events_total{result=dropped}"), 1);
    });
}

/// Policy `serve`: a full backlog admits without room, and such an event is counted as dropped,
/// never queued.
fn policy_serve_drops_what_finds_no_room<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let counted = Counted::default();
    metrics::with_local_recorder(&counted, || {
        let sink = S::start(dir.path(), 1, WhenFull::Serve);
        let with_room = sink.admit().unwrap();
        let without = sink.admit().unwrap();
        assert!(with_room.has_room() && !without.has_room());
        let _ = sink.publish(without, event());
        let _ = sink.publish(with_room, event());
        assert_eq!(counted.get("tollgate_usage_events_total{result=dropped}"), 1);
        assert_eq!(counted.get("tollgate_usage_events_total{result=accepted}"), 1);
        assert_eq!(counted.get("tollgate_requests_rejected_total{reason=metering_backlog}"), 0);
        let _ = sink.flush(Duration::from_millis(300));
    });
}

/// An answer waits until its event is durable as `spool.answer_after` asks, and no longer
/// than that: its [`Written`] resolves with the event in the durable store, not by running out
/// of time. Under `queued` there is nothing to wait for.
fn an_answer_waits_for_its_event<S: Subject>() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    for answer_after in [AnswerAfter::Written, AnswerAfter::Synced] {
        let dir = tempfile::tempdir().unwrap();
        let counted = Counted::default();
        metrics::with_local_recorder(&counted, || {
            let sink = S::start_answering(dir.path(), 10, WhenFull::Reject, answer_after);
            for n in 1..=3 {
                let written = sink.publish(sink.admit().unwrap(), event());
                let started = Instant::now();
                runtime.block_on(written.wait());
                assert!(started.elapsed() < ANSWER_WAIT, "{answer_after:?}: resolved by the event, not the bound");
                assert!(
                    S::holds(dir.path(), n),
                    "{answer_after:?}: event {n} is in the durable store when its answer goes"
                );
            }
            assert_eq!(counted.get("tollgate_answers_before_durable_total{}"), 0);
            let _ = sink.flush(Duration::from_millis(300));
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = S::start_answering(dir.path(), 10, WhenFull::Reject, AnswerAfter::Queued);
    assert!(sink.publish(sink.admit().unwrap(), event()).into_wait().is_none(), "queued: the answer never waits");
    let _ = sink.flush(Duration::from_millis(300));
}

/// A flush returns within its timeout (and a second), and reports what is left in the one
/// result type every sink shares.
fn flush_is_bounded_and_reports_what_is_left<S: Subject>(events: usize) -> Result<(), SinkError> {
    let dir = tempfile::tempdir().unwrap();
    let sink = S::start(dir.path(), 100, WhenFull::Reject);
    for _ in 0..events {
        let permit = sink.admit().unwrap();
        let _ = sink.publish(permit, event());
    }
    let started = Instant::now();
    let result = sink.flush(Duration::from_millis(500));
    assert!(started.elapsed() < Duration::from_millis(1_600), "flush took {:?}", started.elapsed());
    result
}

#[test]
fn the_kafka_sink_keeps_the_contract() {
    admission_is_bounded_and_closes_at_flush::<KafkaSink>();
    policy_serve_drops_what_finds_no_room::<KafkaSink>();
    an_answer_waits_for_its_event::<KafkaSink>();
    // No broker: every event waits in the spool for the next start.
    let left = flush_is_bounded_and_reports_what_is_left::<KafkaSink>(5);
    assert!(matches!(left, Err(SinkError::Undelivered(Undelivered { durable: 5, lost: 0 }))), "{left:?}");
}

#[test]
fn the_embedded_sink_keeps_the_contract() {
    admission_is_bounded_and_closes_at_flush::<EmbeddedSink>();
    policy_serve_drops_what_finds_no_room::<EmbeddedSink>();
    an_answer_waits_for_its_event::<EmbeddedSink>();
    // The folder folds the log within the timeout: nothing is left.
    let left = flush_is_bounded_and_reports_what_is_left::<EmbeddedSink>(5);
    assert!(left.is_ok(), "{left:?}");
}

#[test]
fn the_embedded_sink_reports_events_it_could_not_write_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = EmbeddedDb::open(&dir.path().join("tollgate.db")).unwrap();
    // No room to grow: the first batch of any size cannot be appended.
    db.limit_size(1).unwrap();
    let sink =
        EmbeddedSink::start(db, Arc::new(BudgetView::new()), 100, WhenFull::Reject, AnswerAfter::Written).unwrap();
    let mut big = event();
    big.request_id = "r".repeat(100_000);
    let permit = sink.admit().unwrap();
    let _ = sink.publish(permit, big);
    let refused = eventually(Duration::from_secs(10), || match sink.admit() {
        Err(SinkError::Unavailable) => Some(()),
        _ => None,
    });
    assert!(refused.is_some(), "an unwritable log refuses new requests at once");
    let left = sink.flush(Duration::from_millis(300));
    assert!(matches!(left, Err(SinkError::Undelivered(Undelivered { durable: 0, lost: 1 }))), "{left:?}");
}
