//! `rerate --apply`: publishes a run's adjustments to the usage topic, as the gateway publishes
//! events (record key the budget owner, CloudEvents headers, the topic of the event's
//! generation), so they go through the same exactly-once fold. The producer is idempotent and
//! waits for every acknowledgement; a run that fails part way is run again, and what it already
//! published has the same ids (`rerate`).

use super::rerate::RERATE_SOURCE;
use super::ExportError;
use crate::config::KafkaConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;
use tollgate_schemas::cloudevents as ce;
use tollgate_schemas::UsageEvent;

/// How long one adjustment may wait for its acknowledgement.
const SEND_WITHIN: Duration = Duration::from_secs(30);
/// Adjustments in flight at once.
const IN_FLIGHT: usize = 256;

/// Publishes `adjustments` and waits until Kafka has acknowledged every one.
pub async fn publish(kafka: &KafkaConfig, adjustments: &[UsageEvent]) -> Result<(), ExportError> {
    let kafka_err = |e: rdkafka::error::KafkaError| ExportError::Usage(format!("publishing adjustments: {e}"));
    let producer: FutureProducer =
        kafka.client_config().set("enable.idempotence", "true").set("acks", "all").create().map_err(kafka_err)?;
    let topics = kafka.usage_generations().map_err(|(field, m)| ExportError::Usage(format!("{field}: {m}")))?;
    let source = ce::source_for_gateway(RERATE_SOURCE);
    for chunk in adjustments.chunks(IN_FLIGHT) {
        let sends = chunk.iter().map(|e| {
            let (producer, source) = (&producer, &source);
            let topic = topics.topic(e.usage_generation);
            async move {
                let value = e.encode().map_err(|err| ExportError::Usage(format!("encoding {}: {err}", e.event_id)))?;
                let (id, time, key) = (
                    e.event_id.to_string(),
                    e.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    e.budget_owner(),
                );
                let headers = OwnedHeaders::new_with_capacity(6)
                    .insert(Header { key: ce::H_SPECVERSION, value: Some(ce::SPEC_VERSION) })
                    .insert(Header { key: ce::H_ID, value: Some(id.as_str()) })
                    .insert(Header { key: ce::H_SOURCE, value: Some(source.as_str()) })
                    .insert(Header { key: ce::H_TYPE, value: Some(ce::USAGE_TYPE) })
                    .insert(Header { key: ce::H_TIME, value: Some(time.as_str()) })
                    .insert(Header { key: ce::H_CONTENT_TYPE, value: Some(ce::CONTENT_TYPE) });
                let record = FutureRecord::to(topic).key(&key).payload(&value).headers(headers);
                producer.send(record, SEND_WITHIN).await.map(|_| ()).map_err(|(err, _)| kafka_err(err))
            }
        });
        futures::future::try_join_all(sends).await?;
    }
    Ok(())
}
