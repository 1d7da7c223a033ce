//! `/v1/files`: OpenAI's Files API for batch input files (docs/design.md §2.13). An upload is
//! checked whole (`batches::jsonl`) and sent to the deployment of the model its lines name; a
//! key sees only its own files and the output files of its own batches (404 otherwise).

use super::{authorize, read_body};
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
pub(crate) async fn create_file(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let principal = authorize(&req, &state).await?;
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
    crate::pipeline::check_model(&state, &principal, &file.model)?;
    let deployment = batch_deployment(&state, &file.model)?;
    let rewritten = file
        .rewritten(&deployment.upstream_model)
        .map_err(|e| GatewayError::Internal(format!("cannot write the batch input file: {e}")))?;
    let answer = upstream::upload(&state, &deployment, rewritten).await?;
    if answer.ok() {
        let id = provider_id(&answer.body, &deployment)?;
        let entry = FileEntry { key_id: principal.key.key_id.clone(), model: file.model, url: file.url, deployment };
        state.batches.remember_file(&id, entry);
    }
    Ok(relay(answer))
}

/// `GET /v1/files/{id}`.
pub(crate) async fn get_file(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let entry = owned_file(&req, &state, &id).await?;
    Ok(relay(upstream::get(&state, &entry.deployment, &format!("files/{id}")).await?))
}

/// `GET /v1/files/{id}/content`, within `gateway.max_response_bytes`.
pub(crate) async fn file_content(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let entry = owned_file(&req, &state, &id).await?;
    Ok(relay(upstream::content(&state, &entry.deployment, &id).await?))
}

/// The file `id` if the caller's key owns it; 404 for any other (another key's, or unknown).
async fn owned_file(req: &HttpRequest, state: &AppState, id: &str) -> Result<FileEntry, GatewayError> {
    let principal = authorize(req, state).await?;
    let not_found = || GatewayError::NotFound { kind: "file", id: id.chars().take(64).collect() };
    if !upstream::good_id(id) {
        return Err(not_found());
    }
    state.batches.file(id, &principal.key.key_id).ok_or_else(not_found)
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
