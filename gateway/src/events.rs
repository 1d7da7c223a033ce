//! Publishing usage events. [`UsageSink`] is the boundary; [`KafkaSink`] writes each event to the
//! local [`Spool`] (group-committed to disk) and then to the Kafka `usage` topic as a CloudEvent
//! (binary mode), keyed by budget owner, with an idempotent producer. A spool record is deleted
//! only after Kafka acknowledged it; whatever is left at start-up is sent again.
//!
//! `publish` never blocks the request on disk or network: a bounded queue feeds one writer
//! thread. When the backlog reaches its bound, [`UsageSink::admit`] refuses new requests (policy
//! `reject`, the default) or lets them through while counting every event it cannot keep
//! (policy `serve`). An event already accepted is never dropped under `reject`.

use crate::config::{KafkaConfig, SpoolConfig, WhenFull};
use crate::spool::{Acks, RecordRef, Spool, SpoolError};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use metrics::{counter, gauge};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::Arc;
use std::time::Duration;
use tollgate_schemas::cloudevents as ce;
use tollgate_schemas::UsageEvent;

/// Where usage events go.
pub trait UsageSink: Send + Sync + 'static {
    /// Whether a new request may start: its event will have room. Called before the provider.
    fn admit(&self) -> Result<(), SinkError>;
    /// Hands the event over for delivery, without waiting for disk or network.
    fn publish(&self, event: UsageEvent) -> Result<(), SinkError>;
    /// Stops taking events, writes what is queued to the spool, and waits until Kafka has
    /// acknowledged it all or `timeout` passes (what is left is replayed at the next start).
    fn flush(&self, timeout: Duration) -> Result<(), SinkError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("usage metering backlog is full")]
    Full,
    #[error("usage metering is shut down")]
    Closed,
    #[error("cannot encode usage event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Counts deliveries and acknowledges spool records as librdkafka reports them; a record that
/// could not be delivered in time goes back to the writer to be sent again.
pub struct DeliveryReports {
    acks: Arc<Acks>,
    retry: Sender<Retry>,
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
                if let Some(r) = *record {
                    self.acks.ack(r);
                }
            }
            Err((e, message)) => {
                // Still in the spool; send it again (a new producer session cannot be worse off
                // than librdkafka's own retries, and consumers count each event_id once).
                tracing::warn!(error = %e, "usage event not delivered in time; sending it again");
                counter!("tollgate_usage_events_total", "result" => "retried").increment(1);
                use rdkafka::Message as _;
                let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
                let _ = self.retry.send(Retry { payload, record: *record });
            }
        }
    }
}

type Producer_ = ThreadedProducer<DeliveryReports>;

pub struct KafkaSink {
    sender: Sender<UsageEvent>,
    admit_below: usize,
    when_full: WhenFull,
    producer: Arc<Producer_>,
    acks: Arc<Acks>,
}

struct Writer {
    rx: Receiver<UsageEvent>,
    retries: Receiver<Retry>,
    spool: Spool,
    producer: Arc<Producer_>,
    topic: String,
    source: String,
}

/// Events written and synced per group commit, at most.
const MAX_BATCH: usize = 1024;
/// How long a group commit waits for more events after the first. With the batch being
/// written, this is what a power loss can cost: the events of the last few milliseconds.
const GROUP_COMMIT_INTERVAL: Duration = Duration::from_millis(5);

impl KafkaSink {
    pub fn new(kafka: &KafkaConfig, spool_config: &SpoolConfig, gateway_id: &str) -> Result<KafkaSink, SinkError> {
        let (spool, leftovers) = Spool::open(&spool_config.dir, spool_config.max_segment_bytes)?;
        let acks = spool.acks();
        let mut client = ClientConfig::new();
        for (k, v) in &kafka.producer_properties {
            client.set(k, v);
        }
        // The metering guarantees are set last so nothing in the config can weaken them.
        client
            .set("bootstrap.servers", &kafka.bootstrap_servers)
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
        let (retry_tx, retries) = crossbeam_channel::unbounded();
        let producer: Arc<Producer_> =
            Arc::new(client.create_with_context(DeliveryReports { acks: acks.clone(), retry: retry_tx })?);
        let (tx, rx) = bounded(spool_config.queue_capacity);
        let mut writer = Writer {
            rx,
            retries,
            spool,
            producer: producer.clone(),
            topic: kafka.usage_topic.clone(),
            source: ce::source_for_gateway(gateway_id),
        };
        if !leftovers.is_empty() {
            tracing::info!(events = leftovers.len(), "replaying usage events left in the spool");
            counter!("tollgate_spool_replayed_events_total").increment(leftovers.len() as u64);
        }
        std::thread::Builder::new()
            .name("tollgate-usage-writer".into())
            .spawn(move || {
                for (r, payload) in leftovers {
                    let event = UsageEvent::decode(&payload).ok();
                    writer.send(&payload, event.as_ref(), Some(r));
                }
                writer.run();
            })
            .map_err(|e| SinkError::Spool(SpoolError::Io(e)))?;
        Ok(KafkaSink {
            sender: tx,
            admit_below: spool_config.queue_capacity.saturating_mul(9) / 10,
            when_full: spool_config.when_full,
            producer,
            acks,
        })
    }
}

impl Writer {
    fn run(&mut self) {
        loop {
            let first = match self.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    self.send_retries();
                    gauge!("tollgate_spool_pending_events").set(self.spool.acks().pending() as f64);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut events = Vec::with_capacity(64);
            events.push(first);
            // Group commit: gather what arrives within the commit interval, so that a light load
            // does not pay one disk sync (and one thread wake-up) per event.
            let deadline = std::time::Instant::now() + GROUP_COMMIT_INTERVAL;
            while events.len() < MAX_BATCH {
                match self.rx.recv_deadline(deadline) {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
            let mut payloads = Vec::with_capacity(events.len());
            let mut sent = Vec::with_capacity(events.len());
            for e in &events {
                match e.encode() {
                    Ok(p) => {
                        payloads.push(p);
                        sent.push(e);
                    }
                    Err(err) => {
                        counter!("tollgate_usage_events_total", "result" => "unencodable").increment(1);
                        tracing::error!(event_id = %e.event_id, error = %err, "usage event cannot be encoded");
                    }
                }
            }
            // Group commit: one sync for the batch. The record is on disk before Kafka sees it.
            let written = match self.spool.append_batch(&payloads) {
                Ok(r) => Some(r),
                Err(e) => {
                    counter!("tollgate_spool_write_errors_total").increment(1);
                    tracing::error!(error = %e, "cannot write usage events to the spool; sending them unspooled");
                    None
                }
            };
            for (p, e) in payloads.iter().zip(sent) {
                self.send(p, Some(e), written);
            }
            self.send_retries();
            gauge!("tollgate_spool_pending_events").set(self.spool.acks().pending() as f64);
        }
    }

    /// Hands one record to librdkafka, waiting while its queue is full (the bounded request
    /// queue in front of this thread is what pushes back on requests).
    /// Sends again what the producer handed back.
    fn send_retries(&self) {
        while let Ok(r) = self.retries.try_recv() {
            let event = UsageEvent::decode(&r.payload).ok();
            self.send(&r.payload, event.as_ref(), r.record);
        }
    }

    /// `event` is the decoded `payload`; `None` for a spooled record that no longer decodes,
    /// which still goes out (the consumer dead-letters it) rather than vanish.
    fn send(&self, payload: &[u8], event: Option<&UsageEvent>, r: Option<RecordRef>) {
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
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    opaque = record.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(20));
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
    fn admit(&self) -> Result<(), SinkError> {
        if self.sender.len() < self.admit_below || self.when_full == WhenFull::Serve {
            Ok(())
        } else {
            counter!("tollgate_requests_rejected_total", "reason" => "metering_backlog").increment(1);
            Err(SinkError::Full)
        }
    }

    fn publish(&self, event: UsageEvent) -> Result<(), SinkError> {
        match self.sender.try_send(event) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(event)) if self.when_full == WhenFull::Reject => {
                // Admitted before the backlog filled: wait for room rather than lose it.
                self.sender.send_timeout(event, Duration::from_secs(30)).map_err(|e| {
                    counter!("tollgate_usage_events_total", "result" => "dropped").increment(1);
                    tracing::error!(event_id = %e.into_inner().event_id, "usage event dropped: backlog full for 30 s");
                    SinkError::Full
                })
            }
            Err(TrySendError::Full(event)) => {
                counter!("tollgate_usage_events_total", "result" => "dropped").increment(1);
                tracing::warn!(event_id = %event.event_id, "usage event dropped: backlog full (policy serve)");
                Err(SinkError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(SinkError::Closed),
        }
    }

    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        // In-flight requests are finished by now (the server drained them); wait for the writer
        // to spool what is queued, then for Kafka to acknowledge it.
        let deadline = std::time::Instant::now() + timeout;
        while !self.sender.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        while self.acks.pending() > 0 && std::time::Instant::now() < deadline {
            self.producer.flush(Duration::from_millis(100)).ok();
        }
        let left = self.acks.pending();
        if left > 0 {
            tracing::warn!(unacknowledged = left, "usage events not yet acknowledged by Kafka stay in the spool");
        } else {
            tracing::info!("usage events flushed");
        }
        Ok(())
    }
}
