//! External `post_call` guardrails on a stream, against a guardrail service served here over
//! HTTP: a rewrite reaches the client as valid chunks, windows are bounded (text sent per call,
//! output held before the client gets it), and a rewrite of text already sent ends the stream.

use super::config::{build, GuardrailConfig};
use super::window::{MAX_HELD_BYTES, OVERLAP_BYTES, WINDOW_TEXT_BYTES};
use super::*;
use crate::providers::StreamError;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A guardrail service: texts holding `rewrite` come back in capitals, those holding `prefix`
/// with `[checked] ` in front; every other text passes. Each call's text lengths are kept.
async fn guard_service(calls: Arc<Mutex<Vec<Vec<usize>>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let calls = calls.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let ask: Value = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else { continue };
                    let head_text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
                    let length: usize = head_text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= head + length {
                        break serde_json::from_slice(&buf[head..head + length]).unwrap_or_default();
                    }
                };
                let texts: Vec<String> = serde_json::from_value(ask["texts"].clone()).unwrap_or_default();
                calls.lock().unwrap().push(texts.iter().map(String::len).collect());
                let all = texts.concat();
                let answer = if all.contains("rewrite") {
                    json!({"action": "GUARDRAIL_INTERVENED", "texts": texts.iter().map(|t| t.to_uppercase()).collect::<Vec<_>>()})
                } else if all.contains("prefix") {
                    json!({"action": "GUARDRAIL_INTERVENED", "texts": texts.iter().map(|t| format!("[checked] {t}")).collect::<Vec<_>>()})
                } else {
                    json!({"action": "NONE"})
                };
                let body = answer.to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    url
}

fn applied(url: &str) -> Arc<Applied> {
    let yaml = format!(
        "- {{guardrail_name: ext, litellm_params: {{guardrail: generic_guardrail_api, mode: post_call, api_base: \"{url}\"}}}}\n"
    );
    let list: Vec<GuardrailConfig> = serde_yaml::from_str(&yaml).unwrap();
    let set = build(&list, &HashMap::new(), "test").unwrap();
    Arc::new(Applied { guardrails: set.list.clone(), ..Applied::default() })
}

fn text_chunk(text: &str) -> Bytes {
    let v = json!({"id": "x", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    crate::sse::frame_json(None, &v)
}

const USAGE: &str = r#"{"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":300}}"#;

/// The guarded output's pieces (as the client gets them), and the error that ended it.
async fn run(applied: Arc<Applied>, chunks: Vec<Bytes>) -> (Vec<Bytes>, Option<StreamError>) {
    let input: Vec<Result<Bytes, StreamError>> = chunks.into_iter().map(Ok).collect();
    let out = guard_stream(applied, &reqwest::Client::new(), Box::pin(futures::stream::iter(input)));
    let mut pieces = Vec::new();
    let mut error = None;
    for item in out.collect::<Vec<_>>().await {
        match item {
            Ok(b) => pieces.push(b),
            Err(e) => error = Some(e),
        }
    }
    (pieces, error)
}

/// Each event's data, parsed (every one must be JSON or `[DONE]`).
fn events(pieces: &[Bytes]) -> Vec<Value> {
    let all: Vec<u8> = pieces.concat();
    let text = String::from_utf8(all).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn content(events: &[Value]) -> String {
    events.iter().filter_map(|e| e.pointer("/choices/0/delta/content").and_then(Value::as_str)).collect()
}

#[tokio::test]
async fn a_rewritten_stream_reaches_the_client_window_by_window_as_valid_chunks() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let url = guard_service(calls.clone()).await;
    let piece = "please rewrite me. ";
    let mut chunks: Vec<Bytes> = (0..300).map(|_| text_chunk(piece)).collect();
    let finish = json!({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    chunks.push(crate::sse::frame_json(None, &finish));
    chunks.push(Bytes::from(format!("data: {USAGE}\n\n")));
    chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let (pieces, error) = run(applied(&url), chunks).await;
    assert!(error.is_none(), "{error:?}");
    let events = events(&pieces);
    assert_eq!(content(&events), piece.repeat(300).to_uppercase());
    // Every other event as the provider sent it: the finish reason and the provider's usage.
    assert!(events.iter().any(|e| e.pointer("/choices/0/finish_reason") == Some(&json!("stop"))));
    assert_eq!(events.last(), Some(&serde_json::from_str::<Value>(USAGE).unwrap()));
    // The bound: each call sends at most the overlap, a window and the chunk that filled it;
    // the client gets the output window by window, not at the end.
    let calls = calls.lock().unwrap().clone();
    let windows = piece.len() * 300 / WINDOW_TEXT_BYTES;
    assert!(calls.len() > windows, "{calls:?}");
    for sizes in &calls {
        assert!(sizes.len() == 1 && sizes[0] <= OVERLAP_BYTES + WINDOW_TEXT_BYTES + piece.len(), "{calls:?}");
    }
    assert!(pieces.len() > windows, "{} pieces", pieces.len());
    // A piece is one window's events at most (and the events that end the stream).
    let most = (WINDOW_TEXT_BYTES / piece.len() + 1) * text_chunk(piece).len() + 512;
    for p in &pieces {
        assert!(p.len() <= most, "{} bytes held, at most {most}", p.len());
    }
}

#[tokio::test]
async fn output_without_text_is_held_at_most_the_bound_and_calls_nothing() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let url = guard_service(calls.clone()).await;
    let arguments = "a".repeat(64 * 1024);
    let call = json!({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}}]});
    let chunk = crate::sse::frame_json(None, &call);
    let chunks: Vec<Bytes> = (0..40).map(|_| chunk.clone()).collect();
    let (pieces, error) = run(applied(&url), chunks).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(pieces.concat().len(), 40 * chunk.len(), "output lost or added");
    assert!(pieces.len() >= 2, "held to the end");
    for p in &pieces {
        assert!(p.len() < MAX_HELD_BYTES + chunk.len(), "{} bytes held", p.len());
    }
    assert!(calls.lock().unwrap().is_empty(), "a window without text was sent");
}

#[tokio::test]
async fn a_rewrite_of_text_already_sent_ends_the_stream() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let url = guard_service(calls.clone()).await;
    let piece = "add a prefix. ";
    let chunks: Vec<Bytes> = (0..300).map(|_| text_chunk(piece)).collect();
    let (pieces, error) = run(applied(&url), chunks).await;
    assert!(matches!(error, Some(StreamError::GuardrailBlocked(ref g)) if g == "ext"), "{error:?}");
    // The first window (no overlap before it) was rewritten and sent; nothing after it.
    let sent = content(&events(&pieces));
    assert!(sent.starts_with("[checked] add a prefix.") && sent.matches("[checked]").count() == 1, "{sent}");
    assert!(sent.len() < 2 * WINDOW_TEXT_BYTES, "{} bytes", sent.len());
}
