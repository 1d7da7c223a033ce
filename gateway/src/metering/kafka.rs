//! The Kafka sink: each event goes to the local spool (group-committed to disk), then to the
//! Kafka `usage` topic as a CloudEvent (binary mode), keyed by budget owner, with an idempotent
//! producer. A spool record is deleted only after Kafka acknowledged it; whatever is left at
//! start-up is replayed in a bounded window while live events flow. It keeps the contract of
//! `super::sink` on its bookkeeping.

use super::sink::*;
use crate::config::{AnswerAfter, KafkaConfig, SpoolConfig};
use crate::metering::group_commit::{Gathering, Syncer};
use crate::metering::spool::{Acks, Leftovers, RecordRef, Spool, WATERMARK_INTERVAL};
use crossbeam_channel::{unbounded, Receiver, Sender};
use metrics::{counter, gauge};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_schemas::cloudevents as ce;
use tollgate_schemas::topics::UsageGenerations;
use tollgate_schemas::UsageEvent;

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
    /// The current generation of the usage topic, stamped on every event created here.
    generation: u8,
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
    /// The usage topic of each generation: an event goes to the one it was created under.
    topics: UsageGenerations,
    source: String,
    /// Deliveries counted when progress was last seen, and when.
    progress: (u64, Instant),
    /// A producer with events in flight and no delivery for this long, while the broker
    /// answers, is rebuilt.
    stall_after: Duration,
    replay: Option<Replay>,
    /// When watermarks and gauges were last written.
    last_housekeeping: Instant,
    answer_after: AnswerAfter,
    /// Written to the spool, not yet synced: the group commit being gathered.
    gathering: Gathering,
    syncer: Syncer,
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
        let topics = kafka.usage_generations().map_err(|(field, message)| SinkError::Config { field, message })?;
        let generation = topics.current();
        let source = ce::source_for_gateway(gateway_id);
        let stall_after = Duration::from_secs(kafka.stall_rebuild_secs);
        let answer_after = spool_config.answer_after;
        let syncer = Syncer::start().map_err(SinkError::Thread)?;
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
                topics,
                source,
                progress: (0, Instant::now()),
                stall_after,
                replay,
                last_housekeeping: Instant::now(),
                answer_after,
                gathering: Gathering::default(),
                syncer,
            };
            writer.run();
        };
        let bounds = (spool_config.queue_capacity, spool_config.when_full, spool_config.answer_after);
        let queue = SinkQueue::start("tollgate-usage-writer", bounds, run).map_err(SinkError::Thread)?;
        Ok(KafkaSink { queue, acks, replay: status, generation })
    }
}

impl Writer {
    /// Writes each batch to the spool file as it comes (the answers waiting for that go), and
    /// syncs and hands to Kafka what was written once the group commit is due.
    fn run(&mut self) {
        loop {
            // While a replay runs, look at live events often and feed the replay in between.
            let idle = if self.replay.is_some() { Duration::from_millis(10) } else { Duration::from_secs(1) };
            let mut wait = self.gathering.since.map_or(idle, |t| GROUP_COMMIT_INTERVAL.saturating_sub(t.elapsed()));
            if self.syncer.in_flight() > 0 {
                // Synced records go to Kafka within a millisecond.
                wait = wait.min(Duration::from_millis(1));
            }
            let Some(mut batch) = next_batch(&self.rx, Some(wait), Duration::ZERO) else {
                self.start_sync();
                self.send_synced(Some(Instant::now() + Duration::from_secs(5)));
                return;
            };
            if let Some(stop) = &batch.stop {
                self.give_up_at = Some(stop.deadline);
            }
            if !batch.events.is_empty() {
                self.write(&mut batch);
            }
            if batch.stop.is_some() || self.gathering.due() {
                self.start_sync();
            }
            self.send_synced(batch.stop.as_ref().map(|s| s.deadline));
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

    /// The group commit: hands what was written since the last to the sync thread.
    fn start_sync(&mut self) {
        if self.gathering.since.is_none() {
            return;
        }
        let gathering = std::mem::take(&mut self.gathering);
        let done = match self.spool.sync_handle() {
            Ok(file) => self.syncer.submit(file, gathering),
            Err(e) => {
                // Written to the file still: only a power loss before Kafka's acknowledgement
                // loses them.
                counter!("tollgate_spool_write_errors_total").increment(1);
                tracing::error!(error = %e, "cannot sync the spool; sending its records all the same");
                let Gathering { records, mut waiters, .. } = gathering;
                release(&mut waiters);
                Some(records)
            }
        };
        for (p, e, r) in done.into_iter().flatten() {
            self.send(&p, Some(&e), r);
        }
    }

    /// Hands what the sync thread has synced to Kafka; with a `deadline` (a stop), waits for
    /// every sync handed over until then.
    fn send_synced(&mut self, deadline: Option<Instant>) {
        let synced = match deadline {
            Some(deadline) => self.syncer.finish(deadline),
            None => self.syncer.synced(),
        };
        for (p, e, r) in synced.into_iter().flatten() {
            self.send(&p, Some(&e), r);
        }
        self.send_retries();
    }

    /// Writes a batch to the spool file, frees its backlog places and lets the answers waiting
    /// for it go (under `answer_after: synced`, once it is synced). A batch the spool cannot
    /// take goes to Kafka unspooled at once.
    fn write(&mut self, batch: &mut Batch) {
        let published = batch.events.len();
        let (payloads, events): (Vec<Vec<u8>>, Vec<UsageEvent>) =
            encode_all(std::mem::take(&mut batch.events)).into_iter().unzip();
        let written = match self.spool.append_batch(&payloads) {
            Ok(r) => r,
            Err(e) => {
                counter!("tollgate_spool_write_errors_total").increment(1);
                tracing::error!(error = %e, "cannot write usage events to the spool; sending them unspooled");
                self.unspooled.fetch_add(payloads.len() as u64, Ordering::AcqRel);
                self.backlog.written(published);
                batch.release();
                for (p, e) in payloads.iter().zip(&events) {
                    self.send(p, Some(e), None);
                }
                return;
            }
        };
        self.backlog.written(published);
        if self.answer_after == AnswerAfter::Synced {
            self.gathering.waiters.append(&mut batch.waiters);
        } else {
            batch.release();
        }
        self.gathering.since.get_or_insert_with(Instant::now);
        for (i, (p, e)) in payloads.into_iter().zip(events).enumerate() {
            let r = RecordRef { segment: written.segment, index: written.index + i as u64 };
            self.gathering.records.push((p, e, Some(r)));
        }
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
        let current = self.topics.topic(self.topics.current());
        match probe.client().fetch_metadata(Some(current), Duration::from_secs(5)) {
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
            // Every copy of an event goes to the topic of the generation it was created under.
            let topic = self.topics.topic(event.map_or(self.topics.current(), |e| e.usage_generation));
            let record = BaseRecord::with_opaque_to(topic, opaque).key(&key).payload(payload).headers(headers);
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

    fn publish(&self, permit: Permit, mut event: UsageEvent) -> Written {
        event.usage_generation = self.generation;
        self.queue.publish(permit, event)
    }

    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.queue.flush(timeout, || self.acks.pending())
    }

    fn replay(&self) -> Option<(bool, u64, u64)> {
        Some(self.replay.snapshot())
    }
}
