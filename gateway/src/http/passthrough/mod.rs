//! Pass-through routes (LiteLLM's `/openai/...`, `/anthropic/...`, `/gemini/...`): the request's
//! bytes sent on unchanged to a deployment of that provider family, with the deployment's
//! credentials in place of the virtual key, after the same authentication and admission as the
//! model routes, and metered by the usage the provider's own answer reports (design.md §2.12).

mod path;
mod stream;
mod usage;

use super::{header, read_body, request_id};
use crate::error::GatewayError;
use crate::limits::pricing::Tokens;
use crate::metering::recorder::{Outcome, UsageRecorder};
use crate::providers::{AnswerError, Deployment, UpstreamError};
use crate::tenancy::auth::{raw_key, Principal};
use crate::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use std::sync::Arc;
use std::time::Instant;

/// A provider family served by a pass-through route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Family {
    /// The route's prefix, and the name of the provider family (`Provider::name`) it calls.
    fn prefix(self) -> &'static str {
        match self {
            Family::OpenAi => "/openai",
            Family::Anthropic => "/anthropic",
            Family::Gemini => "/gemini",
        }
    }

    fn provider(self) -> &'static str {
        &self.prefix()[1..]
    }
}

pub(crate) async fn openai(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Family::OpenAi).await
}

pub(crate) async fn anthropic(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Family::Anthropic).await
}

pub(crate) async fn gemini(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Family::Gemini).await
}

async fn handle(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>, family: Family) -> HttpResponse {
    let started = Instant::now();
    let (request_id, bad_id) = request_id(&req);
    let result = match bad_id {
        Some(e) => Err(e),
        None => forward(&req, payload, &state, family, &request_id, started).await,
    };
    let mut response = result.unwrap_or_else(|e| e.error_response());
    super::identify(&mut response, &request_id, None);
    response
}

/// The virtual key: `Authorization: Bearer`, `x-api-key`, `api-key`, and for Gemini also
/// `x-goog-api-key` or the query's `key`.
fn virtual_key(req: &HttpRequest, family: Family) -> Option<&str> {
    raw_key(req.headers()).or_else(|| {
        (family == Family::Gemini).then_some(())?;
        let header = req.headers().get("x-goog-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
        header.filter(|k| !k.is_empty()).or_else(|| path::query_key(req.query_string()))
    })
}

/// The model a request names (the body's `model`, or for Gemini the path's
/// `models/<model>:`), and whether it asks for a stream (the body's `stream`, or Gemini's
/// `:streamGenerateContent`).
fn named_model(family: Family, tail: &str, body: &[u8]) -> (Option<String>, bool) {
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<String>,
        stream: Option<bool>,
    }
    let named = serde_json::from_slice::<Named>(body).ok();
    let gemini = family == Family::Gemini;
    let stream =
        named.as_ref().and_then(|n| n.stream).unwrap_or(false) || (gemini && tail.contains(":streamGenerateContent"));
    let model = named.and_then(|n| n.model).or_else(|| {
        let after = tail.split_once("/models/").filter(|_| gemini)?.1;
        Some(after.split([':', '/']).next()?.to_owned()).filter(|m| !m.is_empty())
    });
    (model, stream)
}

/// The deployment: of the family, serving the named model (by `model_name` or the provider's
/// name for it) and allowed to the key; with no model named, the first of the family the key
/// may use, in config order.
fn pick(
    state: &AppState,
    principal: &Principal,
    family: Family,
    model: Option<&str>,
) -> Result<Arc<Deployment>, GatewayError> {
    let allowed = |d: &&Arc<Deployment>| crate::pipeline::check_model(state, principal, &d.model_name).is_ok();
    let of_family = state
        .router
        .deployments()
        .filter(|d| d.api.name() == family.provider() && d.service_account.is_none() && d.aws.is_none());
    let mut candidates = of_family.filter(|d| model.is_none_or(|m| d.model_name == m || d.upstream_model == m));
    match candidates.find(|d| allowed(d)) {
        Some(d) => Ok(d.clone()),
        None => Err(model.map_or_else(
            || GatewayError::ModelNotFound(format!("any {} model", family.provider())),
            |m| GatewayError::ModelNotFound(m.to_owned()),
        )),
    }
}

async fn forward(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    family: Family,
    request_id: &str,
    started: Instant,
) -> Result<HttpResponse, GatewayError> {
    let raw = virtual_key(req, family).ok_or(GatewayError::MissingKey)?;
    let mut principal = state.tenancy.authenticate(raw, chrono::Utc::now()).await?;
    let tail = path::check_tail(req.path().strip_prefix(family.prefix()).unwrap_or_default())?;
    let query = path::forwarded_query(req.query_string())?;
    let body = read_body(req, payload, state.max_body_bytes).await?;
    let (model, stream) = named_model(family, tail, &body);
    let deployment = pick(state, &principal, family, model.as_deref())?;
    let url = path::upstream_url(&deployment.api_base, tail, &query)?;
    let now = chrono::Utc::now();
    let (admitted, permit) = admit(state, &mut principal, &deployment, body.len(), now)
        .await
        .inspect_err(crate::observability::usage::refused)?;
    let limit_headers = admitted.reservation.headers.clone();
    let label = state.router.metric_label(&deployment.model_name);
    let recorder = UsageRecorder::start(
        state.sink.clone(),
        permit,
        &state.gateway_id,
        request_id,
        &principal,
        admitted,
        &deployment.model_name,
        stream,
        started,
        now,
    )
    .labelled(&label);
    let response = match send(state, req, &deployment, url, body).await {
        Ok(r) => r,
        Err(e) => {
            let err = match e {
                UpstreamError::Timeout => GatewayError::UpstreamTimeout {
                    model: deployment.model_name.clone(),
                    timeout_ms: u64::try_from(deployment.timeout.as_millis()).unwrap_or(u64::MAX),
                },
                UpstreamError::Unavailable(_) => {
                    GatewayError::UpstreamUnavailable { model: deployment.model_name.clone() }
                }
            };
            recorder.fail(&err, &deployment);
            return Err(err);
        }
    };
    let mut answer = relay(state, family, &deployment, response, recorder).await?;
    for h in limit_headers.into_iter().chain(header("x-tollgate-model-group", &deployment.model_name)) {
        answer.headers_mut().insert(h.0, h.1);
    }
    Ok(answer)
}

/// The key's admission for the deployment's model: its rate limits and budgets, a hard
/// budget's worst case reserved (every body byte a prompt token, the configured output
/// reserve), and a place for the usage event.
async fn admit(
    state: &AppState,
    principal: &mut Principal,
    deployment: &Deployment,
    body_len: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(crate::limits::admission::Admitted, crate::metering::sink::Permit), GatewayError> {
    let model = &deployment.model_name;
    let mut admitted = crate::limits::admission::admit(
        principal,
        model,
        &state.budget_view,
        &state.limiter,
        &state.budget_settings,
        now,
    )?;
    if let Some(leases) = state.leases.as_ref().filter(|_| admitted.has_hard_budget()) {
        let worst =
            state.router.worst_price(model).or(deployment.price).map_or(tollgate_schemas::NanoUsd::ZERO, |price| {
                let prompt = u64::try_from(body_len).unwrap_or(u64::MAX);
                crate::limits::pricing::worst_case_cost(
                    &price,
                    prompt,
                    state.budget_settings.reserve_output_tokens,
                    Tokens::default(),
                )
                .unwrap_or(tollgate_schemas::NanoUsd(i64::MAX))
            });
        admitted.reserve(leases, worst, now).await?;
    }
    Ok((admitted, crate::pipeline::usage_permit(state)?))
}

/// Sends the client's body, content type and method to `url` with the deployment's
/// credentials; no other client header goes on (the virtual key least of all).
async fn send(
    state: &AppState,
    req: &HttpRequest,
    deployment: &Deployment,
    url: reqwest::Url,
    body: web::Bytes,
) -> Result<reqwest::Response, UpstreamError> {
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut request = state.client.request(method, url);
    for name in ["content-type", "accept", "anthropic-beta"] {
        if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            request = request.header(name, v);
        }
    }
    let request = deployment.api.authenticate(request, deployment.api_key.as_ref()).body(body);
    match tokio::time::timeout(deployment.timeout, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(crate::providers::classify(&e)),
        Err(_) => Err(UpstreamError::Timeout),
    }
}

/// The provider's answer, its status and content type kept, metered: a whole JSON answer by
/// the usage it reports (none: 0 tokens, estimated); a stream passed on as it comes, metered
/// by the usage its events report (`stream::metered`); an error status as an upstream error.
async fn relay(
    state: &AppState,
    family: Family,
    deployment: &Arc<Deployment>,
    response: reqwest::Response,
    recorder: UsageRecorder,
) -> Result<HttpResponse, GatewayError> {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = crate::providers::content_type_of(&response);
    let mut reply = HttpResponse::build(status);
    reply.insert_header(("content-type", content_type.clone()));
    if status.is_success() && content_type.starts_with("text/event-stream") {
        return Ok(reply.streaming(stream::metered(response, recorder, family, deployment.clone())));
    }
    let remaining = deployment.timeout;
    let read = tokio::time::timeout(remaining, crate::providers::read_answer(response, state.max_response_bytes)).await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(AnswerError::TooLarge { limit })) => {
            let err = GatewayError::UpstreamResponseTooLarge { model: deployment.model_name.clone(), limit };
            recorder.fail(&err, deployment);
            return Err(err);
        }
        Ok(Err(AnswerError::Transport(_))) | Err(_) => {
            let err = GatewayError::UpstreamUnavailable { model: deployment.model_name.clone() };
            recorder.fail(&err, deployment);
            return Err(err);
        }
    };
    if !status.is_success() {
        recorder.finish(Outcome {
            status: status.as_u16(),
            error_type: Some("upstream_error"),
            deployment: Some(deployment),
            ..Outcome::default()
        });
        return Ok(reply.body(body));
    }
    let (tokens, served_model) = usage::reported(family, &body);
    let (charged, written) = recorder.finish_answer(Outcome {
        status: 200,
        estimated: tokens.is_none(),
        tokens: tokens.unwrap_or_default(),
        served_model: served_model.or_else(|| Some(deployment.upstream_model.clone())),
        deployment: Some(deployment),
        ..Outcome::default()
    });
    written.wait().await;
    reply.insert_header(("x-tollgate-cost-nano-usd", charged.0.to_string()));
    Ok(reply.body(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn gemini_keys_come_from_its_header_or_query_and_others_from_the_usual_headers() {
        let goog = TestRequest::default().insert_header(("x-goog-api-key", "sk-1")).to_http_request();
        assert_eq!(virtual_key(&goog, Family::Gemini), Some("sk-1"));
        assert_eq!(virtual_key(&goog, Family::OpenAi), None);
        let query = TestRequest::default().uri("/gemini/v1beta/models/m:generateContent?key=sk-2").to_http_request();
        assert_eq!(virtual_key(&query, Family::Gemini), Some("sk-2"));
        assert_eq!(virtual_key(&query, Family::Anthropic), None);
        let bearer = TestRequest::default().insert_header(("authorization", "Bearer sk-3")).to_http_request();
        assert_eq!(virtual_key(&bearer, Family::Anthropic), Some("sk-3"));
    }

    #[test]
    fn the_model_and_stream_come_from_the_body_else_gemini_s_path() {
        let body = br#"{"model":"gpt-x","stream":true}"#;
        assert_eq!(named_model(Family::OpenAi, "/v1/chat/completions", body), (Some("gpt-x".into()), true));
        let tail = "/v1beta/models/gemini-pt:streamGenerateContent";
        assert_eq!(named_model(Family::Gemini, tail, b"{}"), (Some("gemini-pt".into()), true));
        assert_eq!(named_model(Family::OpenAi, tail, b"not json"), (None, false));
    }
}
