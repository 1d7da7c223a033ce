//! Publishing usage events. [`UsageSink`] is the one contract every sink keeps (docs/design.md
//! §3.5); [`KafkaSink`] writes each event to the local [`Spool`] (group-committed to disk) and
//! then to the Kafka `usage` topic as a CloudEvent (binary mode), keyed by budget owner, with an
//! idempotent producer. A spool record is deleted only after Kafka acknowledged it; whatever is
//! left at start-up is sent again. The embedded sink (`crate::metering::embedded::EmbeddedSink`) keeps the
//! same contract over an SQLite log.
//!
//! The bookkeeping both sinks share is here, once: the [`Backlog`] (room for events admitted and
//! not yet durable, and the counters of the contract), the [`SinkQueue`] to a sink's writer
//! thread (publish, and the flush protocol with its [`Undelivered`] report) and the writer side's
//! group commit ([`next_batch`], [`encode_all`]).
//!
//! Room for an event is taken before the provider is called ([`UsageSink::admit`] returns a
//! [`Permit`] from the sink's [`Backlog`]); publishing then only hands the event to a queue and
//! never blocks an async worker. When the backlog is at its bound, new requests are refused
//! (policy `reject`, the default) or let through while every event that finds no room is
//! counted and dropped (policy `serve`). An event already admitted is never dropped under
//! `reject`: its room was taken before the provider was called.

use crate::config::{AnswerAfter, WhenFull};
use crate::metering::spool::SpoolError;
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use metrics::{counter, gauge};
use rdkafka::error::KafkaError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_schemas::UsageEvent;

/// Where usage events go: the contract every sink keeps, whatever carries its events
/// (docs/design.md §3.5).
///
/// - [`admit`](UsageSink::admit) takes room for one event in the sink's one bounded
///   [`Backlog`], or refuses: [`SinkError::Full`] under policy `reject` (503
///   `metering_backlog_full`), [`SinkError::Unavailable`] while the sink's durable store cannot
///   be written (503 `metering_unavailable`), [`SinkError::Closed`] after a flush. Under policy
///   `serve` a full backlog admits without room. It never waits.
/// - [`publish`](UsageSink::publish) hands the event to the sink's writer thread with the room
///   its permit holds; an event without room (policy `serve`), or published after the writer
///   stopped, is counted and dropped. It never waits.
/// - [`flush`](UsageSink::flush) stops admission, has the writer make what is queued durable
///   and wait for its delivery until `timeout`, and reports what is left as
///   [`SinkError::Undelivered`]. It returns within `timeout` plus one second, whatever the
///   writer is stuck on.
///
/// The counters are the same for every sink: `tollgate_requests_rejected_total{reason}` for
/// refusals (`metering_backlog`, `metering_unavailable`), and
/// `tollgate_usage_events_total{result}` with `accepted` (handed to the writer with room),
/// `dropped` (no room, or after shutdown), `unencodable`, `delivered` (acknowledged by Kafka, or
/// appended to the embedded log) and `undelivered` (admitted, never made durable before the
/// flush's timeout); the gauge `tollgate_usage_backlog_events` is the room taken.
pub trait UsageSink: Send + Sync + 'static {
    /// Takes room for one event before a request goes to a provider, or refuses the request.
    fn admit(&self) -> Result<Permit, SinkError>;
    /// Hands the event over for delivery, using the room `permit` holds. Never blocks; the
    /// answer that waits for the event (`spool.answer_after`) awaits what it returns.
    fn publish(&self, permit: Permit, event: UsageEvent) -> Written;
    /// Stops taking events, writes what is queued, waits until it is delivered (Kafka
    /// acknowledged it, or the embedded ledger folded it) or `timeout` passes, and stops the
    /// writer. What is left is reported as [`SinkError::Undelivered`]: what is durable is
    /// delivered after the next start.
    fn flush(&self, timeout: Duration) -> Result<(), SinkError>;
    /// How the replay of an earlier run's events goes, where there is one: `(in progress,
    /// replayed so far, found at start-up)`.
    fn replay(&self) -> Option<(bool, u64, u64)> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("usage metering backlog is full")]
    Full,
    #[error("usage metering is shut down")]
    Closed,
    /// The sink's durable store cannot be written (the embedded log on a full disk, say): no new
    /// request is admitted until it can, and what was admitted waits in memory.
    #[error("the usage log cannot be written")]
    Unavailable,
    #[error("cannot encode usage event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A flush ran out of time.
    #[error("{0}")]
    Undelivered(Undelivered),
    #[error("cannot start the usage writer: {0}")]
    Thread(std::io::Error),
    #[error("config field `{field}`: {message}")]
    Config { field: &'static str, message: String },
}

/// What a flush left undelivered when its time ran out; the same for every sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Undelivered {
    /// Durable and not delivered yet (in the spool and not acknowledged by Kafka, or in the
    /// embedded log and not folded): delivered after the next start.
    pub durable: u64,
    /// Admitted and never made durable: lost with the process.
    pub lost: u64,
}

impl Undelivered {
    pub fn is_empty(&self) -> bool {
        self.durable == 0 && self.lost == 0
    }
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "usage events undelivered at shutdown: {} durable, delivered after the next start; {} never written, lost",
            self.durable, self.lost
        )
    }
}

// === impl Backlog ===

/// The bound on events admitted and not yet durable, shared by every sink: admission takes a
/// place, the writer gives it back once the event is durable. It counts the contract's
/// refusals and drops.
#[derive(Debug)]
pub struct Backlog {
    taken: AtomicUsize,
    capacity: usize,
    when_full: WhenFull,
    closed: AtomicBool,
    /// Set while the writer cannot write (the embedded log on a full disk).
    unavailable: AtomicBool,
}

/// Room for one event, taken at admission. Dropped unused (a request that never reached a
/// provider), it gives the room back. `None` inside: admitted under policy `serve` without room.
#[derive(Debug)]
pub struct Permit(Option<Arc<Backlog>>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.taken.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Permit {
    /// The room now belongs to the queued event; `false` when there was none (policy `serve`).
    fn into_queued(mut self) -> bool {
        self.0.take().is_some()
    }

    /// A permit of no backlog, for callers that publish outside admission (benchmarks, tools):
    /// its event is dropped and counted, as under policy `serve` without room.
    pub fn unbacked() -> Permit {
        Permit(None)
    }

    /// Whether this permit holds room in a backlog (`false`: admitted under policy `serve`
    /// without room, or [`Permit::unbacked`]).
    pub fn has_room(&self) -> bool {
        self.0.is_some()
    }
}

impl Backlog {
    pub fn new(capacity: usize, when_full: WhenFull) -> Arc<Backlog> {
        Arc::new(Backlog {
            taken: AtomicUsize::new(0),
            capacity,
            when_full,
            closed: AtomicBool::new(false),
            unavailable: AtomicBool::new(false),
        })
    }

    /// Takes a place for one event, or says why not.
    pub fn admit(self: &Arc<Self>) -> Result<Permit, SinkError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SinkError::Closed);
        }
        if self.unavailable.load(Ordering::Acquire) {
            counter!("tollgate_requests_rejected_total", "reason" => "metering_unavailable").increment(1);
            return Err(SinkError::Unavailable);
        }
        let mut taken = self.taken.load(Ordering::Acquire);
        loop {
            if taken >= self.capacity {
                return match self.when_full {
                    WhenFull::Reject => {
                        counter!("tollgate_requests_rejected_total", "reason" => "metering_backlog").increment(1);
                        Err(SinkError::Full)
                    }
                    WhenFull::Serve => Ok(Permit(None)),
                };
            }
            match self.taken.compare_exchange_weak(taken, taken + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Permit(Some(self.clone()))),
                Err(now) => taken = now,
            }
        }
    }

    /// Whether `permit`'s event may be queued; an event without room is counted and dropped.
    fn accept(&self, permit: Permit, event: &UsageEvent) -> bool {
        if permit.into_queued() {
            counter!("tollgate_usage_events_total", "result" => "accepted").increment(1);
            return true;
        }
        counter!("tollgate_usage_events_total", "result" => "dropped").increment(1);
        tracing::warn!(event_id = %event.event_id, "usage event dropped: metering backlog full (policy serve)");
        false
    }

    /// `n` queued events are durable (or given up at shutdown): their places are free again.
    pub fn written(&self, n: usize) {
        self.taken.fetch_sub(n, Ordering::AcqRel);
        gauge!("tollgate_usage_backlog_events").set(self.taken.load(Ordering::Acquire) as f64);
    }

    /// Events admitted and not yet durable.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn unavailable(&self) -> bool {
        self.unavailable.load(Ordering::Acquire)
    }

    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::Release);
    }
}

// === impl SinkQueue ===

/// What goes to a writer thread.
// Events are nearly every message: boxing them would cost an allocation each to save room on
// the rare stop.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// An event, and the answer that waits for it to be durable (`spool.answer_after`).
    Event(UsageEvent, Option<Waiter>),
    Stop(Stop),
}

/// Told when its event is as durable as `spool.answer_after` asks; dropped unsent (the writer
/// gave the event up, or stopped), it lets the answer go all the same.
pub type Waiter = tokio::sync::oneshot::Sender<()>;

/// How long an answer waits for its event at most: a spool disk that hangs delays answers by
/// this much, and each one that stops waiting is counted
/// (`tollgate_answers_before_durable_total`).
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// What an answer awaits before it goes to the client: its usage event durable as
/// `spool.answer_after` asks (docs/design.md §3.6). Nothing to wait for under `queued`.
#[must_use = "an answer waits for its event, or says why it does not"]
pub struct Written(Option<tokio::sync::oneshot::Receiver<()>>);

impl Written {
    /// Nothing to wait for.
    pub fn now() -> Written {
        Written(None)
    }

    /// Waits until the event is durable, or [`ANSWER_WAIT`]; `None` when there is nothing to wait for.
    pub fn into_wait(self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let rx = self.0?;
        Some(Box::pin(async move {
            // A dropped sender (the writer gave the event up) lets the answer go too.
            if tokio::time::timeout(ANSWER_WAIT, rx).await.is_err() {
                counter!("tollgate_answers_before_durable_total").increment(1);
                tracing::warn!(
                    "an answer waited {} s for its usage event to be spooled; sent anyway",
                    ANSWER_WAIT.as_secs()
                );
            }
        }))
    }

    /// Waits until the event is durable, or [`ANSWER_WAIT`].
    pub async fn wait(self) {
        if let Some(wait) = self.into_wait() {
            wait.await;
        }
    }
}

/// A flush's request to a writer: make what is queued durable, wait for its delivery until
/// `deadline`, then [`report`](Stop::report) and stop.
pub struct Stop {
    pub deadline: Instant,
    done: Sender<u64>,
}

impl Stop {
    /// Tells the flush that the writer has stopped, and how many admitted events it gave up
    /// without making them durable.
    pub fn report(self, lost: u64) {
        let _ = self.done.send(lost);
    }
}

/// A sink's side of its writer thread, the same for every sink: the backlog, the queue to the
/// writer and the writer's handle. A sink's [`UsageSink`] methods are these.
pub struct SinkQueue {
    sender: Sender<Message>,
    backlog: Arc<Backlog>,
    answer_after: AnswerAfter,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SinkQueue {
    /// Starts the writer thread `name`, which runs `writer` over the queue's receiving end and
    /// the backlog it frees room in.
    pub fn start(
        name: &str,
        (capacity, when_full, answer_after): (usize, WhenFull, AnswerAfter),
        writer: impl FnOnce(Receiver<Message>, Arc<Backlog>) + Send + 'static,
    ) -> std::io::Result<SinkQueue> {
        let (sender, receiver) = unbounded();
        let backlog = Backlog::new(capacity, when_full);
        let writer_backlog = backlog.clone();
        let handle = std::thread::Builder::new().name(name.into()).spawn(move || writer(receiver, writer_backlog))?;
        Ok(SinkQueue { sender, backlog, answer_after, writer: Mutex::new(Some(handle)) })
    }

    pub fn admit(&self) -> Result<Permit, SinkError> {
        self.backlog.admit()
    }

    pub fn publish(&self, permit: Permit, event: UsageEvent) -> Written {
        if !self.backlog.accept(permit, &event) {
            return Written::now();
        }
        let (waiter, written) = match self.answer_after {
            AnswerAfter::Queued => (None, Written::now()),
            AnswerAfter::Written | AnswerAfter::Synced => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (Some(tx), Written(Some(rx)))
            }
        };
        if let Err(e) = self.sender.send(Message::Event(event, waiter)) {
            // Only after the writer stopped (shutdown finished): nothing can take it.
            self.backlog.written(1);
            counter!("tollgate_usage_events_total", "result" => "dropped").increment(1);
            if let Message::Event(event, _) = e.into_inner() {
                tracing::error!(event_id = %event.event_id, "usage event after shutdown; dropped");
            }
        }
        written
    }

    /// Closes admission, asks the writer to stop by `timeout` and waits for it (a second more at
    /// most). `durable` tells how many durable events still wait for delivery, once the writer
    /// stopped or the wait ran out; what the writer gave up, or still holds when it does not
    /// answer, is lost.
    pub fn flush(&self, timeout: Duration, durable: impl FnOnce() -> u64) -> Result<(), SinkError> {
        // In-flight requests are finished by now (the server drained them).
        self.backlog.close();
        let deadline = Instant::now() + timeout;
        let (done, report) = crossbeam_channel::bounded(1);
        if self.sender.send(Message::Stop(Stop { deadline, done })).is_err() {
            return Err(SinkError::Closed);
        }
        let lost = match report.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(lost) => {
                if let Some(h) = self.writer.lock().ok().and_then(|mut h| h.take()) {
                    let _ = h.join();
                }
                lost
            }
            // The writer is stuck (a disk that does not answer, say): what it has not written
            // is lost.
            Err(_) => {
                tracing::error!("the usage writer did not stop in time");
                self.backlog.taken() as u64
            }
        };
        counter!("tollgate_usage_events_total", "result" => "undelivered").increment(lost);
        let left = Undelivered { durable: durable(), lost };
        if left.is_empty() {
            tracing::info!("usage events flushed");
            Ok(())
        } else {
            Err(SinkError::Undelivered(left))
        }
    }
}

// === the writer side ===

/// Events written and synced per group commit, at most.
pub const MAX_BATCH: usize = 1024;
/// How long a group commit waits for more events after the first. With the batch being
/// written, this is what a power loss can cost: the events of the last few milliseconds.
pub const GROUP_COMMIT_INTERVAL: Duration = Duration::from_millis(5);

/// What a writer takes from its queue at once.
#[derive(Default)]
pub struct Batch {
    /// A group commit's events, in the order published.
    pub events: Vec<UsageEvent>,
    /// The answers waiting for these events.
    pub waiters: Vec<Waiter>,
    /// A flush's request, with every event queued before it in `events`.
    pub stop: Option<Stop>,
}

impl Batch {
    /// Lets the answers waiting for this batch's events go.
    pub fn release(&mut self) {
        release(&mut self.waiters);
    }

    fn push(&mut self, message: Message) {
        match message {
            Message::Event(e, waiter) => {
                self.events.push(e);
                self.waiters.extend(waiter);
            }
            Message::Stop(stop) => self.stop = Some(stop),
        }
    }
}

/// Lets the answers of `waiters` go.
pub fn release(waiters: &mut Vec<Waiter>) {
    for w in waiters.drain(..) {
        // The request may be gone (its client hung up): nothing waits then.
        let _ = w.send(());
    }
}

/// The next batch: waits up to `wait` for a first message (forever: `None`; an empty batch
/// when none came), then gathers what arrives within `gather`, at most [`MAX_BATCH`] events.
/// A writer that syncs each batch gathers for [`GROUP_COMMIT_INTERVAL`], so that a light load
/// does not pay one disk sync (and one thread wake-up) per event; one whose answers wait takes
/// what is queued and goes (`Duration::ZERO`). After a stop, whatever is queued behind it is
/// taken too. `None` when the sink is gone.
pub fn next_batch(rx: &Receiver<Message>, wait: Option<Duration>, gather: Duration) -> Option<Batch> {
    let first = match wait {
        Some(wait) => match rx.recv_timeout(wait) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => return Some(Batch::default()),
            Err(RecvTimeoutError::Disconnected) => return None,
        },
        None => rx.recv().ok()?,
    };
    let mut batch = Batch::default();
    batch.push(first);
    let gather_until = Instant::now() + gather;
    while batch.stop.is_none() && batch.events.len() < MAX_BATCH {
        let next = if gather.is_zero() { rx.try_recv().ok() } else { rx.recv_deadline(gather_until).ok() };
        match next {
            Some(m) => batch.push(m),
            None => break,
        }
    }
    if batch.stop.is_some() {
        // Events published behind the stop (a request that ended late) are written too.
        for m in rx.try_iter() {
            if let Message::Event(..) = m {
                batch.push(m);
            }
        }
    }
    Some(batch)
}

/// Encodes a batch for the durable store, with the event each payload is; an event that cannot
/// be encoded is logged, counted and left out.
pub fn encode_all(events: Vec<UsageEvent>) -> Vec<(Vec<u8>, UsageEvent)> {
    events
        .into_iter()
        .filter_map(|e| match e.encode() {
            Ok(p) => Some((p, e)),
            Err(err) => {
                counter!("tollgate_usage_events_total", "result" => "unencodable").increment(1);
                tracing::error!(event_id = %e.event_id, error = %err, "usage event cannot be encoded");
                None
            }
        })
        .collect()
}

// === impl KafkaSink ===

#[cfg(test)]
mod tests;
