//! A client that hangs up is billed by the stated policy (`billing.on_client_disconnect`), not
//! for free: hang-ups while the provider works, mid-stream and just before a stream's end, under
//! each policy; the ledger equals what the policy says, and every such event says when the
//! client went.

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;
use tollgate_schemas::UsageEvent;
use tollgate_tests::*;

const CONTENT: &str = "Tell me a long story about a lighthouse keeper and her cat, please.";
/// The tokens the mock reports for [`CONTENT`]: one per four characters, plus one.
const PROMPT: u64 = 1 + CONTENT.len() as u64 / 4;

fn chat(model: &str, max_tokens: u64, stream: bool) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": CONTENT}], "max_tokens": max_tokens, "stream": stream})
}

/// A gateway with `policy`: `slow` answers after 1.5 s, `drip` streams a token every 100 ms.
async fn gateway(dir: &std::path::Path, slow: &str, drip: &str, topic: &str, policy: &str) -> Result<Process> {
    let models = [model_entry("slow", &format!("{slow}/delay/1500/v1")), model_entry("drip", &format!("{drip}/v1"))];
    let config = GatewayConfig::new(&format!("gw-{policy}"), &models, topic, &kafka_bootstrap())
        .with_yaml(&format!("billing:\n  on_client_disconnect: {policy}\n"))?;
    start_gateway(dir, &config).await
}

/// Hangs up `id` while the provider works on it (the client waits 300 ms).
async fn hang_up_waiting(gw: &str, id: &str) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build()?;
    let sent = client
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth(TENANT_KEYS[0].0)
        .header("x-request-id", id)
        .json(&chat("slow", 20, false))
        .send()
        .await;
    ensure!(sent.is_err(), "{id}: the answer came before the hang-up");
    Ok(())
}

/// Reads `chunks` chunks of a 40-token stream, then hangs up.
async fn hang_up_streaming(gw: &str, id: &str, max_tokens: u64, chunks: usize) -> Result<()> {
    let resp = reqwest::Client::new()
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth(TENANT_KEYS[0].0)
        .header("x-request-id", id)
        .json(&chat("drip", max_tokens, true))
        .send()
        .await?;
    ensure!(resp.status() == 200, "{id}: {}", resp.status());
    let mut body = resp.bytes_stream();
    let mut seen = 0;
    while seen < chunks {
        let chunk = body.next().await.context("stream ended early")??;
        seen += chunk.windows(5).filter(|w| w == b"data:").count();
    }
    drop(body);
    Ok(())
}

fn cost(prompt: u64, completion: u64) -> i64 {
    prompt as i64 * INPUT_PRICE + completion as i64 * OUTPUT_PRICE
}

/// Every event says the client hung up, when, and charges tokens at the test prices.
fn check_marked(e: &UsageEvent, when: &str) -> Result<()> {
    ensure!(e.status == 499 && e.partial, "{}: {e:?}", e.request_id);
    ensure!(e.client_disconnected.as_deref() == Some(when), "{}: {:?}", e.request_id, e.client_disconnected);
    ensure!(e.cost_nano_usd.0 == cost(e.prompt_tokens, e.completion_tokens), "{}: cost {:?}", e.request_id, e);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hang_ups_are_billed_by_the_stated_policy() -> Result<()> {
    let dir = scratch_dir("hangups")?;
    let topic = unique("usage-hangups-");
    let ks = unique("tg_hangups_").replace('-', "_");
    create_topic(&topic, 3).await?;
    let slow = start_mock(&dir, &["--workers", "2"]).await?;
    let drip = start_mock(&dir, &["--chunk-delay-us", "100000", "--workers", "2"]).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &ks, 100)).await?;
    let policies = ["charge_prompt", "charge_delivered", "finish_upstream"];
    let mut gateways = Vec::new();
    for policy in policies {
        gateways.push(gateway(&dir, slow.url()?, drip.url()?, &topic, policy).await?);
    }
    for (policy, gw) in policies.iter().zip(&gateways) {
        let gw = gw.url()?;
        hang_up_waiting(gw, &format!("{policy}-waiting")).await?;
        hang_up_streaming(gw, &format!("{policy}-mid"), 40, 6).await?;
        // Nine of ten tokens: gone just before the end.
        hang_up_streaming(gw, &format!("{policy}-end"), 10, 10).await?;
    }
    let events = collect_events(&topic, 9, Duration::from_secs(60)).await?;
    let e = |id: &str| events.get(id).with_context(|| format!("no event for {id}"));

    // charge_prompt: the prompt (estimated: the provider never said) and what was streamed.
    let waiting = e("charge_prompt-waiting")?;
    check_marked(waiting, "waiting_for_provider")?;
    ensure!(waiting.estimated && waiting.prompt_tokens > 0 && waiting.completion_tokens == 0, "{waiting:?}");
    for (id, most) in [("charge_prompt-mid", 40), ("charge_prompt-end", 10)] {
        let cut = e(id)?;
        check_marked(cut, "during_stream")?;
        ensure!(cut.prompt_tokens > 0 && cut.completion_tokens > 0 && cut.completion_tokens <= most, "{cut:?}");
    }

    // charge_delivered: nothing for an unanswered request; a stream's delivered part only.
    let waiting = e("charge_delivered-waiting")?;
    check_marked(waiting, "waiting_for_provider")?;
    ensure!(waiting.cost_nano_usd.0 == 0, "{waiting:?}");
    for id in ["charge_delivered-mid", "charge_delivered-end"] {
        let cut = e(id)?;
        check_marked(cut, "during_stream")?;
        ensure!(cut.prompt_tokens == 0 && cut.completion_tokens > 0, "{cut:?}");
    }

    // finish_upstream: the provider's own figures, to the token.
    let waiting = e("finish_upstream-waiting")?;
    check_marked(waiting, "waiting_for_provider")?;
    ensure!(!waiting.estimated && (waiting.prompt_tokens, waiting.completion_tokens) == (PROMPT, 20), "{waiting:?}");
    for (id, max) in [("finish_upstream-mid", 40), ("finish_upstream-end", 10)] {
        let cut = e(id)?;
        check_marked(cut, "during_stream")?;
        ensure!(!cut.estimated && (cut.prompt_tokens, cut.completion_tokens) == (PROMPT, max), "{cut:?}");
    }
    let stats: serde_json::Value = reqwest::get(format!("{}/stats", slow.url()?)).await?.json().await?;
    ensure!(
        stats["delays_finished"] == 1 && stats["delays_cancelled"] == 2,
        "only finish_upstream lets the call end: {stats}"
    );

    // The ledger holds exactly what the events charged.
    let want: i64 = events.values().map(|e| e.cost_nano_usd.0).sum();
    let session = cql().await?;
    eventually("the ledger to hold the nine events", Duration::from_secs(60), || async {
        let (count, sum) = event_ledger_totals(&session, &ks).await?;
        Ok((count == 9).then_some(sum))
    })
    .await
    .and_then(|sum| {
        ensure!(sum == want, "ledger {sum} != charged {want}");
        Ok(())
    })?;
    for g in gateways {
        g.stop().await?;
    }
    consumer.stop().await?;
    Ok(())
}
