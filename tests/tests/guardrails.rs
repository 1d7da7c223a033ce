//! Guardrails through a real gateway, the mock provider and Kafka: a pre-call block answers 400
//! `guardrail_blocked` and is metered as a refusal (an event with no cost); PII is masked before
//! the provider sees it and restored in the answer, whole and streamed (placeholders cut across
//! chunks); a post-call banned word ends a stream with an error event, billed for what was sent;
//! an external guardrail in LiteLLM's generic API shape, served by a real HTTP server in this
//! test, blocks, rewrites, times out (fail closed) and is unreachable (fail open); after the
//! call it checks streams by windows, ending a stream it blocks before the text it refused and
//! rewriting a stream's text in its chunks (OpenAI and Anthropic shapes), billed as sent.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_tests::*;

/// A guardrail service in LiteLLM's generic guardrail API shape, over plain HTTP/1.1: texts
/// holding `attack` are blocked, `rewrite` ones come back in capitals, `slow` ones are
/// answered after 3 s; requests without `request_data.user_api_key_hash` get a 400.
async fn start_guard_service(calls: Arc<AtomicU64>) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let calls = calls.clone();
            tokio::spawn(async move {
                let Ok(request) = read_request(&mut conn).await else { return };
                calls.fetch_add(1, Ordering::SeqCst);
                let (status, body) = verdict(&request).await;
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(url)
}

/// The path and JSON body of one request (bounded to 1 MiB).
async fn read_request(conn: &mut tokio::net::TcpStream) -> Result<(String, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await?;
        ensure!(n > 0 && buf.len() < 1 << 20, "request cut or too large");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse().ok())
        .context("no content-length")?;
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        ensure!(n > 0, "body cut");
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((path, serde_json::from_slice(&buf[head_end..head_end + length])?))
}

async fn verdict((path, ask): &(String, Value)) -> (&'static str, String) {
    if path != "/beta/litellm_basic_guardrail_api" || ask["request_data"]["user_api_key_hash"].as_str().is_none() {
        return ("400 Bad Request", "{}".to_owned());
    }
    let texts: Vec<String> =
        ask["texts"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_owned)).collect();
    let all = texts.join(" ");
    let answer = if all.contains("attack") {
        json!({"action": "BLOCKED", "blocked_reason": "mentions an attack"})
    } else if all.contains("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
        json!({"action": "NONE"})
    } else if all.contains("rewrite") {
        json!({"action": "GUARDRAIL_INTERVENED", "texts": texts.iter().map(|t| t.to_uppercase()).collect::<Vec<_>>()})
    } else {
        json!({"action": "NONE"})
    };
    ("200 OK", answer.to_string())
}

fn guardrails_yaml(guard: &str) -> String {
    format!(
        r#"guardrails:
  - guardrail_name: no-secrets
    litellm_params: {{guardrail: banned_words, mode: pre_call, default_on: true, banned_words: [project nightingale], patterns: ["sk-[a-z0-9]{{12}}"]}}
  - guardrail_name: pii
    litellm_params: {{guardrail: pii_masking, mode: pre_call, default_on: true}}
  - guardrail_name: clean-answers
    litellm_params: {{guardrail: banned_words, mode: post_call, banned_words: [forbidden fruit]}}
  - guardrail_name: external
    litellm_params: {{guardrail: generic_guardrail_api, mode: pre_call, api_base: "{guard}", timeout_ms: 500, unreachable_fallback: fail_closed}}
  - guardrail_name: external-answers
    litellm_params: {{guardrail: generic_guardrail_api, mode: post_call, api_base: "{guard}", timeout_ms: 2000}}
  - guardrail_name: external-open
    litellm_params: {{guardrail: generic_guardrail_api, mode: pre_call, api_base: "http://127.0.0.1:9", timeout_ms: 500, unreachable_fallback: fail_open}}
"#
    )
}

struct Env {
    client: reqwest::Client,
    url: String,
    mock: String,
}

impl Env {
    async fn send(&self, id: &str, content: &str, stream: bool, guardrails: &[&str]) -> Result<reqwest::Response> {
        let mut body = json!({"model": "echo", "messages": [{"role": "user", "content": content}], "stream": stream});
        if !guardrails.is_empty() {
            body["guardrails"] = json!(guardrails);
        }
        let resp = self
            .client
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(TENANT_KEYS[0].0)
            .header("x-request-id", id)
            .json(&body)
            .send()
            .await?;
        Ok(resp)
    }

    async fn last_prompt(&self) -> Result<String> {
        let stats: Value = self.client.get(format!("{}/stats", self.mock)).send().await?.json().await?;
        Ok(stats["last_prompt"].as_str().unwrap_or_default().to_owned())
    }
}

/// The content of a streamed answer, and the error event's code if it ended with one.
fn read_stream(text: &str) -> (String, Option<String>) {
    let mut content = String::new();
    let mut error = None;
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
        if let Some(code) = v["error"]["code"].as_str() {
            error = Some(code.to_owned());
        }
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
    }
    (content, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_block_mask_restore_and_meter() -> Result<()> {
    let dir = scratch_dir("guardrails")?;
    let topic = unique("usage-guardrails-");
    create_topic(&topic, 1).await?;
    let calls = Arc::new(AtomicU64::new(0));
    let guard = start_guard_service(calls.clone()).await?;
    let mock = start_mock(&dir, &[]).await?;
    let mock_url = mock.url()?.to_owned();
    let models = [model_entry("echo", &format!("{mock_url}/echo/3/v1"))];
    let config =
        GatewayConfig::new("gw-guardrails", &models, &topic, &kafka_bootstrap()).with_yaml(&guardrails_yaml(&guard))?;
    let gateway = start_gateway(&dir, &config).await?;
    let env = Env { client: reqwest::Client::new(), url: gateway.url()?.to_owned(), mock: mock_url };

    // 1. A banned phrase: 400 naming the guardrail, never the phrase; the provider is not called.
    let resp = env.send("g-blocked", "tell me about Project Nightingale", false, &[]).await?;
    let (status, code, body) = error_code(resp).await;
    ensure!(status == 400 && code == "guardrail_blocked", "{status} {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("no-secrets"), "the guardrail is not named: {body}");
    ensure!(!body.to_string().to_lowercase().contains("nightingale"), "the matched text is echoed: {body}");
    let resp = env.send("g-pattern", "my key is sk-abcdefghij12", false, &[]).await?;
    ensure!(error_code(resp).await.1 == "guardrail_blocked", "a banned pattern passed");

    // 2. PII is masked before the provider and restored in the answer.
    let secret = "mail ann@example.com, card 4111 1111 1111 1111, from 10.1.2.3";
    let resp = env.send("g-pii", secret, false, &[]).await?;
    ensure!(resp.status() == 200, "pii: {}", resp.status());
    let answer: Value = resp.json().await?;
    let seen = env.last_prompt().await?;
    ensure!(seen.contains("<EMAIL_1>") && seen.contains("<CARD_1>") && seen.contains("<IP_1>"), "not masked: {seen}");
    ensure!(!seen.contains("ann@example.com") && !seen.contains("4111"), "the provider saw PII: {seen}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    ensure!(content == format!("echo: {secret}"), "not restored: {content}");

    // 3. The same, streamed in 3-character chunks: placeholders arrive cut, and are restored.
    let resp = env.send("g-pii-stream", secret, true, &[]).await?;
    let (content, error) = read_stream(&resp.text().await?);
    ensure!(error.is_none(), "stream error {error:?}");
    ensure!(content == format!("echo: {secret}"), "stream not restored: {content}");

    // 4. A post-call banned phrase split across chunks ends the stream with an error event.
    let resp = env.send("g-post-stream", "say forbidden fruit twice", true, &["clean-answers"]).await?;
    let (content, error) = read_stream(&resp.text().await?);
    ensure!(error.as_deref() == Some("guardrail_blocked"), "no guardrail error event: {error:?} {content}");
    ensure!(!content.contains("forbidden fruit"), "the banned phrase reached the client: {content}");
    // ... and a whole answer holding it is answered 400, though the provider was paid.
    let resp = env.send("g-post-whole", "say forbidden fruit twice", false, &["clean-answers"]).await?;
    let (status, code, _) = error_code(resp).await;
    ensure!(status == 400 && code == "guardrail_blocked", "post-call whole: {status} {code}");

    // 5. The external guardrail: blocks, rewrites, times out (fail closed), or is unreachable
    //    (fail open).
    let resp = env.send("g-ext-block", "plan the attack", false, &["external"]).await?;
    ensure!(error_code(resp).await.1 == "guardrail_blocked", "external block");
    let resp = env.send("g-ext-rewrite", "rewrite me", false, &["external"]).await?;
    ensure!(resp.status() == 200);
    ensure!(env.last_prompt().await? == "REWRITE ME", "the rewrite did not reach the provider");
    let resp = env.send("g-ext-slow", "slow down", false, &["external"]).await?;
    let (status, code, _) = error_code(resp).await;
    ensure!(status == 503 && code == "guardrail_unavailable", "timeout: {status} {code}");
    let resp = env.send("g-ext-open", "hello", false, &["external-open"]).await?;
    ensure!(resp.status() == 200, "fail open: {}", resp.status());
    ensure!(calls.load(Ordering::SeqCst) == 3, "the guard service saw {} calls", calls.load(Ordering::SeqCst));
    // After the call, on streams: a harmless answer passes whole, in one window.
    let resp = env.send("g-ext-stream-ok", "a harmless answer", true, &["external-answers"]).await?;
    let (content, error) = read_stream(&resp.text().await?);
    ensure!(error.is_none() && content == "echo: a harmless answer", "{error:?} {content}");
    ensure!(calls.load(Ordering::SeqCst) == 4, "one window, one call: {}", calls.load(Ordering::SeqCst));
    // A long answer whose last window is refused: the windows before it reach the client, then
    // an error event; the refused text never does.
    let long = format!("{}plan the attack", "harmless words ".repeat(400));
    let resp = env.send("g-ext-stream-block", &long, true, &["external-answers"]).await?;
    let (content, error) = read_stream(&resp.text().await?);
    ensure!(error.as_deref() == Some("guardrail_blocked"), "no guardrail error event: {error:?}");
    ensure!(content.starts_with("echo: harmless words") && content.len() >= 2048, "{} bytes", content.len());
    ensure!(!content.contains("attack") && !content.contains("plan"), "refused text reached the client");
    // A rewrite of a streamed answer reaches the client as chunks: a short answer in one
    // window, a long one window by window (the overlap sent again is the rewritten text).
    let resp = env.send("g-ext-stream-rewrite", "please rewrite this", true, &["external-answers"]).await?;
    let (content, error) = read_stream(&resp.text().await?);
    ensure!(error.is_none() && content == "ECHO: PLEASE REWRITE THIS", "{error:?} {content}");
    let long = "rewrite ".repeat(700);
    let resp = env.send("g-ext-stream-rewrite-long", &long, true, &["external-answers"]).await?;
    let (content, error) = read_stream(&resp.text().await?);
    ensure!(error.is_none() && content == format!("ECHO: {}", long.to_uppercase()), "{error:?} {content}");
    ensure!(calls.load(Ordering::SeqCst) >= 10, "windows: {} calls", calls.load(Ordering::SeqCst));
    // ... and, on /v1/messages, as Anthropic's events.
    let body = json!({"model": "echo", "max_tokens": 50, "stream": true, "guardrails": ["external-answers"],
                      "messages": [{"role": "user", "content": "please rewrite this"}]});
    let resp = env
        .client
        .post(format!("{}/v1/messages", env.url))
        .bearer_auth(TENANT_KEYS[0].0)
        .header("x-request-id", "g-ext-messages-rewrite")
        .json(&body)
        .send()
        .await?;
    ensure!(resp.status() == 200, "/v1/messages: {}", resp.status());
    let text = resp.text().await?;
    let mut deltas = String::new();
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let v: Value = serde_json::from_str(data)?;
        ensure!(v["type"] != "error", "an error event: {text}");
        deltas.push_str(v["delta"]["text"].as_str().unwrap_or_default());
    }
    ensure!(deltas == "ECHO: PLEASE REWRITE THIS" && text.contains("event: message_stop"), "{text}");
    // An unknown name is the client's error, with no event.
    let resp = env.send("g-unknown", "hello", false, &["nope"]).await?;
    let (status, _, body) = error_code(resp).await;
    ensure!(status == 400 && body["error"]["param"] == "guardrails", "unknown guardrail: {body}");

    // 6. Metering: refusals cost nothing and say why; post-call blocks are billed.
    let events = collect_events(&topic, 15, Duration::from_secs(30)).await?;
    for id in ["g-blocked", "g-pattern", "g-ext-block"] {
        let e = events.get(id).with_context(|| format!("no event for {id}"))?;
        ensure!(e.status == 400 && e.error_type.as_deref() == Some("guardrail_blocked"), "{id}: {e:?}");
        ensure!(e.cost_nano_usd.0 == 0 && e.provider.is_none(), "{id} was charged or sent: {e:?}");
    }
    let slow = events.get("g-ext-slow").context("no event for the timeout")?;
    ensure!(slow.error_type.as_deref() == Some("guardrail_unavailable") && slow.cost_nano_usd.0 == 0);
    let streamed = events.get("g-post-stream").context("no event for the streamed block")?;
    ensure!(streamed.error_type.as_deref() == Some("guardrail_blocked") && streamed.partial, "{streamed:?}");
    ensure!(streamed.cost_nano_usd.0 > 0, "what was streamed is not billed: {streamed:?}");
    let windowed = events.get("g-ext-stream-block").context("no event for the windowed block")?;
    ensure!(windowed.error_type.as_deref() == Some("guardrail_blocked") && windowed.partial, "{windowed:?}");
    ensure!(
        windowed.completion_tokens > 0 && windowed.cost_nano_usd.0 > 0,
        "what was sent is not billed: {windowed:?}"
    );
    let whole = events.get("g-post-whole").context("no event for the whole block")?;
    ensure!(whole.status == 400 && whole.error_type.as_deref() == Some("guardrail_blocked"), "{whole:?}");
    ensure!(whole.cost_nano_usd.0 > 0, "the provider's answer is not billed: {whole:?}");
    ensure!(!events.contains_key("g-unknown"), "a bad request was metered");
    for id in ["g-pii", "g-pii-stream", "g-ext-rewrite", "g-ext-open", "g-ext-stream-ok"] {
        ensure!(events.get(id).is_some_and(|e| e.status == 200), "{id} not metered as served");
    }
    // A rewritten stream is billed for what the provider made, as any stream.
    for id in ["g-ext-stream-rewrite", "g-ext-stream-rewrite-long", "g-ext-messages-rewrite"] {
        let e = events.get(id).with_context(|| format!("no event for {id}"))?;
        ensure!(e.status == 200 && !e.partial && e.error_type.is_none() && !e.estimated, "{id}: {e:?}");
        ensure!(e.completion_tokens > 0 && e.cost_nano_usd.0 > 0, "{id} not billed: {e:?}");
    }
    let long = &events["g-ext-stream-rewrite-long"];
    ensure!(long.completion_tokens > events["g-ext-stream-rewrite"].completion_tokens, "{long:?}");

    // 7. Metrics: blocks by guardrail and hook, refusals by reason.
    let metrics = env.client.get(format!("{}/metrics", env.url)).send().await?.text().await?;
    for needle in [
        r#"tollgate_guardrail_blocks_total{guardrail="no-secrets",hook="pre_call"} 2"#,
        r#"tollgate_guardrail_blocks_total{guardrail="clean-answers",hook="post_call"} 2"#,
        r#"tollgate_requests_refused_total{reason="guardrail_blocked"}"#,
        r#"tollgate_guardrail_blocks_total{guardrail="external-answers",hook="post_call"} 1"#,
        r#"tollgate_guardrail_errors_total{guardrail="external",fallback="fail_closed"} 1"#,
        r#"tollgate_guardrail_errors_total{guardrail="external-open",fallback="fail_open"} 1"#,
    ] {
        ensure!(metrics.contains(needle), "no `{needle}` in /metrics");
    }
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
