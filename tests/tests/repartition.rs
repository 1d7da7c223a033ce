//! Repartitioning the usage topic (docs/design.md §4.10): gateways and consumers move from
//! generation 0 (3 partitions) to generation 1 (5 partitions) one process at a time, under load,
//! with a gateway killed mid-way whose spool still holds generation-0 events. Every answered
//! request is counted exactly once, the spend readers sum both generations, and a hard budget
//! holds across the cut-over.

use anyhow::{ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate_tests::*;

/// Every record of `topic`: (event id, its `usage_generation`).
fn records_of(topic: &str) -> Result<Vec<(String, u8)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", unique("repartition-reader-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    let mut end = 0;
    for p in 0..partitions {
        end += consumer.fetch_watermarks(topic, i32::try_from(p)?, Duration::from_secs(10))?.1;
    }
    consumer.subscribe(&[topic])?;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < end && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m?;
            let event = tollgate_schemas::UsageEvent::decode(m.payload().unwrap_or_default())?;
            out.push((event.event_id.to_string(), event.usage_generation));
        }
    }
    ensure!(out.len() as i64 == end, "read {} of {end} records of {topic}", out.len());
    Ok(out)
}

/// The generation-`generation` settings of a gateway or consumer config's `kafka` section.
fn generation_yaml(generation: u8, topics: &[String]) -> String {
    let current = &topics[usize::from(generation)];
    let earlier: Vec<&str> = topics[..usize::from(generation)].iter().map(String::as_str).collect();
    format!("kafka:\n  usage_topic: {current}\n  usage_generation: {generation}\n  earlier_usage_topics: {earlier:?}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repartition_under_load_counts_every_event_once() -> Result<()> {
    const BUDGET_NANO: i64 = 3_000_000;
    let dir = scratch_dir("repartition")?;
    let topics = Topics::create("repart", 3).await?;
    let gen1 = unique("repart-usage-g1-");
    create_topic(&gen1, 5).await?;
    let usage = vec![topics.usage.clone(), gen1.clone()];
    let ks = unique("tg_repart_").replace('-', "_");
    let group = unique("ledger-repart-");
    let mock = start_mock(&dir, &["--latency-ms", "3"]).await?;
    let consumer_cfg = |generation: u8| -> Result<ConsumerConfig> {
        ConsumerConfig {
            budgets: Some(ConsumerBudgets {
                state_topic: Some(topics.budget_state.clone()),
                heartbeat_interval_ms: Some(1000),
                ..ConsumerBudgets::default()
            }),
            ..ConsumerConfig::new(&topics.usage, &group, &ks, 500)
        }
        .with_yaml(&generation_yaml(generation, &usage))
    };
    let gateway_cfg = |id: &str, generation: u8| -> Result<GatewayConfig> {
        let mut config = GatewayConfig::tenancy(id, mock.url().unwrap_or_default(), &topics, &ks);
        config.spool = Some(Spool { dir: dir.join(format!("spool-{id}")) });
        config.gateway.replicas = Some(2);
        config.with_yaml(&generation_yaml(generation, &usage))
    };

    // Generation 0: two gateways and a consumer.
    let mut consumer = start_consumer(&dir, &consumer_cfg(0)?).await?;
    let mut gw_a = start_gateway(&dir, &gateway_cfg("gw-repart-a", 0)?).await?;
    let mut gw_b = start_gateway(&dir, &gateway_cfg("gw-repart-b", 0)?).await?;
    let admin = AdminApi::new(gw_a.url()?);
    let budget_key = admin.ok("/key/generate", json!({"max_budget": BUDGET_NANO as f64 / 1e9})).await?["key"]
        .as_str()
        .context("key")?
        .to_owned();
    let client = reqwest::Client::new();
    for gw in [gw_a.url()?, gw_b.url()?] {
        eventually("a fresh budget view", Duration::from_secs(30), || async {
            Ok((chat_as(&client, gw, &budget_key, "gpt-4o-mini", None).await?.status() == 200).then_some(()))
        })
        .await?;
    }
    let targets = Arc::new(Mutex::new(vec![gw_a.url()?.to_owned(), gw_b.url()?.to_owned()]));
    let set_targets = |urls: Vec<String>| {
        if let Ok(mut t) = targets.lock() {
            *t = urls;
        }
    };
    let mut keys: Vec<String> = TENANT_KEYS.iter().map(|(k, _)| (*k).to_owned()).collect();
    keys.push(budget_key.clone());
    let load = RotatingLoad::start(targets.clone(), keys, 8);
    // Paces the phases of the cut-over; what each phase did is asserted from the ledger.
    let pause = || tokio::time::sleep(Duration::from_secs(3));
    pause().await;

    // The consumer moves first: it reads both generations.
    consumer.stop().await?;
    consumer = start_consumer(&dir, &consumer_cfg(1)?).await?;
    pause().await;
    // Gateway A crashes on generation 0 (its spool keeps events not yet acknowledged) and comes
    // back on generation 1: it replays those into generation 0, where their copies are.
    set_targets(vec![gw_b.url()?.to_owned()]);
    gw_a.kill_hard().await?;
    gw_a = start_gateway(&dir, &gateway_cfg("gw-repart-a", 1)?).await?;
    // Traffic reaches a gateway once it is ready (its budget view read), as behind a load
    // balancer; before that it refuses hard-budget requests as stale.
    wait_until_ready(&gw_a).await?;
    set_targets(vec![gw_a.url()?.to_owned(), gw_b.url()?.to_owned()]);
    pause().await;
    // Gateway B restarts cleanly on generation 1.
    set_targets(vec![gw_a.url()?.to_owned()]);
    gw_b.stop().await?;
    gw_b = start_gateway(&dir, &gateway_cfg("gw-repart-b", 1)?).await?;
    wait_until_ready(&gw_b).await?;
    set_targets(vec![gw_a.url()?.to_owned(), gw_b.url()?.to_owned()]);
    pause().await;
    let seen = load.finish().await?;
    let (answered, refused) = (&seen.answered, &seen.refused);
    let lease_waits = seen.failed.len();
    // A lease grant slower than 2 s fails its request closed (docs/design.md §5.4): on a loaded
    // machine that can happen to the budget key; no other failure may.
    let failed: Vec<_> = seen
        .failed
        .iter()
        .filter(|(_, status, code)| (*status, code.as_str()) != (503, "budget_lease_unavailable"))
        .collect();
    ensure!(failed.is_empty(), "failed requests: {:?}", &failed[..failed.len().min(5)]);
    let session = cql().await?;
    let budget_scope = format!("key/{}", key_token(&budget_key));

    // The ledger: every answered request once, at the cost it was answered with (and the two
    // warm-up requests of the budget key), gateway A's answers just before its kill -9 included.
    let matched = assert_ledger_matches(&session, &ks, &seen, 2).await?;
    let ledger = layer1_by_request(&session, &ks).await?;

    // Layer 2 over both generations equals Layer 1, for every scope the load touched.
    let layer1: i64 = ledger.values().map(|(cost, _)| cost).sum();
    let scopes: Vec<String> =
        TENANT_KEYS.iter().map(|(k, _)| format!("key/{}", key_hash(k))).chain([budget_scope.clone()]).collect();
    let by_generation = eventually("Layer 2 to equal Layer 1", Duration::from_secs(60), || async {
        let mut by_generation = [0i64; 2];
        for scope in &scopes {
            for (g, spent) in by_generation.iter_mut().enumerate() {
                *spent += ledger_spend_of(&session, &ks, scope, &GENERATIONS[g..=g]).await?;
            }
        }
        Ok((by_generation.iter().sum::<i64>() == layer1).then_some(by_generation))
    })
    .await?;
    ensure!(by_generation.iter().all(|g| *g > 0), "both generations hold spend: {by_generation:?}");

    // Every copy of an event went to the generation it was created under.
    let g0 = records_of(&topics.usage)?;
    let g1 = records_of(&gen1)?;
    ensure!(g0.iter().all(|(_, g)| *g == 0), "a generation-1 event on generation 0's topic");
    ensure!(g1.iter().all(|(_, g)| *g == 1), "a generation-0 event on generation 1's topic");
    let ids0: std::collections::HashSet<&String> = g0.iter().map(|(id, _)| id).collect();
    ensure!(g1.iter().all(|(id, _)| !ids0.contains(id)), "an event on both generations' topics");
    let duplicates = g0.len() - ids0.len();

    // The spend readers of a generation-1 gateway sum both generations.
    let info = AdminApi::new(gw_b.url()?).get(&format!("/key/info?key={budget_key}")).await?.1;
    let budget_spend = ledger_spend_of(&session, &ks, &budget_scope, &GENERATIONS).await?;
    let reported = (info["info"]["spend"].as_f64().unwrap_or(-1.0) * 1e9).round() as i64;
    ensure!(reported == budget_spend, "key/info spend {reported} nano-USD, ledger {budget_spend}: {info}");
    // A hard budget holds across the cut-over: at most one request past it per gateway process
    // (four here: two gateways, each before and after its move).
    let worst = (0..100_000).map(|i| request_body(i).1).max().unwrap_or(0);
    ensure!(refused.contains_key("key_budget_exceeded"), "the budget was never reached: {refused:?}");
    ensure!(budget_spend <= BUDGET_NANO + 4 * worst, "budget {BUDGET_NANO} passed: {budget_spend}");
    eprintln!(
        "repartition 3 -> 5 partitions under load: {} answered, refused {refused:?} (and {lease_waits} 503 budget_lease_unavailable), ledger {layer1} nano-USD \
         (generation 0: {}, generation 1: {}), {} records on generation 0 ({duplicates} duplicate copies), {} on \
         generation 1; budget key spent {budget_spend} of {BUDGET_NANO}; {} requests of unknown outcome, {} of \
         them charged",
        answered.len(),
        by_generation[0],
        by_generation[1],
        g0.len(),
        g1.len(),
        seen.unknown.len(),
        matched.charged_unknown
    );
    // `reconcile` of a generation-1 consumer finds both layers and the read model equal.
    let reconcile_cfg = dir.join("reconcile.yaml");
    std::fs::write(&reconcile_cfg, consumer_cfg(1)?.to_yaml()?)?;
    let (ok, out) = reconcile(&reconcile_cfg).await?;
    ensure!(ok, "reconcile found differences:\n{out}");
    gw_a.stop().await?;
    gw_b.stop().await?;
    consumer.stop().await?;
    drop(mock);
    Ok(())
}

/// The ledger partitions of the two generations: 3 Kafka partitions, then 5.
const GENERATIONS: [std::ops::Range<i32>; 2] = [0..3, 64..69];

/// A scope's all-time spend summed over the ledger partitions of `generations`.
async fn ledger_spend_of(
    session: &scylla::client::session::Session,
    ks: &str,
    scope: &str,
    generations: &[std::ops::Range<i32>],
) -> Result<i64> {
    let mut total = 0;
    for partitions in generations {
        let rows = session
            .query_unpaged(
                format!(
                    "SELECT spent_nano_usd FROM {ks}.spend_aggregates WHERE scope_id = ? AND window_id = 'all' \
                     AND partition IN ?"
                ),
                (scope, partitions.clone().collect::<Vec<i32>>()),
            )
            .await?
            .into_rows_result()?;
        for row in rows.rows::<(Option<i64>,)>()? {
            total += row?.0.unwrap_or(0);
        }
    }
    Ok(total)
}
