//! `POST /v1/messages`: Anthropic's Messages API over the same pipeline as every model route;
//! `POST /v1/messages/count_tokens`: a request's input tokens, counted here.

use super::{authorize, observe, read_body, request_id, Reply};
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::pipeline::serve;
use crate::providers::Endpoint;
use crate::traces::RequestTrace;
use crate::AppState;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;
use std::time::Instant;

/// `POST /v1/messages`: Anthropic's Messages API, served by any provider through translation
/// to and from OpenAI chat (the same routing, metering and limits as every route).
pub(crate) async fn anthropic_messages(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let (request_id, bad_id) = request_id(&req);
    let trace = RequestTrace::start(&req, "chat", &request_id);
    let mut response = trace.within(messages(&req, payload, &state, (&request_id, bad_id), &trace, started)).await;
    super::identify(&mut response, &request_id, trace.trace_id.as_deref());
    response
}

/// An error as Anthropic's API shapes it.
fn anthropic_error(e: GatewayError) -> HttpResponse {
    let envelope = serde_json::to_vec(&json!({"error": {"message": e.to_string()}})).unwrap_or_default();
    let status = e.status_code();
    HttpResponse::build(status).json(crate::providers::anthropic::error_to_anthropic(status.as_u16(), &envelope))
}

/// The request within its span.
async fn messages(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    (request_id, bad_id): (&str, Option<GatewayError>),
    trace: &RequestTrace,
    started: Instant,
) -> HttpResponse {
    let prepared = async {
        if let Some(e) = bad_id {
            return Err(e);
        }
        let auth = crate::traces::child("auth");
        let key = authorize(req, state).await?;
        drop(auth);
        crate::traces::record_principal(&key);
        let body = read_body(req, payload, state.max_body_bytes).await?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::invalid(format!("request body is not valid JSON: {e}"), None))?;
        let chat = crate::providers::anthropic::messages_to_chat_request(&value)?;
        let chat = serde_json::to_vec(&chat).map_err(|e| GatewayError::Internal(e.to_string()))?;
        let request = ProxyRequest::parse(&chat, Endpoint::ChatCompletions)?;
        crate::traces::record_model("chat", &request.model);
        Ok::<_, GatewayError>((key, request))
    }
    .await;
    let (key, request) = match prepared {
        Ok(p) => p,
        Err(e) => {
            observe(Endpoint::ChatCompletions.path(), "unknown", e.status_code(), started);
            return anthropic_error(e);
        }
    };
    let model = request.model.clone();
    let (label, response) = match serve(req, state, key, request, request_id, trace, started).await {
        Err((label, e)) => (label, anthropic_error(e)),
        Ok((label, Reply::Stream { headers, stream })) => {
            let translated = crate::sse::TranslatedStream::new(
                crate::traces::in_request(stream),
                crate::providers::anthropic::ChatToMessagesStream::new(&model),
            );
            let mut r = HttpResponse::Ok();
            r.insert_header((CONTENT_TYPE, "text/event-stream")).insert_header(("cache-control", "no-cache"));
            for h in headers {
                r.insert_header(h);
            }
            (label, r.streaming(translated))
        }
        Ok((label, Reply::Full { status, headers, body, .. })) => {
            let translated = if status.is_success() {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .map(|chat| crate::providers::anthropic::chat_response_to_message(&chat, &model))
                    .unwrap_or_else(|_| crate::providers::anthropic::error_to_anthropic(502, &body))
            } else {
                crate::providers::anthropic::error_to_anthropic(status.as_u16(), &body)
            };
            let mut r = HttpResponse::build(status);
            for h in headers {
                r.insert_header(h);
            }
            (label, r.json(translated))
        }
    };
    crate::traces::record_status(response.status().as_u16());
    observe(Endpoint::ChatCompletions.path(), &label, response.status(), started);
    response
}

/// `POST /v1/messages/count_tokens`: the input tokens of a Messages request (`model`,
/// `messages`, `system`, `tools`; `max_tokens` not needed), as Anthropic's endpoint answers
/// (`{"input_tokens": N}`), for clients that size their context with it (Claude Code). Counted
/// here with the tokenizer metering uses when a provider reports no usage (o200k_base over the
/// text of the system prompt, messages and tools): an estimate of the provider's own count,
/// never a provider call. The key must be valid and may use the model; nothing is charged and no
/// usage event is made (Anthropic charges nothing for it). Errors in Anthropic's shape.
pub(crate) async fn count_tokens(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    const ENDPOINT: &str = "/v1/messages/count_tokens";
    let started = Instant::now();
    let answer = async {
        let principal = authorize(&req, &state).await?;
        let body = read_body(&req, payload, state.max_body_bytes).await?;
        let mut value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::invalid(format!("request body is not valid JSON: {e}"), None))?;
        if let Some(o) = value.as_object_mut() {
            // Checked as a Messages request is, which needs a limit to be one; a client that
            // sends its Messages body as it is (with `max_tokens`) is counted all the same.
            o.entry("max_tokens").or_insert(json!(1));
        }
        let chat = crate::providers::anthropic::messages_to_chat_request(&value)?;
        let model = chat.get("model").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        let group = state.router.alias_target(&model).unwrap_or(&model).to_owned();
        if !state.router.knows(&group) || crate::pipeline::check_model(&state, &principal, &group).is_err() {
            return Err(GatewayError::ModelNotFound(model));
        }
        let counted = tokio::task::spawn_blocking(move || {
            let mut text = crate::metering::tokens::TextTally::default();
            for field in ["messages", "tools"] {
                if let Some(v) = chat.get(field) {
                    crate::metering::tokens::prompt_text(v, &mut text);
                }
            }
            text.tokens()
        })
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
        Ok::<_, GatewayError>((state.router.metric_label(&group), counted))
    }
    .await;
    match answer {
        Ok((label, input_tokens)) => {
            observe(ENDPOINT, &label, actix_web::http::StatusCode::OK, started);
            HttpResponse::Ok().json(json!({"input_tokens": input_tokens}))
        }
        Err(e) => {
            observe(ENDPOINT, "unknown", e.status_code(), started);
            anthropic_error(e)
        }
    }
}
