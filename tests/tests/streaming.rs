//! Streaming is metered exactly: a finished stream from the provider's usage, a stream the
//! client abandons for what was sent (partial), a stalled stream cut at the idle timeout.

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;
use tollgate_tests::*;

fn gateway_config(mock: &str, topic: &str) -> GatewayConfig {
    let mut stalling = model_entry("stalling", &format!("{mock}/stall/3000/v1"));
    stalling.litellm_params.stream_timeout = Some(0.5);
    let models = [
        model_entry("gpt-4o-mini", &format!("{mock}/v1")),
        model_entry("slow", &format!("{mock}/delay/3000/v1")),
        stalling,
    ];
    GatewayConfig::new("gw-stream", &models, topic, &kafka_bootstrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_are_metered_whole_partial_and_timed_out() -> Result<()> {
    let dir = scratch_dir("stream")?;
    let topic = unique("usage-stream-");
    create_topic(&topic, 1).await?;
    // 20 ms between chunks: a 40-token stream takes most of a second.
    let mock = start_mock(&dir, &["--chunk-delay-us", "20000"]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic)).await?;
    let url = format!("{}/v1/chat/completions", gateway.url()?);
    let client = reqwest::Client::new();
    let key = TENANT_KEYS[0].0;
    let content = "stream this please";
    let prompt_tokens = 1 + content.len() as u64 / 4;

    // 1. Read to the end: billed from the provider's usage, which the client did not ask for
    //    and does not see.
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}],
                      "max_tokens": 10, "stream": true});
    let resp = client.post(&url).bearer_auth(key).header("x-request-id", "s-whole").json(&body).send().await?;
    ensure!(resp.status() == 200);
    let text = resp.text().await?;
    ensure!(text.trim_end().ends_with("data: [DONE]"), "stream did not end with [DONE]: {text}");
    ensure!(!text.contains("\"usage\""), "the usage chunk leaked to a client that did not ask: {text}");

    // 2. Abandon after two chunks: billed for what was streamed, marked partial.
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}],
                      "max_tokens": 40, "stream": true});
    let resp = client.post(&url).bearer_auth(key).header("x-request-id", "s-cut").json(&body).send().await?;
    let mut chunks = resp.bytes_stream();
    let mut seen = 0;
    while seen < 3 {
        chunks.next().await.context("stream ended early")??;
        seen += 1;
    }
    drop(chunks);

    // 3. A provider that stalls past the idle timeout: an error event, then the end.
    let body = json!({"model": "stalling", "messages": [{"role": "user", "content": content}],
                      "max_tokens": 10, "stream": true});
    let resp = client.post(&url).bearer_auth(key).header("x-request-id", "s-stall").json(&body).send().await?;
    let text =
        tokio::time::timeout(Duration::from_secs(10), resp.text()).await.context("stalled stream never ended")??;
    ensure!(text.contains("\"error\"") && text.contains("upstream_timeout"), "no error event: {text}");

    let events = collect_events(&topic, 3, Duration::from_secs(30)).await?;
    let whole = &events["s-whole"];
    ensure!(whole.stream && !whole.partial && !whole.estimated, "{whole:?}");
    ensure!(whole.prompt_tokens == prompt_tokens && whole.completion_tokens == 10, "{whole:?}");
    let full_cost = prompt_tokens as i64 * INPUT_PRICE + 10 * OUTPUT_PRICE;
    ensure!(whole.cost_nano_usd.0 == full_cost, "whole stream cost {:?} != {full_cost}", whole.cost_nano_usd);

    let cut = &events["s-cut"];
    ensure!(cut.partial && cut.error_type.as_deref() == Some("client_disconnected"), "{cut:?}");
    ensure!(cut.estimated, "a cut stream has no provider usage: {cut:?}");
    ensure!(cut.completion_tokens > 0 && cut.completion_tokens < 40, "billed {} of 40 tokens", cut.completion_tokens);
    ensure!(cut.cost_nano_usd.0 > 0, "{cut:?}");

    let stalled = &events["s-stall"];
    ensure!(stalled.partial && stalled.error_type.as_deref() == Some("stream_idle_timeout"), "{stalled:?}");
    gateway.stop().await?;
    drop(mock);
    Ok(())
}

/// A client that hangs up cancels the upstream call (the provider stops working for it), and the
/// request is still metered, as abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_hangs_up_cancels_the_upstream_call() -> Result<()> {
    let dir = scratch_dir("hangup")?;
    let topic = unique("usage-hangup-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &["--workers", "2"]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic)).await?;
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build()?;
    let body = json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]});
    let outcome = client
        .post(format!("{}/v1/chat/completions", gateway.url()?))
        .bearer_auth(TENANT_KEYS[0].0)
        .header("x-request-id", "hangup")
        .json(&body)
        .send()
        .await;
    ensure!(outcome.is_err(), "the client should have given up first");
    let stats_url = format!("{}/stats", mock.url()?);
    eventually("the provider to see the call cancelled", Duration::from_secs(30), || {
        let url = stats_url.clone();
        async move {
            let stats: serde_json::Value = reqwest::get(url).await?.json().await?;
            Ok((stats["delays_started"] == 1 && stats["delays_cancelled"] == 1).then_some(()))
        }
    })
    .await?;
    // A quiet period, deliberately: well past the provider's 3 s (counted from after the call
    // was seen started), a call still running would have finished and shown in
    // `delays_finished`.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stats: serde_json::Value = reqwest::get(&stats_url).await?.json().await?;
    let events = collect_events(&topic, 1, Duration::from_secs(30)).await?;
    ensure!(stats["delays_finished"] == 0, "the upstream call ran to the end: {stats}");
    ensure!(stats["delays_cancelled"] == 1, "the provider did not see the call cancelled: {stats}");
    let e = &events["hangup"];
    ensure!(e.status == 499 && e.error_type.as_deref() == Some("client_disconnected"), "{e:?}");
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
