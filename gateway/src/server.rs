//! HTTP routes: the OpenAI surface, health and metrics. Every model route authenticates first.

use crate::auth::raw_key;
use crate::error::GatewayError;
use crate::openai::{ChatRequest, ChatResponseUsage};
use crate::pricing::Tokens;
use crate::providers::{openai_compatible, UpstreamError};
use crate::usage::{Outcome, UsageRecorder};
use crate::AppState;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use metrics::{counter, histogram};
use std::time::Instant;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(chat_completions))
        .route("/chat/completions", web::post().to(chat_completions))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(prometheus));
}

pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let e = GatewayError::RouteNotFound(format!("{} {}", req.method(), req.path()));
    actix_web::ResponseError::error_response(&e)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn prometheus(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// Reads the body up to the configured limit; bigger bodies are refused without reading them.
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::Bytes, GatewayError> {
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| GatewayError::invalid(format!("could not read request body: {e}"), None))?;
        if body.len() + chunk.len() > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn request_id(req: &HttpRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| format!("req_{}", uuid::Uuid::now_v7().simple()), str::to_owned)
}

fn observe(model: &str, status: StatusCode, started: Instant) {
    let status = status.as_u16().to_string();
    histogram!("tollgate_request_duration_seconds", "model" => model.to_owned(), "status" => status.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("tollgate_requests_total", "model" => model.to_owned(), "status" => status).increment(1);
}

async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let started = Instant::now();
    let request_id = request_id(&req);
    let result = serve_chat(&req, payload, &state, &request_id, started).await;
    let (model_label, status) = match &result {
        Ok((model, resp)) => (model.as_str(), resp.status()),
        Err((model, e)) => (model.as_str(), actix_web::ResponseError::status_code(e)),
    };
    observe(model_label, status, started);
    let mut response = match result {
        Ok((_, resp)) => resp,
        Err((_, e)) => actix_web::ResponseError::error_response(&e),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    Ok(response)
}

/// The chat route. Errors carry the metric label of the model (`unknown` before it is known).
async fn serve_chat(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    request_id: &str,
    started: Instant,
) -> Result<(String, HttpResponse), (String, GatewayError)> {
    let unknown = |e| ("unknown".to_owned(), e);
    let raw = raw_key(req.headers()).ok_or(GatewayError::MissingKey).map_err(unknown)?;
    let key = state.keys.authenticate(raw).await.map_err(unknown)?;
    let body = read_body(req, payload, state.max_body_bytes).await.map_err(unknown)?;
    let chat = ChatRequest::parse(&body).map_err(unknown)?;
    if !state.router.knows(&chat.model) {
        return Err(unknown(GatewayError::ModelNotFound(chat.model)));
    }
    let label = chat.model.clone();
    let with_label = |e| (label.clone(), e);
    key.check(chrono::Utc::now(), &chat.model).map_err(with_label)?;
    if chat.stream {
        return Err(with_label(GatewayError::invalid("streaming is not supported yet", Some("stream"))));
    }
    let deployment =
        state.router.pick(&chat.model).ok_or(GatewayError::ModelNotFound(chat.model.clone())).map_err(with_label)?;
    let upstream_body = chat.to_upstream_body(&deployment.upstream_model).map_err(with_label)?;
    let customer = req
        .headers()
        .get("x-tollgate-customer-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| chat.user.clone());

    let recorder = UsageRecorder::start(
        state.sink.clone(),
        &state.gateway_id,
        request_id,
        &key,
        customer,
        &chat.model,
        &deployment,
        state.prices.get(&chat.model).copied(),
        chat.stream,
        started,
    );
    let upstream = openai_compatible::chat_completions(&state.client, &deployment, upstream_body).await;
    let answer = match upstream {
        Ok(answer) => answer,
        Err(e) => {
            let err = match e {
                UpstreamError::Timeout => GatewayError::UpstreamTimeout {
                    model: chat.model.clone(),
                    timeout_ms: u64::try_from(deployment.timeout.as_millis()).unwrap_or(u64::MAX),
                },
                UpstreamError::Unavailable(reason) => {
                    tracing::warn!(deployment = %deployment.id, %reason, "upstream unavailable");
                    GatewayError::UpstreamUnavailable { model: chat.model.clone() }
                }
            };
            let status = actix_web::ResponseError::status_code(&err).as_u16();
            recorder.finish(Outcome {
                status,
                error_type: Some(err.kind_and_code().1),
                tokens: Tokens::default(),
                served_model: None,
            });
            return Err(with_label(err));
        }
    };

    let ok = (200..300).contains(&answer.status);
    let parsed: ChatResponseUsage =
        if ok { serde_json::from_slice(&answer.body).unwrap_or_default() } else { ChatResponseUsage::default() };
    let usage = parsed.usage.unwrap_or_default();
    let tokens = Tokens {
        prompt: usage.prompt_tokens,
        completion: usage.completion_tokens,
        cached: usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
    };
    let served_model = parsed.model.or_else(|| ok.then(|| deployment.upstream_model.clone()));
    let charged = recorder.finish(Outcome {
        status: answer.status,
        error_type: (!ok).then_some("upstream_error"),
        tokens,
        served_model: served_model.clone(),
    });

    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    response.insert_header((CONTENT_TYPE, answer.content_type.as_deref().unwrap_or("application/json")));
    response.insert_header(("x-tollgate-cost-nano-usd", charged.0.to_string()));
    response.insert_header(("x-tollgate-response-cost", charged.to_string()));
    if let Some(model) = &served_model {
        if let Ok(v) = HeaderValue::from_str(model) {
            response.insert_header((HeaderName::from_static("x-tollgate-served-model"), v));
        }
    }
    Ok((label, response.body(answer.body)))
}
