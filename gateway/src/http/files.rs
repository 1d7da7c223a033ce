//! `/v1/files`: OpenAI's Files API for batch input files (docs/design.md §2.13). An upload is
//! checked whole (`batches::jsonl`) and sent to the deployment of the model its lines name; its
//! id is Tollgate's (`batches::ids`), naming the provider's file, its deployment and its owner,
//! so any gateway serves it. A key sees only its own files and the output files of its own
//! batches (404 otherwise, as for an id that is not genuine).

use super::observed::{observed, Api, Seen};
use super::{authorize, read_body};
use crate::batches::ids::MAX_ID_CHARS;
use crate::batches::{jsonl, upstream, FileEntry};
use crate::error::GatewayError;
use crate::providers::Deployment;
use crate::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use std::sync::Arc;

/// Room for the form around the file: its boundaries, headers and `purpose`.
const FORM_OVERHEAD_BYTES: usize = 64 * 1024;
/// The longest text field of the form (`purpose`).
const MAX_FIELD_BYTES: u64 = 1024;

/// `POST /v1/files` (multipart: `file`, `purpose` = `batch`).
pub(crate) async fn create_file(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let seen = Seen::new(Api::Files);
    observed(&req.clone(), &seen, create_file_inner(req, payload, state, &seen)).await
}

/// The work of [`create_file`].
async fn create_file_inner(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    seen: &Seen,
) -> Result<HttpResponse, GatewayError> {
    let principal = authorize(&req, &state).await?;
    seen.principal(&principal);
    let max_file = state.batches.settings.max_file_bytes;
    let body = read_body(&req, payload, max_file.saturating_add(FORM_OVERHEAD_BYTES)).await?;
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok());
    let (purpose, data) = form(content_type, body, max_file).await?;
    if purpose != "batch" {
        return Err(GatewayError::invalid(
            "`purpose` must be `batch`: only batch input files are served",
            Some("purpose"),
        ));
    }
    let file = jsonl::check(&data, state.batches.settings.max_lines)
        .map_err(|e| GatewayError::invalid(format!("the batch input file is refused: {e}"), Some("file")))?;
    seen.model(&state, &file.model);
    crate::pipeline::check_model(&state, &principal, &file.model)?;
    let deployment = batch_deployment(&state, &file.model)?;
    let rewritten = file
        .rewritten(&deployment.upstream_model)
        .map_err(|e| GatewayError::Internal(format!("cannot write the batch input file: {e}")))?;
    let answer = upstream::upload(&state, &deployment, rewritten).await?;
    if !answer.ok() {
        return Ok(relay(answer));
    }
    let provider = provider_id(&answer.body, &deployment)?;
    let key_id = &principal.key.key_id;
    let id = state
        .batches
        .file_id(&provider, key_id, &file.model, &file.url, &deployment)
        .ok_or_else(|| GatewayError::UpstreamUnavailable { model: deployment.model_name.clone() })?;
    Ok(with_id(answer, id))
}

/// `GET /v1/files/{id}`.
pub(crate) async fn get_file(req: HttpRequest, id: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let seen = Seen::new(Api::Files);
    observed(&req.clone(), &seen, file_object(req, id, state, &seen, reqwest::Method::GET)).await
}

/// `DELETE /v1/files/{id}`: the file deleted at its provider (an input file or a batch's
/// output), answered with Tollgate's id. The id stays well-formed, so a later `GET` of it is the
/// provider's 404 passed on.
pub(crate) async fn delete_file(req: HttpRequest, id: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let seen = Seen::new(Api::Files);
    observed(&req.clone(), &seen, file_object(req, id, state, &seen, reqwest::Method::DELETE)).await
}

/// The work of [`get_file`] and [`delete_file`]: `method` on the caller's file at its
/// provider, the answer's object given Tollgate's id.
async fn file_object(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
    seen: &Seen,
    method: reqwest::Method,
) -> Result<HttpResponse, GatewayError> {
    let entry = owned_file(&req, &state, &id, seen).await?;
    let answer = upstream::object(&state, &entry.deployment, method, &format!("files/{}", entry.provider_id)).await?;
    Ok(if answer.ok() { with_id(answer, id.into_inner()) } else { relay(answer) })
}

/// `GET /v1/files/{id}/content`, within `gateway.max_response_bytes`.
pub(crate) async fn file_content(req: HttpRequest, id: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let seen = Seen::new(Api::Files);
    observed(&req.clone(), &seen, file_content_inner(req, id, state, &seen)).await
}

/// The work of [`file_content`].
async fn file_content_inner(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
    seen: &Seen,
) -> Result<HttpResponse, GatewayError> {
    let entry = owned_file(&req, &state, &id, seen).await?;
    Ok(relay(upstream::content(&state, &entry.deployment, &entry.provider_id).await?))
}

/// The file `id` if the caller's key owns it; 404 for any other (another key's, forged, or
/// made under another secret), the same answer whatever the reason.
async fn owned_file(req: &HttpRequest, state: &AppState, id: &str, seen: &Seen) -> Result<FileEntry, GatewayError> {
    let principal = authorize(req, state).await?;
    seen.principal(&principal);
    let file = state.batches.file(id, &principal.key.key_id).ok_or_else(|| not_found("file", id))?;
    seen.model(state, &file.model);
    Ok(file)
}

/// 404 for the `kind` of id `id`, which it names within its bound (and only its visible ASCII).
pub(crate) fn not_found(kind: &'static str, id: &str) -> GatewayError {
    let shown = id.chars().filter(|c| c.is_ascii_graphic()).take(MAX_ID_CHARS).collect();
    GatewayError::NotFound { kind, id: shown }
}

/// A provider's file object passed on with Tollgate's id for the file in place of its own.
fn with_id(answer: upstream::Answer, id: String) -> HttpResponse {
    match serde_json::from_slice::<serde_json::Value>(&answer.body) {
        Ok(mut object) if object.is_object() => {
            object["id"] = id.into();
            HttpResponse::Ok().json(object)
        }
        _ => relay(answer),
    }
}

/// The deployment that runs batches of `model`: the first of its group, in config order, of
/// OpenAI's family (whose Batch API Tollgate calls). A group without one is refused by name.
pub(crate) fn batch_deployment(state: &AppState, model: &str) -> Result<Arc<Deployment>, GatewayError> {
    let mut group = state.router.deployments().filter(|d| d.model_name == model).peekable();
    let Some(first) = group.peek().cloned() else {
        return Err(GatewayError::ModelNotFound(model.to_owned()));
    };
    group.find(|d| d.api.name() == "openai").cloned().ok_or_else(|| {
        GatewayError::invalid(
            format!("model `{model}` is served by `{}`, which has no /v1/batches: only OpenAI-compatible deployments run batches", first.provider),
            Some("model"),
        )
    })
}

/// The `id` of the object a provider answered, within bounds.
pub(crate) fn provider_id(body: &[u8], deployment: &Deployment) -> Result<String, GatewayError> {
    #[derive(serde::Deserialize)]
    struct Object {
        id: String,
    }
    match serde_json::from_slice::<Object>(body) {
        Ok(o) if upstream::good_id(&o.id) => Ok(o.id),
        _ => Err(GatewayError::UpstreamUnavailable { model: deployment.model_name.clone() }),
    }
}

/// A provider's answer passed on: its status, content type and body.
pub(crate) fn relay(answer: upstream::Answer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    HttpResponse::build(status).insert_header(("content-type", answer.content_type)).body(answer.body)
}

/// The form's `purpose` and file: exactly these two parts, the file within `max_file` bytes.
async fn form(content_type: Option<&str>, body: Bytes, max_file: usize) -> Result<(String, Bytes), GatewayError> {
    let invalid = |m: String| GatewayError::invalid(m, None);
    let boundary = content_type
        .and_then(|c| multer::parse_boundary(c).ok())
        .ok_or_else(|| invalid("the body must be multipart/form-data with a boundary".into()))?;
    let limits = multer::SizeLimit::new().per_field(MAX_FIELD_BYTES).for_field("file", max_file as u64);
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::with_constraints(stream, boundary, multer::Constraints::new().size_limit(limits));
    let (mut purpose, mut file) = (None, None);
    let malformed = |e: multer::Error| match e {
        multer::Error::FieldSizeExceeded { .. } => GatewayError::BodyTooLarge { limit: max_file },
        e => invalid(format!("the form is not valid multipart/form-data: {e}")),
    };
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        let slot = match field.name() {
            Some("purpose") if purpose.is_none() => &mut purpose,
            Some("file") if file.is_none() => &mut file,
            _ => return Err(invalid("the form takes one `file` and one `purpose`, nothing else".into())),
        };
        *slot = Some(field.bytes().await.map_err(malformed)?);
    }
    let purpose = purpose.and_then(|p| String::from_utf8(p.to_vec()).ok());
    match (purpose, file) {
        (Some(p), Some(f)) if !f.is_empty() => Ok((p, f)),
        (None, _) => Err(GatewayError::invalid("`purpose` is required", Some("purpose"))),
        _ => Err(GatewayError::invalid("`file` is required: a non-empty file part", Some("file"))),
    }
}
