//! Limits under concurrency with two gateways: how far rpm limits and budgets can be passed
//! when two replicas serve the same key at once. Each test prints its figures; docs/limits.md
//! quotes them.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tollgate_tests::*;

/// One answer seen by the load: when, from which gateway, status, error code, cost charged.
#[derive(Clone, Debug)]
struct Seen {
    at: Duration,
    gateway: usize,
    status: u16,
    code: String,
    cost: i64,
}

/// Sends requests with `key` over `gateways` (worker `i` uses gateway `i % n` unless `only` is
/// set) until `stop` says so or `limit` passes; returns every answer in completion order.
async fn hammer(
    gateways: &[String],
    key: &str,
    workers: usize,
    max_tokens: u32,
    limit: Duration,
    stop: impl Fn(&[Seen]) -> bool + Send + Sync + 'static,
) -> Result<Vec<Seen>> {
    let client = reqwest::Client::new();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(stop);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, seen, stop, key) = (client.clone(), seen.clone(), stop.clone(), key.to_owned());
        let gw_index = w % gateways.len();
        let gw = gateways[gw_index].clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if t0.elapsed() > limit || stop(&seen.lock().await) {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}],
                                  "max_tokens": max_tokens});
                let resp =
                    client.post(format!("{gw}/v1/chat/completions")).bearer_auth(&key).json(&body).send().await?;
                let cost = resp
                    .headers()
                    .get("x-tollgate-cost-nano-usd")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let (status, code, _) = error_code(resp).await;
                seen.lock().await.push(Seen { at: t0.elapsed(), gateway: gw_index, status, code, cost });
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let out = seen.lock().await.clone();
    Ok(out)
}

/// Waits until at least `margin` seconds are left in the current UTC minute (rpm windows are
/// UTC minutes).
async fn start_of_a_minute(margin: u64) {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() % 60).unwrap_or(0);
    if secs + margin > 58 {
        tokio::time::sleep(Duration::from_secs(61 - secs)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_limits_are_shared_between_two_gateways() -> Result<()> {
    let dir = scratch_dir("rpm-shared")?;
    let topics = Topics::create("rpm", 3).await?;
    let ks = unique("tg_rpm_").replace('-', "_");
    let mock = start_mock(&dir, &[]).await?;
    let config = |id: &str| {
        tenancy_gateway_yaml(id, mock.url().unwrap_or_default(), &topics, &ks, "budgets:\n  when_stale: fail_open\n")
            .replace("gateway:\n", "gateway:\n  replicas: 2\n")
    };
    let gw1 = start_gateway(&dir, &config("gw-rpm-1")).await?;
    let gw2 = start_gateway(&dir, &config("gw-rpm-2")).await?;
    let gateways = vec![gw1.url()?.to_owned(), gw2.url()?.to_owned()];
    let admin = AdminApi::new(&gateways[0]);
    const RPM: usize = 40;
    let even = admin.ok("/key/generate", json!({"rpm_limit": RPM})).await?["key"].as_str().context("key")?.to_owned();
    let lopsided =
        admin.ok("/key/generate", json!({"rpm_limit": RPM})).await?["key"].as_str().context("key")?.to_owned();

    // Even traffic over both gateways: each admits its half of the limit.
    start_of_a_minute(15).await;
    let seen = hammer(&gateways, &even, 8, 1, Duration::from_secs(12), |s| s.len() >= 5 * RPM).await?;
    let admitted = seen.iter().filter(|s| s.status == 200).count();
    let refused = seen.iter().filter(|s| s.status == 429).count();
    ensure!(seen.iter().all(|s| s.status == 200 || s.code == "rpm_limit_exceeded"), "unexpected answers");
    // All traffic on one gateway: it admits only its share (in a minute of its own).
    start_of_a_minute(15).await;
    let seen_one = hammer(&gateways[..1], &lopsided, 4, 1, Duration::from_secs(12), |s| s.len() >= 3 * RPM).await?;
    let admitted_one = seen_one.iter().filter(|s| s.status == 200).count();
    eprintln!(
        "rpm limit {RPM} shared by 2 gateways: even traffic {admitted} admitted, {refused} refused \
         (overshoot {}); all traffic on one gateway: {admitted_one} admitted",
        admitted as i64 - RPM as i64
    );
    ensure!(admitted <= RPM, "two gateways admitted {admitted} requests under an rpm limit of {RPM}");
    ensure!(admitted == RPM, "even traffic should use the whole limit: {admitted} of {RPM}");
    ensure!(admitted_one == RPM / 2, "one gateway admits its share: {admitted_one}");
    gw1.stop().await?;
    gw2.stop().await?;
    drop(mock);
    Ok(())
}

/// DESIGN §3 test 2: a key with budget B hammered through two gateways. Reports the overshoot
/// (money and fraction of B) and the time from the crossing until both gateways refuse, over
/// several trials; checks the ledger equals what the gateways charged, to the nano-dollar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_overshoot_with_two_gateways() -> Result<()> {
    let dir = scratch_dir("budget-overshoot")?;
    let topics = Topics::create("overshoot", 3).await?;
    let ks = unique("tg_over_").replace('-', "_");
    let group = unique("ledger-over-");
    let consumer_cfg = consumer_yaml(&topics.usage, &group, &ks, "{}", 500)
        + &format!("budgets:\n  state_topic: {}\n  heartbeat_interval_ms: 1000\n", topics.budget_state);
    let mock = start_mock(&dir, &[]).await?;
    // Hard budgets fail closed until a consumer's heartbeat arrives.
    let gw1 = start_gateway(&dir, &tenancy_gateway_yaml("gw-over-1", mock.url()?, &topics, &ks, "")).await?;
    let consumer = start_consumer(&dir, &consumer_cfg).await?;
    let gw2 = start_gateway(&dir, &tenancy_gateway_yaml("gw-over-2", mock.url()?, &topics, &ks, "")).await?;
    let gateways = vec![gw1.url()?.to_owned(), gw2.url()?.to_owned()];
    let admin = AdminApi::new(&gateways[0]);
    let session = cql().await?;
    let client = reqwest::Client::new();

    const BUDGET_NANO: i64 = 2_000_000; // 0.002 USD
    const TRIALS: usize = 5;
    let mut overshoots = Vec::new();
    let mut reaction = Vec::new();
    for trial in 0..TRIALS {
        let key =
            admin.ok("/key/generate", json!({"max_budget": 0.002})).await?["key"].as_str().context("key")?.to_owned();
        // Both gateways serve the key (their budget view is fresh) before the clock starts.
        for gw in &gateways {
            eventually("a fresh budget view", Duration::from_secs(30), || async {
                Ok((chat_as(&client, gw, &key, "gpt-4o-mini", None).await?.status() == 200).then_some(()))
            })
            .await?;
        }
        let seen = hammer(&gateways, &key, 8, 20, Duration::from_secs(60), |s| {
            // Stop once both gateways have refused for 300 ms.
            let first_refusal = |g: usize| s.iter().find(|x| x.gateway == g && x.status != 200).map(|x| x.at);
            match (first_refusal(0), first_refusal(1), s.last()) {
                (Some(a), Some(b), Some(last)) => last.at > a.max(b) + Duration::from_millis(300),
                _ => false,
            }
        })
        .await?;
        ensure!(
            seen.iter().all(|s| s.status == 200 || s.code == "key_budget_exceeded"),
            "trial {trial}: unexpected answers {:?}",
            seen.iter().filter(|s| s.status != 200 && s.code != "key_budget_exceeded").take(3).collect::<Vec<_>>()
        );
        let warmup_cost: i64 = 2 * 3_450; // the two warm-up requests (3 prompt + 5 completion tokens)
        let mut spent = warmup_cost;
        let mut crossed_at = None;
        for s in &seen {
            spent += s.cost;
            if crossed_at.is_none() && spent >= BUDGET_NANO {
                crossed_at = Some(s.at);
            }
        }
        let crossed_at = crossed_at.context("the budget was never crossed")?;
        let both_refuse = (0..2)
            .filter_map(|g| seen.iter().find(|x| x.gateway == g && x.status != 200).map(|x| x.at))
            .max()
            .context("a gateway never refused")?;
        let served: i64 = seen.iter().map(|s| s.cost).sum::<i64>() + warmup_cost;
        // The ledger holds exactly what the gateways charged.
        let scope = format!("key/{}", key_hash(&key));
        let ledger = eventually("the ledger to hold every request", Duration::from_secs(60), || async {
            let (spent, _) = scope_total(&session, &ks, &scope).await?;
            Ok((spent == served).then_some(spent))
        })
        .await?;
        overshoots.push(ledger - BUDGET_NANO);
        reaction.push(both_refuse.saturating_sub(crossed_at));
        eprintln!(
            "trial {trial}: {} requests, ledger {ledger} nano-USD of budget {BUDGET_NANO} (overshoot {} = {:.1}%), \
             both gateways refusing {:?} after the crossing",
            seen.len() + 2,
            ledger - BUDGET_NANO,
            (ledger - BUDGET_NANO) as f64 * 100.0 / BUDGET_NANO as f64,
            both_refuse.saturating_sub(crossed_at)
        );
    }
    overshoots.sort_unstable();
    reaction.sort_unstable();
    let pct = |v: i64| v as f64 * 100.0 / BUDGET_NANO as f64;
    eprintln!(
        "budget overshoot over {TRIALS} trials (2 gateways, 8 concurrent clients, ~12,450 nano-USD per request): \
         p50 {} nano-USD ({:.1}% of B), max {} ({:.1}%); crossing to both refusing: p50 {:?}, max {:?}",
        overshoots[TRIALS / 2],
        pct(overshoots[TRIALS / 2]),
        overshoots[TRIALS - 1],
        pct(overshoots[TRIALS - 1]),
        reaction[TRIALS / 2],
        reaction[TRIALS - 1]
    );
    ensure!(overshoots.iter().all(|o| *o >= 0), "a budget was not reached: {overshoots:?}");
    gw1.stop().await?;
    gw2.stop().await?;
    consumer.stop().await?;
    drop(mock);
    Ok(())
}
