//! AWS Bedrock end to end: chat completions, whole and streamed, and Anthropic's `/v1/messages`,
//! through the gateway to the mock's Converse API, which checks every request's SigV4
//! signature; usage events on Kafka with Bedrock's token counts, priced from the model
//! catalogue; a throttled deployment (429) falling back to another.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_benches::mock_bedrock::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use tollgate_tests::*;

/// The catalogue's price of `anthropic.claude-3-5-sonnet-20240620-v1:0`, nano-USD per token.
const INPUT: i64 = 3_000;
const OUTPUT: i64 = 15_000;
const MODEL: &str = "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0";

fn bedrock(name: &str, model: &str, api_base: String, secret: &str) -> ModelEntry {
    ModelEntry {
        model_name: name.to_owned(),
        litellm_params: LitellmParams {
            model: model.to_owned(),
            api_base: Some(api_base),
            aws_access_key_id: Some(ACCESS_KEY_ID.to_owned()),
            aws_secret_access_key: Some(secret.to_owned()),
            aws_session_token: Some("os.environ/TOLLGATE_E2E_AWS_SESSION_TOKEN".to_owned()),
            aws_region_name: Some("us-east-1".to_owned()),
            ..LitellmParams::default()
        },
        model_info: None,
    }
}

fn gateway_config(mock: &str, topic: &str) -> Result<GatewayConfig> {
    let models = [
        bedrock("claude-bedrock", MODEL, mock.to_owned(), "os.environ/TOLLGATE_E2E_AWS_SECRET"),
        bedrock(
            "claude-converse",
            "bedrock/converse/anthropic.claude-3-5-sonnet-20240620-v1:0",
            mock.to_owned(),
            SECRET_ACCESS_KEY,
        ),
        bedrock("claude-throttled", MODEL, format!("{mock}/status/429"), SECRET_ACCESS_KEY),
        bedrock("claude-wrong-secret", MODEL, mock.to_owned(), "not-the-secret"),
        bedrock("claude-exception", MODEL, format!("{mock}/exception/3"), SECRET_ACCESS_KEY),
    ];
    let mut config = GatewayConfig::new("gw-bedrock", &models, topic, &kafka_bootstrap());
    // Priced by the model catalogue, not the test prices.
    config.prices.clear();
    config
        .with_yaml("router_settings:\n  num_retries: 1\n  fallbacks: [{\"claude-throttled\": [\"claude-bedrock\"]}]\n")
}

fn prompt_tokens(texts: &[&str]) -> u64 {
    1 + texts.iter().map(|t| t.len() as u64).sum::<u64>() / 4
}

async fn post(client: &reqwest::Client, url: String, id: &str, body: Value) -> Result<reqwest::Response> {
    let resp = client.post(url).bearer_auth(TENANT_KEYS[0].0).header("x-request-id", id).json(&body).send().await?;
    Ok(resp)
}

/// [`post`], answered 200.
async fn answered(client: &reqwest::Client, url: String, id: &str, body: Value) -> Result<reqwest::Response> {
    let resp = post(client, url, id, body).await?;
    ensure!(resp.status() == 200, "{id}: {} {}", resp.status(), resp.text().await?);
    Ok(resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_is_signed_translated_metered_and_falls_back() -> Result<()> {
    let dir = scratch_dir("bedrock")?;
    let topic = unique("usage-bedrock-");
    create_topic(&topic, 1).await?;
    std::env::set_var("TOLLGATE_E2E_AWS_SECRET", SECRET_ACCESS_KEY);
    std::env::set_var("TOLLGATE_E2E_AWS_SESSION_TOKEN", "session-token-e2e");
    let mock = start_mock(&dir, &[]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic)?).await?;
    let gw = gateway.url()?.to_owned();
    let chat = format!("{gw}/v1/chat/completions");
    let client = reqwest::Client::new();
    let system = "Be brief.";
    let user = "Hello from the Bedrock test";
    let messages = json!([{"role": "system", "content": system}, {"role": "user", "content": user}]);

    // 1. Whole: signed (the mock refuses a bad signature), translated, priced by the catalogue.
    let resp = answered(
        &client,
        chat.clone(),
        "br-whole",
        json!({"model": "claude-bedrock", "messages": messages, "max_tokens": 3}),
    )
    .await?;
    let cost: i64 = resp.headers().get("x-tollgate-cost-nano-usd").context("no cost header")?.to_str()?.parse()?;
    let answer: Value = resp.json().await?;
    assert_eq!(answer["choices"][0]["message"]["content"], "tok tok tok");
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    let prompt = prompt_tokens(&[system, user]);
    assert_eq!(answer["usage"]["prompt_tokens"], prompt);
    assert_eq!(cost, prompt as i64 * INPUT + 3 * OUTPUT);

    // 2. Streamed, through `bedrock/converse/...`: the event-stream as OpenAI chunks.
    let body = json!({"model": "claude-converse", "messages": [{"role": "user", "content": user}], "max_tokens": 4,
                      "stream": true, "stream_options": {"include_usage": true}});
    let resp = answered(&client, chat.clone(), "br-stream", body).await?;
    let text = resp.text().await?;
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, "tok tok tok tok");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(chunks.last().map(|c| c["usage"]["completion_tokens"].clone()), Some(json!(4)));

    // 3. Anthropic's `/v1/messages`, answered by Bedrock.
    let body = json!({"model": "claude-bedrock", "max_tokens": 2, "messages": [{"role": "user", "content": user}]});
    let resp = answered(&client, format!("{gw}/v1/messages"), "br-messages", body).await?;
    let message: Value = resp.json().await?;
    assert_eq!(message["content"][0]["text"], "tok tok");
    assert_eq!(message["usage"]["output_tokens"], 2);

    // 4. Throttled (429) deployments fall back, after their retry, to one that answers.
    let resp = answered(
        &client,
        chat.clone(),
        "br-fallback",
        json!({"model": "claude-throttled", "messages": messages, "max_tokens": 1}),
    )
    .await?;
    assert_eq!(resp.headers().get("x-tollgate-model-group").and_then(|v| v.to_str().ok()), Some("claude-bedrock"));

    // 5. A wrong secret signs wrongly: the mock's 403 reaches the client, its secret nowhere.
    let resp =
        post(&client, chat.clone(), "br-denied", json!({"model": "claude-wrong-secret", "messages": messages})).await?;
    let (status, _, body) = error_code(resp).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("signature")), "{body}");
    assert!(!body.to_string().contains("not-the-secret"));

    // 6. An exception in the middle of a stream: what came, then an error event; no `[DONE]`.
    let body = json!({"model": "claude-exception", "messages": [{"role": "user", "content": user}], "max_tokens": 5, "stream": true});
    let resp = answered(&client, chat, "br-exception", body).await?;
    let text = resp.text().await?;
    assert!(text.contains(r#""content":"tok""#) && text.contains("rate_limit_exceeded"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");

    // The usage events: Bedrock's counts, the catalogue's price.
    let events = collect_events(&topic, 6, Duration::from_secs(60)).await?;
    let whole = events.get("br-whole").context("no event of the whole answer")?;
    assert_eq!((whole.prompt_tokens, whole.completion_tokens), (prompt, 3));
    assert_eq!(whole.cost_nano_usd.0, cost);
    assert_eq!(whole.provider.as_deref(), Some("bedrock"));
    assert!(!whole.estimated, "Bedrock's usage is read, not estimated");
    let stream = events.get("br-stream").context("no event of the stream")?;
    assert_eq!((stream.prompt_tokens, stream.completion_tokens), (prompt_tokens(&[user]), 4));
    assert_eq!(stream.cost_nano_usd.0, prompt_tokens(&[user]) as i64 * INPUT + 4 * OUTPUT);
    assert!(!stream.partial);
    let messages_event = events.get("br-messages").context("no event of /v1/messages")?;
    assert_eq!(messages_event.completion_tokens, 2);
    let fallback = events.get("br-fallback").context("no event of the fallback")?;
    assert_eq!(fallback.completion_tokens, 1);
    let cut = events.get("br-exception").context("no event of the cut stream")?;
    assert!(cut.partial && cut.estimated, "billed for what was sent, by Tollgate's count");
    assert_eq!(cut.error_type.as_deref(), Some("upstream_stream_incomplete"));
    assert!(cut.completion_tokens >= 1, "the tokens sent are billed");
    let billed = cut.prompt_tokens as i64 * INPUT + cut.completion_tokens as i64 * OUTPUT;
    assert_eq!(cut.cost_nano_usd.0, billed);
    let denied = events.get("br-denied").context("no event of the refused request")?;
    assert_eq!((denied.status, denied.cost_nano_usd.0), (403, 0));
    for log in [mock.log(), gateway.log()] {
        assert!(!log.contains(SECRET_ACCESS_KEY) && !log.contains("session-token-e2e"), "a secret was logged");
    }
    Ok(())
}
