//! The fault matrix against deploy/local/cluster (3 brokers, RF 3, min.insync.replicas 2; 3
//! Cassandra nodes, NetworkTopologyStrategy RF 3): each case kills one process under load and
//! checks that the ledger equals, at every scope, exactly what the gateways charged, and reports
//! how long recovery took. `#[ignore]`d: they need the cluster, which tests/cluster/run starts
//! (it sets TOLLGATE_TEST_KAFKA, TOLLGATE_TEST_CASSANDRA, TOLLGATE_TEST_KAFKA_RF and
//! TOLLGATE_TEST_CQL_DC) and stops.

use anyhow::{ensure, Context, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_tests::*;

/// Consumers in the group of every case.
const CONSUMERS: usize = 3;
/// Partitions of the usage topic of every case: two per consumer.
const PARTITIONS: i32 = 6;
/// Load before the fault, and after it.
const BEFORE: Duration = Duration::from_secs(4);
const AFTER: Duration = Duration::from_secs(8);

/// Runs `deploy/local/cluster ARGS` and returns its standard output.
fn cluster(args: &[&str]) -> Result<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/cluster");
    let out = std::process::Command::new(script).args(args).output().context("deploy/local/cluster")?;
    ensure!(out.status.success(), "cluster {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One case: a mock provider, gateways without a database (their answers do not depend on
/// Cassandra), three consumers of one group on a topic of six partitions.
struct Case {
    topic: String,
    ks: String,
    gateways: Vec<Process>,
    consumers: Vec<Option<Process>>,
    _mock: Process,
}

async fn case(name: &str, gateways: usize) -> Result<Case> {
    let dir = scratch_dir(name)?;
    let topic = unique(&format!("usage-{name}-"));
    let ks = unique(&format!("tg_{name}_")).replace('-', "_");
    create_topic(&topic, PARTITIONS).await?;
    let mock = start_mock(&dir, &["--latency-ms", "5"]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let group = unique("ledger-");
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        consumers.push(Some(start_consumer(&dir, &ConsumerConfig::new(&topic, &group, &ks, 2000)).await?));
    }
    let mut started = Vec::new();
    for g in 0..gateways {
        let config = GatewayConfig::new(&format!("gw-{name}-{g}"), &models, &topic, &kafka_bootstrap());
        started.push(start_gateway(&dir, &config).await?);
    }
    Ok(Case { topic, ks, gateways: started, consumers, _mock: mock })
}

impl Case {
    fn urls(&self) -> Result<Vec<String>> {
        self.gateways.iter().map(|g| g.url().map(str::to_owned)).collect()
    }

    /// Waits for the ledger to equal `truth` everywhere; returns how long that took from the
    /// fault and from the end of the load.
    async fn settle(&self, truth: &GroundTruth, fault: Instant, stopped: Instant) -> Result<(Duration, Duration)> {
        let session = cql().await?;
        eventually("the ledger to equal what was charged", Duration::from_secs(240), || async {
            Ok(truth.ledger_complete(&session, &self.ks).await?.then_some(()))
        })
        .await?;
        let took = (fault.elapsed(), stopped.elapsed());
        truth.assert_ledger(&session, &self.ks, "after the fault").await?;
        Ok(took)
    }

    async fn stop(self) -> Result<()> {
        for g in self.gateways {
            g.stop().await?;
        }
        for c in self.consumers.into_iter().flatten() {
            c.stop().await?;
        }
        Ok(())
    }
}

/// Load over `urls` until `stop`; every answer must be a 200 with the price table's cost.
fn load(urls: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Result<GroundTruth>> {
    tokio::spawn(async move { drive_load(&urls, 8, 1_000_000, stop).await })
}

/// One line of figures: `tests/cluster/run` copies the lines that start with FAULT.
fn report(case: &str, truth: &GroundTruth, (from_fault, from_stop): (Duration, Duration), extra: &str) {
    eprintln!(
        "FAULT {case}: {} requests charged, {} rejected (503), 0 failed, ledger exact at every scope; \
         exact {:.1}s after the fault, {:.1}s after the load stopped{extra}",
        truth.requests,
        truth.rejected,
        from_fault.as_secs_f64(),
        from_stop.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs deploy/local/cluster: run tests/cluster/run"]
async fn kill_9_one_of_three_consumers() -> Result<()> {
    let mut c = case("ckill", 1).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(c.urls()?, stop.clone());
    // Paces the load around the fault; what the ledger holds is polled and checked exactly.
    tokio::time::sleep(BEFORE).await;
    let fault = Instant::now();
    c.consumers[1].take().context("consumer 2")?.kill_hard().await?;
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    let truth = running.await??;
    let stopped = Instant::now();
    ensure!(truth.requests > 100, "only {} requests answered", truth.requests);
    let recovery = c.settle(&truth, fault, stopped).await?;
    report("consumer kill -9 (rebalance to 2)", &truth, recovery, "");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs deploy/local/cluster: run tests/cluster/run"]
async fn kill_9_one_cassandra_node_and_bring_it_back() -> Result<()> {
    let c = case("nkill", 1).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(c.urls()?, stop.clone());
    // Paces the load around the fault; what the ledger holds is polled and checked exactly.
    tokio::time::sleep(BEFORE).await;
    let fault = Instant::now();
    cluster(&["kill", "node", "3"])?;
    tokio::time::sleep(AFTER).await;
    cluster(&["start", "node", "3"])?;
    let restarted = Instant::now();
    let node3 = std::env::var("TOLLGATE_TEST_CQL_NODE3").unwrap_or_else(|_| "127.0.0.4:9042".into());
    eventually("node 3 to answer CQL again", Duration::from_secs(240), || async {
        Ok(tokio::net::TcpStream::connect(&node3).await.ok().map(|_| ()))
    })
    .await?;
    let node_back = restarted.elapsed();
    stop.store(true, Ordering::Relaxed);
    let truth = running.await??;
    let stopped = Instant::now();
    ensure!(truth.requests > 100, "only {} requests answered", truth.requests);
    let recovery = c.settle(&truth, fault, stopped).await?;
    let extra = format!("; node 3 answering CQL {:.1}s after its restart", node_back.as_secs_f64());
    report("Cassandra node kill -9 and restart", &truth, recovery, &extra);
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs deploy/local/cluster: run tests/cluster/run"]
async fn kill_9_the_leader_broker_of_busy_partitions() -> Result<()> {
    let c = case("bkill", 1).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(c.urls()?, stop.clone());
    // Paces the load around the fault; what the ledger holds is polled and checked exactly.
    tokio::time::sleep(BEFORE).await;
    // The leader of partition 0; every partition is busy (events are spread over all six).
    let leader = cluster(&["leader", &c.topic, "0"])?;
    ensure!(matches!(leader.as_str(), "1" | "2" | "3"), "no leader for {} partition 0: {leader:?}", c.topic);
    let fault = Instant::now();
    cluster(&["kill", "broker", &leader])?;
    tokio::time::sleep(AFTER).await;
    cluster(&["start", "broker", &leader])?;
    stop.store(true, Ordering::Relaxed);
    let truth = running.await??;
    let stopped = Instant::now();
    ensure!(truth.requests > 100, "only {} requests answered", truth.requests);
    let recovery = c.settle(&truth, fault, stopped).await?;
    report(&format!("leader broker {leader} kill -9"), &truth, recovery, "");
    c.stop().await
}
