//! Issue test 3: Kafka down for 30 s during load. The documented behaviour while it is down:
//! the gateway keeps serving, holding events in its spool and producer queue (requests are
//! refused with 503 only when that backlog is full); afterwards nothing is lost or doubled.
//!
//! Two outages: the broker process of `deploy/local` (found by its pid file) killed and started
//! again 30 s later, and the broker frozen with SIGSTOP for 30 s (connections stay open and every
//! request hangs). These tests are alone in their binary and run one after the other, so no other
//! test sees the outage.

use anyhow::{ensure, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_tests::*;

const PARTITIONS: i32 = 4;
const OUTAGE: Duration = Duration::from_secs(30);

fn kafka_pid() -> Result<u32> {
    let state = std::env::var("TOLLGATE_LOCAL_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".local/state/tollgate-local")
    });
    let text = std::fs::read_to_string(state.join("kafka/kafka.pid")).context("Kafka pid file (deploy/local/up)")?;
    Ok(text.trim().parse()?)
}

fn gateway_config(mock: &str, topic: &str, spool: &std::path::Path) -> GatewayConfig {
    GatewayConfig {
        spool: Some(Spool { dir: spool.to_path_buf() }),
        ..GatewayConfig::new(
            "gw-outage",
            &[model_entry("gpt-4o-mini", &format!("{mock}/v1"))],
            topic,
            &kafka_bootstrap(),
        )
    }
}

/// How Kafka goes down for [`OUTAGE`] and comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// SIGKILL, then `deploy/local/up` starts the broker again.
    Stopped,
    /// SIGSTOP, then SIGCONT.
    Frozen,
}

fn deploy_up() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(root.join("deploy/local/up")).status()?;
    ensure!(status.success(), "deploy/local/up failed");
    Ok(())
}

/// Sends SIGCONT (frozen) or starts the broker again (stopped) when dropped, so a failing test
/// never leaves Kafka down.
struct Restore(u32, Outage);
impl Drop for Restore {
    fn drop(&mut self) {
        match self.1 {
            Outage::Frozen => {
                let _ = std::process::Command::new("kill").arg("-CONT").arg(self.0.to_string()).status();
            }
            Outage::Stopped => {
                let _ = deploy_up();
            }
        }
    }
}

/// One test at a time in this binary: two outages at once would not be two tests.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_stopped_for_thirty_seconds_loses_nothing() -> Result<()> {
    let _one = SERIAL.lock().await;
    outage_run(Outage::Stopped).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_frozen_for_thirty_seconds_loses_nothing() -> Result<()> {
    let _one = SERIAL.lock().await;
    outage_run(Outage::Frozen).await
}

async fn outage_run(outage: Outage) -> Result<()> {
    let dir = scratch_dir("outage")?;
    let topic = unique("usage-outage-");
    let keyspace = unique("outage_");
    let group = unique("ledger-");
    create_topic(&topic, PARTITIONS).await?;
    // About 100 requests a second: a steady load that the outage turns into a 3,000-event backlog.
    let mock = start_mock(&dir, &["--latency-ms", "20"]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic, &dir.join("spool"))).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &group, &keyspace, 2000)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let urls = vec![gateway.url()?.to_owned()];
    let load = tokio::spawn({
        let stop = stop.clone();
        async move { drive_load(&urls, 2, 1_000_000, stop).await }
    });
    // The outage must find the load under way: events of it on the topic.
    eventually("the load's events to reach Kafka", Duration::from_secs(60), || {
        let topic = topic.clone();
        async move { Ok((records_on(&topic, PARTITIONS)? >= 200).then_some(())) }
    })
    .await?;
    let pid = kafka_pid()?;
    let restore = Restore(pid, outage);
    let signal = if outage == Outage::Frozen { "-STOP" } else { "-KILL" };
    let status = std::process::Command::new("kill").arg(signal).arg(pid.to_string()).status()?;
    ensure!(status.success(), "could not stop Kafka");
    let outage_started = std::time::Instant::now();
    // The outage itself: a length of time the gateway must ride out, not a wait for a state.
    tokio::time::sleep(OUTAGE).await;
    drop(restore);
    eprintln!("Kafka was down for {:?}", outage_started.elapsed());
    // Paces the load: a few more seconds of it once Kafka is back. What reached the ledger is
    // checked below, polled with a deadline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let truth = load.await.context("load task")??;
    eprintln!("served {} requests, {} refused with 503 while Kafka was down", truth.requests, truth.rejected);
    ensure!(truth.rejected == 0, "the backlog never filled, so nothing should have been refused");

    let session = cql().await?;
    eventually("the ledger to hold everything served during the outage", Duration::from_secs(180), || async {
        Ok(truth.ledger_complete(&session, &keyspace).await?.then_some(()))
    })
    .await?;
    truth.assert_ledger(&session, &keyspace, "after the Kafka outage").await?;
    // Reconcile reads the read model too, written after Layer 2: once the group has committed
    // the end of the topic, which it does only after the whole fold.
    eventually("the consumer group to commit the end of every partition", Duration::from_secs(60), || {
        let (group, topic) = (group.clone(), topic.clone());
        async move { Ok(group_caught_up(&group, &topic, PARTITIONS)?.then_some(())) }
    })
    .await?;
    let (ok, report) = reconcile(consumer.config.as_deref().context("no consumer config")?).await?;
    ensure!(ok, "reconcile found differences:\n{report}");
    consumer.stop().await?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}

/// A key blocked while Kafka is down: the admin call answers 200 (the change is stored), the
/// other gateway refuses the key within the change log's bound (docs/security.md), and once
/// Kafka is back the change reaches the control topic from the change log (the outbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_reaches_every_gateway_while_kafka_is_down() -> Result<()> {
    let _one = SERIAL.lock().await;
    let Fixture { dir, topics, keyspace: ks, mock, .. } = Fixture::start("revoke", 3).await?;
    let config = |id: &str| GatewayConfig {
        budgets: Some(Budgets::fail_open()),
        ..GatewayConfig::tenancy(id, mock.url().unwrap_or_default(), &topics, &ks)
    };
    let gw1 = start_gateway(&dir, &config("gw-revoke-1")).await?;
    let gw2 = start_gateway(&dir, &config("gw-revoke-2")).await?;
    let (url1, url2) = (gw1.url()?.to_owned(), gw2.url()?.to_owned());
    let admin = AdminApi::new(&url1);
    let created = admin.ok("/key/generate", serde_json::json!({})).await?;
    let key = created["key"].as_str().context("key")?.to_owned();
    let token = created["token"].as_str().context("token")?.to_owned();
    let client = reqwest::Client::new();
    ensure!(chat_as(&client, &url2, &key, "gpt-4o-mini", None).await?.status() == 200, "the key works on gateway 2");

    let pid = kafka_pid()?;
    let restore = Restore(pid, Outage::Stopped);
    let status = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status()?;
    ensure!(status.success(), "could not stop Kafka");
    let asked = std::time::Instant::now();
    let blocked = admin.post("/key/block", serde_json::json!({"key": key})).await?;
    let answered = asked.elapsed();
    ensure!(blocked.0 == 200, "a stored block must be answered 200 while Kafka is down: {blocked:?}");
    eprintln!("with Kafka down, the block was answered 200 in {answered:?}");
    let took = eventually("gateway 2 to refuse the blocked key", Duration::from_secs(30), || async {
        let (status, code, _) = error_code(chat_as(&client, &url2, &key, "gpt-4o-mini", None).await?).await;
        Ok((status == 401 && code == "key_blocked").then(|| asked.elapsed()))
    })
    .await?;
    eprintln!("with Kafka down, gateway 2 refused the blocked key {took:?} after the block was sent");
    ensure!(took < Duration::from_secs(3), "revocation took {took:?} with Kafka down; the bound is 3 s");

    drop(restore);
    // The outbox: the block reaches the control topic once Kafka is back.
    let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", unique("control-"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    rdkafka::consumer::Consumer::subscribe(&consumer, &[topics.control.as_str()])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .context("the block never reached the control topic")??;
        let change: serde_json::Value = serde_json::from_slice(rdkafka::Message::payload(&msg).unwrap_or_default())?;
        if change["id"] == token.as_str() {
            break;
        }
    }
    gw1.stop().await?;
    gw2.stop().await?;
    drop(mock);
    Ok(())
}
