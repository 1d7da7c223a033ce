//! Retries, cooldowns and fallbacks against the mock provider, seen from a client.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use tollgate_tests::*;

fn gateway_config(mock: &str, topic: &str) -> Result<GatewayConfig> {
    let models = [
        model_entry("flaky-pair", &format!("{mock}/status/503/v1")),
        model_entry("flaky-pair", &format!("{mock}/v1")),
        model_entry("broken", &format!("{mock}/status/500/v1")),
        model_entry("gpt-4o-mini", &format!("{mock}/v1")),
        model_entry("bad-request", &format!("{mock}/status/422/v1")),
    ];
    GatewayConfig::new("gw-routing", &models, topic, &kafka_bootstrap()).with_yaml(
        "router_settings:\n  num_retries: 2\n  allowed_fails: 2\n  cooldown_time: 60\n  \
         fallbacks: [{\"broken\": [\"gpt-4o-mini\"]}, {\"bad-request\": [\"gpt-4o-mini\"]}]\n",
    )
}

async fn chat(client: &reqwest::Client, gw: &str, model: &str) -> Result<reqwest::Response> {
    Ok(client
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth(TENANT_KEYS[0].0)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}))
        .send()
        .await?)
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_cooldowns_and_fallbacks() -> Result<()> {
    let dir = scratch_dir("routing")?;
    let topic = unique("usage-routing-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &[]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic)?).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::new();

    // One of two deployments always fails: every request still succeeds, moved by a retry, and
    // after `allowed_fails` failures the bad deployment is cooled down and no longer tried.
    let mut attempts = Vec::new();
    for _ in 0..20 {
        let resp = chat(&client, &gw, "flaky-pair").await?;
        ensure!(resp.status() == 200, "flaky-pair: {}", resp.status());
        attempts.push(header(&resp, "x-tollgate-attempts").parse::<u32>().context("attempts header")?);
    }
    let retried = attempts.iter().filter(|a| **a > 1).count();
    ensure!(retried <= 2, "the failing deployment was retried {retried} times despite the cooldown: {attempts:?}");
    ensure!(attempts[10..].iter().all(|a| *a == 1), "cooled-down deployment still tried: {attempts:?}");
    let metrics = client.get(format!("{gw}/metrics")).send().await?.text().await?;
    ensure!(metrics.contains("tollgate_deployment_cooldowns_total"), "no cooldown metric");

    // Every deployment of a model fails: the request falls back to the next model group.
    let resp = chat(&client, &gw, "broken").await?;
    ensure!(resp.status() == 200, "broken: {}", resp.status());
    ensure!(header(&resp, "x-tollgate-model-group") == "gpt-4o-mini", "no fallback");
    ensure!(header(&resp, "x-tollgate-attempts") == "4", "1 try + 2 retries + the fallback");

    // A client error is not retried and not sent to a fallback: the provider's answer as is.
    let resp = chat(&client, &gw, "bad-request").await?;
    ensure!(resp.status() == 422, "bad-request: {}", resp.status());
    ensure!(header(&resp, "x-tollgate-attempts") == "1");
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
