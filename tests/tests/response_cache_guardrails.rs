//! The response cache with guardrails, end to end (a gateway, the echo mock provider, a private
//! Redis and Kafka): a request whose PII is masked is keyed on the masked prompt, so another
//! key of the team asking the same with another address hits and gets its own address back
//! (whole and streamed); a streamed answer fills the cache too; another set of guardrails never
//! shares an entry; Redis never holds an address, only placeholders; and each hit is metered
//! as hits are (its own event, `cache.hit`, the configured share of the stored answer's cost).

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_tests::redis::Redis;
use tollgate_tests::*;

/// A hit costs half of what the stored answer cost.
const HIT_PERCENT: i64 = 50;

struct Answer {
    hit: bool,
    content: String,
}

async fn chat(client: &reqwest::Client, gw: &str, key: &str, id: &str, body: &Value) -> Result<Answer> {
    let resp = client
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-request-id", id)
        .json(body)
        .send()
        .await?;
    ensure!(resp.status() == 200, "{id}: status {} body {}", resp.status(), resp.text().await?);
    let hit = resp.headers().get("x-tollgate-cache").is_some_and(|v| v == "hit");
    let text = resp.text().await?;
    let content = if body["stream"] == json!(true) {
        ensure!(text.contains("data: [DONE]"), "{id}: the stream ends with [DONE]: {text}");
        let mut content = String::new();
        for data in text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") {
            let chunk: Value = serde_json::from_str(data)?;
            ensure!(chunk.get("error").is_none(), "{id}: {chunk}");
            content.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap_or_default());
        }
        content
    } else {
        let answer: Value = serde_json::from_str(&text)?;
        answer["choices"][0]["message"]["content"].as_str().context("not a completion")?.to_owned()
    };
    Ok(Answer { hit, content })
}

fn prompt(text: &str, stream: bool, guardrails: &[&str]) -> Value {
    let mut body = json!({"model": "echo", "messages": [{"role": "user", "content": text}], "stream": stream});
    if !guardrails.is_empty() {
        body["guardrails"] = json!(guardrails);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_requests_hit_the_cache_masked_and_metered() -> Result<()> {
    let dir = scratch_dir("response-cache-guardrails")?;
    let topic = unique("usage-rcache-guard-");
    create_topic(&topic, 1).await?;
    let redis = Redis::start().await?;
    let mock = start_mock(&dir, &[]).await?;
    let mock_url = mock.url()?.to_owned();
    let yaml = format!(
        r#"litellm_settings:
  cache: true
  cache_params: {{type: redis, host: 127.0.0.1, port: {}, ttl: 600, hit_cost_percent: {HIT_PERCENT}}}
guardrails:
  - guardrail_name: pii
    litellm_params: {{guardrail: pii_masking, mode: pre_call, default_on: true}}
  - guardrail_name: clean-answers
    litellm_params: {{guardrail: banned_words, mode: post_call, banned_words: [forbidden fruit]}}
"#,
        redis.port
    );
    let models = [model_entry("echo", &format!("{mock_url}/echo/3/v1"))];
    let mut config = GatewayConfig::new("gw-rcache-guard", &models, &topic, &kafka_bootstrap()).with_yaml(&yaml)?;
    config.gateway.key_hash_secret = None;
    let gateway = start_gateway(&dir, &config).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::new();
    let (alpha_1, alpha_2) = (TENANT_KEYS[0].0, TENANT_KEYS[1].0);

    // 1. A miss: the provider sees the placeholder, the client its own address.
    let miss = chat(&client, &gw, alpha_1, "rg-miss", &prompt("mail ann@example.com", false, &[])).await?;
    ensure!(!miss.hit && miss.content == "echo: mail ann@example.com", "{}", miss.content);
    ensure!(mock_served(&client, &mock_url).await? == 1);
    // 2. Another key of the team, another address: the same masked prompt, a hit, restored with
    //    this request's address; whole and streamed.
    let hit = chat(&client, &gw, alpha_2, "rg-hit", &prompt("mail bob@example.org", false, &[])).await?;
    ensure!(hit.hit && hit.content == "echo: mail bob@example.org", "{} {}", hit.hit, hit.content);
    let streamed = chat(&client, &gw, alpha_2, "rg-hit-stream", &prompt("mail carol@example.net", true, &[])).await?;
    ensure!(streamed.hit && streamed.content == "echo: mail carol@example.net", "{}", streamed.content);
    ensure!(mock_served(&client, &mock_url).await? == 1, "hits never reach the provider");
    // 3. Another set of guardrails (one more, named by the request) never shares the entry.
    let other =
        chat(&client, &gw, alpha_1, "rg-other-config", &prompt("mail ann@example.com", false, &["clean-answers"]))
            .await?;
    ensure!(!other.hit && other.content == "echo: mail ann@example.com");
    ensure!(mock_served(&client, &mock_url).await? == 2);
    // 4. A streamed miss fills the cache (kept as the provider sent it), and a whole request
    //    of the team hits it.
    let stream_miss =
        chat(&client, &gw, alpha_1, "rg-stream-miss", &prompt("stream to dave@example.com", true, &[])).await?;
    ensure!(!stream_miss.hit && stream_miss.content == "echo: stream to dave@example.com", "{}", stream_miss.content);
    eventually("the streamed answer in Redis", Duration::from_secs(10), || async {
        Ok((redis.values()?.len() == 3).then_some(()))
    })
    .await?;
    let stream_hit =
        chat(&client, &gw, alpha_2, "rg-stream-hit", &prompt("stream to erin@example.com", false, &[])).await?;
    ensure!(stream_hit.hit && stream_hit.content == "echo: stream to erin@example.com", "{}", stream_hit.content);
    ensure!(mock_served(&client, &mock_url).await? == 3);

    // 5. Redis holds placeholders, never an address (the bytes as stored).
    let values = redis.values()?;
    ensure!(values.len() == 3, "{} entries", values.len());
    for v in &values {
        let text = String::from_utf8_lossy(v);
        ensure!(text.contains("<EMAIL_1>"), "an entry without the placeholder: {text}");
        for address in ["ann@", "bob@", "carol@", "dave@", "erin@", "example."] {
            ensure!(!text.contains(address), "`{address}` stored unmasked: {text}");
        }
    }

    // 6. Metering: each hit its own event, `cache.hit`, half the stored answer's cost.
    let events = collect_events(&topic, 6, Duration::from_secs(30)).await?;
    let event = |id: &str| events.get(id).with_context(|| format!("no event for {id}"));
    for (hit, stored) in [("rg-hit", "rg-miss"), ("rg-hit-stream", "rg-miss"), ("rg-stream-hit", "rg-stream-miss")] {
        let (h, s) = (event(hit)?, event(stored)?);
        ensure!(s.cache.is_none() && s.cost_nano_usd.0 > 0 && s.status == 200, "{stored}: {s:?}");
        let c = h.cache.as_ref().with_context(|| format!("{hit} is not metered as a hit"))?;
        ensure!(c.hit && c.saved_output_tokens == s.completion_tokens, "{hit}: {c:?}");
        ensure!(h.status == 200 && h.cost_nano_usd.0 == s.cost_nano_usd.0 * HIT_PERCENT / 100, "{hit}: {h:?}");
        ensure!(h.completion_tokens == 0 && h.provider.is_none(), "{hit} is billed as a provider call: {h:?}");
    }
    ensure!(event("rg-other-config")?.cache.is_none());
    let scrape = client.get(format!("{gw}/metrics")).send().await?.text().await?;
    ensure!(scrape.lines().any(|l| l.starts_with("tollgate_cache_hits_total{") && l.ends_with(" 3")), "{scrape}");
    gateway.stop().await?;
    drop((mock, redis));
    Ok(())
}
