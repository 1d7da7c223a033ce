//! Stopping loses nothing and hangs nothing: SIGTERM or SIGINT under load lets requests in
//! flight finish and every answered request's usage event reach the ledger; a full embedded
//! log answers 503 at once instead of hanging workers.

use anyhow::{ensure, Context, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_tests::*;

/// Sends chat completions from `workers` tasks until the gateway stops answering, counting every
/// 200 in `progress` as it comes; returns the request ids and costs of every 200.
async fn load_until_gone(
    gw: String,
    key: &'static str,
    workers: usize,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicUsize>,
) -> Vec<(String, i64)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, gw, stop, progress) = (client.clone(), gw.clone(), stop.clone(), progress.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (body, _, _) = request_body(w * 100_000 + i);
                    let sent = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body).send();
                    let Ok(resp) = sent.await else { break }; // the gateway is gone
                    if resp.status() != 200 {
                        continue;
                    }
                    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    if let (Some(id), Some(cost)) = (header("x-request-id"), header("x-tollgate-cost-nano-usd")) {
                        // A 200 whose body is cut short still counts: its event was published.
                        let _ = resp.bytes().await;
                        answered.push((id, cost.parse().unwrap_or(-1)));
                        progress.fetch_add(1, Ordering::Relaxed);
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
}

async fn stop_under_load(signal: &str) -> Result<()> {
    let dir = scratch_dir("shutdown")?;
    let topic = unique("usage-shutdown-");
    let ks = unique("tg_shutdown_").replace('-', "_");
    let group = unique("ledger-");
    create_topic(&topic, 3).await?;
    // 200 ms per answer: at any moment most of the 16 workers have a request in flight.
    let mock = start_mock(&dir, &["--latency-ms", "200"]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let gateway = start_gateway(&dir, &GatewayConfig::new("gw-stop", &models, &topic, &kafka_bootstrap())).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &group, &ks, 500)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let url = gateway.url()?.to_owned();
    let load = tokio::spawn(load_until_gone(url, TENANT_KEYS[0].0, 16, stop.clone(), progress.clone()));
    // The signal must find the load under way (more than 50 answered, and requests in flight).
    eventually("the load to be under way", Duration::from_secs(60), || async {
        Ok((progress.load(Ordering::Relaxed) > 50).then_some(()))
    })
    .await?;
    let pid = gateway.child.id().context("gateway pid")?;
    let asked = Instant::now();
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
    ensure!(status.success(), "kill -{signal}");
    let mut gateway = gateway;
    let exit =
        tokio::time::timeout(Duration::from_secs(30), gateway.child.wait()).await.context("no exit in 30 s")??;
    let took = asked.elapsed();
    stop.store(true, Ordering::Relaxed);
    let answered = load.await?;
    ensure!(exit.success(), "exit status {exit}; log:\n{}", gateway.log());
    ensure!(took < Duration::from_secs(25), "SIGTERM to exit took {took:?}");
    ensure!(answered.len() > 50, "only {} requests answered", answered.len());
    let log = gateway.log();
    ensure!(log.contains("usage events flushed"), "no flush in the log:\n{log}");

    // Every answered request is in the event ledger, once, and nothing else is.
    let session = cql().await?;
    let want: i64 = answered.iter().map(|(_, c)| c).sum();
    eventually("every answered request in the ledger", Duration::from_secs(60), || async {
        let (count, _) = event_ledger_totals(&session, &ks).await?;
        Ok((count >= answered.len() as i64).then_some(()))
    })
    .await?;
    let rows = session.query_unpaged(format!("SELECT body FROM {ks}.usage_events"), &[]).await?.into_rows_result()?;
    let mut ids = HashSet::new();
    let mut sum = 0;
    for row in rows.rows::<(Option<String>,)>()? {
        let event = tollgate_schemas::UsageEvent::decode(row?.0.unwrap_or_default().as_bytes())?;
        sum += event.cost_nano_usd.0;
        ensure!(ids.insert(event.request_id.clone()), "request {} twice in the ledger", event.request_id);
    }
    let missing: Vec<_> = answered.iter().filter(|(id, _)| !ids.contains(id)).collect();
    ensure!(
        missing.is_empty(),
        "{} answered requests have no event: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    ensure!(ids.len() == answered.len(), "{} events for {} answered requests", ids.len(), answered.len());
    ensure!(sum == want, "ledger {sum} != answered {want}");
    eprintln!("{signal}: {} answered requests, all in the ledger; exit after {took:?}", answered.len());
    consumer.stop().await?;
    drop(mock);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_drains_and_every_answer_reaches_the_ledger() -> Result<()> {
    stop_under_load("TERM").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigint_is_as_graceful_as_sigterm() -> Result<()> {
    stop_under_load("INT").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_embedded_log_answers_503_instead_of_hanging() -> Result<()> {
    let dir = scratch_dir("log-full")?;
    let db = dir.join("tollgate.db");
    let mock = start_mock(&dir, &[]).await?;
    let config = GatewayConfig {
        model_list: vec![model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))],
        prices: [("gpt-4o-mini".to_owned(), Price::TEST)].into(),
        virtual_keys: tenant_keys(),
        embedded: Some(Embedded { path: db.clone(), max_size_bytes: Some(262_144) }),
        ..GatewayConfig::default()
    };
    let gateway = start_gateway(&dir, &config).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let mut refused = None;
    let mut answered = 0;
    for i in 0..5_000 {
        let (body, _, _) = request_body(i);
        // A request that hangs fails here on the client's 10 s timeout.
        let resp =
            client.post(format!("{gw}/v1/chat/completions")).bearer_auth(TENANT_KEYS[0].0).json(&body).send().await?;
        if resp.status() == 200 {
            answered += 1;
            continue;
        }
        let (status, code, v) = error_code(resp).await;
        ensure!(status == 503 && code == "metering_unavailable", "request {i}: {status} {v}");
        refused = Some(i);
        break;
    }
    ensure!(refused.is_some(), "the log never filled after {answered} requests");
    // Still refusing at once, still alive.
    let started = Instant::now();
    let (status, code, _) = error_code(chat_as(&client, &gw, TENANT_KEYS[0].0, "gpt-4o-mini", None).await?).await;
    ensure!(status == 503 && code == "metering_unavailable", "{status} {code}");
    ensure!(started.elapsed() < Duration::from_secs(2), "refusal took {:?}", started.elapsed());
    ensure!(client.get(format!("{gw}/health")).send().await?.status() == 200);
    eprintln!("log full after {answered} answered requests");
    // A stop with the log full is bounded too (the flush gives up; the log is durable).
    let asked = Instant::now();
    gateway.stop().await?;
    ensure!(asked.elapsed() < Duration::from_secs(25), "stop took {:?}", asked.elapsed());
    drop(mock);
    Ok(())
}
