//! The OpenAI surface (served with and without the `/v1` prefix: see `routes`): the model
//! endpoints, and the model list and info.

use super::{authorize, observe, read_body, request_id};
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::observability::usage::operation_name;
use crate::pipeline::{check_model, serve};
use crate::providers::Endpoint;
use crate::tenancy::auth::Principal;
use crate::traces::{self, RequestTrace};
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;
use std::time::Instant;

pub(crate) async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(req, payload, state, Endpoint::ChatCompletions).await
}

pub(crate) async fn completions(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Endpoint::Completions).await
}

pub(crate) async fn embeddings(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Endpoint::Embeddings).await
}

pub(crate) async fn responses(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Endpoint::Responses).await
}

/// `/v1/moderations`: OpenAI's shape, passed through; metered by its input tokens.
pub(crate) async fn moderations(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Endpoint::Moderations).await
}

/// `/v1/rerank`: Cohere's shape, passed through; metered by search units.
pub(crate) async fn rerank(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Endpoint::Rerank).await
}

/// `/v1/audio/speech`: OpenAI's shape; the audio passed on; metered by the characters read.
pub(crate) async fn audio_speech(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Endpoint::AudioSpeech).await
}

/// `/v1/images/generations`: OpenAI's shape; metered per image generated (else per pixel).
pub(crate) async fn image_generations(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(req, payload, state, Endpoint::ImageGenerations).await
}

/// `/v1/audio/transcriptions`: an audio upload (multipart/form-data), sent on as a form;
/// metered by the seconds of audio the provider reports.
pub(crate) async fn audio_transcriptions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(req, payload, state, Endpoint::AudioTranscriptions).await
}

/// `/v1/audio/translations`: as transcriptions, the text in English.
pub(crate) async fn audio_translations(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(req, payload, state, Endpoint::AudioTranslations).await
}

/// Every OpenAI model endpoint: authenticate, validate, route, meter, answer.
async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    endpoint: Endpoint,
) -> HttpResponse {
    let started = Instant::now();
    let (request_id, bad_id) = request_id(&req);
    let trace = RequestTrace::start(&req, operation_name(endpoint), &request_id);
    let answer = async {
        let prepared = match bad_id {
            Some(e) => Err(e),
            None => read_request(&req, payload, &state, endpoint).await,
        };
        let result = match prepared {
            Ok((key, request)) => serve(&req, &state, key, request, &request_id, &trace, started).await,
            Err(e) => Err(("unknown".to_owned(), e)),
        };
        let (label, response) = match result {
            Ok((label, reply)) => (label, reply.into_response()),
            Err((label, e)) => (label, e.error_response()),
        };
        crate::traces::record_status(response.status().as_u16());
        observe(endpoint.path(), &label, response.status(), started);
        response
    };
    let mut response = trace.within(answer).await;
    super::identify(&mut response, &request_id, trace.trace_id.as_deref());
    response
}

/// Authenticates, then reads and validates the body.
async fn read_request(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    endpoint: Endpoint,
) -> Result<(Principal, ProxyRequest), GatewayError> {
    let auth = crate::traces::child("auth");
    let key = authorize(req, state).await?;
    drop(auth);
    traces::record_principal(&key);
    let request = if matches!(endpoint, Endpoint::AudioTranscriptions | Endpoint::AudioTranslations) {
        let body = read_body(req, payload, state.max_upload_bytes).await?;
        let content_type = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        ProxyRequest::parse_upload(content_type, body, endpoint).await?
    } else {
        ProxyRequest::parse_bytes(read_body(req, payload, state.max_body_bytes).await?, endpoint)?
    };
    traces::record_model(operation_name(endpoint), &request.model);
    Ok((key, request))
}

fn model_object(name: &str) -> serde_json::Value {
    json!({"id": name, "object": "model", "created": 1_700_000_000u64, "owned_by": "tollgate"})
}

/// `GET /v1/models`: the models this key may use, and the aliases of those that are listed.
pub(crate) async fn list_models(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let principal = match authorize(&req, &state).await {
        Ok(p) => p,
        Err(e) => return e.error_response(),
    };
    let groups = state.router.model_names().iter().map(|m| (m.as_str(), m.as_str()));
    let data: Vec<_> = groups
        .chain(state.router.listed_aliases())
        .filter(|(_, group)| check_model(&state, &principal, group).is_ok())
        .map(|(name, _)| model_object(name))
        .collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{model}`.
pub(crate) async fn get_model(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let principal = match authorize(&req, &state).await {
        Ok(p) => p,
        Err(e) => return e.error_response(),
    };
    let model = path.into_inner();
    let group = state.router.alias_target(&model).unwrap_or(&model);
    if !state.router.knows(group) || check_model(&state, &principal, group).is_err() {
        return GatewayError::ModelNotFound(model).error_response();
    }
    HttpResponse::Ok().json(model_object(&model))
}

/// `GET /model/info`: LiteLLM's deployment listing, never with provider keys. Where a model is
/// served from (`api_base`, the upstream model and deployment id, its rpm/tpm) is shown to
/// admins only (the master key, `proxy_admin` and `proxy_admin_viewer` keys); other keys see
/// the models they may use, with prices and model information.
pub(crate) async fn model_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let is_admin = crate::admin::roles::is_admin(&req, &state).await;
    let principal = match authorize(&req, &state).await {
        Ok(p) => p,
        Err(_) if is_admin => return model_info_for_admins(&state),
        Err(e) => return e.error_response(),
    };
    if is_admin {
        return model_info_for_admins(&state);
    }
    let data: Vec<_> = state
        .router
        .deployments()
        .filter(|d| check_model(&state, &principal, &d.model_name).is_ok())
        .map(|d| {
            json!({
                "model_name": d.model_name,
                "litellm_params": {"model": d.model_name},
                "model_info": public_model_info(d),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"data": data}))
}

/// What any key may know of a deployment: its model information and prices.
fn public_model_info(d: &crate::providers::Deployment) -> serde_json::Map<String, serde_json::Value> {
    let mut info = d.model_info.clone().unwrap_or_default();
    // Access groups and base models say how the operator organises providers: admins only.
    for private in ["id", "access_groups", "base_model", "api_base"] {
        info.remove(private);
    }
    if let Some(p) = &d.price {
        info.extend(p.public_fields());
    }
    info
}

/// Every deployment with where it is served from (never its key).
fn model_info_for_admins(state: &AppState) -> HttpResponse {
    let data: Vec<_> = state
        .router
        .deployments()
        .map(|d| {
            let mut info = d.model_info.clone().unwrap_or_default();
            info.insert("id".into(), json!(d.id));
            if let Some(p) = &d.price {
                info.extend(p.public_fields());
            }
            json!({
                "model_name": d.model_name,
                "litellm_params": {"model": format!("{}/{}", d.provider, d.upstream_model), "api_base": d.api_base,
                                   "rpm": d.rpm, "tpm": d.tpm},
                "model_info": info,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"data": data}))
}
