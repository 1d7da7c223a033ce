//! The response cache end to end: the same prompt answered once by the provider and then from
//! the cache (whole and streamed), team scoping, `no-cache` and `no-store`, and the ledger in
//! Cassandra holding exactly what was charged, each hit as its own event at its configured cost.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tollgate_tests::*;

/// A hit costs half of what the stored answer cost.
const HIT_PERCENT: i64 = 50;

struct Answer {
    cost: i64,
    hit: bool,
    content: String,
}

async fn chat(client: &reqwest::Client, gw: &str, key: &str, body: &Value) -> Result<Answer> {
    let resp = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(body).send().await?;
    ensure!(resp.status() == 200, "status {} body {}", resp.status(), resp.text().await?);
    let cost: i64 = resp.headers().get("x-tollgate-cost-nano-usd").context("no cost header")?.to_str()?.parse()?;
    let hit = resp.headers().get("x-tollgate-cache").is_some_and(|v| v == "hit");
    if body["stream"] == json!(true) {
        ensure!(resp.headers()["content-type"].to_str()?.starts_with("text/event-stream"));
        let text = resp.text().await?;
        let mut content = String::new();
        let mut done = false;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let data = line.strip_prefix("data: ").context("an SSE line that is not data")?;
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let chunk: Value = serde_json::from_str(data)?;
            ensure!(chunk["object"] == "chat.completion.chunk", "{chunk}");
            if let Some(c) = chunk["choices"][0]["delta"]["content"].as_str() {
                content.push_str(c);
            }
        }
        ensure!(done, "the stream ends with [DONE]");
        return Ok(Answer { cost, hit, content });
    }
    let answer: Value = resp.json().await?;
    let content = answer["choices"][0]["message"]["content"].as_str().context("not a completion")?.to_owned();
    Ok(Answer { cost, hit, content })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_answers_repeats_per_team_and_the_ledger_counts_each_hit() -> Result<()> {
    let dir = scratch_dir("response-cache")?;
    let topic = unique("usage-cache-");
    let keyspace = unique("cache_");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &["--latency-ms", "2", "--workers", "2"]).await?;
    let mock_url = mock.url()?.to_owned();
    let mut config = GatewayConfig::new(
        "gw-cache",
        &[model_entry("gpt-4o-mini", &format!("{mock_url}/v1"))],
        &topic,
        &kafka_bootstrap(),
    )
    .with_yaml(&format!(
        "litellm_settings:\n  cache: true\n  cache_params: {{type: local, ttl: 600, hit_cost_percent: {HIT_PERCENT}}}\n"
    ))?;
    config.gateway.key_hash_secret = None;
    let gateway = start_gateway(&dir, &config).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &keyspace, 500)).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::new();
    let (alpha_1, alpha_2, beta, solo) = (TENANT_KEYS[0].0, TENANT_KEYS[1].0, TENANT_KEYS[2].0, TENANT_KEYS[3].0);
    let prompt =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "cache me"}], "max_tokens": 20});
    let with = |extra: Value| {
        let mut body = prompt.clone();
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        body
    };
    let mut charged: Vec<(&str, i64)> = Vec::new();

    let first = chat(&client, &gw, alpha_1, &prompt).await?;
    ensure!(!first.hit && first.cost > 0 && mock_served(&client, &mock_url).await? == 1);
    charged.push((alpha_1, first.cost));
    // Another key of the same team: answered from the cache, at half the cost.
    let again = chat(&client, &gw, alpha_2, &prompt).await?;
    assert!(again.hit, "the same team's repeat is a hit");
    assert_eq!((again.content.as_str(), again.cost), (first.content.as_str(), first.cost * HIT_PERCENT / 100));
    charged.push((alpha_2, again.cost));
    // Streamed: replayed as SSE from the whole answer.
    let streamed = chat(&client, &gw, alpha_2, &with(json!({"stream": true}))).await?;
    assert!(streamed.hit);
    assert_eq!(streamed.content, first.content);
    charged.push((alpha_2, streamed.cost));
    assert_eq!(mock_served(&client, &mock_url).await?, 1, "hits never reach the provider");
    // Another team's identical prompt misses.
    let other_team = chat(&client, &gw, beta, &prompt).await?;
    assert!(!other_team.hit);
    assert_eq!(mock_served(&client, &mock_url).await?, 2);
    charged.push((beta, other_team.cost));
    // `no-cache`: the provider answers although an entry exists.
    let bypass = chat(&client, &gw, alpha_1, &with(json!({"cache": {"no-cache": true}}))).await?;
    assert!(!bypass.hit);
    assert_eq!(mock_served(&client, &mock_url).await?, 3);
    charged.push((alpha_1, bypass.cost));
    // `no-store`: nothing kept, so the next request misses too.
    let unstored = chat(&client, &gw, solo, &with(json!({"cache": {"no-store": true}}))).await?;
    let next = chat(&client, &gw, solo, &prompt).await?;
    assert!(!unstored.hit && !next.hit);
    assert_eq!(mock_served(&client, &mock_url).await?, 5);
    charged.push((solo, unstored.cost));
    charged.push((solo, next.cost));
    // /v1/messages is served as chat: its repeats hit too, streamed ones translated to
    // Anthropic's events.
    let messages =
        json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "cache me too"}]});
    for stream in [false, false, true] {
        let mut body = messages.clone();
        body["stream"] = json!(stream);
        let resp = client.post(format!("{gw}/v1/messages")).bearer_auth(beta).json(&body).send().await?;
        ensure!(resp.status() == 200, "status {}", resp.status());
        let hit = resp.headers().get("x-tollgate-cache").is_some_and(|v| v == "hit");
        let cost: i64 = resp.headers().get("x-tollgate-cost-nano-usd").context("no cost header")?.to_str()?.parse()?;
        let text = resp.text().await?;
        if stream {
            assert!(hit && text.contains("event: message_stop") && text.contains("content_block_delta"), "{text}");
        } else {
            assert!(text.contains("\"type\":\"message\""), "{text}");
        }
        charged.push((beta, cost));
    }
    assert_eq!(mock_served(&client, &mock_url).await?, 6, "one provider call for three /v1/messages requests");
    // Hostile controls are refused before anything is charged.
    let bad = client
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth(alpha_1)
        .json(&with(json!({"cache": {"ttl": -1}})))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);

    // The ledger holds every answer once, hits at their own cost, per key and per team.
    let session = cql().await?;
    assert_charged(&session, &keyspace, &charged).await?;
    let scrape = client.get(format!("{gw}/metrics")).send().await?.text().await?;
    assert!(scrape.lines().any(|l| l.starts_with("tollgate_cache_hits_total{") && l.ends_with(" 4")), "{scrape}");
    drop((consumer, gateway, mock));
    Ok(())
}
