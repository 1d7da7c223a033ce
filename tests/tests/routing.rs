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

/// The routing shapes LiteLLM configs rely on, from a client: a `model_group_alias`, wildcard
/// deployments (`openai/*` and a catch-all `*`), and a prompt longer than a deployment's
/// context window going to `context_window_fallbacks` without calling it. Each request is
/// metered once, under the name the client asked for and the model that served it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_wildcards_and_context_windows() -> Result<()> {
    let dir = scratch_dir("routing-shapes")?;
    let topic = unique("usage-routing-shapes-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &[]).await?;
    let base = format!("{}/v1", mock.url()?);
    let wildcard = |name: &str, model: &str, api_base: &str| {
        let mut entry = model_entry(name, api_base);
        entry.litellm_params.model = model.to_owned();
        entry
    };
    let mut tiny = model_entry("tiny", &format!("{}/status/500/v1", mock.url()?));
    tiny.model_info = Some([("max_input_tokens".to_owned(), json!(50))].into());
    let models = [
        model_entry("gpt-4o-mini", &base),
        tiny,
        wildcard("openai/*", "openai/*", &base),
        wildcard("*", "openai/*", &base),
    ];
    let mut config = GatewayConfig::new("gw-routing-shapes", &models, &topic, &kafka_bootstrap()).with_yaml(
        "router_settings:\n  model_group_alias: {gpt-4: gpt-4o-mini}\n  \
         context_window_fallbacks: [{tiny: [gpt-4o-mini]}]\n",
    )?;
    // The catch-all serves names with no price of their own: priced here for the whole entry.
    config.prices.insert("*".to_owned(), Price { input_nano_usd_per_token: 7, output_nano_usd_per_token: 11 });
    let gateway = start_gateway(&dir, &config).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::new();
    let send = |model: &str, id: &str, content: String| {
        client
            .post(format!("{gw}/v1/chat/completions"))
            .bearer_auth(TENANT_KEYS[0].0)
            .header("x-request-id", id)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 1}))
            .send()
    };

    let alias = send("gpt-4", "shape-alias", "hi".into()).await?;
    ensure!(alias.status() == 200, "alias: {}", alias.status());
    ensure!(header(&alias, "x-tollgate-model-group") == "gpt-4o-mini", "the alias is served by its group");

    let through = send("openai/gpt-4.1-nano", "shape-wildcard", "hi".into()).await?;
    ensure!(through.status() == 200, "openai/*: {}", through.status());
    let body: serde_json::Value = through.json().await?;
    ensure!(body["model"] == "gpt-4.1-nano", "the star is filled in upstream: {body}");

    let caught = send("some-self-hosted-model", "shape-catch-all", "hi".into()).await?;
    ensure!(caught.status() == 200, "*: {}", caught.status());

    let bad = send("openai/../v1/files", "shape-bad-name", "hi".into()).await?;
    ensure!(bad.status() == 404, "a name with a path segment is no model: {}", bad.status());

    // `tiny`'s only deployment would answer 500: a prompt beyond its window never reaches it.
    let long = send("tiny", "shape-long", "word ".repeat(400)).await?;
    ensure!(long.status() == 200, "long prompt: {}", long.status());
    ensure!(header(&long, "x-tollgate-model-group") == "gpt-4o-mini", "context window fallback");
    ensure!(header(&long, "x-tollgate-attempts") == "1", "the too-small deployment was not tried");
    let metrics = client.get(format!("{gw}/metrics")).send().await?.text().await?;
    ensure!(metrics.contains("tollgate_context_window_skips_total"), "no skip metric");
    let leaked: Vec<&str> = metrics.lines().filter(|line| line.contains("some-self-hosted-model")).collect();
    ensure!(leaked.is_empty(), "a client's model name became a label: {leaked:?}");

    // The name no wildcard accepts was refused before admission: not metered.
    let events = collect_events(&topic, 4, std::time::Duration::from_secs(30)).await?;
    let event = |id: &str| events.get(id).with_context(|| format!("no event for {id}"));
    ensure!(event("shape-alias")?.requested_model == "gpt-4o-mini", "an alias is metered as its group");
    let wild = event("shape-wildcard")?;
    ensure!(wild.requested_model == "openai/gpt-4.1-nano" && wild.served_model.as_deref() == Some("gpt-4.1-nano"));
    let caught = event("shape-catch-all")?;
    let expected = caught.prompt_tokens * 7 + caught.completion_tokens * 11;
    ensure!(caught.cost_nano_usd.0 == i64::try_from(expected)?, "the entry's price: {caught:?}");
    ensure!(event("shape-long")?.status == 200);
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
