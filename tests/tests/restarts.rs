//! Restarts cost nothing: a clean stop leaves no acknowledged event to replay, a crash replays
//! only what follows the spool's persisted acknowledgement watermark, and rolling restarts under
//! load keep the ledger equal to what was served.

use anyhow::{ensure, Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_tests::*;

/// Clients that keep sending to whatever address `target` holds (it changes when the gateway is
/// restarted); a request that cannot be sent is tried again a moment later. Counts every 200 in
/// `progress` as it comes; returns the request id and cost of every 200.
fn start_load(
    target: Arc<Mutex<String>>,
    workers: usize,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<(String, i64)>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let (client, target, stop, progress) = (client.clone(), target.clone(), stop.clone(), progress.clone());
                tokio::spawn(async move {
                    let mut answered = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let gw = target.lock().map(|t| t.clone()).unwrap_or_default();
                        let (body, _, _) = request_body(w * 1_000_000 + i);
                        let (key, _) = TENANT_KEYS[(w + i) % TENANT_KEYS.len()];
                        let sent = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body).send();
                        let Ok(resp) = sent.await else {
                            // Paces the retries while the gateway restarts; decides nothing.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        if resp.status() != 200 {
                            continue;
                        }
                        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                        if let (Some(id), Some(cost)) = (header("x-request-id"), header("x-tollgate-cost-nano-usd")) {
                            if resp.bytes().await.is_ok() {
                                answered.push((id, cost.parse().unwrap_or(-1)));
                                progress.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    answered
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all
    })
}

/// `/health/readiness`'s account of the spool replay: events found at start-up.
async fn replay_found(gw: &str) -> Result<u64> {
    let v: serde_json::Value = reqwest::get(format!("{gw}/health/readiness")).await?.json().await?;
    v["spool_replay"]["found"].as_u64().context("no spool_replay in readiness")
}

/// Waits until the load has had `at_least` answers in all.
async fn answered_at_least(progress: &AtomicUsize, at_least: usize) -> Result<()> {
    eventually(&format!("{at_least} answered requests"), Duration::from_secs(60), || async {
        Ok((progress.load(Ordering::Relaxed) >= at_least).then_some(()))
    })
    .await
}

/// Spool files other than the lock.
fn spool_files(dir: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock")
        .collect())
}

/// Every answered request is in the event ledger once, nothing else is, and the sums agree.
async fn assert_ledger(ks: &str, answered: &[(String, i64)]) -> Result<()> {
    let session = cql().await?;
    let waited = eventually("every answered request in the ledger", Duration::from_secs(90), || async {
        let (count, _) = event_ledger_totals(&session, ks).await?;
        Ok((count >= answered.len() as i64).then_some(()))
    })
    .await;
    let rows = session.query_unpaged(format!("SELECT body FROM {ks}.usage_events"), &[]).await?.into_rows_result()?;
    let mut costs: HashMap<String, i64> = HashMap::new();
    for row in rows.rows::<(Option<String>,)>()? {
        let event = tollgate_schemas::UsageEvent::decode(row?.0.unwrap_or_default().as_bytes())?;
        ensure!(costs.insert(event.request_id.clone(), event.cost_nano_usd.0).is_none(), "an event twice");
    }
    let missing: Vec<&String> = answered.iter().filter(|(id, _)| !costs.contains_key(id)).map(|(id, _)| id).collect();
    ensure!(
        missing.is_empty(),
        "{} of {} answered requests have no event ({waited:?}), e.g. {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(5)]
    );
    for (id, cost) in answered {
        ensure!(costs.get(id) == Some(cost), "request {id}: ledger {:?}, answered {cost}", costs.get(id));
    }
    ensure!(costs.len() == answered.len(), "{} events for {} answered requests", costs.len(), answered.len());
    Ok(())
}

struct Setup {
    dir: std::path::PathBuf,
    spool: std::path::PathBuf,
    config: GatewayConfig,
    topic: String,
    ks: String,
    _mock: Process,
    consumer: Process,
}

async fn setup(name: &str) -> Result<Setup> {
    let dir = scratch_dir(name)?;
    let topic = unique(&format!("usage-{name}-"));
    let ks = unique(&format!("tg_{name}_")).replace('-', "_");
    create_topic(&topic, 3).await?;
    let mock = start_mock(&dir, &["--latency-ms", "5"]).await?;
    let spool = dir.join("spool");
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let config = GatewayConfig {
        spool: Some(Spool { dir: spool.clone() }),
        ..GatewayConfig::new(&format!("gw-{name}"), &models, &topic, &kafka_bootstrap())
    };
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &ks, 2000)).await?;
    Ok(Setup { dir, spool, config, topic, ks, _mock: mock, consumer })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_stop_leaves_nothing_to_replay_and_a_crash_little() -> Result<()> {
    let s = setup("restart").await?;
    let target = Arc::new(Mutex::new(String::new()));

    // 1. Load, then SIGTERM: the spool is empty and the next start replays nothing.
    let gateway = start_gateway(&s.dir, &s.config).await?;
    *target.lock().map_err(|_| anyhow::anyhow!("lock"))? = gateway.url()?.to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let load = start_load(target.clone(), 8, stop.clone(), progress.clone());
    // Paces the load (some seconds of it before the stop); that it got through is polled.
    tokio::time::sleep(Duration::from_secs(4)).await;
    answered_at_least(&progress, 101).await?;
    gateway.stop().await?;
    stop.store(true, Ordering::Relaxed);
    let mut answered = load.await?;
    ensure!(answered.len() > 100, "only {} answered", answered.len());
    let left = spool_files(&s.spool)?;
    ensure!(left.is_empty(), "a clean stop left {left:?} in the spool");
    let gateway = start_gateway(&s.dir, &s.config).await?;
    ensure!(replay_found(gateway.url()?).await? == 0, "a start after a clean stop replays");

    // 2. Load for a few seconds, then kill -9: the replay is bounded by what followed the last
    // persisted watermark (200 ms of traffic and what Kafka had not acknowledged), never the
    // whole segment.
    *target.lock().map_err(|_| anyhow::anyhow!("lock"))? = gateway.url()?.to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let load = start_load(target.clone(), 8, stop.clone(), progress.clone());
    let started = Instant::now();
    // Paces the load: the replay bound below scales with the rate measured over it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    answered_at_least(&progress, 1).await?;
    // The clients finish the requests they have in flight; the gateway dies as soon as every
    // answered request's event is durable (its group commit written and synced: the gauge of
    // events admitted and not yet durable is 0). What a kill inside that window costs is the
    // documented crash window (docs/design.md §3.6); what this checks is that nothing durable is
    // lost and that the replay stays bounded.
    stop.store(true, Ordering::Relaxed);
    let crashed = load.await?;
    let before_kill = started.elapsed();
    let metrics = format!("{}/metrics", gateway.url()?);
    let synced = Instant::now();
    eventually("every answered event durable", Duration::from_secs(30), || async {
        let text = reqwest::get(&metrics).await?.text().await?;
        Ok(text.lines().any(|l| l.trim() == "tollgate_usage_backlog_events 0").then_some(()))
    })
    .await?;
    eprintln!("answered events durable {:?} after the last answer", synced.elapsed());
    gateway.kill_hard().await?;
    let rate = crashed.len() as f64 / before_kill.as_secs_f64();
    answered.extend(crashed.iter().cloned());
    let gateway = start_gateway(&s.dir, &s.config).await?;
    let replayed = replay_found(gateway.url()?).await?;
    let bound = (rate * 1.0).ceil() as u64 + 50;
    eprintln!("kill -9 after {} answered requests ({rate:.0}/s): {replayed} replayed (bound {bound})", crashed.len());
    ensure!(replayed <= bound, "replayed {replayed} events after a crash; the bound is {bound}");
    assert_ledger(&s.ks, &answered).await?;
    gateway.stop().await?;
    ensure!(spool_files(&s.spool)?.is_empty(), "the replayed segments were not deleted");
    s.consumer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_rolling_restarts_under_load_keep_the_ledger_exact() -> Result<()> {
    let s = setup("rolling").await?;
    let target = Arc::new(Mutex::new(String::new()));
    let mut gateway = start_gateway(&s.dir, &s.config).await?;
    *target.lock().map_err(|_| anyhow::anyhow!("lock"))? = gateway.url()?.to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let load = start_load(target.clone(), 8, stop.clone(), progress.clone());
    let mut replayed = 0;
    for _ in 0..3 {
        // Paces the load between restarts; that each gateway served some of it is polled.
        let before = progress.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        answered_at_least(&progress, before + 50).await?;
        gateway.stop().await?;
        gateway = start_gateway(&s.dir, &s.config).await?;
        replayed += replay_found(gateway.url()?).await?;
        *target.lock().map_err(|_| anyhow::anyhow!("lock"))? = gateway.url()?.to_owned();
    }
    let before = progress.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    answered_at_least(&progress, before + 50).await?;
    gateway.stop().await?;
    stop.store(true, Ordering::Relaxed);
    let answered = load.await?;
    assert_ledger(&s.ks, &answered).await?;
    // Every record on the topic: events, and copies of events sent twice.
    let events = collect_all(&s.topic).await?;
    let distinct: HashSet<&String> = events.iter().collect();
    let duplicates = events.len() - distinct.len();
    eprintln!(
        "3 rolling restarts: {} answered, {} records on the topic, {duplicates} duplicates, {replayed} replayed",
        answered.len(),
        events.len()
    );
    ensure!(replayed == 0, "clean restarts replayed {replayed} events");
    ensure!(duplicates == 0, "clean restarts republished {duplicates} events");
    s.consumer.stop().await?;
    Ok(())
}

/// A replay many times larger than the window of records it keeps in flight (8,192) reaches
/// Kafka whole, once each, and leaves an empty spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_larger_than_its_window_reaches_kafka_whole() -> Result<()> {
    const EVENTS: u64 = 40_000;
    let dir = scratch_dir("bigreplay")?;
    let topic = unique("usage-bigreplay-");
    create_topic(&topic, 3).await?;
    let spool = dir.join("spool");
    let filled = std::process::Command::new(binaries()?.join("tollgate-spool-fill"))
        .args(["--dir", &spool.display().to_string(), "--events", &EVENTS.to_string(), "--segment-bytes", "4000000"])
        .output()?;
    ensure!(filled.status.success(), "spool-fill failed: {}", String::from_utf8_lossy(&filled.stderr));
    let mock = start_mock(&dir, &[]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let config = GatewayConfig {
        spool: Some(Spool { dir: spool.clone() }),
        ..GatewayConfig::new("gw-bigreplay", &models, &topic, &kafka_bootstrap())
    };
    let gateway = start_gateway(&dir, &config).await?;
    let url = gateway.url()?.to_owned();
    ensure!(replay_found(&url).await? == EVENTS, "the gateway did not find the {EVENTS} spooled events");
    let done = eventually("the replay to finish", Duration::from_secs(180), || async {
        let v: serde_json::Value = reqwest::get(format!("{url}/health/readiness")).await?.json().await?;
        Ok((v["spool_replay"]["in_progress"] == false).then_some(v))
    })
    .await?;
    ensure!(done["spool_replay"]["replayed"] == EVENTS, "replay ended early: {done}");
    gateway.stop().await?;
    let left = spool_files(&spool)?;
    ensure!(left.is_empty(), "the replayed segments were not deleted: {left:?}");
    let events = collect_all(&topic).await?;
    let distinct: HashSet<&String> = events.iter().collect();
    eprintln!("replayed {EVENTS} events: {} records on the topic, {} distinct", events.len(), distinct.len());
    ensure!(distinct.len() as u64 == EVENTS, "{} distinct events on the topic for {EVENTS} spooled", distinct.len());
    Ok(())
}

/// The event ids of every record of `topic`.
async fn collect_all(topic: &str) -> Result<Vec<String>> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", unique("count-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut ids = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            Ok(Ok(m)) => {
                let event = tollgate_schemas::UsageEvent::decode(m.payload().unwrap_or_default())?;
                ids.push(event.event_id.to_string());
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Ok(ids),
        }
    }
}
