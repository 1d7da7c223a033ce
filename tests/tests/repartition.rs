//! Repartitioning the usage topic (docs/design.md §4.10): gateways and consumers move from
//! generation 0 (3 partitions) to generation 1 (5 partitions) one process at a time, under load,
//! with a gateway killed mid-way whose spool still holds generation-0 events. Every answered
//! request is counted exactly once, the spend readers sum both generations, and a hard budget
//! holds across the cut-over.

use anyhow::{ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate_tests::*;

/// What the clients saw: every 200 (request id, cost), and refusals by error code.
type Seen = (Vec<(String, i64)>, BTreeMap<String, usize>);

/// Clients that keep sending with `key` to the gateways `targets` holds (which change as
/// gateways restart); every 200 is recorded with its request id and cost, and every refusal's
/// code is counted.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Load {
    fn start(targets: Arc<Mutex<Vec<String>>>, keys: Vec<String>, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        let tasks = (0..workers)
            .map(|w| {
                let (client, targets, stop, keys) = (client.clone(), targets.clone(), stop.clone(), keys.clone());
                tokio::spawn(async move {
                    let mut answered = Vec::new();
                    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let gw = targets.lock().map(|t| t[(w + i) % t.len()].clone()).unwrap_or_default();
                        let key = &keys[(w + i) % keys.len()];
                        let (body, _, _) = request_body(w * 1_000_000 + i);
                        let sent = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body).send();
                        let Ok(resp) = sent.await else {
                            // Paces the retries while a gateway restarts; decides nothing.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                        let (id, cost) = (header("x-request-id"), header("x-tollgate-cost-nano-usd"));
                        if resp.status() != 200 {
                            let (_, code, _) = error_code(resp).await;
                            *refused.entry(code).or_default() += 1;
                            continue;
                        }
                        if let (Some(id), Some(cost), Ok(_)) = (id, cost, resp.bytes().await) {
                            answered.push((id, cost.parse().unwrap_or(-1)));
                        }
                    }
                    (answered, refused)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answered = Vec::new();
        let mut refused = BTreeMap::new();
        for t in self.tasks {
            let (a, r) = t.await?;
            answered.extend(a);
            for (code, n) in r {
                *refused.entry(code).or_default() += n;
            }
        }
        Ok((answered, refused))
    }
}

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
    let load = Load::start(targets.clone(), keys, 8);
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
    set_targets(vec![gw_a.url()?.to_owned(), gw_b.url()?.to_owned()]);
    pause().await;
    // Gateway B restarts cleanly on generation 1.
    set_targets(vec![gw_a.url()?.to_owned()]);
    gw_b.stop().await?;
    gw_b = start_gateway(&dir, &gateway_cfg("gw-repart-b", 1)?).await?;
    set_targets(vec![gw_a.url()?.to_owned(), gw_b.url()?.to_owned()]);
    pause().await;
    let (answered, refused) = load.finish().await?;
    let session = cql().await?;
    let budget_scope = format!("key/{}", key_token(&budget_key));

    // The ledger: every answered request once, at the cost it was answered with.
    let expected: HashMap<&str, i64> = answered.iter().map(|(id, cost)| (id.as_str(), *cost)).collect();
    ensure!(expected.len() == answered.len(), "a request id answered twice");
    let ledger = eventually("every answered request in the ledger", Duration::from_secs(90), || async {
        let rows =
            session.query_unpaged(format!("SELECT body FROM {ks}.usage_events"), &[]).await?.into_rows_result()?;
        let mut costs: HashMap<String, i64> = HashMap::new();
        for row in rows.rows::<(Option<String>,)>()? {
            let event = tollgate_schemas::UsageEvent::decode(row?.0.unwrap_or_default().as_bytes())?;
            costs.insert(event.request_id.clone(), event.cost_nano_usd.0);
        }
        Ok(expected.keys().all(|id| costs.contains_key(*id)).then_some(costs))
    })
    .await?;
    // Warm-up requests of the budget key are in the ledger too; nothing else may be.
    let extra: Vec<&String> = ledger.keys().filter(|id| !expected.contains_key(id.as_str())).collect();
    ensure!(extra.len() <= 2, "events for requests never answered: {extra:?}");
    for (id, cost) in &expected {
        ensure!(ledger.get(*id) == Some(cost), "request {id}: ledger {:?}, answered {cost}", ledger.get(*id));
    }

    // Layer 2 over both generations equals Layer 1, for every scope the load touched.
    let layer1: i64 = ledger.values().sum();
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
        "repartition 3 -> 5 partitions under load: {} answered, refused {refused:?}, ledger {layer1} nano-USD \
         (generation 0: {}, generation 1: {}), {} records on generation 0 ({duplicates} duplicate copies), {} on \
         generation 1; budget key spent {budget_spend} of {BUDGET_NANO}",
        answered.len(),
        by_generation[0],
        by_generation[1],
        g0.len(),
        g1.len()
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
