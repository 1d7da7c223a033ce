//! The mock provider playing Anthropic's Messages API (`POST /anthropic/v1/messages`), so tests
//! and benchmarks can exercise the gateway's Anthropic translation against the same wire format
//! the real API speaks: `x-api-key` and `anthropic-version` headers, Anthropic's error shape, and
//! its exact stream event sequence.
//!
//! Token counts follow the OpenAI mock's rules, so one conversation costs the same on either:
//! input tokens = 1 + bytes of all text in `system` and `messages` / 4; output tokens = the
//! request's `max_tokens` (which Anthropic requires), answered as "tok tok ...", one word per
//! token. A request with tools is answered with one `tool_use` block calling the first tool with
//! `{"location":"Paris"}`.
//!
//! Behaviour prefixes match the OpenAI mock: `/delay/{ms}`, `/status/{code}` (`429` carries
//! `retry-after: 0`, `529` is `overloaded_error`, `400` says the prompt is too long),
//! `/fail-first/{n}` (the first `n` requests to this server get `529`), `/stall/{ms}` (streams
//! stall after the first delta). It never calls the network.

use crate::mock_provider::{paced, text_len, Behaviour};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Ids of answers, unique within the process.
static SERVED: AtomicU64 = AtomicU64::new(0);

/// `/fail-first` failures seen, per mock server (its local address): the handler has no state
/// of its own, and the count must be shared by a server's workers but not between servers.
static FAILURES_SEEN: LazyLock<Mutex<HashMap<SocketAddr, u64>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The arguments of the mock's tool calls.
const TOOL_INPUT: &str = r#"{"location":"Paris"}"#;

/// Registers the Messages API, plain and behind a behaviour prefix.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/anthropic/v1/messages", web::post().to(messages))
        .route("/{mode}/{arg}/anthropic/v1/messages", web::post().to(messages));
}

/// Input tokens the mock reports for a Messages request body.
pub fn input_tokens_for(body: &Value) -> u64 {
    let system = body.get("system").map_or(0, text_len);
    let messages: usize = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |msgs| msgs.iter().filter_map(|m| m.get("content")).map(text_len).sum());
    1 + ((system + messages) as u64) / 4
}

/// Output tokens the mock reports: the request's `max_tokens`.
pub fn output_tokens_for(body: &Value) -> Option<u64> {
    body.get("max_tokens").and_then(Value::as_u64).filter(|n| *n > 0)
}

/// `n` words of text: one per output token.
fn mock_text(n: u64) -> String {
    let mut s = String::with_capacity(n as usize * 4);
    for i in 0..n {
        s.push_str(if i == 0 { "tok" } else { " tok" });
    }
    s
}

/// An answer in Anthropic's error shape.
fn error(status: StatusCode, kind: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"type": "error", "error": {"type": kind, "message": message}}))
}

fn error_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Checks the key and version headers.
#[allow(clippy::result_large_err)] // a handler-local early return
fn check_headers(req: &HttpRequest) -> Result<(), HttpResponse> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    match header("x-api-key") {
        None => return Err(error(StatusCode::UNAUTHORIZED, "authentication_error", "x-api-key header is required")),
        Some("bad") => return Err(error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key")),
        Some(_) => {}
    }
    if header("anthropic-version").is_none() {
        return Err(error(StatusCode::BAD_REQUEST, "invalid_request_error", "anthropic-version: header is required"));
    }
    Ok(())
}

/// Applies the behaviour's failure or delay, if any.
#[allow(clippy::result_large_err)] // a handler-local early return
async fn gate(req: &HttpRequest) -> Result<Behaviour, HttpResponse> {
    let behaviour = Behaviour::from_request(req);
    match behaviour {
        Behaviour::Delay(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Behaviour::Status(429) => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            );
            resp.headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, actix_web::http::header::HeaderValue::from_static("0"));
            return Err(resp);
        }
        Behaviour::Status(400) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "prompt is too long: 210000 tokens > 200000 maximum",
            ))
        }
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(error(status, error_kind(status), "The mock was told to fail"));
        }
        Behaviour::FailFirst(n) => {
            let addr = req.app_config().local_addr();
            let seen = {
                let mut failures = FAILURES_SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let seen = failures.entry(addr).or_insert(0);
                *seen += 1;
                *seen
            };
            if seen <= n {
                return Err(error(overloaded(), "overloaded_error", "Overloaded"));
            }
        }
        Behaviour::Normal | Behaviour::Stall(_) | Behaviour::Echo(_) => {}
    }
    Ok(behaviour)
}

/// Anthropic's "overloaded" status, which `http` has no constant for.
fn overloaded() -> StatusCode {
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// A validated request: what the answer depends on.
struct Request {
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    /// The first tool's name, when the request offers tools.
    tool: Option<String>,
    stream: bool,
}

#[allow(clippy::result_large_err)] // a handler-local early return
fn parse(body: &[u8]) -> Result<Request, HttpResponse> {
    let invalid = |message: &str| error(StatusCode::BAD_REQUEST, "invalid_request_error", message);
    let body: Value = serde_json::from_slice(body).map_err(|e| invalid(&format!("invalid JSON: {e}")))?;
    let model = body.get("model").and_then(Value::as_str).ok_or_else(|| invalid("model: Field required"))?;
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(invalid("messages: Field required"));
    }
    let output_tokens =
        output_tokens_for(&body).ok_or_else(|| invalid("max_tokens: Field required (a positive integer)"))?;
    let tool = body
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|tools| tools.first())
        .map(|tool| tool.get("name").and_then(Value::as_str).unwrap_or("tool").to_owned());
    Ok(Request {
        model: model.to_owned(),
        input_tokens: input_tokens_for(&body),
        output_tokens,
        tool,
        stream: body.get("stream").and_then(Value::as_bool) == Some(true),
    })
}

/// Anthropic's Messages API: a Message, or with `stream: true` its event stream.
pub async fn messages(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(refused) = check_headers(&req) {
        return refused;
    }
    answer(&req, &body).await
}

/// Answers a Messages request whose caller was let in (the Vertex AI mock checks its own
/// bearer tokens and puts the model of its URL in the body).
pub async fn answer(req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let behaviour = match gate(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let request = match parse(body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let n = SERVED.fetch_add(1, Ordering::Relaxed);
    if request.stream {
        let stall = match behaviour {
            Behaviour::Stall(ms) => Duration::from_millis(ms),
            _ => Duration::ZERO,
        };
        return stream(&request, n, stall);
    }
    let (content, stop_reason) = match &request.tool {
        Some(name) => {
            let input: Value = serde_json::from_str(TOOL_INPUT).unwrap_or_default();
            (json!([{"type": "tool_use", "id": format!("toolu_mock_{n}"), "name": name, "input": input}]), "tool_use")
        }
        None => (json!([{"type": "text", "text": mock_text(request.output_tokens)}]), "end_turn"),
    };
    HttpResponse::Ok().json(json!({
        "id": format!("msg_mock_{n}"),
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": request.input_tokens,
            "output_tokens": request.output_tokens,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0
        }
    }))
}

fn event(value: &Value) -> web::Bytes {
    let name = value.get("type").and_then(Value::as_str).unwrap_or("message");
    web::Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// The event sequence the real API sends, one `content_block_delta` per output token (or, for a
/// tool call, the arguments in pieces). `stall` delays everything after the first delta.
fn stream(request: &Request, n: u64, stall: Duration) -> HttpResponse {
    let mut events = vec![json!({"type": "message_start", "message": {
        "id": format!("msg_mock_{n}"), "type": "message", "role": "assistant", "model": request.model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": request.input_tokens, "output_tokens": 1,
                  "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    }})];
    let block = |delta: Value| json!({"type": "content_block_delta", "index": 0, "delta": delta});
    let stop_reason = match &request.tool {
        Some(name) => {
            events.push(json!({"type": "content_block_start", "index": 0, "content_block":
                {"type": "tool_use", "id": format!("toolu_mock_{n}"), "name": name, "input": {}}}));
            events.push(json!({"type": "ping"}));
            let (head, tail) = TOOL_INPUT.split_at(TOOL_INPUT.len() / 2);
            for piece in ["", head, tail] {
                events.push(block(json!({"type": "input_json_delta", "partial_json": piece})));
            }
            "tool_use"
        }
        None => {
            events.push(
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            events.push(json!({"type": "ping"}));
            for i in 0..request.output_tokens {
                events.push(block(json!({"type": "text_delta", "text": if i == 0 { "tok" } else { " tok" }})));
            }
            "end_turn"
        }
    };
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                       "usage": {"output_tokens": request.output_tokens}}));
    events.push(json!({"type": "message_stop"}));
    // message_start, content_block_start, ping and the first delta go out at once.
    let frames: Vec<(Duration, web::Bytes)> =
        events.iter().enumerate().map(|(i, e)| (if i == 4 { stall } else { Duration::ZERO }, event(e))).collect();
    let body = paced(frames);
    HttpResponse::Ok().content_type("text/event-stream").insert_header(("cache-control", "no-cache")).streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as actix_test;
    use actix_web::App;

    #[test]
    fn token_counts_follow_the_request() {
        let body = json!({"system": "1234", "messages": [{"role": "user", "content": "12345678"}], "max_tokens": 7});
        assert_eq!(input_tokens_for(&body), 4);
        assert_eq!(output_tokens_for(&body), Some(7));
        let blocks = json!({
            "system": [{"type": "text", "text": "1234"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "1234"},
                                             {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAAAAAA"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"location": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "1234"}]}
            ],
            "max_tokens": 1
        });
        assert_eq!(input_tokens_for(&blocks), 4);
        assert_eq!(input_tokens_for(&json!({"messages": []})), 1);
        assert_eq!(output_tokens_for(&json!({})), None);
        assert_eq!(output_tokens_for(&json!({"max_tokens": 0})), None);
    }

    #[test]
    fn mock_text_has_one_word_per_token() {
        assert_eq!(mock_text(3), "tok tok tok");
        assert_eq!(mock_text(0), "");
    }

    fn request(path: &str, key: Option<&str>, body: Value) -> actix_test::TestRequest {
        let mut req = actix_test::TestRequest::post().uri(path).insert_header(("anthropic-version", "2023-06-01"));
        if let Some(key) = key {
            req = req.insert_header(("x-api-key", key));
        }
        req.set_json(body)
    }

    fn hello(stream: bool) -> Value {
        json!({"model": "claude-test", "max_tokens": 3, "stream": stream,
               "messages": [{"role": "user", "content": "12345678"}]})
    }

    #[actix_web::test]
    async fn answers_a_message_with_usage() {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        let resp: Value = actix_test::call_and_read_body_json(
            &app,
            request("/anthropic/v1/messages", Some("k"), hello(false)).to_request(),
        )
        .await;
        assert_eq!(resp["type"], "message");
        assert_eq!(resp["model"], "claude-test");
        assert_eq!(resp["content"], json!([{"type": "text", "text": "tok tok tok"}]));
        assert_eq!(resp["stop_reason"], "end_turn");
        assert_eq!(
            resp["usage"],
            json!({"input_tokens": 3, "output_tokens": 3, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
        );
        let mut tools = hello(false);
        tools["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
        let resp: Value =
            actix_test::call_and_read_body_json(&app, request("/anthropic/v1/messages", Some("k"), tools).to_request())
                .await;
        assert_eq!(resp["stop_reason"], "tool_use");
        assert_eq!(resp["content"][0]["name"], "get_weather");
        assert_eq!(resp["content"][0]["input"], json!({"location": "Paris"}));
    }

    #[actix_web::test]
    async fn streams_the_anthropic_event_sequence() {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        let resp =
            actix_test::call_service(&app, request("/anthropic/v1/messages", Some("k"), hello(true)).to_request())
                .await;
        assert_eq!(resp.headers().get("content-type").unwrap(), "text/event-stream");
        let body = String::from_utf8(actix_test::read_body(resp).await.to_vec()).unwrap();
        let events: Vec<(&str, Value)> = body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                (
                    name.strip_prefix("event: ").unwrap(),
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = events.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(events.iter().all(|(n, e)| e["type"] == *n));
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 3);
        let text: String =
            events.iter().filter_map(|(_, e)| e.pointer("/delta/text").and_then(Value::as_str)).collect();
        assert_eq!(text, "tok tok tok");
        assert_eq!(events[7].1["delta"]["stop_reason"], "end_turn");
        assert_eq!(events[7].1["usage"]["output_tokens"], 3);

        let mut tools = hello(true);
        tools["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
        let resp =
            actix_test::call_service(&app, request("/anthropic/v1/messages", Some("k"), tools).to_request()).await;
        let body = String::from_utf8(actix_test::read_body(resp).await.to_vec()).unwrap();
        let args: String = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|e| e.pointer("/delta/partial_json").and_then(Value::as_str).map(str::to_owned))
            .collect();
        assert_eq!(args, TOOL_INPUT);
        assert!(body.contains(r#""stop_reason":"tool_use""#));
    }

    #[actix_web::test]
    async fn fails_in_anthropic_shape() {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        for (path, key, body, status, kind) in [
            ("/anthropic/v1/messages", None, hello(false), 401, "authentication_error"),
            ("/anthropic/v1/messages", Some("bad"), hello(false), 401, "authentication_error"),
            ("/anthropic/v1/messages", Some("k"), json!({"model": "m", "messages": []}), 400, "invalid_request_error"),
            ("/status/429/anthropic/v1/messages", Some("k"), hello(false), 429, "rate_limit_error"),
            ("/status/529/anthropic/v1/messages", Some("k"), hello(false), 529, "overloaded_error"),
            ("/status/500/anthropic/v1/messages", Some("k"), hello(false), 500, "api_error"),
            ("/status/400/anthropic/v1/messages", Some("k"), hello(false), 400, "invalid_request_error"),
        ] {
            let resp = actix_test::call_service(&app, request(path, key, body).to_request()).await;
            assert_eq!(resp.status().as_u16(), status, "{path}");
            if status == 429 {
                assert_eq!(resp.headers().get("retry-after").unwrap(), "0");
            }
            let v: Value = actix_test::read_body_json(resp).await;
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind, "{path}");
        }
        let no_version = actix_test::TestRequest::post()
            .uri("/anthropic/v1/messages")
            .insert_header(("x-api-key", "k"))
            .set_json(hello(false))
            .to_request();
        assert_eq!(actix_test::call_service(&app, no_version).await.status(), StatusCode::BAD_REQUEST);
    }

    #[actix_web::test]
    async fn fails_the_first_requests_then_answers() {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let req = request("/fail-first/2/anthropic/v1/messages", Some("k"), hello(false)).to_request();
            statuses.push(actix_test::call_service(&app, req).await.status().as_u16());
        }
        assert_eq!(statuses, [529, 529, 200]);
    }
}
