//! Issue test 3: Kafka frozen for 30 s during load. The documented behaviour while it is down:
//! the gateway keeps serving, holding events in its spool and producer queue (requests are
//! refused with 503 only when that backlog is full); afterwards nothing is lost or doubled.
//!
//! Kafka is frozen with SIGSTOP (the broker process of `deploy/local`, found by its pid file):
//! connections stay open and every request to it hangs, the harder case for clients than a
//! refused connection. This test is alone in its binary so no other test sees the outage.

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

/// Sends SIGCONT to Kafka when dropped, so a failing test never leaves it frozen.
struct Thaw(u32);
impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg("-CONT").arg(self.0.to_string()).status();
    }
}

fn gateway_config(mock: &str, topic: &str, spool: &std::path::Path) -> String {
    let extra = format!("spool:\n  dir: {}\n", spool.display());
    gateway_yaml(
        "gw-outage",
        &[model_entry("gpt-4o-mini", &format!("{mock}/v1"), "")],
        topic,
        &kafka_bootstrap(),
        &extra,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "known failure: after the frozen broker fences itself, librdkafka can hold some events in flight for about 3 minutes before timing them out (they are then sent again from the spool); the 180 s wait here runs out first"]
async fn kafka_down_for_thirty_seconds_loses_nothing() -> Result<()> {
    let dir = scratch_dir("outage")?;
    let topic = unique("usage-outage-");
    let keyspace = unique("outage_");
    let group = unique("ledger-");
    create_topic(&topic, PARTITIONS).await?;
    // About 100 requests a second: a steady load that the outage turns into a 3,000-event backlog.
    let mock = start_mock(&dir, &["--latency-ms", "20"]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic, &dir.join("spool"))).await?;
    let consumer = start_consumer(&dir, &consumer_yaml(&topic, &group, &keyspace, "{}", 2000)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let urls = vec![gateway.url()?.to_owned()];
    let load = tokio::spawn({
        let stop = stop.clone();
        async move { drive_load(&urls, 2, 1_000_000, stop).await }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = kafka_pid()?;
    let thaw = Thaw(pid);
    let status = std::process::Command::new("kill").arg("-STOP").arg(pid.to_string()).status()?;
    ensure!(status.success(), "could not freeze Kafka");
    let outage_started = std::time::Instant::now();
    tokio::time::sleep(OUTAGE).await;
    drop(thaw);
    eprintln!("Kafka was frozen for {:?}", outage_started.elapsed());
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
    let (ok, report) = reconcile(consumer.config.as_deref().context("no consumer config")?).await?;
    ensure!(ok, "reconcile found differences:\n{report}");
    consumer.stop().await?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
