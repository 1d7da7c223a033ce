//! Vertex AI deployments end to end: Gemini and Claude on Vertex AI, whole and streamed,
//! through the gateway to the mock's Vertex routes, signed in with the test service account
//! (the mock checks the JWT's signature); one token exchange per deployment for all its
//! requests; every request metered on Kafka with its tokens and its catalogue cost.

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_benches::mock_vertex::test_key;
use tollgate_tests::*;

fn vertex(name: &str, model: &str, mock: &str, credentials: String) -> ModelEntry {
    ModelEntry {
        model_name: name.to_owned(),
        litellm_params: LitellmParams {
            model: model.to_owned(),
            api_base: Some(format!("{mock}/vertex")),
            vertex_credentials: Some(credentials),
            ..LitellmParams::default()
        },
        model_info: None,
    }
}

fn gateway_config(mock: &str, topic: &str, dir: &std::path::Path) -> Result<GatewayConfig> {
    // Gemini: the key as a file, project and location set.
    let path = dir.join("vertex-service-account.json");
    std::fs::write(&path, test_key(&format!("{mock}/vertex/token")))?;
    let mut gemini = vertex("vertex-gemini", "vertex_ai/gemini-2.5-pro", mock, path.to_string_lossy().into_owned());
    gemini.litellm_params.vertex_project = Some("tollgate-e2e".to_owned());
    gemini.litellm_params.vertex_location = Some("europe-west4".to_owned());
    // Claude: the key's JSON inline, the project from the key, the default location.
    let claude = vertex(
        "vertex-claude",
        "vertex_ai/claude-3-5-sonnet@20240620",
        mock,
        test_key(&format!("{mock}/vertex/token")),
    );
    // A token endpoint that is not there.
    let broken = vertex("vertex-broken", "vertex_ai/gemini-2.5-pro", mock, test_key(&format!("{mock}/no/token")));
    let mut config = GatewayConfig::new("gw-vertex", &[gemini, claude, broken], topic, &kafka_bootstrap());
    // Priced from the model catalogue, as Vertex AI's models are.
    config.prices.clear();
    Ok(config)
}

async fn chat(client: &reqwest::Client, url: &str, model: &str, id: &str, stream: bool) -> Result<(u16, String)> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi there vertex"}],
                      "max_tokens": 5, "stream": stream});
    let resp = client.post(url).bearer_auth(TENANT_KEYS[0].0).header("x-request-id", id).json(&body).send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_and_claude_on_vertex_are_served_and_metered() -> Result<()> {
    let dir = scratch_dir("vertex")?;
    let topic = unique("usage-vertex-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &[]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic, &dir)?).await?;
    let url = format!("{}/v1/chat/completions", gateway.url()?);
    let client = reqwest::Client::new();

    let mut ids = Vec::new();
    for (model, stream, id) in [
        ("vertex-gemini", false, "vg-1"),
        ("vertex-gemini", false, "vg-2"),
        ("vertex-gemini", true, "vg-stream"),
        ("vertex-claude", false, "vc-1"),
        ("vertex-claude", false, "vc-2"),
        ("vertex-claude", true, "vc-stream"),
    ] {
        let (status, text) = chat(&client, &url, model, id, stream).await?;
        ensure!(status == 200, "{id}: {status} {text}");
        if stream {
            ensure!(text.trim_end().ends_with("data: [DONE]") && text.contains("tok"), "{id}: {text}");
        } else {
            let answer: Value = serde_json::from_str(&text)?;
            ensure!(answer["choices"][0]["message"]["content"] == "tok tok tok tok tok", "{id}: {answer}");
            ensure!(answer["usage"]["completion_tokens"] == 5, "{id}: {answer}");
        }
        ids.push((id, model));
    }

    // One exchange per deployment (each has its own account), however many requests.
    let tokens: Value = reqwest::get(format!("{}/vertex/tokens", mock.url()?)).await?.json().await?;
    ensure!(tokens["issued"] == 2, "tokens issued: {tokens}");

    // Prompt: 1 + 15 bytes / 4 = 4 tokens (both mocks' rule); 5 output tokens. Catalogue prices
    // in nano-USD per token: gemini-2.5-pro 1250 and 10 000; claude-3-5-sonnet@20240620 3000 and
    // 15 000.
    let events = collect_events(&topic, ids.len(), Duration::from_secs(30)).await?;
    for (id, model) in ids {
        let e = events.get(id).ok_or_else(|| anyhow::anyhow!("no event for {id}"))?;
        let cost = if model == "vertex-gemini" { 4 * 1250 + 5 * 10_000 } else { 4 * 3000 + 5 * 15_000 };
        ensure!(e.provider.as_deref() == Some("vertex_ai") && e.status == 200, "{id}: {e:?}");
        ensure!(e.prompt_tokens == 4 && e.completion_tokens == 5 && !e.estimated, "{id}: {e:?}");
        ensure!(e.cost_nano_usd.0 == cost, "{id}: cost {:?}, expected {cost}", e.cost_nano_usd);
        ensure!(e.stream == id.ends_with("stream"), "{id}: {e:?}");
    }

    // A token endpoint that fails: a clean upstream error, and neither key nor token leaks.
    let (status, text) = chat(&client, &url, "vertex-broken", "vb-1", false).await?;
    ensure!(status >= 500, "{status} {text}");
    let log = gateway.log();
    ensure!(log.contains("no access token: the token endpoint answered 404"), "the reason is not logged:\n{log}");
    for secret in ["PRIVATE KEY", "ya29.", "eyJ"] {
        ensure!(!text.contains(secret) && !log.contains(secret), "{secret} leaked: {text}");
    }
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
