//! Exactly-once metering under faults, on real Kafka and Cassandra: every test compares the
//! ledger with the ground truth of what the gateways served, at every scope, to the nano-dollar.

use anyhow::{ensure, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_tests::*;

const PARTITIONS: i32 = 4;

fn gateway_config(id: &str, mock: &str, topic: &str, bootstrap: &str, spool: &std::path::Path) -> GatewayConfig {
    let mut config = GatewayConfig {
        spool: Some(Spool { dir: spool.to_path_buf() }),
        ..GatewayConfig::new(id, &[model_entry("gpt-4o-mini", &format!("{mock}/v1"))], topic, bootstrap)
    };
    if let Some(kafka) = &mut config.kafka {
        kafka.producer_properties = properties(&[("reconnect.backoff.max.ms", "500")]);
    }
    config
}

/// A consumer with static group membership, so a restarted instance takes its partitions back at
/// once instead of waiting for the group to notice the dead one.
fn consumer_config(topic: &str, group: &str, instance: &str, keyspace: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(topic, group, keyspace, 200);
    config.kafka.consumer_properties = properties(&[("group.instance.id", instance), ("session.timeout.ms", "10000")]);
    config
}

/// Issue test 1: two gateways under load, the consumer SIGKILLed 20+ times at random moments,
/// duplicates injected; afterwards the ledger equals what was served and reconcile passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_killed_twenty_times_with_duplicates_still_reconciles() -> Result<()> {
    let dir = scratch_dir("chaos")?;
    let topic = unique("usage-chaos-");
    let keyspace = unique("chaos_");
    let group = unique("ledger-");
    create_topic(&topic, PARTITIONS).await?;
    let mock = start_mock(&dir, &["--latency-ms", "1", "--workers", "2"]).await?;
    let mut gateways = Vec::new();
    for id in ["gw-a", "gw-b"] {
        let spool = dir.join(format!("spool-{id}"));
        gateways.push(start_gateway(&dir, &gateway_config(id, mock.url()?, &topic, &kafka_bootstrap(), &spool)).await?);
    }
    let urls: Vec<String> = gateways.iter().map(|g| g.url().map(str::to_owned)).collect::<Result<_>>()?;
    let config = consumer_config(&topic, &group, "ledger-0", &keyspace);
    let mut consumer = start_consumer(&dir, &config).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (urls, stop) = (urls.clone(), stop.clone());
        async move { drive_load(&urls, 4, 1_000_000, stop).await }
    });
    let mut kills = 0;
    let started = Instant::now();
    while kills < 22 {
        // Chaos pacing: kills at random moments of the load. Nothing is asserted until the load
        // is over; the ledger is then polled with a deadline.
        tokio::time::sleep(Duration::from_millis(150 + fastrand::u64(0..900))).await;
        consumer.kill_hard().await?;
        kills += 1;
        if kills % 7 == 0 {
            republish_some(&topic, 25).await?;
        }
        consumer = start_consumer(&dir, &config).await?;
    }
    stop.store(true, Ordering::Relaxed);
    let truth = load.await.context("load task")??;
    ensure!(truth.requests > 200, "too little load to mean anything: {} requests", truth.requests);
    eprintln!("served {} requests over {:?} with {kills} consumer kills", truth.requests, started.elapsed());
    republish_some(&topic, 40).await?;

    let session = cql().await?;
    eventually("the ledger to hold every served request", Duration::from_secs(120), || async {
        Ok(truth.ledger_complete(&session, &keyspace).await?.then_some(()))
    })
    .await?;
    eventually("the consumer group to commit the end of every partition", Duration::from_secs(60), || {
        let (group, topic) = (group.clone(), topic.clone());
        async move { Ok(group_caught_up(&group, &topic, PARTITIONS)?.then_some(())) }
    })
    .await?;
    truth.assert_ledger(&session, &keyspace, "after 22 consumer kills and duplicates").await?;
    let (ok, report) = reconcile(consumer.config.as_deref().context("no consumer config")?).await?;
    ensure!(ok, "reconcile found differences:\n{report}");
    eprintln!("{report}");
    consumer.stop().await?;
    for g in gateways {
        g.stop().await?;
    }
    drop(mock);
    Ok(())
}

/// Issue test 4: a gateway SIGKILLed while its spool holds events Kafka never acknowledged; after
/// a restart every event reaches the ledger exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_killed_with_unsent_events_delivers_them_after_restart() -> Result<()> {
    let dir = scratch_dir("spool-kill")?;
    let topic = unique("usage-spool-");
    let keyspace = unique("spool_");
    let group = unique("ledger-");
    create_topic(&topic, PARTITIONS).await?;
    let mock = start_mock(&dir, &[]).await?;
    let spool = dir.join("spool");
    // Kafka unreachable: a port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let unreachable = format!("127.0.0.1:{dead}");
    let gateway = start_gateway(&dir, &gateway_config("gw-spool", mock.url()?, &topic, &unreachable, &spool)).await?;
    let truth = drive_load(&[gateway.url()?.to_owned()], 8, 120, Arc::new(AtomicBool::new(false))).await?;
    ensure!(truth.requests == 120 && truth.rejected == 0, "{truth:?}");
    let metrics_url = format!("{}/metrics", gateway.url()?);
    eventually("every event to be in the spool", Duration::from_secs(30), || {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(url).await?.text().await?;
            let pending = text
                .lines()
                .find_map(|l| l.strip_prefix("tollgate_spool_pending_events "))
                .and_then(|v| v.trim().parse::<f64>().ok());
            Ok((pending == Some(120.0)).then_some(()))
        }
    })
    .await?;
    gateway.kill_hard().await?;

    // Restart on the real Kafka with the same spool: the 120 events are sent now.
    let gateway =
        start_gateway(&dir, &gateway_config("gw-spool", mock.url()?, &topic, &kafka_bootstrap(), &spool)).await?;
    let consumer = start_consumer(&dir, &consumer_config(&topic, &group, "ledger-0", &keyspace)).await?;
    let session = cql().await?;
    eventually("the replayed events to reach the ledger", Duration::from_secs(90), || async {
        Ok(truth.ledger_complete(&session, &keyspace).await?.then_some(()))
    })
    .await?;
    truth.assert_ledger(&session, &keyspace, "after the gateway restart").await?;
    ensure!(gateway.log().contains("replaying usage events left in the spool"), "no replay in the gateway log");
    consumer.stop().await?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}

/// Issue test 5: a consumer frozen (SIGSTOP) between reading ledger rows and writing them, while
/// another consumer takes its partitions and folds the same events; when it wakes, its stale
/// conditional writes are rejected by the applied-offset fence instead of counting twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_consumer_cannot_write_stale_totals() -> Result<()> {
    let dir = scratch_dir("fence")?;
    let topic = unique("usage-fence-");
    let keyspace = unique("fence_");
    let group = unique("ledger-");
    create_topic(&topic, PARTITIONS).await?;
    let mock = start_mock(&dir, &[]).await?;
    let gateway =
        start_gateway(&dir, &gateway_config("gw-fence", mock.url()?, &topic, &kafka_bootstrap(), &dir.join("spool")))
            .await?;
    let truth = drive_load(&[gateway.url()?.to_owned()], 8, 200, Arc::new(AtomicBool::new(false))).await?;

    // Dynamic membership with a short session, so the group notices the frozen one quickly.
    let mut config = ConsumerConfig::new(&topic, &group, &keyspace, 200);
    config.kafka.consumer_properties = properties(&[("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")]);
    let stale =
        start_consumer_with_env(&dir, &config, &[("TOLLGATE_FAULT_PAUSE_BEFORE_LEDGER_WRITE_MS", "4000")]).await?;
    eventually("the first consumer to hold stale row states", Duration::from_secs(60), || async {
        Ok(stale.log().contains("pausing before ledger writes").then_some(()))
    })
    .await?;
    stale.signal("STOP")?;

    let fresh = start_consumer(&dir, &config).await?;
    let session = cql().await?;
    eventually("the second consumer to fold everything", Duration::from_secs(90), || async {
        Ok(truth.ledger_complete(&session, &keyspace).await?.then_some(()))
    })
    .await?;
    stale.signal("CONT")?;
    eventually("the woken consumer's stale writes to be refused", Duration::from_secs(60), || async {
        Ok(stale.log().contains("ledger bucket changed by another writer").then_some(()))
    })
    .await?;
    // Give it time to do whatever else it would do, then check nothing counted twice.
    eventually("the group to commit the end of every partition", Duration::from_secs(60), || {
        let (group, topic) = (group.clone(), topic.clone());
        async move { Ok(group_caught_up(&group, &topic, PARTITIONS)?.then_some(())) }
    })
    .await?;
    truth.assert_ledger(&session, &keyspace, "after the frozen consumer woke up").await?;
    let (ok, report) = reconcile(fresh.config.as_deref().context("no consumer config")?).await?;
    ensure!(ok, "reconcile found differences:\n{report}");
    stale.stop().await.ok();
    fresh.stop().await?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
