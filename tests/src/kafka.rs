//! The test Kafka: where it is, topics made for one test, what a consumer group has committed,
//! and reading or copying the records of a usage topic. Each test makes topics and groups of
//! its own ([`crate::unique`]) and never touches another's.

use crate::unique;
use anyhow::{bail, ensure, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// Kafka bootstrap servers (`TOLLGATE_TEST_KAFKA`, default the local deployment).
pub fn kafka_bootstrap() -> String {
    std::env::var("TOLLGATE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The test Kafka's SASL/PLAIN listener and its user: (bootstrap, user, password), from
/// `TOLLGATE_TEST_KAFKA_SASL` and deploy/local's `TOLLGATE_KAFKA_SASL_USER`/`_PASSWORD`.
pub fn kafka_sasl() -> (String, String, String) {
    (
        std::env::var("TOLLGATE_TEST_KAFKA_SASL").unwrap_or_else(|_| "127.0.0.1:9094".to_owned()),
        std::env::var("TOLLGATE_KAFKA_SASL_USER").unwrap_or_else(|_| "tollgate".to_owned()),
        std::env::var("TOLLGATE_KAFKA_SASL_PASSWORD").unwrap_or_else(|_| "tollgate-local-sasl-password".to_owned()),
    )
}

fn admin() -> Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", kafka_bootstrap()).create()?)
}

/// Creates a topic for one test.
pub async fn create_topic(name: &str, partitions: i32) -> Result<()> {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(topic_replication()));
    let results = admin()?.create_topics([&topic], &AdminOptions::new()).await?;
    for r in results {
        if let Err((t, e)) = r {
            bail!("cannot create topic {t}: {e}");
        }
    }
    Ok(())
}

/// Replicas of every test topic: `TOLLGATE_TEST_KAFKA_RF` (3 against deploy/local/cluster), else 1.
pub fn topic_replication() -> i32 {
    std::env::var("TOLLGATE_TEST_KAFKA_RF")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|rf| (1..=5).contains(rf))
        .unwrap_or(1)
}

/// The Kafka topics of one tenancy test: usage, budget state and control.
pub struct Topics {
    pub usage: String,
    pub budget_state: String,
    pub control: String,
}

impl Topics {
    pub async fn create(prefix: &str, usage_partitions: i32) -> Result<Topics> {
        let t = Topics {
            usage: unique(&format!("{prefix}-usage-")),
            budget_state: unique(&format!("{prefix}-budget-")),
            control: unique(&format!("{prefix}-control-")),
        };
        create_topic(&t.usage, usage_partitions).await?;
        create_topic(&t.budget_state, 3).await?;
        create_topic(&t.control, 1).await?;
        Ok(t)
    }
}

/// A consumer that only looks (offsets, watermarks), never commits.
fn observer(group: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

/// The records `topic` holds, summed over its `partitions` (high watermarks).
pub fn records_on(topic: &str, partitions: i32) -> Result<i64> {
    let consumer = observer(&unique("watermarks-"))?;
    let mut total = 0;
    for p in 0..partitions {
        total += consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?.1;
    }
    Ok(total)
}

/// Whether `group` has committed, on every partition of `topic`, the partition's end offset.
pub fn group_caught_up(group: &str, topic: &str, partitions: i32) -> Result<bool> {
    let consumer = observer(group)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let at = committed.find_partition(topic, p).map(|e| e.offset());
        let done = match at {
            Some(Offset::Offset(o)) => o >= high,
            _ => high == 0,
        };
        if !done {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The offset `group` has committed on each partition of `topic` (`None`: nothing committed).
pub fn group_committed(group: &str, topic: &str, partitions: i32) -> Result<Vec<Option<i64>>> {
    let consumer = observer(group)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect())
}

/// The value of a record's header `name`, as text.
pub fn header_text(msg: &impl Message, name: &str) -> Option<String> {
    msg.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Reads `topic` from the beginning until `n` usage events arrived (or `timeout`), checking
/// each record's CloudEvents headers; returns them by request id. Fails on a duplicate id.
pub async fn collect_events(
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Result<HashMap<String, tollgate_schemas::UsageEvent>> {
    use rdkafka::consumer::StreamConsumer;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", unique("verify-"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut events = HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while events.len() < n {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .with_context(|| format!("only {} of {n} events arrived", events.len()))??;
        let event = tollgate_schemas::UsageEvent::decode(msg.payload().context("empty record")?)?;
        msg.headers().context("no CloudEvents headers")?;
        let header = |name: &str| header_text(&msg, name);
        ensure!(header("ce_id") == Some(event.event_id.to_string()), "ce_id is not the event id");
        ensure!(header("ce_specversion").as_deref() == Some("1.0"), "no ce_specversion");
        ensure!(header("ce_type").as_deref() == Some("dev.tollgate.usage.v1"), "wrong ce_type");
        ensure!(header("ce_source").is_some(), "no ce_source");
        ensure!(msg.key() == Some(event.budget_owner().as_bytes()), "record key is not the budget owner");
        ensure!(events.insert(event.request_id.clone(), event).is_none(), "duplicate event");
    }
    Ok(events)
}

/// Reads `n` records of `topic` and produces them again, key, value and headers unchanged.
pub async fn republish_some(topic: &str, n: usize) -> Result<usize> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let consumer: rdkafka::consumer::StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", unique("copier-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut copied = 0;
    while copied < n {
        let msg =
            tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.context("no record to copy")??;
        let mut headers = OwnedHeaders::new();
        if let Some(h) = msg.headers() {
            for header in h.iter() {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        copied += 1;
    }
    Ok(copied)
}

/// Publishes `(key, value)` records straight onto `topic`, in order (a test's own events, or
/// hostile records), and returns the `(partition, offset)` each landed at.
pub async fn publish(topic: &str, records: &[(String, Vec<u8>)]) -> Result<Vec<(i32, i64)>> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut at = Vec::with_capacity(records.len());
    for (key, value) in records {
        let record = FutureRecord::<str, [u8]>::to(topic).key(key).payload(value);
        let delivered = producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
        at.push((delivered.partition, delivered.offset));
    }
    Ok(at)
}
