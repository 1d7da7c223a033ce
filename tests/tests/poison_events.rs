//! Records the ledger refuses never stall folding (docs/security.md), on real Kafka and
//! Cassandra: a gateway and a ledger consumer under steady load, and mid-load every kind of bad
//! record published straight onto the usage topic. Also: SIGTERM ends a consumer whose batch
//! keeps failing, promptly and without committing that batch.

use anyhow::{bail, ensure, Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_schemas::limits::MAX_COST_PER_REQUEST;
use tollgate_schemas::{NanoUsd, UsageEvent};
use tollgate_tests::*;

const PARTITIONS: i32 = 4;

/// A bad record as published: the reason the consumer must give, and its value.
type Injected = (&'static str, Option<Vec<u8>>);

/// i64::MAX nano-USD holds 9,223 events of the highest cost one request may have: the 9,224th
/// and every one after it overflow the rows of their key.
const FITTING: usize = 9_223;
const OVERFLOWING: usize = 2;

/// A well-formed event of `key_id` costing `cost`, as a gateway would publish it.
fn event(key_id: &str, cost: i64, at: chrono::DateTime<chrono::Utc>) -> Result<UsageEvent> {
    let mut e = UsageEvent::decode(include_bytes!("../../schemas/fixtures/usage_event_v1_minimal.json"))?;
    e.event_id = uuid::Uuid::now_v7();
    e.occurred_at = at;
    e.gateway_id = "poison-injector".into();
    e.key_id = key_id.into();
    e.requested_model = "gpt-4o-mini".into();
    e.cost_nano_usd = NanoUsd(cost);
    e.status = 200;
    e.error_type = None;
    Ok(e)
}

/// Publishes straight onto the usage topic, as a broken or hostile producer would.
struct Injector {
    producer: FutureProducer,
    topic: String,
}

impl Injector {
    fn new(topic: &str) -> Result<Injector> {
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka_bootstrap())
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .create()?;
        Ok(Injector { producer, topic: topic.to_owned() })
    }

    /// `(partition, offset)` the record landed at.
    async fn send(&self, key: &str, value: Option<&[u8]>) -> Result<(i32, i64)> {
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        let delivered = self.producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
        Ok((delivered.partition, delivered.offset))
    }
}

/// What the dead-letter topic holds: per source `(partition, offset)`, the reason header and the
/// value. Reads exactly the records below the topic's high watermark.
async fn dead_letter_topic(topic: &str) -> Result<BTreeMap<(i32, i64), (String, Option<Vec<u8>>)>> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", unique("dlq-reader-"))
        .set("enable.auto.commit", "false")
        .create()?;
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut out = BTreeMap::new();
    for _ in 0..high {
        let msg =
            tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.context("dead-letter topic")??;
        msg.headers().context("a dead letter without headers")?;
        let header = |name: &str| header_text(&msg, name);
        let partition: i32 = header("tollgate_source_partition").context("no source partition")?.parse()?;
        let offset: i64 = header("tollgate_source_offset").context("no source offset")?.parse()?;
        let reason = header("tollgate_dlq_reason").context("no reason")?;
        let message = header("tollgate_dlq_message").context("no message")?;
        ensure!(message.len() <= 1_000, "the message header is short: {} bytes", message.len());
        ensure!(header("tollgate_source_topic").is_some(), "no source topic");
        if out.insert((partition, offset), (reason, msg.payload().map(<[u8]>::to_vec))).is_some() {
            bail!("record {partition}/{offset} dead-lettered twice");
        }
    }
    Ok(out)
}

/// `tollgate_ledger_dead_letters_total` per reason, from a consumer's metrics.
async fn dead_letter_metric(url: &str) -> Result<BTreeMap<String, u64>> {
    let text = reqwest::get(url).await?.text().await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("tollgate_ledger_dead_letters_total{reason=\"") else { continue };
        let (reason, value) = rest.split_once("\"} ").context("metric line")?;
        out.insert(reason.to_owned(), value.trim().parse::<f64>()? as u64);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_bad_record_mid_load_is_dead_lettered_and_folding_goes_on() -> Result<()> {
    let dir = scratch_dir("poison")?;
    let topic = unique("usage-poison-");
    let dlq = format!("{topic}-dlq");
    let keyspace = unique("poison_");
    let group = unique("ledger-");
    create_topic(&topic, PARTITIONS).await?;
    create_topic(&dlq, 1).await?;
    let mock = start_mock(&dir, &["--latency-ms", "1"]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let gateway = start_gateway(&dir, &GatewayConfig::new("gw-poison", &models, &topic, &kafka_bootstrap())).await?;
    let metrics_port = free_port()?;
    let config = ConsumerConfig {
        metrics_listen: Some(format!("127.0.0.1:{metrics_port}")),
        ..ConsumerConfig::new(&topic, &group, &keyspace, 2_000)
    };
    let consumer = start_consumer(&dir, &config).await?;
    let session = cql().await?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (urls, stop) = (vec![gateway.url()?.to_owned()], stop.clone());
        async move { drive_load(&urls, 4, 1_000_000, stop).await }
    });
    eventually("load to reach the ledger", Duration::from_secs(60), || async {
        Ok((event_ledger_totals(&session, &keyspace).await?.0 >= 50).then_some(()))
    })
    .await?;

    // The consumer's health beside its metrics: ready once it joined its group.
    let health = |path: &str| format!("http://127.0.0.1:{metrics_port}{path}");
    eventually("the consumer to be ready", Duration::from_secs(30), || async {
        Ok((reqwest::get(health("/health/readiness")).await?.status() == 200).then_some(()))
    })
    .await?;
    ensure!(reqwest::get(health("/health/liveness")).await?.status() == 200, "liveness");
    ensure!(reqwest::get(health("/nothing")).await?.status() == 404, "an unknown path");
    ensure!(reqwest::Client::new().post(health("/metrics")).send().await?.status() == 405, "a POST");
    let page = reqwest::get(health("/metrics")).await?.text().await?;
    ensure!(page.contains("tollgate_ledger_events_folded_total"), "the metrics page:\n{page}");

    // Every kind of bad record, with the reason the consumer must give.
    let injector = Injector::new(&topic)?;
    let now = chrono::Utc::now();
    let mut bad: BTreeMap<(i32, i64), Injected> = BTreeMap::new();
    let mut version_99 = serde_json::to_value(event("poison-v99", 10, now)?)?;
    version_99["version"] = 99.into();
    let mut long_customer = event("poison-customer", 10, now)?;
    long_customer.customer_id = Some("c".repeat(65_500));
    let long_key = event(&"k".repeat(70_000), 10, now)?;
    let negative = event("poison-negative", -5, now)?;
    let too_costly = event("poison-costly", MAX_COST_PER_REQUEST.0 + 1, now)?;
    let mut windows = event("poison-windows", 10, now)?;
    for i in 0..40 {
        windows.budget_windows.insert(format!("key/k{i}"), vec!["1d".into()]);
    }
    let records: Vec<Injected> = vec![
        ("no_value", None),
        ("not_json", Some(b"{\"event_id\": \"not json".to_vec())),
        ("not_an_event", Some(br#"{"hello": "world"}"#.to_vec())),
        ("unsupported_version", Some(serde_json::to_vec(&version_99)?)),
        ("schema_violation", Some(long_customer.encode()?)),
        ("schema_violation", Some(long_key.encode()?)),
        ("schema_violation", Some(negative.encode()?)),
        ("schema_violation", Some(too_costly.encode()?)),
        ("schema_violation", Some(windows.encode()?)),
    ];
    for (i, (reason, value)) in records.into_iter().enumerate() {
        let at = injector.send(&format!("key/poison-{i}"), value.as_deref()).await?;
        bad.insert(at, (reason, value));
    }
    // Events of the highest cost allowed on one key: all fit until the key's rows are full.
    let overflow_key = unique("overflow-");
    let overflow_events: Vec<UsageEvent> =
        (0..FITTING + OVERFLOWING).map(|_| event(&overflow_key, MAX_COST_PER_REQUEST.0, now)).collect::<Result<_>>()?;
    let mut delivered = Vec::with_capacity(overflow_events.len());
    for chunk in overflow_events.chunks(1_000) {
        let sends = chunk.iter().map(|e| async {
            let value = e.encode()?;
            let at = injector.send(&format!("key/{overflow_key}"), Some(&value)).await?;
            Ok::<_, anyhow::Error>((at, value))
        });
        for r in futures::future::join_all(sends).await {
            delivered.push(r?);
        }
    }
    delivered.sort_by_key(|(at, _)| *at);
    ensure!(delivered.iter().all(|((p, _), _)| *p == delivered[0].0 .0), "one key, one partition");
    for (at, value) in delivered.split_off(FITTING) {
        bad.insert(at, ("money_overflow", Some(value)));
    }
    eprintln!("injected {} bad records among {} overflow-key events", bad.len(), FITTING + OVERFLOWING);

    // Load goes on while the consumer deals with them; then let it drain.
    eventually("every bad record on the dead-letter topic", Duration::from_secs(120), || async {
        let reader: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", kafka_bootstrap()).create()?;
        let (_, high) = reader.fetch_watermarks(&dlq, 0, Duration::from_secs(10))?;
        Ok((high >= bad.len() as i64).then_some(()))
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    let mut truth = load.await.context("load task")??;
    ensure!(truth.requests > 100, "too little load to mean anything: {} requests", truth.requests);
    let overflow_scopes = [format!("key/{overflow_key}"), format!("key/{overflow_key}/model/gpt-4o-mini")];
    truth.add_injected(&overflow_scopes, MAX_COST_PER_REQUEST.0, FITTING);
    eventually(
        "the ledger to hold every served request and every good injected event",
        Duration::from_secs(120),
        || async { Ok(truth.ledger_complete(&session, &keyspace).await?.then_some(())) },
    )
    .await?;
    eventually("the consumer group to commit the end of every partition", Duration::from_secs(60), || {
        let (group, topic) = (group.clone(), topic.clone());
        async move { Ok(group_caught_up(&group, &topic, PARTITIONS)?.then_some(())) }
    })
    .await?;
    truth.assert_ledger(&session, &keyspace, "after the poison records").await?;
    let (full, events) = scope_total(&session, &keyspace, &overflow_scopes[0]).await?;
    ensure!(full == FITTING as i64 * MAX_COST_PER_REQUEST.0 && events == FITTING as i64, "{full} {events}");

    // The dead-letter topic holds exactly the bad records, each once, with its reason and value.
    let topic_letters = dead_letter_topic(&dlq).await?;
    ensure!(
        topic_letters.len() == bad.len(),
        "{} dead letters on the topic, {} bad records",
        topic_letters.len(),
        bad.len()
    );
    for (at, (reason, value)) in &bad {
        let (got_reason, got_value) =
            topic_letters.get(at).with_context(|| format!("record {at:?} not dead-lettered"))?;
        ensure!(got_reason == reason, "record {at:?}: reason {got_reason}, expected {reason}");
        ensure!(got_value == value, "record {at:?}: the dead letter carries the value as published");
    }

    // So does the dead_letters table.
    let rows = session
        .query_unpaged(
            format!("SELECT partition, kafka_offset, reason, event_id, body, body_bytes FROM {keyspace}.dead_letters"),
            &[],
        )
        .await?
        .into_rows_result()?;
    let mut table = BTreeMap::new();
    for row in rows.rows::<(i32, i64, Option<String>, Option<uuid::Uuid>, Option<Vec<u8>>, Option<i32>)>()? {
        let (partition, offset, reason, event_id, body, body_bytes) = row?;
        ensure!(body.as_ref().is_none_or(|b| b.len() <= 1024), "the table keeps at most 1 KiB of a value");
        table.insert((partition, offset), (reason.unwrap_or_default(), event_id, body_bytes));
    }
    ensure!(table.len() == bad.len(), "{} rows in dead_letters, {} bad records", table.len(), bad.len());
    for (at, (reason, value)) in &bad {
        let (got, event_id, body_bytes) =
            table.get(at).with_context(|| format!("record {at:?} not in dead_letters"))?;
        ensure!(got == reason, "record {at:?}: table says {got}, expected {reason}");
        ensure!(*body_bytes == Some(value.as_ref().map_or(0, |v| v.len() as i32)), "record {at:?}: body length");
        let decodable = !matches!(*reason, "no_value" | "not_json" | "not_an_event");
        ensure!(event_id.is_some() == decodable, "record {at:?}: event id kept when the value names one");
    }

    // The metric counts them by reason.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (reason, _) in bad.values() {
        *expected.entry((*reason).to_owned()).or_default() += 1;
    }
    // Every reason's counter exists from the start (at zero), for the alert rules.
    let mut metric = dead_letter_metric(&format!("http://127.0.0.1:{metrics_port}/metrics")).await?;
    ensure!(metric.get("refused_by_database") == Some(&0), "counters not created at zero: {metric:?}");
    metric.retain(|_, n| *n > 0);
    ensure!(metric == expected, "metric {metric:?}, expected {expected:?}");

    // And reconcile passes, reporting them.
    let (ok, report) = reconcile(consumer.config.as_deref().context("no consumer config")?).await?;
    ensure!(ok, "reconcile found differences:\n{report}");
    ensure!(report.contains(&format!("dead letters: {} dead-lettered events", bad.len())), "{report}");
    eprintln!("{report}");
    consumer.stop().await?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_consumer_whose_batch_keeps_failing() -> Result<()> {
    let dir = scratch_dir("failing-batch")?;
    let topic = unique("usage-failing-");
    let keyspace = unique("failing_");
    let group = unique("ledger-");
    create_topic(&topic, 2).await?;
    let injector = Injector::new(&topic)?;
    let now = chrono::Utc::now();
    for i in 0..40 {
        injector
            .send(&format!("key/k{}", i % 5), Some(&event(&format!("k{}", i % 5), 1_000 + i, now)?.encode()?))
            .await?;
    }
    let config = ConsumerConfig::new(&topic, &group, &keyspace, 200);
    // Every attempt at the batch hangs 15 s in its first ledger write, then times out.
    let failing =
        start_consumer_with_env(&dir, &config, &[("TOLLGATE_FAULT_LEDGER_WRITE_TIMEOUT_MS", "15000")]).await?;
    eventually("the batch to fail and be retried", Duration::from_secs(60), || async {
        Ok(failing.log().contains("ledger write failed; retrying").then_some(()))
    })
    .await?;
    // Now in a retry: a backoff sleep, then another 15 s write. SIGTERM must cut it short.
    let signalled = Instant::now();
    let mut child = failing.child;
    let pid = child.id().context("consumer already exited")?;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .context("the consumer did not exit within 10 s of SIGTERM")??;
    let took = signalled.elapsed();
    let log = std::fs::read_to_string(&failing.log_path)?;
    eprintln!("exited {status} {took:?} after SIGTERM");
    ensure!(status.success(), "exit status {status}:\n{log}");
    ensure!(!log.contains("exiting anyway"), "the shutdown was not cut short by its bound:\n{log}");
    ensure!(
        group_committed(&group, &topic, 2)?.iter().all(Option::is_none),
        "an offset was committed for a batch that never reached the ledger"
    );
    ensure!(event_ledger_totals(&cql().await?, &keyspace).await?.0 == 0, "the fault kept every write out");

    // Nothing half-done was committed: a healthy consumer folds every event exactly once.
    let healthy = start_consumer(&dir, &config).await?;
    let session = cql().await?;
    let expected: i64 = (0..40).map(|i| 1_000 + i).sum();
    eventually("a healthy consumer to fold the batch", Duration::from_secs(60), || async {
        let (count, sum) = event_ledger_totals(&session, &keyspace).await?;
        Ok((count == 40 && sum == expected).then_some(()))
    })
    .await?;
    // Layer 1 is written before Layer 2: read Layer 2 once the group has committed the end of
    // the topic, which it does only after the whole fold.
    eventually("the healthy consumer to commit the end of every partition", Duration::from_secs(60), || {
        let (group, topic) = (group.clone(), topic.clone());
        async move { Ok(group_caught_up(&group, &topic, 2)?.then_some(())) }
    })
    .await?;
    let mut total = 0;
    for k in 0..5 {
        total += scope_total(&session, &keyspace, &format!("key/k{k}")).await?.0;
    }
    ensure!(total == expected, "Layer 2 holds {total}, expected {expected}");
    healthy.stop().await?;
    Ok(())
}

/// A usage topic with more partitions than spend totals read: what the consumer folded from the
/// partitions beyond would be in no total and no budget, so it refuses to start, naming the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_topic_with_more_partitions_than_totals_read_is_refused() -> Result<()> {
    let dir = scratch_dir("too-many-partitions")?;
    let topic = unique("usage-failing-");
    let too_many = tollgate_schemas::store::MAX_USAGE_PARTITIONS + 1;
    create_topic(&topic, too_many).await?;
    let path = dir.join("consumer.yaml");
    std::fs::write(&path, ConsumerConfig::new(&topic, &unique("ledger-"), &unique("failing_"), 100).to_yaml()?)?;
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(binaries()?.join("tollgate-ledger-consumer"))
            .args(["--config", &path.to_string_lossy()])
            .current_dir(&dir)
            .output(),
    )
    .await
    .context("the consumer neither refused nor exited")??;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(!out.status.success(), "started on a topic of {too_many} partitions:\n{text}");
    ensure!(text.contains(&topic) && text.contains(&format!("{too_many} partitions")), "{text}");
    ensure!(!text.contains("consuming "), "folded before refusing:\n{text}");
    Ok(())
}
