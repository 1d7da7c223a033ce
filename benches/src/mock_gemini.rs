//! The mock provider playing Google Gemini (`generateContent` / `streamGenerateContent` of the
//! AI Studio `v1beta` API), so Gemini routes can be tested and measured like OpenAI ones.
//!
//! Token counts follow the OpenAI mock's rules: prompt tokens = 1 + bytes of all `text` parts in
//! `systemInstruction` and `contents` / 4; output tokens = `generationConfig.maxOutputTokens`, or
//! 16. The answer is "tok tok ...", one word per output token; when the request declares
//! functions, it is a `functionCall` of the first one with `{"location": "Paris"}`.
//!
//! Routes: `POST /gemini/v1beta/models/{model}:generateContent` (and the same under `v1`) and
//! `...:streamGenerateContent` (`?alt=sse` streams server-sent events, one per token; without it
//! the answer is Gemini's JSON array). Every request needs an `x-goog-api-key` header or a `key`
//! query parameter; the key `bad` is refused. The behaviour prefixes of the OpenAI mock work in
//! front of `/gemini`: `/delay/{ms}`, `/status/{code}` (`429` is `RESOURCE_EXHAUSTED` with
//! `Retry-After: 0`, `400` an over-long prompt, `451` a prompt blocked by safety, answered 200 as
//! Gemini does), `/fail-first/{n}` (503 `UNAVAILABLE`), `/stall/{ms}`.
//!
//! It never calls the network.

use crate::mock_provider::{paced, Behaviour};
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// Output tokens when a request names no `maxOutputTokens` (the OpenAI mock's default).
const DEFAULT_OUTPUT_TOKENS: u64 = 16;

/// Registers the Gemini routes on the mock's app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Google serves both its stable and its beta API; Google's SDK asks for `v1` by default.
    for version in ["v1", "v1beta"] {
        cfg.route(&format!("/gemini/{version}/models/{{model_action}}"), web::post().to(generate))
            .route(&format!("/{{mode}}/{{arg}}/gemini/{version}/models/{{model_action}}"), web::post().to(generate));
    }
}

/// Requests this mock server has seen, for `/fail-first`. `configure` runs once per worker, so
/// the count lives outside the app, keyed by the server's address so that several mocks in one
/// process do not share it.
pub(crate) fn seen_before(req: &HttpRequest) -> u64 {
    static SEEN: OnceLock<Mutex<HashMap<SocketAddr, u64>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    let count = seen.entry(req.app_config().local_addr()).or_insert(0);
    let before = *count;
    *count += 1;
    before
}

fn next_response_id() -> String {
    static SERVED: AtomicU64 = AtomicU64::new(0);
    format!("mock-gemini-{}", SERVED.fetch_add(1, Ordering::Relaxed))
}

/// `camelCase` or `snake_case`: Gemini's JSON parser accepts both spellings of a field.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn text_bytes(content: &Value) -> usize {
    content
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .map(str::len)
        .sum()
}

/// Prompt tokens the mock reports for a `generateContent` body.
pub fn prompt_tokens_for(body: &Value) -> u64 {
    let system = field(body, "systemInstruction", "system_instruction").map_or(0, text_bytes);
    let contents: usize = body.get("contents").and_then(Value::as_array).into_iter().flatten().map(text_bytes).sum();
    1 + ((system + contents) as u64) / 4
}

/// Output tokens the mock reports for a `generateContent` body.
pub fn output_tokens_for(body: &Value, default: u64) -> u64 {
    field(body, "generationConfig", "generation_config")
        .and_then(|c| field(c, "maxOutputTokens", "max_output_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

/// The name of the first declared function, if the request declares any.
fn first_function(body: &Value) -> Option<&str> {
    body.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| field(t, "functionDeclarations", "function_declarations").and_then(Value::as_array))
        .flatten()
        .find_map(|d| d.get("name").and_then(Value::as_str))
}

/// `n` words of text: one per output token.
pub(crate) fn mock_text(n: u64) -> String {
    let mut s = String::with_capacity(n as usize * 4);
    for i in 0..n {
        s.push_str(if i == 0 { "tok" } else { " tok" });
    }
    s
}

/// An error in Google's shape.
fn error(status: StatusCode, message: &str) -> HttpResponse {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "UNKNOWN",
    };
    HttpResponse::build(status).json(json!({"error": {"code": status.as_u16(), "message": message, "status": name}}))
}

/// Checks the key.
#[allow(clippy::result_large_err)] // a handler-local early return
fn check_key(req: &HttpRequest) -> Result<(), HttpResponse> {
    let header = req.headers().get("x-goog-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string()).ok();
    match header.or_else(|| query.and_then(|q| q.get("key").cloned())) {
        None => Err(error(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
        )),
        Some(key) if key == "bad" => {
            Err(error(StatusCode::UNAUTHORIZED, "API key not valid. Please pass a valid API key."))
        }
        Some(_) => Ok(()),
    }
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
                "You exceeded your current quota, please check your plan and billing details.",
            );
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("0"));
            return Err(resp);
        }
        Behaviour::Status(400) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
            ))
        }
        Behaviour::Status(451) => {}
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(error(status, "The mock was told to fail"));
        }
        Behaviour::FailFirst(n) => {
            if seen_before(req) < n {
                return Err(error(StatusCode::SERVICE_UNAVAILABLE, "The model is overloaded. Please try again later."));
            }
        }
        Behaviour::Normal | Behaviour::Stall(_) | Behaviour::Echo(_) => {}
    }
    Ok(behaviour)
}

fn usage_metadata(prompt: u64, output: u64) -> Value {
    json!({"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output})
}

/// One GenerateContentResponse with a single candidate.
fn response(model: &str, id: &str, part: Value, finish: bool, usage: Value) -> Value {
    let mut candidate = json!({"content": {"parts": [part], "role": "model"}, "index": 0});
    if finish {
        candidate["finishReason"] = json!("STOP");
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": id})
}

/// What Gemini answers to a prompt its safety filters block: no candidates, a `promptFeedback`.
fn blocked(model: &str, id: &str, prompt: u64) -> Value {
    json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": prompt,
           "totalTokenCount": prompt}, "modelVersion": model, "responseId": id})
}

async fn generate(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(refused) = check_key(&req) {
        return refused;
    }
    let model_action = req.match_info().get("model_action").unwrap_or_default().to_owned();
    answer(&req, &body, &model_action).await
}

/// Answers a `{model}:generateContent` or `{model}:streamGenerateContent` call whose caller
/// was let in (the Vertex AI mock checks its own bearer tokens).
pub async fn answer(req: &HttpRequest, body: &[u8], model_action: &str) -> HttpResponse {
    let Some((model, action)) = model_action.rsplit_once(':') else {
        return error(StatusCode::NOT_FOUND, "The requested URL was not found on this server.");
    };
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return error(StatusCode::NOT_FOUND, "The requested URL was not found on this server."),
    };
    let model = model.to_owned();
    let behaviour = match gate(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let body: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("Invalid JSON payload received. {e}")),
    };
    if body.get("contents").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return error(StatusCode::BAD_REQUEST, "* GenerateContentRequest.contents: contents is not specified\n");
    }
    let id = next_response_id();
    let prompt = prompt_tokens_for(&body);
    let output = output_tokens_for(&body, DEFAULT_OUTPUT_TOKENS);
    let events = if behaviour == Behaviour::Status(451) {
        vec![blocked(&model, &id, prompt)]
    } else if let Some(name) = first_function(&body) {
        let call = json!({"functionCall": {"name": name, "args": {"location": "Paris"}}});
        vec![response(&model, &id, call, true, usage_metadata(prompt, output))]
    } else if !stream {
        vec![response(&model, &id, json!({"text": mock_text(output)}), true, usage_metadata(prompt, output))]
    } else if output == 0 {
        vec![response(&model, &id, json!({"text": ""}), true, usage_metadata(prompt, 0))]
    } else {
        (0..output)
            .map(|i| {
                let text = if i == 0 { "tok" } else { " tok" };
                response(&model, &id, json!({"text": text}), i + 1 == output, usage_metadata(prompt, i + 1))
            })
            .collect()
    };
    if !stream {
        // Not streaming: exactly one response was built.
        return HttpResponse::Ok().json(events.into_iter().next().unwrap_or_default());
    }
    let stall = match behaviour {
        Behaviour::Stall(ms) => Duration::from_millis(ms),
        _ => Duration::ZERO,
    };
    let sse = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .is_ok_and(|q| q.get("alt").is_some_and(|alt| alt == "sse"));
    stream_events(events, sse, stall)
}

/// Streams the events as server-sent events or, without `alt=sse`, as the pieces of one JSON
/// array; the second piece waits `stall`.
fn stream_events(events: Vec<Value>, sse: bool, stall: Duration) -> HttpResponse {
    let last = events.len().saturating_sub(1);
    let frames: Vec<(Duration, web::Bytes)> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let delay = if i == 1 { stall } else { Duration::ZERO };
            let text = match (sse, i == 0, i == last) {
                (true, _, _) => format!("data: {event}\r\n\r\n"),
                (false, true, true) => format!("[{event}]"),
                (false, true, false) => format!("[{event}"),
                (false, false, true) => format!(",\r\n{event}]"),
                (false, false, false) => format!(",\r\n{event}"),
            };
            (delay, web::Bytes::from(text))
        })
        .collect();
    let content_type = if sse { "text/event-stream" } else { "application/json" };
    HttpResponse::Ok().content_type(content_type).insert_header(("cache-control", "no-cache")).streaming(paced(frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as actix_test;
    use actix_web::App;

    #[test]
    fn token_counts_follow_the_request() {
        let body = json!({
            "systemInstruction": {"parts": [{"text": "1234"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "12345678"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
                {"role": "model", "parts": [{"text": "1234"}]}
            ],
            "generationConfig": {"maxOutputTokens": 7}
        });
        assert_eq!(prompt_tokens_for(&body), 5);
        assert_eq!(output_tokens_for(&body, 16), 7);
        assert_eq!(output_tokens_for(&json!({"contents": []}), 16), 16);
        let snake = json!({"system_instruction": {"parts": [{"text": "12345678"}]}, "contents": [],
                           "generation_config": {"max_output_tokens": 3}});
        assert_eq!(prompt_tokens_for(&snake), 3);
        assert_eq!(output_tokens_for(&snake, 16), 3);
        assert_eq!(prompt_tokens_for(&json!({})), 1);
    }

    #[test]
    fn mock_text_has_one_word_per_token() {
        assert_eq!(mock_text(3), "tok tok tok");
        assert_eq!(mock_text(0), "");
    }

    async fn call(uri: &str, key: Option<&str>, body: Value) -> (StatusCode, Vec<u8>) {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        let mut req = actix_test::TestRequest::post().uri(uri).set_json(body);
        if let Some(key) = key {
            req = req.insert_header(("x-goog-api-key", key));
        }
        let resp = actix_test::call_service(&app, req.to_request()).await;
        let status = resp.status();
        (status, actix_test::read_body(resp).await.to_vec())
    }

    fn hello(max: u64) -> Value {
        json!({"contents": [{"role": "user", "parts": [{"text": "12345678"}]}], "generationConfig": {"maxOutputTokens": max}})
    }

    #[actix_web::test]
    async fn answers_generate_content() {
        let (status, body) = call("/gemini/v1beta/models/gemini-2.0-flash:generateContent", Some("k"), hello(3)).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "tok tok tok");
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(v["usageMetadata"], json!({"promptTokenCount": 3, "candidatesTokenCount": 3, "totalTokenCount": 6}));
        assert_eq!(v["modelVersion"], "gemini-2.0-flash");
        // The stable API answers the same; other versions are not served.
        let (status, v1) = call("/gemini/v1/models/gemini-2.0-flash:generateContent", Some("k"), hello(3)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(serde_json::from_slice::<Value>(&v1).unwrap()["usageMetadata"], v["usageMetadata"]);
        let (status, _) = call("/gemini/v2/models/gemini-2.0-flash:generateContent", Some("k"), hello(3)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[actix_web::test]
    async fn calls_the_first_declared_function() {
        let mut body = hello(5);
        body["tools"] = json!([{"functionDeclarations": [{"name": "get_weather"}, {"name": "other"}]}]);
        let (_, bytes) = call("/gemini/v1beta/models/g:generateContent?key=k", None, body).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0],
            json!({"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}})
        );
        assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 5);
    }

    #[actix_web::test]
    async fn streams_one_event_per_token() {
        let (status, bytes) = call("/gemini/v1beta/models/g:streamGenerateContent?alt=sse", Some("k"), hello(3)).await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8(bytes).unwrap();
        let events: Vec<Value> = text
            .split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(events.len(), 3);
        let joined: String =
            events.iter().map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
        assert_eq!(joined, "tok tok tok");
        assert!(events[..2].iter().all(|e| e["candidates"][0].get("finishReason").is_none()));
        assert_eq!(events[2]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(events[2]["usageMetadata"]["candidatesTokenCount"], 3);
        assert!(events.iter().all(|e| e["usageMetadata"]["promptTokenCount"] == 3));

        let (_, bytes) = call("/gemini/v1beta/models/g:streamGenerateContent", Some("k"), hello(2)).await;
        let array: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(array.as_array().map(Vec::len), Some(2));
        assert_eq!(array[1]["usageMetadata"]["totalTokenCount"], 5);
    }

    #[actix_web::test]
    async fn refuses_keys_and_follows_behaviours() {
        let uri = "/gemini/v1beta/models/g:generateContent";
        assert_eq!(call(uri, None, hello(1)).await.0, StatusCode::FORBIDDEN);
        let (status, bytes) = call(uri, Some("bad"), hello(1)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");

        let (status, bytes) = call("/status/429/gemini/v1beta/models/g:generateContent", Some("k"), hello(1)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], json!({"code": 429, "message": v["error"]["message"], "status": "RESOURCE_EXHAUSTED"}));

        let (status, bytes) = call("/status/451/gemini/v1beta/models/g:generateContent", Some("k"), hello(1)).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");

        let (status, _) = call("/gemini/v1beta/models/g:countTokens", Some("k"), hello(1)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(uri, Some("k"), json!({"contents": []})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[actix_web::test]
    async fn fails_first_requests_then_answers() {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let req = actix_test::TestRequest::post()
                .uri("/fail-first/2/gemini/v1beta/models/g:generateContent")
                .insert_header(("x-goog-api-key", "k"))
                .set_json(hello(1))
                .to_request();
            statuses.push(actix_test::call_service(&app, req).await.status().as_u16());
        }
        assert_eq!(statuses, vec![503, 503, 200]);
    }
}
