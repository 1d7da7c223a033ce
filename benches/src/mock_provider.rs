//! A mock OpenAI-compatible provider with configurable latency and token counts.
//!
//! Token counts are a pure function of the request (so a test can compute the expected cost on
//! its own): prompt tokens = 1 + characters of all message contents / 4; completion tokens =
//! the request's `max_tokens` (or `max_completion_tokens`) when given, otherwise the configured
//! default. `/delay/{ms}/v1/...` answers after an extra delay. It never calls the network.

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
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig { latency: Duration::ZERO, completion_tokens: 16, api_key: None }
    }
}

struct MockState {
    config: MockConfig,
    served: AtomicU64,
}

/// Prompt tokens the mock reports for a chat request body.
pub fn prompt_tokens_for(body: &Value) -> u64 {
    let chars: usize = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|msgs| msgs.iter().filter_map(|m| m.get("content").and_then(Value::as_str)).map(str::len).sum())
        .unwrap_or(0);
    1 + (chars as u64) / 4
}

/// Completion tokens the mock reports for a chat request body.
pub fn completion_tokens_for(body: &Value, default: u64) -> u64 {
    body.get("max_tokens").or_else(|| body.get("max_completion_tokens")).and_then(Value::as_u64).unwrap_or(default)
}

/// `/delay/{ms}/v1/chat/completions`: the same answer after an extra delay (timeouts in tests).
async fn delayed_chat_completions(
    req: HttpRequest,
    delay_ms: web::Path<u64>,
    body: web::Bytes,
    state: web::Data<MockState>,
) -> HttpResponse {
    tokio::time::sleep(Duration::from_millis(delay_ms.into_inner())).await;
    chat_completions(req, body, state).await
}

async fn chat_completions(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    if let Some(expected) = &state.config.api_key {
        let ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.strip_prefix("Bearer ") == Some(expected.as_str()));
        if !ok {
            return HttpResponse::Unauthorized().json(json!({
                "error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}
            }));
        }
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return HttpResponse::BadRequest().json(json!({
                "error": {"message": format!("invalid JSON: {e}"), "type": "invalid_request_error", "param": null, "code": null}
            }))
        }
    };
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    let n = state.served.fetch_add(1, Ordering::Relaxed);
    let model = body.get("model").and_then(Value::as_str).unwrap_or("mock-model").to_owned();
    let prompt_tokens = prompt_tokens_for(&body);
    let completion_tokens = completion_tokens_for(&body, state.config.completion_tokens);
    HttpResponse::Ok().json(json!({
        "id": format!("chatcmpl-mock-{n}"),
        "object": "chat.completion",
        "created": 1_763_900_000u64,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "This is a mock response."},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    }))
}

async fn models() -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "tollgate-mock"}]}))
}

/// Serves the mock on `listener` until the returned server is stopped.
pub fn serve(listener: TcpListener, config: MockConfig, workers: usize) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(MockState { config, served: AtomicU64::new(0) });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .route("/v1/chat/completions", web::post().to(chat_completions))
            .route("/chat/completions", web::post().to(chat_completions))
            .route("/delay/{ms}/v1/chat/completions", web::post().to(delayed_chat_completions))
            .route("/v1/models", web::get().to(models))
    })
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
    }
}
