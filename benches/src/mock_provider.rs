//! A mock OpenAI-compatible provider with configurable latency and token counts.
//!
//! Token counts are a pure function of the request, so a test can compute the expected cost on
//! its own: prompt tokens = 1 + bytes of all message contents (or `prompt`/`input` text) / 4;
//! completion tokens = the request's `max_tokens` (or `max_completion_tokens`) when given,
//! otherwise the configured default. Streams send one content chunk per completion token and,
//! when `stream_options.include_usage` is set, a final usage chunk with empty `choices`.
//!
//! Behaviours are chosen by a path prefix in front of `/v1`, so one mock serves every test:
//! - `/delay/{ms}/v1/...` answers after an extra delay;
//! - `/status/{code}/v1/...` always fails with that HTTP status in the OpenAI error envelope
//!   (`429` carries `Retry-After: 0`; `400` says `context_length_exceeded`; `451` says
//!   `content_policy_violation` with status 400);
//! - `/fail-first/{n}/v1/...` fails the first `n` requests it sees with 503, then answers;
//! - `/stall/{ms}/v1/...` streams one chunk, then stalls for `ms` before the rest;
//! - `/echo/{n}/v1/chat/completions` answers `echo: ` and the text of the last message (streams
//!   cut it into chunks of `n` characters), and keeps that message's text (its first
//!   [`MAX_ECHOED`] bytes) for `GET /stats` (`last_prompt`): a test sees what a provider was sent.
//!
//! Azure OpenAI's deployment URLs are served under `/azure/openai/deployments/...`;
//! Anthropic's Messages API is served under `/anthropic/v1/messages` and Gemini's
//! generateContent under `/gemini/v1beta/models/...`, Bedrock's Converse under
//! `/model/{modelId}/converse`, Vertex AI (its token endpoint, Gemini and Claude) under
//! `/vertex/...` (see `mock_anthropic`, `mock_gemini`, `mock_bedrock`, `mock_vertex`).
//!
//! `GET /stats` also lists the last `traceparent` headers the OpenAI routes received (at most
//! [`MAX_TRACEPARENTS`], each cut to 128 bytes), so a test can check the trace context a gateway
//! passes on.
//!
//! `/v1/moderations` answers in OpenAI's format without `usage`, as OpenAI does; `/v1/rerank`
//! in Cohere's (v2), with `meta.billed_units.search_units`; `/v1/audio/speech` and
//! `/v1/images/generations` are in `mock_media`; the Files and Batch API (`/v1/files`,
//! `/v1/batches`) in `mock_batches`.
//!
//! It never calls the network.

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Delay before answering each request.
    pub latency: Duration,
    /// Completion tokens when the request names no `max_tokens`.
    pub completion_tokens: u64,
    /// When set, every request must carry `Authorization: Bearer <this>`.
    pub api_key: Option<String>,
    /// Delay between streamed chunks.
    pub chunk_delay: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig { latency: Duration::ZERO, completion_tokens: 16, api_key: None, chunk_delay: Duration::ZERO }
    }
}

pub(crate) struct MockState {
    config: MockConfig,
    pub(crate) served: AtomicU64,
    failures_seen: AtomicU64,
    /// Requests that started waiting out a `/delay/{ms}` and those that finished the wait: a
    /// caller that hangs up cancels the wait, which `GET /stats` shows.
    delays_started: AtomicU64,
    delays_finished: AtomicU64,
    delays_cancelled: AtomicU64,
    /// The last `traceparent` headers received, oldest first.
    traceparents: std::sync::Mutex<std::collections::VecDeque<String>>,
    /// The text of the last message an `/echo/{n}` request held (bounded).
    last_prompt: std::sync::Mutex<String>,
}

/// `traceparent` headers the mock remembers.
pub const MAX_TRACEPARENTS: usize = 256;

impl MockState {
    /// Completion tokens when a request names no `max_tokens`.
    pub(crate) fn default_completion_tokens(&self) -> u64 {
        self.config.completion_tokens
    }

    /// The answer to an `/echo/{n}` request; keeps the echoed text for `GET /stats`.
    fn echo(&self, body: &Value) -> String {
        let last = body.get("messages").and_then(Value::as_array).and_then(|m| m.last());
        let text = match last.and_then(|m| m.get("content")) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text")?.as_str()).collect(),
            _ => String::new(),
        };
        if let Ok(mut kept) = self.last_prompt.lock() {
            let mut end = text.len().min(MAX_ECHOED);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            *kept = text[..end].to_owned();
        }
        format!("echo: {text}")
    }

    fn remember_traceparent(&self, req: &HttpRequest) {
        let Some(value) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) else { return };
        if let Ok(mut seen) = self.traceparents.lock() {
            if seen.len() == MAX_TRACEPARENTS {
                seen.pop_front();
            }
            seen.push_back(value.chars().take(128).collect());
        }
    }
}

/// What a path prefix asks the mock to do (shared by the Anthropic and Gemini routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Normal,
    Delay(u64),
    Status(u16),
    FailFirst(u64),
    Stall(u64),
    Echo(u64),
}

/// Bytes of the last echoed prompt kept for `GET /stats`.
pub const MAX_ECHOED: usize = 4096;

impl Behaviour {
    pub(crate) fn from_request(req: &HttpRequest) -> Behaviour {
        let mode = req.match_info().get("mode");
        let arg = req.match_info().get("arg").and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
        match mode {
            Some("delay") => Behaviour::Delay(arg),
            Some("status") => Behaviour::Status(u16::try_from(arg).unwrap_or(500)),
            Some("fail-first") => Behaviour::FailFirst(arg),
            Some("stall") => Behaviour::Stall(arg),
            Some("echo") => Behaviour::Echo(arg.max(1)),
            _ => Behaviour::Normal,
        }
    }
}

/// Bytes of text in a content value: strings, and the `text`/`content` of blocks.
pub(crate) fn text_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(parts) => parts.iter().map(text_len).sum(),
        Value::Object(o) => o.get("text").or_else(|| o.get("content")).map_or(0, text_len),
        _ => 0,
    }
}

/// Prompt tokens the mock reports for a request body.
pub fn prompt_tokens_for(body: &Value) -> u64 {
    let chars = match body.get("messages").and_then(Value::as_array) {
        Some(msgs) => msgs.iter().filter_map(|m| m.get("content")).map(text_len).sum(),
        None => body.get("prompt").or_else(|| body.get("input")).map_or(0, text_len),
    };
    1 + (chars as u64) / 4
}

/// Completion tokens the mock reports for a request body.
pub fn completion_tokens_for(body: &Value, default: u64) -> u64 {
    body.get("max_tokens").or_else(|| body.get("max_completion_tokens")).and_then(Value::as_u64).unwrap_or(default)
}

pub(crate) fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
}

/// Checks the key and applies the behaviour's failure, if any.
#[allow(clippy::result_large_err)] // a handler-local early return
pub(crate) async fn gate(req: &HttpRequest, state: &MockState) -> Result<Behaviour, HttpResponse> {
    state.remember_traceparent(req);
    if let Some(expected) = &state.config.api_key {
        let ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.strip_prefix("Bearer ") == Some(expected.as_str()));
        if !ok {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided",
                "invalid_request_error",
                Some("invalid_api_key"),
            ));
        }
    }
    let behaviour = Behaviour::from_request(req);
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    match behaviour {
        Behaviour::Delay(ms) => {
            state.delays_started.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                    state.delays_finished.fetch_add(1, Ordering::SeqCst);
                }
                // The caller hung up: stop working for it, as a real provider would.
                _ = tollgate_gateway::http::hung_up(req) => {
                    state.delays_cancelled.fetch_add(1, Ordering::SeqCst);
                    return Err(error(StatusCode::BAD_REQUEST, "client went away", "api_error", None));
                }
            }
        }
        Behaviour::Status(429) => {
            let mut resp =
                error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached", "requests", Some("rate_limit_exceeded"));
            resp.headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, actix_web::http::header::HeaderValue::from_static("0"));
            return Err(resp);
        }
        Behaviour::Status(400) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "This model's maximum context length is 8192 tokens.",
                "invalid_request_error",
                Some("context_length_exceeded"),
            ))
        }
        Behaviour::Status(451) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Your request was rejected as a result of our safety system.",
                "invalid_request_error",
                Some("content_policy_violation"),
            ))
        }
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(error(status, "The mock was told to fail", "api_error", None));
        }
        Behaviour::FailFirst(n) => {
            if state.failures_seen.fetch_add(1, Ordering::SeqCst) < n {
                return Err(error(StatusCode::SERVICE_UNAVAILABLE, "Temporarily unavailable", "api_error", None));
            }
        }
        Behaviour::Normal | Behaviour::Stall(_) | Behaviour::Echo(_) => {}
    }
    Ok(behaviour)
}

#[allow(clippy::result_large_err)] // a handler-local early return
pub(crate) fn parse(body: &[u8]) -> Result<Value, HttpResponse> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}"), "invalid_request_error", None))
}

async fn chat_completions(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    let behaviour = match gate(&req, &state).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let body = match parse(&body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let n = state.served.fetch_add(1, Ordering::Relaxed);
    let model = body.get("model").and_then(Value::as_str).unwrap_or("mock-model").to_owned();
    let prompt_tokens = prompt_tokens_for(&body);
    let echoed = match behaviour {
        Behaviour::Echo(_) => Some(state.echo(&body)),
        _ => None,
    };
    let completion_tokens = match &echoed {
        Some(text) => 1 + text.len() as u64 / 4,
        None => completion_tokens_for(&body, state.config.completion_tokens),
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0}
    });
    let id = format!("chatcmpl-mock-{n}");
    let wants_tools = body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
        let stall = match behaviour {
            Behaviour::Stall(ms) => Some(Duration::from_millis(ms)),
            _ => None,
        };
        let pieces = match (&echoed, behaviour) {
            (Some(text), Behaviour::Echo(n)) => {
                let chars: Vec<char> = text.chars().collect();
                chars.chunks(n as usize).map(|c| c.iter().collect()).collect()
            }
            _ => (0..completion_tokens).map(|i| if i == 0 { "tok" } else { " tok" }.to_owned()).collect(),
        };
        return stream_chat(id, model, pieces, include_usage.then_some(usage), state.config.chunk_delay, stall);
    }
    let message = if wants_tools {
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_mock_{n}"), "type": "function",
            "function": {"name": first_tool_name(&body), "arguments": "{\"location\":\"Paris\"}"}
        }]})
    } else {
        json!({"role": "assistant", "content": echoed.unwrap_or_else(|| mock_text(completion_tokens))})
    };
    HttpResponse::Ok().json(json!({
        "id": id,
        "object": "chat.completion",
        "created": 1_763_900_000u64,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": if wants_tools { "tool_calls" } else { "stop" }}],
        "usage": usage
    }))
}

fn first_tool_name(body: &Value) -> String {
    body.pointer("/tools/0/function/name").and_then(Value::as_str).unwrap_or("tool").to_owned()
}

/// `n` words of text: one per completion token.
fn mock_text(n: u64) -> String {
    let mut s = String::with_capacity(n as usize * 4);
    for i in 0..n {
        s.push_str(if i == 0 { "tok" } else { " tok" });
    }
    s
}

fn sse(value: &Value) -> web::Bytes {
    web::Bytes::from(format!("data: {value}\n\n"))
}

fn stream_chat(
    id: String,
    model: String,
    pieces: Vec<String>,
    usage: Option<Value>,
    chunk_delay: Duration,
    stall: Option<Duration>,
) -> HttpResponse {
    let chunk = move |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1_763_900_000u64, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let tokens = pieces.len() as u64;
    let mut frames: Vec<(Duration, web::Bytes)> = Vec::with_capacity(pieces.len() + 4);
    frames.push((Duration::ZERO, sse(&chunk(json!({"role": "assistant", "content": ""}), Value::Null))));
    for (i, text) in pieces.into_iter().enumerate() {
        let delay = match (i, stall) {
            (1, Some(s)) => s,
            _ => chunk_delay,
        };
        frames.push((delay, sse(&chunk(json!({"content": text}), Value::Null))));
    }
    frames.push((chunk_delay, sse(&chunk(json!({}), json!("stop")))));
    if let Some(mut usage_chunk) = usage.map(|u| {
        let mut c = chunk(json!({}), Value::Null);
        c["choices"] = json!([]);
        c["usage"] = u;
        c
    }) {
        usage_chunk["usage"]["completion_tokens"] = json!(tokens);
        frames.push((Duration::ZERO, sse(&usage_chunk)));
    }
    frames.push((Duration::ZERO, web::Bytes::from_static(b"data: [DONE]\n\n")));
    let body = paced(frames);
    HttpResponse::Ok().content_type("text/event-stream").insert_header(("cache-control", "no-cache")).streaming(body)
}

/// A response body of `frames`, each sent after its delay (every mock's streams).
pub(crate) fn paced(
    frames: Vec<(Duration, web::Bytes)>,
) -> impl futures::Stream<Item = Result<web::Bytes, actix_web::Error>> {
    futures::stream::unfold(frames.into_iter(), |mut it| async move {
        let (delay, bytes) = it.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<_, actix_web::Error>(bytes), it))
    })
}

/// Azure OpenAI's URL shape: `/azure/openai/deployments/{deployment}/chat/completions?api-version=...`
/// with the key in an `api-key` header; the answer names the deployment as its model.
async fn azure_chat_completions(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    if !req.query_string().contains("api-version=") {
        return error(StatusCode::NOT_FOUND, "Resource not found", "invalid_request_error", Some("404"));
    }
    if req.headers().get("api-key").is_none() || req.headers().get("authorization").is_some() {
        return error(
            StatusCode::UNAUTHORIZED,
            "Access denied due to missing subscription key.",
            "invalid_request_error",
            Some("401"),
        );
    }
    chat_completions(req, body, state).await
}

async fn completions(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    let body = match parse(&body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let n = state.served.fetch_add(1, Ordering::Relaxed);
    let prompt_tokens = prompt_tokens_for(&body);
    let completion_tokens = completion_tokens_for(&body, state.config.completion_tokens);
    HttpResponse::Ok().json(json!({
        "id": format!("cmpl-mock-{n}"),
        "object": "text_completion",
        "created": 1_763_900_000u64,
        "model": body.get("model").cloned().unwrap_or(json!("mock-model")),
        "choices": [{"index": 0, "text": mock_text(completion_tokens), "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}
    }))
}

async fn embeddings(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    let body = match parse(&body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let inputs = match body.get("input") {
        Some(Value::Array(items)) => items.len().max(1),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.0023064255, -0.009327292, 0.015797347]}))
        .collect();
    let prompt_tokens = prompt_tokens_for(&body);
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": body.get("model").cloned().unwrap_or(json!("mock-embedding")),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    }))
}

/// The moderation categories the mock answers with, OpenAI's names.
const MODERATION_CATEGORIES: [&str; 4] = ["harassment", "hate", "self-harm", "violence"];

/// OpenAI's moderation answer: one result per input (a string, an array of strings, or an
/// array of `text`/`image_url` parts, which are one input together), flagged for `violence`
/// when its text holds the word "violence". Like OpenAI's, it has no `usage`.
async fn moderations(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    let body = match parse(&body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let texts: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        Some(Value::Array(parts)) => {
            vec![parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")]
        }
        _ => return error(StatusCode::BAD_REQUEST, "`input` is required", "invalid_request_error", None),
    };
    let results: Vec<Value> = texts
        .iter()
        .map(|text| {
            let violent = text.to_lowercase().contains("violence");
            let flags: serde_json::Map<String, Value> =
                MODERATION_CATEGORIES.iter().map(|c| ((*c).to_owned(), json!(violent && *c == "violence"))).collect();
            let scores: serde_json::Map<String, Value> = MODERATION_CATEGORIES
                .iter()
                .map(|c| ((*c).to_owned(), json!(if violent && *c == "violence" { 0.97 } else { 0.001 })))
                .collect();
            json!({"flagged": violent, "categories": flags, "category_scores": scores})
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "id": format!("modr-mock-{}", state.served.fetch_add(1, Ordering::Relaxed)),
        "model": body.get("model").cloned().unwrap_or(json!("omni-moderation-latest")),
        "results": results,
    }))
}

/// Cohere's rerank answer (v2): the documents by relevance (the share of the query's words a
/// document holds), at most `top_n`, and `meta.billed_units.search_units`: one per 100
/// documents, as Cohere bills.
async fn rerank(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    let body = match parse(&body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let (Some(query), Some(documents)) =
        (body.get("query").and_then(Value::as_str), body.get("documents").and_then(Value::as_array))
    else {
        return error(StatusCode::BAD_REQUEST, "`query` and `documents` are required", "invalid_request_error", None);
    };
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let mut scored: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let text = d.as_str().or_else(|| d.get("text").and_then(Value::as_str)).unwrap_or("").to_lowercase();
            let hits = words.iter().filter(|w| text.contains(w.as_str())).count();
            (i, hits as f64 / words.len().max(1) as f64)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top_n = body.get("top_n").and_then(Value::as_u64).map_or(scored.len(), |n| n as usize);
    let results: Vec<Value> =
        scored.iter().take(top_n).map(|(i, score)| json!({"index": i, "relevance_score": score})).collect();
    HttpResponse::Ok().json(json!({
        "id": format!("rerank-mock-{}", state.served.fetch_add(1, Ordering::Relaxed)),
        "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": documents.len().div_ceil(100).max(1)}},
    }))
}

async fn stats(state: web::Data<MockState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "served": state.served.load(Ordering::SeqCst),
        "delays_started": state.delays_started.load(Ordering::SeqCst),
        "delays_finished": state.delays_finished.load(Ordering::SeqCst),
        "delays_cancelled": state.delays_cancelled.load(Ordering::SeqCst),
        "traceparents": state.traceparents.lock().map(|t| t.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        "last_prompt": state.last_prompt.lock().map(|p| p.clone()).unwrap_or_default(),
    }))
}

/// `GET /v1/models`, under a behaviour's prefix too (a pass-through's `GET` can be told to fail).
async fn models(req: HttpRequest, state: web::Data<MockState>) -> HttpResponse {
    if let Err(resp) = gate(&req, &state).await {
        return resp;
    }
    HttpResponse::Ok()
        .json(json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "tollgate-mock"}]}))
}

/// Serves the mock on `listener` until the returned server is stopped.
pub fn serve(listener: TcpListener, config: MockConfig, workers: usize) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(MockState {
        config,
        served: AtomicU64::new(0),
        failures_seen: AtomicU64::new(0),
        delays_started: AtomicU64::new(0),
        delays_finished: AtomicU64::new(0),
        delays_cancelled: AtomicU64::new(0),
        traceparents: std::sync::Mutex::new(std::collections::VecDeque::new()),
        last_prompt: std::sync::Mutex::new(String::new()),
    });
    let batches = web::Data::new(crate::mock_batches::Store::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(batches.clone())
            .configure(crate::mock_batches::configure)
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .route("/v1/chat/completions", web::post().to(chat_completions))
            .route("/chat/completions", web::post().to(chat_completions))
            .route("/{mode}/{arg}/v1/chat/completions", web::post().to(chat_completions))
            .route("/azure/openai/deployments/{deployment}/chat/completions", web::post().to(azure_chat_completions))
            .route("/v1/completions", web::post().to(completions))
            .route("/{mode}/{arg}/v1/completions", web::post().to(completions))
            .route("/v1/embeddings", web::post().to(embeddings))
            .route("/{mode}/{arg}/v1/embeddings", web::post().to(embeddings))
            .route("/v1/moderations", web::post().to(moderations))
            .route("/{mode}/{arg}/v1/moderations", web::post().to(moderations))
            .route("/v1/rerank", web::post().to(rerank))
            .route("/{mode}/{arg}/v1/rerank", web::post().to(rerank))
            .configure(crate::mock_media::configure)
            .route("/v1/models", web::get().to(models))
            .route("/{mode}/{arg}/v1/models", web::get().to(models))
            .route("/stats", web::get().to(stats))
            .configure(crate::mock_anthropic::configure)
            .configure(crate::mock_gemini::configure)
            .configure(crate::mock_bedrock::configure)
            .configure(crate::mock_vertex::configure)
    })
    .on_connect(tollgate_gateway::http::on_connect)
    .workers(workers.max(1))
    .listen(listener)?
    .run();
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_follow_the_request() {
        let body = json!({"messages": [{"role": "user", "content": "12345678"}], "max_tokens": 7});
        assert_eq!(prompt_tokens_for(&body), 3);
        assert_eq!(completion_tokens_for(&body, 16), 7);
        assert_eq!(completion_tokens_for(&json!({}), 16), 16);
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "12345678"}]}]});
        assert_eq!(prompt_tokens_for(&parts), 3);
        assert_eq!(prompt_tokens_for(&json!({"input": ["1234", "5678"]})), 3);
    }

    #[test]
    fn mock_text_has_one_word_per_token() {
        assert_eq!(mock_text(3), "tok tok tok");
        assert_eq!(mock_text(0), "");
    }
}
