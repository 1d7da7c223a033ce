//! Pass-through routes (`/openai/...`, `/anthropic/...`, `/gemini/...`) end to end: the
//! provider's own request and answer through a real gateway to the mock provider, the
//! deployment's key sent upstream in place of the virtual key, one usage event on real Kafka
//! per answered request at the tokens the answer reported, and refusals (a bad key, a
//! traversal, a spent budget) answered before any upstream call, with no event; a stream
//! whose client did not ask for usage metered by the usage the gateway asked for, and the
//! client's trace id kept. In the embedded set-up: `GET` routed and metered at no cost,
//! customers charged and their budgets enforced, a failing deployment retried on another
//! of its group, and the ledger holding exactly what the answers said they cost.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_tests::*;

const UPSTREAM_KEY: &str = "sk-upstream-passthrough";
const BROKE_KEY: &str = "sk-e2e-passthrough-broke";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn gateway_config(mock: &str, topic: &str) -> Result<GatewayConfig> {
    let entry = |name: &str, model: &str, base: String| {
        let mut e = model_entry(name, &base);
        e.litellm_params.model = model.to_owned();
        e.litellm_params.api_key = Some(UPSTREAM_KEY.to_owned());
        e
    };
    let models = [
        entry("gpt-4o-mini", "openai/gpt-4o-mini", format!("{mock}/v1")),
        entry("claude-pt", "anthropic/claude-sonnet-4-20250514", format!("{mock}/anthropic")),
        entry("gemini-pt", "gemini/gemini-2.0-flash", format!("{mock}/gemini/v1beta")),
    ];
    let mut config = GatewayConfig::new("gw-passthrough", &models, topic, &kafka_bootstrap());
    config.budgets = Some(Budgets::fail_open());
    let mut keys: Vec<String> = TENANT_KEYS.iter().map(|(k, _)| format!("  - key: {k}")).collect();
    keys.push(format!("  - key: {BROKE_KEY}\n    max_budget: 0"));
    config.virtual_keys.clear();
    config.with_yaml(&format!("virtual_keys:\n{}\n", keys.join("\n")))
}

async fn call(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    id: &str,
    body: &Value,
) -> Result<(u16, Option<i64>, Value)> {
    let resp = client.post(url).bearer_auth(key).header("x-request-id", id).json(body).send().await?;
    let status = resp.status().as_u16();
    let cost = resp.headers().get("x-tollgate-cost-nano-usd").map(|v| v.to_str().map(str::parse)).transpose()?;
    let text = resp.text().await?;
    Ok((status, cost.transpose()?, serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?))
}

#[tokio::test(flavor = "multi_thread")]
async fn pass_through_requests_are_forwarded_with_the_deployment_key_and_metered() -> Result<()> {
    let dir = scratch_dir("passthrough")?;
    let topic = unique("usage-passthrough-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &["--api-key", UPSTREAM_KEY]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic)?).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::new();
    let key = TENANT_KEYS[0].0;

    // OpenAI: the mock refuses any key but the deployment's, so a 200 proves the swap.
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello pass-through"}],
                      "max_tokens": 7});
    let (status, cost, answer) =
        call(&client, &format!("{gw}/openai/v1/chat/completions"), key, "pt-openai", &chat).await?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["choices"][0]["message"]["content"].is_string(), "{answer}");
    // Prompt: 1 + 18 bytes / 4 = 5 tokens; completion: max_tokens.
    let openai_cost = 5 * INPUT_PRICE + 7 * OUTPUT_PRICE;
    assert_eq!(cost, Some(openai_cost));

    // A stream passes through as the provider sent it, metered by its usage chunk.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = client
        .post(format!("{gw}/openai/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-request-id", "pt-stream")
        .json(&streamed)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await?;
    assert!(text.contains("\"usage\"") && text.trim_end().ends_with("data: [DONE]"), "{text}");

    // Without `include_usage` the gateway asks for it, meters by it and keeps it from the client.
    let mut unasked = chat.clone();
    unasked["stream"] = json!(true);
    let resp = client
        .post(format!("{gw}/openai/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-request-id", "pt-stream-unasked")
        .header("traceparent", format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01"))
        .json(&unasked)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("x-tollgate-trace-id").and_then(|v| v.to_str().ok()), Some(CLIENT_TRACE));
    let text = resp.text().await?;
    assert!(!text.contains("\"usage\"") && text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"content\""), "{text}");

    let messages = json!({"model": "claude-pt", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]});
    let (status, anthropic_cost, answer) =
        call(&client, &format!("{gw}/anthropic/v1/messages"), key, "pt-anthropic", &messages).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "message", "Anthropic's own shape comes back: {answer}");

    let generate = json!({"contents": [{"role": "user", "parts": [{"text": "hi there"}]}]});
    let url = format!("{gw}/gemini/v1beta/models/gemini-pt:generateContent");
    let (status, gemini_cost, answer) = call(&client, &url, key, "pt-gemini", &generate).await?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["usageMetadata"].is_object(), "Gemini's own shape comes back: {answer}");

    // Refusals, before any upstream call and without an event.
    let (status, _, answer) =
        call(&client, &format!("{gw}/openai/v1/chat/completions"), "sk-nobody", "pt-bad-key", &chat).await?;
    assert_eq!(status, 401, "{answer}");
    let traversal = format!("{gw}/openai/v1%2f%2e%2e%2fadmin");
    let (status, _, answer) = call(&client, &traversal, key, "pt-traversal", &chat).await?;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("pass-through path refused"), "{answer}");
    let (status, _, answer) =
        call(&client, &format!("{gw}/openai/v1/chat/completions"), BROKE_KEY, "pt-broke", &chat).await?;
    assert_eq!((status, answer["error"]["type"].as_str()), (400, Some("budget_exceeded")), "{answer}");

    // One event per answered request, at the tokens each answer reported.
    let events = collect_events(&topic, 5, Duration::from_secs(30)).await?;
    let openai = &events["pt-openai"];
    assert_eq!((openai.prompt_tokens, openai.completion_tokens, openai.estimated), (5, 7, false));
    assert_eq!(openai.cost_nano_usd.0, openai_cost);
    let stream = &events["pt-stream"];
    assert_eq!(
        (stream.prompt_tokens, stream.completion_tokens, stream.estimated, stream.partial),
        (5, 7, false, false)
    );
    assert_eq!(stream.cost_nano_usd.0, openai_cost);
    let unasked = &events["pt-stream-unasked"];
    assert_eq!((unasked.prompt_tokens, unasked.completion_tokens, unasked.estimated), (5, 7, false));
    assert_eq!(unasked.trace_id.as_deref(), Some(CLIENT_TRACE), "the client's trace is the event's");
    for (id, cost) in [("pt-anthropic", anthropic_cost), ("pt-gemini", gemini_cost)] {
        let e = &events[id];
        assert!(e.prompt_tokens > 0 && e.completion_tokens > 0 && !e.estimated, "{id}: {e:?}");
        let priced = e.prompt_tokens as i64 * INPUT_PRICE + e.completion_tokens as i64 * OUTPUT_PRICE;
        assert_eq!((Some(e.cost_nano_usd.0), e.cost_nano_usd.0), (cost, priced), "{id}");
    }
    assert_eq!(records_on(&topic, 1)?, 5, "refused requests leave no event");

    // Counted among the model routes' requests, under the family's endpoint label.
    let metrics = client.get(format!("{gw}/metrics")).send().await?.text().await?;
    let counted = |endpoint: &str, status: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("tollgate_requests_total{") && l.contains(&format!("endpoint=\"{endpoint}\"")))
            .filter(|l| l.contains(&format!("status=\"{status}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert_eq!(counted("openai/*", "200"), 3, "{metrics}");
    assert_eq!((counted("anthropic/*", "200"), counted("gemini/*", "200")), (1, 1), "{metrics}");
    assert_eq!((counted("openai/*", "401"), counted("openai/*", "400")), (1, 2), "{metrics}");
    gateway.stop().await?;
    mock.stop().await
}

/// The embedded set-up (its admin API makes customers): two deployments of one model group,
/// the first (by weight) failing with 500.
fn embedded_config(mock: &str, db: &std::path::Path) -> GatewayConfig {
    let entry = |base: String, weight: f64| {
        let mut e = model_entry("gpt-4o-mini", &base);
        e.litellm_params.api_key = Some(UPSTREAM_KEY.to_owned());
        e.litellm_params.weight = Some(weight);
        e
    };
    let models = [entry(format!("{mock}/status/500/v1"), 1000.0), entry(format!("{mock}/v1"), 0.001)];
    GatewayConfig::embedded("gw-passthrough-embedded", &models, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_serves_get_charges_customers_and_retries_a_failing_deployment() -> Result<()> {
    let dir = scratch_dir("passthrough-embedded")?;
    let mock = start_mock(&dir, &["--api-key", UPSTREAM_KEY]).await?;
    let gateway = start_gateway(&dir, &embedded_config(mock.url()?, &dir.join("data").join("tollgate.db"))).await?;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);
    let client = reqwest::Client::new();
    admin.ok("/team/new", json!({"team_id": "team-pt"})).await?;
    let key =
        admin.ok("/key/generate", json!({"team_id": "team-pt"})).await?["key"].as_str().context("key")?.to_owned();
    admin.ok("/customer/new", json!({"user_id": "cust-pt", "team_id": "team-pt", "max_budget": 10})).await?;
    admin.ok("/customer/new", json!({"user_id": "cust-pt-broke", "team_id": "team-pt", "max_budget": 0})).await?;
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello pass-through"}],
                      "max_tokens": 7});
    let url = format!("{gw}/openai/v1/chat/completions");
    let mut charged = 0;

    // The weighty deployment answers 500: retried on the other, one event, the cost of the answer.
    let resp =
        client.post(&url).bearer_auth(&key).header("x-tollgate-customer-id", "cust-pt").json(&chat).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("x-tollgate-attempts").and_then(|v| v.to_str().ok()), Some("2"));
    let cost: i64 = resp.headers().get("x-tollgate-cost-nano-usd").context("cost")?.to_str()?.parse()?;
    assert_eq!(cost, 5 * INPUT_PRICE + 7 * OUTPUT_PRICE);
    charged += cost;
    // The body's `user` names the customer too.
    let mut with_user = chat.clone();
    with_user["user"] = json!("cust-pt");
    let resp = client.post(&url).bearer_auth(&key).json(&with_user).send().await?;
    assert_eq!(resp.status(), 200);
    charged += resp.headers().get("x-tollgate-cost-nano-usd").context("cost")?.to_str()?.parse::<i64>()?;

    // A customer over its budget is refused on the pass-through too, with no event.
    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .header("x-tollgate-customer-id", "cust-pt-broke")
        .json(&chat)
        .send()
        .await?;
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "customer_budget_exceeded"));

    // `GET` goes to the model group of the family's first deployment (retried as a `POST` is),
    // metered at no cost: the mock's model list comes back.
    let resp = client.get(format!("{gw}/openai/v1/models")).bearer_auth(&key).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("x-tollgate-attempts").and_then(|v| v.to_str().ok()), Some("2"));
    assert_eq!(resp.headers().get("x-tollgate-cost-nano-usd").and_then(|v| v.to_str().ok()), Some("0"));
    let models: Value = resp.json().await?;
    assert_eq!(models["object"], "list", "{models}");
    // A method no provider API uses is no route.
    let resp =
        client.request(reqwest::Method::OPTIONS, format!("{gw}/openai/v1/models")).bearer_auth(&key).send().await?;
    assert_eq!(resp.status(), 404);

    // The ledger holds what the answers cost: three requests for the key, two for the customer.
    let expect = (Some(charged), Some(3));
    eventually("the key's spend in the ledger", Duration::from_secs(30), || async {
        let (_, v) = admin.get(&format!("/key/info?key={key}")).await?;
        let got = (v["info"]["spend_nano_usd"].as_i64(), v["info"]["requests"].as_i64());
        Ok((got == expect).then_some(()))
    })
    .await?;
    eventually("the customer's spend in the ledger", Duration::from_secs(30), || async {
        let (_, v) = admin.get("/customer/info?end_user_id=cust-pt").await?;
        Ok((v["spend_nano_usd"].as_i64() == Some(charged)).then_some(()))
    })
    .await?;
    gateway.stop().await?;
    mock.stop().await
}
