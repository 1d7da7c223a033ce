//! `/v1/batches`: OpenAI's Batch API (docs/design.md §2.13). A batch is created from a file of
//! the caller's, after the same admission as any request (key, team, budgets); retrieving one
//! that has ended bills it (`batches::billing`). A key sees only its own batches: 404 otherwise.

use super::files::{provider_id, relay};
use super::{authorize, read_body};
use crate::batches::upstream::{self, Answer, BatchObject, OWNER_KEY, OWNER_MODEL, OWNER_PREFIX};
use crate::batches::{billing, jsonl, BatchEntry, Billing, FileEntry};
use crate::error::GatewayError;
use crate::tenancy::auth::Principal;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// OpenAI's bound on a batch's metadata: 16 pairs, keys of 64 and values of 512 characters.
/// The gateway keeps two of the pairs for itself.
const MAX_METADATA_PAIRS: usize = 16 - 2;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;
/// The most batches one list asks each provider for (OpenAI's bound on `limit`).
const MAX_LIST: u32 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

/// `POST /v1/batches`.
pub(crate) async fn create_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let principal = authorize(&req, &state).await?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let create: CreateBatch =
        serde_json::from_slice(&body).map_err(|e| GatewayError::invalid(format!("invalid batch: {e}"), None))?;
    let not_found = || GatewayError::NotFound { kind: "file", id: create.input_file_id.chars().take(64).collect() };
    let file: FileEntry = Some(&create.input_file_id)
        .filter(|id| upstream::good_id(id))
        .and_then(|id| state.batches.file(id, &principal.key.key_id))
        .ok_or_else(not_found)?;
    if !jsonl::ENDPOINTS.contains(&create.endpoint.as_str()) || create.endpoint != file.url {
        return Err(GatewayError::invalid(
            format!("`endpoint` must be the one the file's lines call, `{}`", file.url),
            Some("endpoint"),
        ));
    }
    if create.completion_window != "24h" {
        return Err(GatewayError::invalid("`completion_window` must be `24h`", Some("completion_window")));
    }
    let mut metadata = checked_metadata(create.metadata)?;
    crate::pipeline::check_model(&state, &principal, &file.model)?;
    // Admitted as any request is (blocked parties, spent budgets, rate limits); what the batch
    // costs is known only when it ends, so nothing is reserved against a hard budget.
    let admitted = crate::limits::admission::admit(
        &principal,
        &file.model,
        &state.budget_view,
        &state.limiter,
        &state.budget_settings,
        chrono::Utc::now(),
    )
    .inspect_err(crate::observability::usage::refused)?;
    metadata.insert(OWNER_KEY.into(), principal.key.key_id.clone().into());
    metadata.insert(OWNER_MODEL.into(), file.model.clone().into());
    let upstream_body = json!({
        "input_file_id": create.input_file_id,
        "endpoint": create.endpoint,
        "completion_window": create.completion_window,
        "metadata": metadata,
    });
    let answer = upstream::post(&state, &file.deployment, "batches", &upstream_body).await?;
    drop(admitted);
    if answer.ok() {
        let id = provider_id(&answer.body, &file.deployment)?;
        let entry = BatchEntry {
            owner: Arc::new(principal),
            model: file.model,
            deployment: file.deployment,
            billing: Billing::Open,
        };
        state.batches.remember_batch(&id, entry);
    }
    Ok(stripped(answer))
}

/// `GET /v1/batches/{id}`: the provider's batch; one that has ended is billed first.
pub(crate) async fn get_batch(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let principal = authorize(&req, &state).await?;
    let (entry, found) = owned_batch(&state, &principal, &id).await?;
    let (answer, batch) = match found {
        Some(found) => found,
        None => upstream::retrieve(&state, &entry.deployment, &id).await?,
    };
    if answer.ok() && batch.id == *id {
        for file in [&batch.output_file_id, &batch.error_file_id].into_iter().flatten() {
            if upstream::good_id(file) {
                let url = String::new();
                let owned = FileEntry {
                    key_id: principal.key.key_id.clone(),
                    model: entry.model.clone(),
                    url,
                    deployment: entry.deployment.clone(),
                };
                state.batches.remember_file(file, owned);
            }
        }
        billing::bill_if_ended(&state, &entry, &batch).await;
    }
    Ok(stripped(answer))
}

/// `POST /v1/batches/{id}/cancel`.
pub(crate) async fn cancel_batch(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let principal = authorize(&req, &state).await?;
    let (entry, _) = owned_batch(&state, &principal, &id).await?;
    Ok(stripped(upstream::post(&state, &entry.deployment, &format!("batches/{id}/cancel"), &json!({})).await?))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<u32>,
    after: Option<String>,
}

/// `GET /v1/batches`: the caller's batches at every provider its key may reach (each asked
/// for `limit`, at most 100, after `after`), newest first as each provider lists them.
pub(crate) async fn list_batches(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let principal = authorize(&req, &state).await?;
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_LIST);
    let mut path = format!("batches?limit={limit}");
    if let Some(after) = &query.after {
        if !upstream::good_id(after) {
            return Err(GatewayError::invalid("`after` must be a batch id", Some("after")));
        }
        path.push_str(&format!("&after={after}"));
    }
    let (mut data, mut has_more) = (Vec::new(), false);
    for deployment in upstream::reachable(&state, &principal) {
        let answer = upstream::get(&state, &deployment, &path).await?;
        let Ok(mut list) = serde_json::from_slice::<Value>(&answer.body) else { continue };
        has_more |= list.get("has_more").and_then(Value::as_bool).unwrap_or(false);
        let mine = |b: &Value| {
            b.pointer(&format!("/metadata/{OWNER_KEY}")).and_then(Value::as_str) == Some(&principal.key.key_id)
        };
        if let Some(batches) = list.get_mut("data").and_then(Value::as_array_mut) {
            data.extend(batches.drain(..).filter(mine));
        }
    }
    let mut list = json!({"object": "list", "data": data, "has_more": has_more});
    upstream::strip_owner(&mut list);
    list["first_id"] = list.pointer("/data/0/id").cloned().unwrap_or(Value::Null);
    Ok(HttpResponse::Ok().json(list))
}

/// The batch `id` if the caller's key owns it: known to this gateway, or found at a provider
/// it may reach with the key named its owner (then with the provider's answer). 404 otherwise.
async fn owned_batch(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<(BatchEntry, Option<(Answer, BatchObject)>), GatewayError> {
    let not_found = || GatewayError::NotFound { kind: "batch", id: id.chars().take(64).collect() };
    if !upstream::good_id(id) {
        return Err(not_found());
    }
    if let Some(entry) = state.batches.batch(id, &principal.key.key_id) {
        return Ok((entry, None));
    }
    let Some((deployment, answer, batch)) = upstream::find(state, principal, id).await? else {
        return Err(not_found());
    };
    // The model it was created for, if the key may still use it; else the deployment's group.
    let model = batch
        .owner(OWNER_MODEL)
        .filter(|m| crate::pipeline::check_model(state, principal, m).is_ok())
        .map_or_else(|| deployment.model_name.clone(), str::to_owned);
    let entry = BatchEntry { owner: Arc::new(principal.clone()), model, deployment, billing: Billing::Open };
    state.batches.remember_batch(id, entry);
    let entry = state.batches.batch(id, &principal.key.key_id).ok_or_else(not_found)?;
    Ok((entry, Some((answer, batch))))
}

/// A client's metadata, within OpenAI's bounds, none of its keys the gateway's own.
fn checked_metadata(metadata: Option<Map<String, Value>>) -> Result<Map<String, Value>, GatewayError> {
    let metadata = metadata.unwrap_or_default();
    let bad = |m: String| GatewayError::invalid(m, Some("metadata"));
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(bad(format!("`metadata` takes at most {MAX_METADATA_PAIRS} pairs")));
    }
    for (k, v) in &metadata {
        if k.is_empty() || k.chars().count() > MAX_METADATA_KEY || k.starts_with(OWNER_PREFIX) {
            return Err(bad(format!(
                "`metadata` keys are 1 to {MAX_METADATA_KEY} characters and do not start with `{OWNER_PREFIX}`"
            )));
        }
        if v.as_str().is_none_or(|s| s.chars().count() > MAX_METADATA_VALUE) {
            return Err(bad(format!("`metadata` values are text of at most {MAX_METADATA_VALUE} characters")));
        }
    }
    Ok(metadata)
}

/// A provider's batch answer passed on without the gateway's metadata.
fn stripped(answer: Answer) -> HttpResponse {
    match serde_json::from_slice::<Value>(&answer.body) {
        Ok(mut value) if answer.ok() => {
            upstream::strip_owner(&mut value);
            HttpResponse::Ok().json(value)
        }
        _ => relay(answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_bounded_and_cannot_claim_an_owner() {
        let m = |v: Value| v.as_object().cloned();
        assert!(checked_metadata(m(json!({"job": "nightly"}))).is_ok());
        assert!(checked_metadata(None).unwrap().is_empty());
        for bad in [
            json!({"tollgate_key_id": "someone-else"}),
            json!({"n": 7}),
            json!({"": "x"}),
            json!({"k": "x".repeat(513)}),
            Value::Object((0..15).map(|i| (i.to_string(), json!("v"))).collect()),
        ] {
            assert!(checked_metadata(m(bad.clone())).is_err(), "{bad}");
        }
    }
}
