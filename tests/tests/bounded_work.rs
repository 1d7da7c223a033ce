//! What one request may make the gateway hold or do is bounded, and hitting a bound is metered
//! like any upstream failure: an answer over `gateway.max_response_bytes` is a 502, a stream
//! past `stream_max_duration` ends with an error event; each still produces one usage event.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::time::Duration;
use tollgate_tests::*;

fn gateway_config(mock: &str, topic: &str) -> GatewayConfig {
    let mut short_streams = model_entry("short-streams", &format!("{mock}/v1"));
    short_streams.litellm_params.stream_max_duration = Some(1.0);
    let models = [model_entry("gpt-4o-mini", &format!("{mock}/v1")), short_streams];
    let mut config = GatewayConfig::new("gw-bounds", &models, topic, &kafka_bootstrap());
    config.gateway.max_response_bytes = Some(4096);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_streams_are_bounded_and_still_metered() -> Result<()> {
    let dir = scratch_dir("bounds")?;
    let topic = unique("usage-bounds-");
    create_topic(&topic, 1).await?;
    // 100 ms between streamed chunks: a 100-token stream takes ten seconds.
    let mock = start_mock(&dir, &["--chunk-delay-us", "100000"]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic)).await?;
    let url = format!("{}/v1/chat/completions", gateway.url()?);
    let client = reqwest::Client::new();
    let key = TENANT_KEYS[0].0;
    let chat = |model: &str, max_tokens: u64, stream: bool| {
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
               "stream": stream})
    };

    // 1. An answer within the limit passes; one of about 8 KB is over it: a 502 in the OpenAI
    //    envelope, and the provider was reached, so it is metered as an upstream failure.
    let resp = client.post(&url).bearer_auth(key).header("x-request-id", "small").json(&chat("gpt-4o-mini", 10, false));
    ensure!(resp.send().await?.status() == 200);
    let resp = client.post(&url).bearer_auth(key).header("x-request-id", "big").json(&chat("gpt-4o-mini", 2000, false));
    let (status, code, body) = error_code(resp.send().await?).await;
    ensure!(status == 502 && code == "upstream_response_too_large", "{status} {body}");
    ensure!(body["error"]["type"] == "api_error", "{body}");

    // 2. A stream that would last ten seconds is cut at its one-second deadline.
    let resp =
        client.post(&url).bearer_auth(key).header("x-request-id", "long").json(&chat("short-streams", 100, true));
    let text = tokio::time::timeout(Duration::from_secs(8), resp.send().await?.text())
        .await
        .context("the stream outlived its deadline")??;
    let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
    ensure!(last.contains("\"upstream_timeout\"") && last.contains("longest allowed duration"), "{last}");
    ensure!(text.contains("\"content\""), "nothing was streamed before the deadline: {text}");

    let events = collect_events(&topic, 3, Duration::from_secs(30)).await?;
    let small = &events["small"];
    ensure!(small.status == 200 && small.error_type.is_none(), "{small:?}");
    let big = &events["big"];
    ensure!(big.status == 502 && big.error_type.as_deref() == Some("upstream_response_too_large"), "{big:?}");
    ensure!(big.provider.as_deref() == Some("openai") && big.cost_nano_usd.0 == 0, "{big:?}");
    let long = &events["long"];
    ensure!(long.partial && long.error_type.as_deref() == Some("stream_duration_exceeded"), "{long:?}");
    ensure!(long.estimated && long.completion_tokens > 0 && long.completion_tokens < 100, "{long:?}");
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
