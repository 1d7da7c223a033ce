//! Publishing usage events. [`UsageSink`] is the boundary; [`KafkaSink`] publishes to the Kafka
//! `usage` topic as CloudEvents (binary mode), keyed by budget owner, with an idempotent producer.
//!
//! `publish` never blocks the request: librdkafka queues the record and a background thread
//! delivers it. It must never drop an event silently: every outcome is counted.

use metrics::counter;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::time::Duration;
use tollgate_schemas::cloudevents as ce;
use tollgate_schemas::UsageEvent;

use crate::config::KafkaConfig;

/// Where usage events go.
pub trait UsageSink: Send + Sync + 'static {
    /// Hands the event over for delivery. Returns an error only when the event could not even be
    /// queued; the caller decides what that means for the request.
    fn publish(&self, event: &UsageEvent) -> Result<(), SinkError>;
    /// Waits until every queued event is delivered, or the timeout passes.
    fn flush(&self, timeout: Duration) -> Result<(), SinkError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot encode usage event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Counts deliveries as librdkafka reports them.
pub struct DeliveryReports;

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => counter!("tollgate_usage_events_total", "result" => "delivered").increment(1),
            Err((e, _)) => {
                tracing::error!(error = %e, "usage event delivery failed after retries");
                counter!("tollgate_usage_events_total", "result" => "failed").increment(1);
            }
        }
    }
}

pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryReports>,
    topic: String,
    source: String,
}

impl KafkaSink {
    pub fn new(config: &KafkaConfig, gateway_id: &str) -> Result<KafkaSink, KafkaError> {
        let mut client = ClientConfig::new();
        for (k, v) in &config.producer_properties {
            client.set(k, v);
        }
        // The metering guarantees are set last so nothing in the config can weaken them.
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("client.id", format!("tollgate-gateway-{gateway_id}"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger_ms.to_string())
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000");
        let producer = client.create_with_context(DeliveryReports)?;
        Ok(KafkaSink { producer, topic: config.usage_topic.clone(), source: ce::source_for_gateway(gateway_id) })
    }
}

impl UsageSink for KafkaSink {
    fn publish(&self, event: &UsageEvent) -> Result<(), SinkError> {
        let payload = event.encode()?;
        let key = event.budget_owner();
        let id = event.event_id.to_string();
        let time = event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header { key: ce::H_SPECVERSION, value: Some(ce::SPEC_VERSION) })
            .insert(Header { key: ce::H_ID, value: Some(id.as_str()) })
            .insert(Header { key: ce::H_SOURCE, value: Some(self.source.as_str()) })
            .insert(Header { key: ce::H_TYPE, value: Some(ce::USAGE_TYPE) })
            .insert(Header { key: ce::H_TIME, value: Some(time.as_str()) })
            .insert(Header { key: ce::H_CONTENT_TYPE, value: Some(ce::CONTENT_TYPE) });
        let record = BaseRecord::to(&self.topic).key(&key).payload(&payload).headers(headers);
        match self.producer.send(record) {
            Ok(()) => {
                counter!("tollgate_usage_events_total", "result" => "queued").increment(1);
                Ok(())
            }
            Err((e, _)) => {
                counter!("tollgate_usage_events_total", "result" => "rejected").increment(1);
                tracing::error!(error = %e, event_id = %event.event_id, "usage event could not be queued");
                Err(SinkError::Kafka(e))
            }
        }
    }

    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.producer.flush(timeout).map_err(SinkError::Kafka)
    }
}
