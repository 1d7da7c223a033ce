//! Limits under concurrency with two gateways: how far rpm limits and budgets can be passed
//! when two replicas serve the same key at once. Each test prints its figures; docs/limits.md
//! quotes them.

use anyhow::{ensure, Result};
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
                let cost = charged(&resp);
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
        // Waits for a clock boundary, not for a state: nothing is asserted about what happened
        // meanwhile, so a fixed sleep is the right tool.
        tokio::time::sleep(Duration::from_secs(61 - secs)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_limits_are_shared_between_two_gateways() -> Result<()> {
    let fx = Fixture::start("rpm", 3).await?;
    let config = |id: &str| -> Result<GatewayConfig> {
        let mut config = GatewayConfig { budgets: Some(Budgets::fail_open()), ..fx.gateway(id)? };
        config.gateway.replicas = Some(2);
        Ok(config)
    };
    let gw1 = start_gateway(&fx.dir, &config("gw-rpm-1")?).await?;
    let gw2 = start_gateway(&fx.dir, &config("gw-rpm-2")?).await?;
    let gateways = vec![gw1.url()?.to_owned(), gw2.url()?.to_owned()];
    let admin = AdminApi::new(&gateways[0]);
    const RPM: usize = 40;
    let even = admin.new_key(json!({"rpm_limit": RPM})).await?;
    let lopsided = admin.new_key(json!({"rpm_limit": RPM})).await?;

    // Even traffic over both gateways: each admits its half of the limit. Each gateway is
    // hammered until it has refused a few requests, whichever answers faster (a gateway's first
    // request loads the key from Cassandra; the other may be refusing by then).
    start_of_a_minute(30).await;
    let both_refusing =
        |s: &[Seen]| (0..2).all(|g| s.iter().filter(|s| s.gateway == g && s.status == 429).count() >= 5);
    let seen = hammer(&gateways, &even, 8, 1, Duration::from_secs(25), both_refusing).await?;
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
    drop(fx);
    Ok(())
}

/// What one mode of budget enforcement did over several trials.
struct Overshoot {
    /// Ledger total minus the budget, per trial (negative: budget left unused).
    overshoot: Vec<i64>,
    /// From the first refusal to both gateways refusing, per trial.
    spread: Vec<Duration>,
    /// Requests served per trial.
    served: Vec<usize>,
}

/// The budget overshoot test (docs/design.md §5.4): a key with budget B hammered through two
/// gateways by 8 clients; reports the overshoot (money and fraction of B) and the time from the
/// first refusal until both gateways refuse, over several trials, with credit leases (the default)
/// and, for comparison, with convergence through budget push-back alone (`budgets.leases: false`).
/// Checks the ledger equals what the gateways charged, to the nano-dollar, and that with leases the
/// budget is passed by at most one partially covered request per gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_overshoot_with_two_gateways() -> Result<()> {
    const BUDGET_NANO: i64 = 2_000_000; // 0.002 USD
    const PER_REQUEST: i64 = 12_450; // 3 prompt + 20 completion tokens of gpt-4o-mini
    let pct = |v: i64| v as f64 * 100.0 / BUDGET_NANO as f64;
    let mut report = Vec::new();
    for (leases, trials) in [(true, 5), (false, 3)] {
        let mut r = overshoot_trials(leases, trials, BUDGET_NANO).await?;
        r.overshoot.sort_unstable();
        r.spread.sort_unstable();
        let line = format!(
            "leases {leases}: budget overshoot over {trials} trials (2 gateways, 8 concurrent clients, \
             {PER_REQUEST} nano-USD per request): p50 {} nano-USD ({:.1}% of B), max {} ({:.1}%), min {} ({:.1}%); \
             requests served {:?}; first refusal to both refusing: p50 {:?}, max {:?}",
            r.overshoot[trials / 2],
            pct(r.overshoot[trials / 2]),
            r.overshoot[trials - 1],
            pct(r.overshoot[trials - 1]),
            r.overshoot[0],
            pct(r.overshoot[0]),
            r.served,
            r.spread[trials / 2],
            r.spread[trials - 1]
        );
        eprintln!("{line}");
        report.push(line);
        if leases {
            // Leases: at most one partially covered request per gateway goes past B.
            ensure!(
                r.overshoot.iter().all(|o| *o <= 2 * PER_REQUEST),
                "with leases the budget was passed by more than two requests: {:?}",
                r.overshoot
            );
            // And the budget is used, bar what fits in less than a worst case per gateway.
            ensure!(r.overshoot.iter().all(|o| *o > -BUDGET_NANO / 10), "budget left unused: {:?}", r.overshoot);
        } else {
            ensure!(r.overshoot.iter().all(|o| *o >= 0), "a budget was not reached: {:?}", r.overshoot);
        }
    }
    eprintln!("{}", report.join("\n"));
    Ok(())
}

async fn overshoot_trials(leases: bool, trials: usize, budget_nano: i64) -> Result<Overshoot> {
    let fx = Fixture::start("overshoot", 3).await?;
    let consumer_cfg = ConsumerConfig {
        budgets: Some(ConsumerBudgets {
            state_topic: Some(fx.topics.budget_state.clone()),
            heartbeat_interval_ms: Some(1000),
            ..ConsumerBudgets::default()
        }),
        ..fx.consumer(500)
    };
    let gateway_cfg = |id: &str| -> Result<GatewayConfig> {
        Ok(GatewayConfig { budgets: Some(Budgets { leases: Some(leases), ..Budgets::default() }), ..fx.gateway(id)? })
    };
    // Hard budgets fail closed until a consumer's heartbeat arrives.
    let gw1 = start_gateway(&fx.dir, &gateway_cfg("gw-over-1")?).await?;
    let consumer = start_consumer(&fx.dir, &consumer_cfg).await?;
    let gw2 = start_gateway(&fx.dir, &gateway_cfg("gw-over-2")?).await?;
    let gateways = vec![gw1.url()?.to_owned(), gw2.url()?.to_owned()];
    let admin = AdminApi::new(&gateways[0]);
    let session = cql().await?;
    let client = reqwest::Client::new();
    let usd = budget_nano as f64 / 1e9;

    let mut out = Overshoot { overshoot: Vec::new(), spread: Vec::new(), served: Vec::new() };
    for trial in 0..trials {
        let key = admin.new_key(json!({"max_budget": usd})).await?;
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
        let refusals: Vec<Duration> =
            (0..2).filter_map(|g| seen.iter().find(|x| x.gateway == g && x.status != 200).map(|x| x.at)).collect();
        ensure!(refusals.len() == 2, "trial {trial}: a gateway never refused");
        let spread =
            refusals.iter().max().copied().unwrap_or_default() - refusals.iter().min().copied().unwrap_or_default();
        let served: i64 = seen.iter().map(|s| s.cost).sum::<i64>() + warmup_cost;
        // The ledger holds exactly what the gateways charged.
        let scope = format!("key/{}", key_token(&key));
        let ledger = eventually("the ledger to hold every request", Duration::from_secs(60), || async {
            let (spent, _) = scope_total(&session, &fx.keyspace, &scope).await?;
            Ok((spent == served).then_some(spent))
        })
        .await?;
        let requests = seen.iter().filter(|s| s.status == 200).count() + 2;
        eprintln!(
            "leases {leases}, trial {trial}: {requests} requests served, ledger {ledger} nano-USD of budget \
             {budget_nano} (overshoot {} = {:.1}%), first refusal to both refusing {spread:?}",
            ledger - budget_nano,
            (ledger - budget_nano) as f64 * 100.0 / budget_nano as f64,
        );
        out.overshoot.push(ledger - budget_nano);
        out.spread.push(spread);
        out.served.push(requests);
    }
    gw1.stop().await?;
    gw2.stop().await?;
    consumer.stop().await?;
    drop(fx);
    Ok(out)
}
