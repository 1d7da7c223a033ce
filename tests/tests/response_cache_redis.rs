//! The shared response cache end to end: two gateways on one Redis. A prompt answered by one is
//! a hit on the other (one provider call), teams share nothing, a streamed first answer fills
//! the cache, the ledger holds each hit once at its configured cost, and a Redis that stalls or
//! goes away mid-test leaves every request answered (as a miss), never an error to the client.
//! Over TLS (with a client certificate) the same holds, and a gateway that does not trust the
//! Redis's CA goes on without the cache: a miss, counted and warned about, nothing stored.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tollgate_tests::redis::{Redis, TlsFiles};
use tollgate_tests::*;

/// A hit costs half of what the stored answer cost.
const HIT_PERCENT: i64 = 50;

struct Answer {
    /// What the answer cost, from its header (a streamed miss has none: its cost is known only
    /// once it ended, and read from the ledger by `request_id`).
    cost: Option<i64>,
    request_id: String,
    hit: bool,
    cache_key: Option<String>,
    content: String,
}

/// A gateway in front of `mock_url` whose response cache is `cache_params` (the YAML mapping's
/// inside), metering to `topic`.
async fn cached_gateway(
    dir: &std::path::Path,
    id: &str,
    mock_url: &str,
    topic: &str,
    cache_params: &str,
) -> Result<Process> {
    let cache = format!("litellm_settings:\n  cache: true\n  cache_params: {{{cache_params}}}\n");
    let mut config =
        GatewayConfig::new(id, &[model_entry("gpt-4o-mini", &format!("{mock_url}/v1"))], topic, &kafka_bootstrap())
            .with_yaml(&cache)?;
    config.gateway.key_hash_secret = None;
    start_gateway(dir, &config).await
}

async fn chat(client: &reqwest::Client, gw: &str, key: &str, body: &Value) -> Result<Answer> {
    let resp = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(body).send().await?;
    ensure!(resp.status() == 200, "status {} body {}", resp.status(), resp.text().await?);
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let cost = header("x-tollgate-cost-nano-usd").map(|c| c.parse()).transpose()?;
    let request_id = header("x-request-id").context("no request id")?;
    ensure!(cost.is_some() || body["stream"] == json!(true), "a whole answer states its cost");
    let hit = resp.headers().get("x-tollgate-cache").is_some_and(|v| v == "hit");
    let cache_key = resp.headers().get("x-litellm-cache-key").map(|v| v.to_str().unwrap_or_default().to_owned());
    let text = resp.text().await?;
    let content = if body["stream"] == json!(true) {
        let mut content = String::new();
        ensure!(text.contains("data: [DONE]"), "the stream ends with [DONE]: {text}");
        for data in text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
            let chunk: Value = serde_json::from_str(data)?;
            ensure!(chunk["object"] == "chat.completion.chunk", "{chunk}");
            content.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap_or_default());
        }
        content
    } else {
        let answer: Value = serde_json::from_str(&text)?;
        answer["choices"][0]["message"]["content"].as_str().context("not a completion")?.to_owned()
    };
    Ok(Answer { cost, request_id, hit, cache_key, content })
}

fn prompt(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 20, "stream": stream})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_one_redis_and_go_on_without_it() -> Result<()> {
    let dir = scratch_dir("response-cache-redis")?;
    let topic = unique("usage-rcache-");
    let keyspace = unique("rcache_");
    create_topic(&topic, 1).await?;
    let mut redis = Redis::start().await?;
    let mock = start_mock(&dir, &["--latency-ms", "2", "--workers", "2"]).await?;
    let mock_url = mock.url()?.to_owned();
    let cache = format!(
        "type: redis, host: 127.0.0.1, port: {}, ttl: 600, hit_cost_percent: {HIT_PERCENT}, redis_timeout_ms: 200",
        redis.port
    );
    let mut gateways = Vec::new();
    for id in ["gw-rcache-a", "gw-rcache-b"] {
        gateways.push(cached_gateway(&dir, id, &mock_url, &topic, &cache).await?);
    }
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &keyspace, 500)).await?;
    let (a, b) = (gateways[0].url()?.to_owned(), gateways[1].url()?.to_owned());
    let client = reqwest::Client::new();
    let (alpha_1, alpha_2, beta) = (TENANT_KEYS[0].0, TENANT_KEYS[1].0, TENANT_KEYS[2].0);
    let mut charged: Vec<(&str, i64)> = Vec::new();

    // Answered by A, then a hit on B: one provider call.
    let first = chat(&client, &a, alpha_1, &prompt("shared", false)).await?;
    let first_cost = first.cost.context("no cost")?;
    ensure!(!first.hit && first_cost > 0 && first.cache_key.is_none());
    charged.push((alpha_1, first_cost));
    let on_b = chat(&client, &b, alpha_2, &prompt("shared", false)).await?;
    assert!(on_b.hit, "the other gateway's answer is a hit");
    assert_eq!((on_b.content.as_str(), on_b.cost), (first.content.as_str(), Some(first_cost * HIT_PERCENT / 100)));
    assert_eq!(on_b.cache_key.as_ref().map(String::len), Some(64), "x-litellm-cache-key on a hit");
    charged.push((alpha_2, on_b.cost.context("no cost")?));
    assert_eq!(mock_served(&client, &mock_url).await?, 1, "one provider call for both");
    // Another team shares nothing.
    let other_team = chat(&client, &b, beta, &prompt("shared", false)).await?;
    assert!(!other_team.hit);
    charged.push((beta, other_team.cost.context("no cost")?));
    assert_eq!(mock_served(&client, &mock_url).await?, 2);

    // A streamed first answer fills the cache: asked whole on B, and streamed on A, it is a hit.
    let streamed = chat(&client, &a, alpha_1, &prompt("streamed first", true)).await?;
    ensure!(!streamed.hit && !streamed.content.is_empty());
    let session = cql().await?;
    let layer1 = wait_for_layer1(&session, &keyspace, &[&streamed.request_id]).await?;
    let streamed_cost = layer1[&streamed.request_id].0;
    ensure!(streamed_cost > 0);
    charged.push((alpha_1, streamed_cost));
    let whole = chat(&client, &b, alpha_2, &prompt("streamed first", false)).await?;
    assert!(whole.hit, "the streamed answer was kept");
    assert_eq!(
        (whole.content.as_str(), whole.cost),
        (streamed.content.as_str(), Some(streamed_cost * HIT_PERCENT / 100))
    );
    charged.push((alpha_2, streamed_cost * HIT_PERCENT / 100));
    let restreamed = chat(&client, &a, alpha_2, &prompt("streamed first", true)).await?;
    assert!(restreamed.hit);
    assert_eq!((restreamed.content.as_str(), restreamed.cost), (streamed.content.as_str(), whole.cost));
    charged.push((alpha_2, streamed_cost * HIT_PERCENT / 100));
    assert_eq!(mock_served(&client, &mock_url).await?, 3);

    // A Redis that stalls: the request goes on after `redis_timeout_ms`, as a miss.
    redis.freeze()?;
    let started = Instant::now();
    let stalled = chat(&client, &b, alpha_1, &prompt("asked while Redis stalls", false)).await;
    let took = started.elapsed();
    redis.thaw()?;
    let stalled = stalled?;
    assert!(!stalled.hit);
    assert!(took < Duration::from_secs(2), "a stalled Redis held a request {took:?}");
    charged.push((alpha_1, stalled.cost.context("no cost")?));
    assert_eq!(mock_served(&client, &mock_url).await?, 4);
    // Thawed, it serves again: the gateway's connection outlived the stall.
    let after = chat(&client, &b, alpha_2, &prompt("shared", false)).await?;
    assert!(after.hit, "a hit once Redis answers again");
    assert_eq!(after.cost, Some(first_cost * HIT_PERCENT / 100));
    charged.push((alpha_2, first_cost * HIT_PERCENT / 100));
    assert_eq!(mock_served(&client, &mock_url).await?, 4);

    // Redis goes away: every request is still answered, by the provider, without delay.
    redis.stop();
    for (gw, key) in [(&a, alpha_1), (&b, alpha_2), (&a, alpha_1)] {
        let started = Instant::now();
        let answer = chat(&client, gw, key, &prompt("shared", false)).await?;
        assert!(!answer.hit, "no Redis, no hit");
        assert!(started.elapsed() < Duration::from_secs(3), "a down Redis stalled a request {:?}", started.elapsed());
        charged.push((key, answer.cost.context("no cost")?));
    }
    assert_eq!(mock_served(&client, &mock_url).await?, 7);
    let scrape = client.get(format!("{b}/metrics")).send().await?.text().await?;
    assert!(
        scrape.lines().any(|l| l.starts_with("tollgate_cache_errors_total{") && !l.ends_with(" 0")),
        "Redis failures are counted: {scrape}"
    );

    // The ledger holds every answer once, hits at their own cost, per key and per team.
    assert_charged(&session, &keyspace, &charged).await?;
    drop((consumer, gateways, mock));
    Ok(())
}

/// Two gateways share a Redis over TLS, one configured in LiteLLM's `host`/`port`/`ssl` shape,
/// the other with a `rediss://` url, both trusting its CA and showing a client certificate (the
/// Redis asks for one). A third gateway trusts another CA: its TLS handshake fails, and it goes on
/// without the cache, as with a Redis that is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_one_redis_over_tls_and_a_wrong_ca_goes_on_without_it() -> Result<()> {
    let dir = scratch_dir("response-cache-redis-tls")?;
    let topic = unique("usage-rcache-");
    let keyspace = unique("rcache_");
    create_topic(&topic, 1).await?;
    let tls = TlsFiles::make(&dir.join("tls"))?;
    let other = TlsFiles::make(&dir.join("other-tls"))?;
    let redis = Redis::start_tls(&tls).await?;
    let tls_port = redis.tls_port.context("no TLS port")?;
    let mock = start_mock(&dir, &["--latency-ms", "2", "--workers", "2"]).await?;
    let mock_url = mock.url()?.to_owned();
    let client_cert =
        format!("ssl_certfile: \"{}\", ssl_keyfile: \"{}\"", tls.path("client.pem"), tls.path("client.key"));
    let common = format!("ttl: 600, hit_cost_percent: {HIT_PERCENT}, redis_timeout_ms: 500, {client_cert}");
    let params = [
        (
            "gw-rtls-a",
            format!("host: 127.0.0.1, port: {tls_port}, ssl: true, ssl_ca_certs: \"{}\"", tls.path("ca.pem")),
        ),
        (
            "gw-rtls-b",
            format!("redis_url: \"rediss://localhost:{tls_port}\", ssl_ca_certs: \"{}\"", tls.path("ca.pem")),
        ),
        (
            "gw-rtls-c",
            format!("host: 127.0.0.1, port: {tls_port}, ssl: true, ssl_ca_certs: \"{}\"", other.path("ca.pem")),
        ),
    ];
    let mut gateways = Vec::new();
    for (id, address) in &params {
        gateways.push(cached_gateway(&dir, id, &mock_url, &topic, &format!("type: redis, {address}, {common}")).await?);
    }
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &keyspace, 500)).await?;
    let (a, b, c) = (gateways[0].url()?.to_owned(), gateways[1].url()?.to_owned(), gateways[2].url()?.to_owned());
    let client = reqwest::Client::new();
    let (alpha_1, alpha_2) = (TENANT_KEYS[0].0, TENANT_KEYS[1].0);
    let mut charged: Vec<(&str, i64)> = Vec::new();

    // Answered by A, a hit on B: one provider call, the entry kept in Redis over TLS.
    let first = chat(&client, &a, alpha_1, &prompt("over tls", false)).await?;
    let first_cost = first.cost.context("no cost")?;
    ensure!(!first.hit && first_cost > 0);
    charged.push((alpha_1, first_cost));
    let on_b = chat(&client, &b, alpha_2, &prompt("over tls", false)).await?;
    assert!(on_b.hit, "the other gateway's answer is a hit over TLS");
    assert_eq!((on_b.content.as_str(), on_b.cost), (first.content.as_str(), Some(first_cost * HIT_PERCENT / 100)));
    charged.push((alpha_2, first_cost * HIT_PERCENT / 100));
    assert_eq!(mock_served(&client, &mock_url).await?, 1);
    assert_eq!(redis.values()?.len(), 1, "one entry, written over TLS");
    // A streamed ask on B of what A answered: a hit too.
    let streamed = chat(&client, &b, alpha_1, &prompt("over tls", true)).await?;
    assert!(streamed.hit);
    assert_eq!(streamed.content, first.content);
    charged.push((alpha_1, first_cost * HIT_PERCENT / 100));

    // C does not trust the Redis's CA: every request is answered by the provider at once, none
    // is a hit, nothing is stored, and the failures are counted and warned about.
    for text in ["over tls", "asked on c", "asked on c"] {
        let started = Instant::now();
        let answer = chat(&client, &c, alpha_1, &prompt(text, false)).await?;
        assert!(!answer.hit, "a Redis whose certificate does not verify serves no hit");
        // Bounded by `redis_timeout_ms` for the read and for the write (a handshake that fails at
        // once is an `Io` error; on a loaded machine it may run into the bound instead): about a
        // second plus the provider. The bound here is loose for loaded machines; what it guards
        // against is a request held by the cache until its own timeout (600 s).
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a failed handshake stalled a request {:?}",
            started.elapsed()
        );
        charged.push((alpha_1, answer.cost.context("no cost")?));
    }
    assert_eq!(mock_served(&client, &mock_url).await?, 4);
    assert_eq!(redis.values()?.len(), 1, "the gateway with the wrong CA stored nothing");
    let scrape = client.get(format!("{c}/metrics")).send().await?.text().await?;
    assert!(
        scrape.lines().any(|l| l.starts_with("tollgate_cache_errors_total{") && !l.ends_with(" 0")),
        "failed handshakes are counted: {scrape}"
    );
    let log = std::fs::read_to_string(&gateways[2].log_path)?;
    assert!(log.contains("response cache: Redis failed"), "a failed handshake is warned about: {log}");
    // A and B still share: the wrong CA of C took nothing from them.
    let again = chat(&client, &a, alpha_2, &prompt("over tls", false)).await?;
    assert!(again.hit);
    charged.push((alpha_2, first_cost * HIT_PERCENT / 100));
    assert_eq!(mock_served(&client, &mock_url).await?, 4);

    let session = cql().await?;
    assert_charged(&session, &keyspace, &charged).await?;
    drop((consumer, gateways, mock, redis));
    Ok(())
}
