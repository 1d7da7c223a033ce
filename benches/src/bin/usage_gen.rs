//! `tollgate-usage-gen`: synthetic usage events for ledger benchmarks, published the way a
//! gateway publishes them (the gateway's own spool and Kafka sink), and a wait for a consumer
//! group to catch up.
//!
//! Prints one JSON line: `{"events", "cost_nano_usd", "produce_seconds", "caught_up_seconds"}`.

use anyhow::{bail, Context, Result};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use tollgate_benches::synthetic::usage_event as event;
use tollgate_gateway::config::{KafkaConfig, SpoolConfig};
use tollgate_gateway::metering::kafka::KafkaSink;
use tollgate_gateway::metering::sink::UsageSink;

#[derive(Parser, Debug)]
#[command(about = "Publish synthetic Tollgate usage events and wait for a consumer group")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    /// Create the topic with this many partitions first.
    #[arg(long)]
    create_partitions: Option<i32>,
    /// Events to publish (0: none, only wait).
    #[arg(long, default_value_t = 0)]
    events: u64,
    /// Events per second (0: as fast as the sink takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Distinct virtual keys; every 10 keys share a team.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// After publishing, wait until this consumer group has committed the end of the topic.
    #[arg(long)]
    wait_group: Option<String>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    wait_seconds: u64,
    /// Replicas of each partition of a topic created here (3 on deploy/local/cluster).
    #[arg(long, default_value_t = 1)]
    replication: i32,
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32, replication: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    if replication >= 3 {
        new = new.set("min.insync.replicas", "2");
    }
    for r in admin.create_topics([&new], &AdminOptions::new()).await? {
        if let Err((t, e)) = r {
            bail!("cannot create {t}: {e}");
        }
    }
    Ok(())
}

fn caught_up(consumer: &BaseConsumer, topic: &str) -> Result<bool> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let done = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o >= high,
            _ => high == 0,
        };
        if !done {
            return Ok(false);
        }
    }
    Ok(true)
}

#[tokio::main]
#[allow(clippy::print_stdout)] // the result line is this binary's output
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(p) = args.create_partitions {
        create_topic(&args.bootstrap, &args.topic, p, args.replication).await?;
    }
    let spool = tempfile::tempdir()?;
    let mut total = 0i64;
    let started = Instant::now();
    if args.events > 0 {
        let kafka: KafkaConfig =
            serde_yaml::from_str(&format!("bootstrap_servers: {}\nusage_topic: {}\n", args.bootstrap, args.topic))?;
        let spool_config =
            // A generator answers nobody: its events never wait.
            SpoolConfig {
                dir: spool.path().to_path_buf(),
                queue_capacity: 200_000,
                answer_after: tollgate_gateway::config::AnswerAfter::Queued,
                ..SpoolConfig::default()
            };
        let sink = KafkaSink::new(&kafka, &spool_config, "bench")?;
        for i in 0..args.events {
            let e = event(i, args.keys.max(1));
            total += e.cost_nano_usd.0;
            let permit = loop {
                match sink.admit() {
                    Ok(p) => break p,
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            };
            let _unawaited = sink.publish(permit, e);
            if args.rate > 0 {
                let due = Duration::from_secs_f64((i + 1) as f64 / args.rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        sink.flush(Duration::from_secs(120))?;
    }
    let produced = started.elapsed();
    let mut waited = None;
    if let Some(group) = &args.wait_group {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &args.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let wait_start = Instant::now();
        loop {
            if caught_up(&consumer, &args.topic).context("reading the group's offsets")? {
                waited = Some(wait_start.elapsed());
                break;
            }
            if wait_start.elapsed() > Duration::from_secs(args.wait_seconds) {
                bail!("group {group} did not catch up within {} s", args.wait_seconds);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "events": args.events,
            "cost_nano_usd": total,
            "produce_seconds": produced.as_secs_f64(),
            "caught_up_seconds": waited.map(|w| w.as_secs_f64()),
        })
    );
    Ok(())
}
