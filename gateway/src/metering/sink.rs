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

use crate::config::{KafkaConfig, SpoolConfig, WhenFull};
use crate::metering::spool::{Acks, Leftovers, RecordRef, Spool, SpoolError, WATERMARK_INTERVAL};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use metrics::{counter, gauge};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_schemas::cloudevents as ce;
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
    /// Hands the event over for delivery, using the room `permit` holds. Never blocks.
    fn publish(&self, permit: Permit, event: UsageEvent);
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
    Event(UsageEvent),
    Stop(Stop),
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
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SinkQueue {
    /// Starts the writer thread `name`, which runs `writer` over the queue's receiving end and
    /// the backlog it frees room in.
    pub fn start(
        name: &str,
        capacity: usize,
        when_full: WhenFull,
        writer: impl FnOnce(Receiver<Message>, Arc<Backlog>) + Send + 'static,
    ) -> std::io::Result<SinkQueue> {
        let (sender, receiver) = unbounded();
        let backlog = Backlog::new(capacity, when_full);
        let writer_backlog = backlog.clone();
        let handle = std::thread::Builder::new().name(name.into()).spawn(move || writer(receiver, writer_backlog))?;
        Ok(SinkQueue { sender, backlog, writer: Mutex::new(Some(handle)) })
    }

    pub fn admit(&self) -> Result<Permit, SinkError> {
        self.backlog.admit()
    }

    pub fn publish(&self, permit: Permit, event: UsageEvent) {
        if !self.backlog.accept(permit, &event) {
            return;
        }
        if let Err(e) = self.sender.send(Message::Event(event)) {
            // Only after the writer stopped (shutdown finished): nothing can take it.
            self.backlog.written(1);
            counter!("tollgate_usage_events_total", "result" => "dropped").increment(1);
            if let Message::Event(event) = e.into_inner() {
                tracing::error!(event_id = %event.event_id, "usage event after shutdown; dropped");
            }
        }
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
    /// A flush's request, with every event queued before it in `events`.
    pub stop: Option<Stop>,
}

/// The next group commit: waits up to `wait` for a first message (forever: `None`; an empty
/// batch when none came), then gathers what arrives within [`GROUP_COMMIT_INTERVAL`], at most
/// [`MAX_BATCH`] events, so that a light load does not pay one disk sync (and one thread
/// wake-up) per event. After a stop, whatever is queued behind it is taken too. `None` when the
/// sink is gone.
pub fn next_batch(rx: &Receiver<Message>, wait: Option<Duration>) -> Option<Batch> {
    let first = match wait {
        Some(wait) => match rx.recv_timeout(wait) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => return Some(Batch::default()),
            Err(RecvTimeoutError::Disconnected) => return None,
        },
        None => rx.recv().ok()?,
    };
    let mut batch = Batch::default();
    match first {
        Message::Event(e) => batch.events.push(e),
        Message::Stop(stop) => batch.stop = Some(stop),
    }
    let gather_until = Instant::now() + GROUP_COMMIT_INTERVAL;
    while batch.stop.is_none() && batch.events.len() < MAX_BATCH {
        match rx.recv_deadline(gather_until) {
            Ok(Message::Event(e)) => batch.events.push(e),
            Ok(Message::Stop(stop)) => batch.stop = Some(stop),
            Err(_) => break,
        }
    }
    if batch.stop.is_some() {
        // Events published behind the stop (a request that ended late) are written too.
        batch.events.extend(rx.try_iter().filter_map(|m| match m {
            Message::Event(e) => Some(e),
            Message::Stop(_) => None,
        }));
    }
    Some(batch)
}

/// Encodes a batch for the durable store, with the event each payload is; an event that cannot
/// be encoded is logged, counted and left out.
pub fn encode_all(events: &[UsageEvent]) -> Vec<(Vec<u8>, &UsageEvent)> {
    events
        .iter()
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

/// Counts deliveries and acknowledges spool records as librdkafka reports them; a record that
/// could not be delivered in time goes back to the writer to be sent again.
pub struct DeliveryReports {
    acks: Arc<Acks>,
    retry: Sender<Retry>,
    /// Records sent without a spool record (the spool write failed) and not delivered yet.
    unspooled: Arc<AtomicU64>,
    /// Failed deliveries not logged yet: one line every [`RETRY_LOG_INTERVAL`] says how many,
    /// not one line per event (an outage fails thousands at once).
    unlogged: Arc<RetryLog>,
}

/// How often failed deliveries are logged, at most.
const RETRY_LOG_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Default)]
struct RetryLog {
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl RetryLog {
    /// Counts one failed delivery; logs the count when the last line is old enough.
    fn failed(&self, error: &KafkaError) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < RETRY_LOG_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let events = self.count.swap(0, Ordering::Relaxed);
        tracing::warn!(%error, events, "usage events not delivered; sending them again (they stay in the spool)");
    }
}

/// A record to send again.
struct Retry {
    payload: Vec<u8>,
    record: Option<RecordRef>,
}

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<Option<RecordRef>>;

    fn delivery(&self, result: &DeliveryResult<'_>, record: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                counter!("tollgate_usage_events_total", "result" => "delivered").increment(1);
                self.acks.delivered();
                match *record {
                    Some(r) => self.acks.ack(r),
                    None => {
                        let _ = self.unspooled.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                    }
                }
            }
            Err((e, message)) => {
                // Still in the spool; send it again (a new producer session cannot be worse off
                // than librdkafka's own retries, and consumers count each event_id once).
                self.unlogged.failed(e);
                counter!("tollgate_usage_events_total", "result" => "retried").increment(1);
                use rdkafka::Message as _;
                let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
                let _ = self.retry.send(Retry { payload, record: *record });
            }
        }
    }
}

type KafkaProducer = ThreadedProducer<DeliveryReports>;

pub struct KafkaSink {
    queue: SinkQueue,
    acks: Arc<Acks>,
    replay: Arc<ReplayStatus>,
}

/// How the replay of an earlier run's events is going, for readiness and metrics.
#[derive(Debug, Default)]
pub struct ReplayStatus {
    in_progress: AtomicBool,
    /// Events to replay, found at start-up.
    total: AtomicU64,
    /// Events handed to the producer so far.
    sent: AtomicU64,
}

impl ReplayStatus {
    /// `(in progress, sent, total)`.
    pub fn snapshot(&self) -> (bool, u64, u64) {
        (
            self.in_progress.load(Ordering::Acquire),
            self.sent.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// The replay of what an earlier run left in the spool: read as a stream, a window of records
/// in flight at a time, interleaved with live events.
struct Replay {
    leftovers: Leftovers,
    /// Segments before this one are the earlier run's.
    live_segment: u64,
    /// Records of the earlier run waiting for Kafka when the replay began.
    pending_at_start: u64,
    /// Records handed to the producer so far.
    handed: u64,
    reading: bool,
    started: Instant,
    status: Arc<ReplayStatus>,
}

impl Replay {
    /// Replayed records handed to the producer and not acknowledged yet.
    fn in_flight(&self, acks: &Acks) -> u64 {
        let acknowledged = self.pending_at_start.saturating_sub(acks.pending_before(self.live_segment));
        self.handed.saturating_sub(acknowledged)
    }

    /// Records of the earlier run not handed to the producer yet: waiting for the replay, not
    /// for Kafka.
    fn unsent(&self) -> u64 {
        if self.reading {
            self.pending_at_start.saturating_sub(self.handed)
        } else {
            0
        }
    }
}

/// Replayed records that may be waiting for Kafka at once: bounds the memory a replay takes
/// and leaves the producer's queue to live traffic.
const REPLAY_WINDOW: u64 = 8_192;
/// Replayed records handed to the producer between two looks at live events.
const REPLAY_STEP: usize = 512;

struct Writer {
    rx: Receiver<Message>,
    retries: Receiver<Retry>,
    retry_tx: Sender<Retry>,
    /// Shared with every producer's [`DeliveryReports`]: unspooled records not delivered yet.
    unspooled: Arc<AtomicU64>,
    /// Set by a flush: a record the producer's full queue does not take by then is given up
    /// (a spooled one stays in the spool).
    give_up_at: Option<Instant>,
    backlog: Arc<Backlog>,
    spool: Spool,
    client: ClientConfig,
    producer: KafkaProducer,
    topic: String,
    source: String,
    /// Deliveries counted when progress was last seen, and when.
    progress: (u64, Instant),
    /// A producer with events in flight and no delivery for this long, while the broker
    /// answers, is rebuilt.
    stall_after: Duration,
    replay: Option<Replay>,
    /// When watermarks and gauges were last written.
    last_housekeeping: Instant,
}

fn producer_config(kafka: &KafkaConfig, gateway_id: &str) -> ClientConfig {
    let mut client = kafka.client_config();
    for (k, v) in &kafka.producer_properties {
        client.set(k, v.expose());
    }
    // The metering guarantees are set last so nothing in the config can weaken them.
    client
        .set("client.id", format!("tollgate-gateway-{gateway_id}"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", kafka.linger_ms.to_string())
        .set("partitioner", "murmur2_random")
        .set("compression.type", "lz4")
        // A record not acknowledged within this time is handed back and sent again (an
        // infinite timeout can leave the idempotent producer stuck after a broker fencing).
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", kafka.max_queued_messages.to_string());
    client
}

impl KafkaSink {
    pub fn new(kafka: &KafkaConfig, spool_config: &SpoolConfig, gateway_id: &str) -> Result<KafkaSink, SinkError> {
        let (spool, leftovers) = Spool::open(&spool_config.dir, spool_config.max_segment_bytes)?;
        let acks = spool.acks();
        let client = producer_config(kafka, gateway_id);
        let (retry_tx, retries) = unbounded();
        let unspooled = Arc::new(AtomicU64::new(0));
        let producer: KafkaProducer = client.create_with_context(DeliveryReports {
            acks: acks.clone(),
            retry: retry_tx.clone(),
            unspooled: unspooled.clone(),
            unlogged: Arc::default(),
        })?;
        let status = Arc::new(ReplayStatus::default());
        let replay = (!leftovers.is_empty()).then(|| {
            let events = leftovers.count();
            let reason = if leftovers.after_clean_stop { "clean stop with undelivered events" } else { "crash" };
            tracing::info!(events, bytes = leftovers.bytes, reason, "replaying usage events left in the spool");
            status.total.store(events, Ordering::Relaxed);
            status.in_progress.store(true, Ordering::Release);
            gauge!("tollgate_spool_replay_in_progress").set(1.0);
            Replay {
                leftovers,
                live_segment: spool.active_segment(),
                pending_at_start: acks.pending_before(spool.active_segment()),
                handed: 0,
                reading: true,
                started: Instant::now(),
                status: status.clone(),
            }
        });
        if replay.is_none() {
            tracing::info!("no usage events left in the spool to replay");
        }
        let topic = kafka.usage_topic.clone();
        let source = ce::source_for_gateway(gateway_id);
        let stall_after = Duration::from_secs(kafka.stall_rebuild_secs);
        let run = move |rx, backlog| {
            let mut writer = Writer {
                rx,
                retries,
                retry_tx,
                unspooled,
                give_up_at: None,
                backlog,
                spool,
                client,
                producer,
                topic,
                source,
                progress: (0, Instant::now()),
                stall_after,
                replay,
                last_housekeeping: Instant::now(),
            };
            writer.run();
        };
        let queue = SinkQueue::start("tollgate-usage-writer", spool_config.queue_capacity, spool_config.when_full, run)
            .map_err(SinkError::Thread)?;
        Ok(KafkaSink { queue, acks, replay: status })
    }
}

impl Writer {
    fn run(&mut self) {
        loop {
            // While a replay runs, look at live events often and feed the replay in between.
            let wait = if self.replay.is_some() { Duration::from_millis(10) } else { Duration::from_secs(1) };
            let Some(batch) = next_batch(&self.rx, Some(wait)) else { return };
            if let Some(stop) = &batch.stop {
                self.give_up_at = Some(stop.deadline);
            }
            if !batch.events.is_empty() {
                self.write(&batch.events);
            }
            if let Some(stop) = batch.stop {
                let lost = self.drain(stop.deadline);
                stop.report(lost);
                return;
            }
            self.replay_step();
            self.idle();
        }
    }

    /// Hands the next records of the replay to the producer while fewer than
    /// [`REPLAY_WINDOW`] replayed records wait for Kafka; ends the replay once all are
    /// acknowledged.
    fn replay_step(&mut self) {
        let Some(replay) = &mut self.replay else { return };
        let acks = self.spool.acks();
        let mut batch = Vec::new();
        if replay.reading && replay.in_flight(&acks) < REPLAY_WINDOW {
            while batch.len() < REPLAY_STEP {
                match replay.leftovers.next_record() {
                    Some(record) => batch.push(record),
                    None => {
                        replay.reading = false;
                        break;
                    }
                }
            }
        }
        let finished = !replay.reading && acks.pending_before(replay.live_segment) == 0;
        let sent = batch.len() as u64;
        if finished {
            let (_, replayed, total) = replay.status.snapshot();
            let took = replay.started.elapsed();
            tracing::info!(events = replayed, found = total, seconds = took.as_secs_f64(), "spool replay finished");
            gauge!("tollgate_spool_replay_seconds").set(took.as_secs_f64());
            gauge!("tollgate_spool_replay_in_progress").set(0.0);
            replay.status.in_progress.store(false, Ordering::Release);
            self.replay = None;
        } else {
            replay.handed += sent;
            replay.status.sent.fetch_add(sent, Ordering::Relaxed);
        }
        counter!("tollgate_spool_replayed_events_total").increment(sent);
        for (r, payload) in batch {
            let event = UsageEvent::decode(&payload).ok();
            self.send(&payload, event.as_ref(), Some(r));
        }
    }

    /// Spools a batch (one sync), hands it to the producer, and frees its backlog places.
    fn write(&mut self, events: &[UsageEvent]) {
        let (payloads, sent): (Vec<Vec<u8>>, Vec<&UsageEvent>) = encode_all(events).into_iter().unzip();
        // Group commit: one sync for the batch. The record is on disk before Kafka sees it.
        let written = match self.spool.append_batch(&payloads) {
            Ok(r) => Some(r),
            Err(e) => {
                counter!("tollgate_spool_write_errors_total").increment(1);
                tracing::error!(error = %e, "cannot write usage events to the spool; sending them unspooled");
                self.unspooled.fetch_add(payloads.len() as u64, Ordering::AcqRel);
                None
            }
        };
        self.backlog.written(events.len());
        for (i, (p, e)) in payloads.iter().zip(sent).enumerate() {
            let r = written.map(|first| RecordRef { segment: first.segment, index: first.index + i as u64 });
            self.send(p, Some(e), r);
        }
        self.send_retries();
    }

    /// Between batches: resend what came back, watch for a wedged producer, and now and then
    /// persist the acknowledgement watermarks and export gauges.
    fn idle(&mut self) {
        self.send_retries();
        self.check_stalled();
        if self.last_housekeeping.elapsed() >= WATERMARK_INTERVAL {
            self.last_housekeeping = Instant::now();
            if let Err(e) = self.spool.acks().persist_watermarks() {
                tracing::warn!(error = %e, "cannot persist the spool's acknowledgement watermarks");
            }
            gauge!("tollgate_spool_pending_events").set(self.spool.acks().pending() as f64);
            gauge!("tollgate_spool_bytes").set(self.spool.bytes_on_disk() as f64);
        }
    }

    /// Waits until Kafka acknowledged everything sent or `deadline` passes, then closes the
    /// spool. Returns the records sent unspooled that Kafka did not acknowledge: they are lost
    /// (what is unacknowledged in the spool stays for the next start).
    fn drain(&mut self, deadline: Instant) -> u64 {
        // Leftovers the replay has not handed over yet stay for the next start: no use waiting.
        let unsent = self.replay.as_ref().map_or(0, Replay::unsent);
        let waiting = |w: &Self| w.spool.acks().pending() > unsent || w.unspooled.load(Ordering::Acquire) > 0;
        while waiting(self) && Instant::now() < deadline {
            self.producer.flush(Duration::from_millis(100)).ok();
            self.send_retries();
            self.check_stalled();
        }
        // Sealing the active segment deletes it once acknowledged: a clean stop leaves nothing
        // to replay.
        if let Err(e) = self.spool.close() {
            tracing::warn!(error = %e, "cannot close the spool cleanly; the next start replays more");
        }
        let left = self.spool.acks().pending();
        if left > 0 {
            tracing::warn!(unacknowledged = left, "usage events not yet acknowledged by Kafka stay in the spool");
        }
        self.unspooled.load(Ordering::Acquire)
    }

    /// Sends again what the producer handed back.
    fn send_retries(&mut self) {
        while let Ok(r) = self.retries.try_recv() {
            let event = UsageEvent::decode(&r.payload).ok();
            self.send(&r.payload, event.as_ref(), r.record);
        }
    }

    /// An idempotent producer can stay wedged after its broker was frozen and fenced it: events
    /// in flight, no delivery report for minutes, although the broker answers again. When
    /// nothing was delivered for `stall_after` while events wait and the broker answers a
    /// metadata request, the producer is replaced: dropping the old one purges what it held,
    /// which comes back as retries and goes out on the new one (the spool keeps every record
    /// until it is acknowledged; consumers count each event id once).
    fn check_stalled(&mut self) {
        let delivered = self.spool.acks().delivered_count();
        // Leftovers the replay has not handed over yet wait for the replay, not for Kafka.
        let unsent = self.replay.as_ref().map_or(0, Replay::unsent);
        let waiting = self.producer.in_flight_count() > 0 || self.spool.acks().pending() > unsent;
        if delivered != self.progress.0 || !waiting {
            self.progress = (delivered, Instant::now());
            return;
        }
        if self.progress.1.elapsed() < self.stall_after {
            return;
        }
        if !self.broker_serves_topic() {
            // Kafka is down, not the producer: keep waiting (the spool holds everything).
            self.progress.1 = Instant::now();
            return;
        }
        tracing::warn!(
            stalled_secs = self.progress.1.elapsed().as_secs(),
            in_flight = self.producer.in_flight_count(),
            "the Kafka producer delivers nothing although the broker answers; replacing it"
        );
        let context = DeliveryReports {
            acks: self.spool.acks(),
            retry: self.retry_tx.clone(),
            unspooled: self.unspooled.clone(),
            unlogged: Arc::default(),
        };
        match self.client.create_with_context::<_, KafkaProducer>(context) {
            Ok(fresh) => {
                counter!("tollgate_kafka_producer_rebuilds_total").increment(1);
                // Dropping the old producer purges its queue and in-flight requests: their
                // delivery reports hand them back as retries.
                drop(std::mem::replace(&mut self.producer, fresh));
                self.send_retries();
            }
            Err(e) => tracing::error!(error = %e, "cannot create a new Kafka producer"),
        }
        self.progress.1 = Instant::now();
    }

    /// Whether the broker answers a new client with a leader for every partition of the topic.
    /// Asked of a fresh client, not of the producer: a wedged producer's own connections can
    /// fail the question although the broker is fine (seen after a frozen broker was fenced by
    /// its controller and came back: leaders unknown, then known again, and the producer never
    /// asked again).
    fn broker_serves_topic(&self) -> bool {
        let probe: rdkafka::producer::BaseProducer = match self.client.create() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a Kafka client to check the broker");
                return false;
            }
        };
        match probe.client().fetch_metadata(Some(&self.topic), Duration::from_secs(5)) {
            Ok(metadata) => metadata.topics().iter().any(|t| {
                t.error().is_none() && !t.partitions().is_empty() && t.partitions().iter().all(|p| p.leader() >= 0)
            }),
            Err(_) => false,
        }
    }

    /// Hands one record to librdkafka, waiting while its queue is full (the backlog in front of
    /// this thread is what pushes back on requests). `event` is the decoded `payload`; `None` for
    /// a spooled record that no longer decodes, which still goes out (the consumer dead-letters
    /// it) rather than vanish.
    fn send(&mut self, payload: &[u8], event: Option<&UsageEvent>, r: Option<RecordRef>) {
        let key = event.map_or_else(|| "undecodable".to_owned(), UsageEvent::budget_owner);
        let id = event.map(|e| e.event_id.to_string()).unwrap_or_default();
        let time =
            event.map(|e| e.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default();
        let mut opaque = Box::new(r);
        loop {
            let headers = OwnedHeaders::new_with_capacity(6)
                .insert(Header { key: ce::H_SPECVERSION, value: Some(ce::SPEC_VERSION) })
                .insert(Header { key: ce::H_ID, value: Some(id.as_str()) })
                .insert(Header { key: ce::H_SOURCE, value: Some(self.source.as_str()) })
                .insert(Header { key: ce::H_TYPE, value: Some(ce::USAGE_TYPE) })
                .insert(Header { key: ce::H_TIME, value: Some(time.as_str()) })
                .insert(Header { key: ce::H_CONTENT_TYPE, value: Some(ce::CONTENT_TYPE) });
            let record = BaseRecord::with_opaque_to(&self.topic, opaque).key(&key).payload(payload).headers(headers);
            match self.producer.send(record) {
                Ok(()) => {
                    counter!("tollgate_usage_events_total", "result" => "queued").increment(1);
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if self.give_up_at.is_some_and(|at| Instant::now() >= at) =>
                {
                    // A flush ran out of time: a spooled record stays for the next start.
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    opaque = record.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(20));
                    self.check_stalled();
                }
                Err((e, _)) => {
                    counter!("tollgate_usage_events_total", "result" => "rejected").increment(1);
                    tracing::error!(error = %e, "usage event refused by the producer; kept in the spool");
                    return;
                }
            }
        }
    }
}

impl UsageSink for KafkaSink {
    fn admit(&self) -> Result<Permit, SinkError> {
        self.queue.admit()
    }

    fn publish(&self, permit: Permit, event: UsageEvent) {
        self.queue.publish(permit, event);
    }

    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.queue.flush(timeout, || self.acks.pending())
    }

    fn replay(&self) -> Option<(bool, u64, u64)> {
        Some(self.replay.snapshot())
    }
}

#[cfg(test)]
mod tests;
