//! `/v1/batches`: OpenAI's Batch API (docs/design.md §2.13). A batch is created from a file of
//! the caller's, after the same admission as any request (key, team, customer, budgets), and
//! under a hard budget holds its most possible cost until it is billed (`batches::hold`);
//! retrieving one that has ended bills it (`batches::billing`). Batch and file ids are
//! Tollgate's (`batches::ids`): one names its provider and owner, so a gateway that never saw
//! the batch asks one provider, once. A key sees only its own batches: 404 otherwise.

use super::files::{not_found, provider_id, relay};
use super::observed::{observed, Api, Seen};
use super::{authorize, read_body};
use crate::batches::upstream::{self, Answer, OWNER_CUSTOMER, OWNER_KEY, OWNER_MODEL, OWNER_PREFIX, OWNER_TAGS};
use crate::batches::{billing, hold, jsonl, BatchEntry, BatchRef, Billing};
use crate::error::GatewayError;
use crate::providers::Deployment;
use crate::tenancy::auth::Principal;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// OpenAI's bound on a batch's metadata: 16 pairs, keys of 64 and values of 512 characters.
/// The gateway keeps four of the pairs for itself (owner key, model, customer, maximum cost),
/// and a fifth for a batch with tags of its own (`x-litellm-tags`).
const MAX_METADATA_PAIRS: usize = 16 - 4;
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
    /// The customer (end user) its lines are charged to, as OpenAI's `user` on other
    /// endpoints; `x-tollgate-customer-id` wins. Not sent to the provider.
    #[serde(default)]
    user: Option<String>,
}

/// `POST /v1/batches`.
pub(crate) async fn create_batch(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let seen = Seen::new(Api::Batches);
    observed(&req.clone(), &seen, create_batch_inner(req, payload, state, &seen)).await
}

/// The work of [`create_batch`].
async fn create_batch_inner(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    seen: &Seen,
) -> Result<HttpResponse, GatewayError> {
    let mut principal = authorize(&req, &state).await?;
    seen.principal(&principal);
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let create: CreateBatch =
        serde_json::from_slice(&body).map_err(|e| GatewayError::invalid(format!("invalid batch: {e}"), None))?;
    let key_id = principal.key.key_id.clone();
    let file =
        state.batches.file(&create.input_file_id, &key_id).ok_or_else(|| not_found("file", &create.input_file_id))?;
    seen.model(&state, &file.model);
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
    let user = create.user.filter(|u| !u.is_empty());
    if let Some(u) = &user {
        tollgate_schemas::limits::check_id("user", u).map_err(|e| GatewayError::field("user", e.to_string()))?;
    }
    let customer = crate::pipeline::customer_id(&req, user.as_deref())?;
    crate::pipeline::check_model(&state, &principal, &file.model)?;
    // The events' tags: the key's, its team's and the request's own header tags, which the
    // batch keeps in its metadata for gateways that did not see it created.
    let own_tags = crate::tenancy::tags::header_tags(&req)?;
    principal.tags =
        crate::tenancy::tags::event_tags(&principal, Vec::new(), own_tags.clone(), state.reject_client_tags)?;
    let own_tags = own_tags.join(",");
    if own_tags.chars().count() > MAX_METADATA_VALUE {
        return Err(GatewayError::field(
            crate::tenancy::tags::TAGS_HEADER,
            format!("a batch keeps at most {MAX_METADATA_VALUE} characters of its own tags"),
        ));
    }
    if !own_tags.is_empty() && metadata.len() == MAX_METADATA_PAIRS {
        return Err(GatewayError::invalid(
            format!("`metadata` takes at most {} pairs when the batch has tags", MAX_METADATA_PAIRS - 1),
            Some("metadata"),
        ));
    }
    // Admitted as any request is (blocked parties, spent budgets, rate limits; the customer's
    // too); then, under a hard budget, the most the batch can cost is held until it is billed
    // (`batches::hold`), or the batch is refused.
    let now = chrono::Utc::now();
    let mut admitted = crate::limits::admission::admit(
        &principal,
        &file.model,
        &state.budget_view,
        &state.limiter,
        &state.budget_settings,
        now,
    )
    .inspect_err(crate::observability::usage::refused)?;
    crate::pipeline::admit_customer(&state, &mut principal, &mut admitted, (customer.as_deref(), &file.model), now)
        .await
        .inspect_err(crate::observability::usage::refused)?;
    seen.principal(&principal);
    let hold = hold::hold_for_creation(&state, &mut admitted, &file, now).await?;
    metadata.insert(OWNER_KEY.into(), key_id.clone().into());
    if let Some(h) = &hold {
        metadata.insert(hold::HOLD_META.into(), hold::meta_value(h.amount()).into());
    }
    metadata.insert(OWNER_MODEL.into(), file.model.clone().into());
    if let Some(c) = &principal.customer_id {
        metadata.insert(OWNER_CUSTOMER.into(), c.clone().into());
    }
    if !own_tags.is_empty() {
        metadata.insert(OWNER_TAGS.into(), own_tags.into());
    }
    let upstream_body = json!({
        "input_file_id": file.provider_id,
        "endpoint": create.endpoint,
        "completion_window": create.completion_window,
        "metadata": metadata,
    });
    // A batch the provider did not create holds nothing: the hold is released as it drops.
    let answer = upstream::post(&state, &file.deployment, "batches", &upstream_body).await?;
    drop(admitted);
    if !answer.ok() {
        return Ok(relay(answer));
    }
    let id = provider_id(&answer.body, &file.deployment)?;
    let entry = BatchEntry {
        owner: Arc::new(principal),
        model: file.model.clone(),
        deployment: file.deployment.clone(),
        billing: Billing::Open,
        hold,
    };
    state.batches.remember_batch(&id, entry);
    Ok(presented(&state, answer, &key_id, &file.model, &file.deployment))
}

/// `GET /v1/batches/{id}`: the provider's batch; one that has ended is billed first.
pub(crate) async fn get_batch(req: HttpRequest, id: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let seen = Seen::new(Api::Batches);
    observed(&req.clone(), &seen, get_batch_inner(req, id, state, &seen)).await
}

/// The work of [`get_batch`].
async fn get_batch_inner(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
    seen: &Seen,
) -> Result<HttpResponse, GatewayError> {
    let principal = authorize(&req, &state).await?;
    let batch = owned_batch(&state, &principal, &id, seen)?;
    let (answer, object) = upstream::retrieve(&state, &batch.deployment, &batch.provider_id).await?;
    if !answer.ok() {
        return Ok(relay(answer));
    }
    // The id was made for this key; the provider's batch must say so too.
    if object.id != batch.provider_id || object.owner(OWNER_KEY) != Some(principal.key.key_id.as_str()) {
        return Err(not_found("batch", &id));
    }
    let key_id = principal.key.key_id.clone();
    let entry = match state.batches.batch(&batch.provider_id) {
        Some(entry) => entry,
        None => {
            // A batch this gateway never saw: charged to its owner's key as it is now, and to
            // the customer it was created for.
            let owner =
                billing::as_owner(&state, principal, object.owner(OWNER_CUSTOMER), object.owner(OWNER_TAGS)).await;
            let entry = BatchEntry {
                owner: Arc::new(owner),
                model: batch.model.clone(),
                deployment: batch.deployment.clone(),
                billing: Billing::Open,
                // Held, if at all, by the gateway that created it (docs/design.md §2.13).
                hold: None,
            };
            state.batches.remember_batch(&batch.provider_id, entry);
            state.batches.batch(&batch.provider_id).ok_or_else(|| not_found("batch", &id))?
        }
    };
    billing::bill_if_ended(&state, &entry, &object).await;
    Ok(presented(&state, answer, &key_id, &batch.model, &batch.deployment))
}

/// `POST /v1/batches/{id}/cancel`.
pub(crate) async fn cancel_batch(req: HttpRequest, id: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let seen = Seen::new(Api::Batches);
    observed(&req.clone(), &seen, cancel_batch_inner(req, id, state, &seen)).await
}

/// The work of [`cancel_batch`].
async fn cancel_batch_inner(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
    seen: &Seen,
) -> Result<HttpResponse, GatewayError> {
    let principal = authorize(&req, &state).await?;
    let batch = owned_batch(&state, &principal, &id, seen)?;
    let path = format!("batches/{}/cancel", batch.provider_id);
    let answer = upstream::post(&state, &batch.deployment, &path, &json!({})).await?;
    Ok(presented(&state, answer, &principal.key.key_id, &batch.model, &batch.deployment))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<u32>,
    after: Option<String>,
}

/// `GET /v1/batches`: the caller's batches at every provider account its key may reach (each
/// asked for `limit`, at most 100, after `after`), newest first as each provider lists them.
pub(crate) async fn list_batches(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let seen = Seen::new(Api::Batches);
    observed(&req.clone(), &seen, list_batches_inner(req, query, state, &seen)).await
}

/// The work of [`list_batches`].
async fn list_batches_inner(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
    seen: &Seen,
) -> Result<HttpResponse, GatewayError> {
    let principal = authorize(&req, &state).await?;
    seen.principal(&principal);
    let key_id = principal.key.key_id.as_str();
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_LIST);
    let mut path = format!("batches?limit={limit}");
    if let Some(after) = &query.after {
        let after = state
            .batches
            .batch_ref(after, key_id)
            .ok_or_else(|| GatewayError::invalid("`after` must be the id of one of your batches", Some("after")))?;
        path.push_str(&format!("&after={}", after.provider_id));
    }
    let (mut data, mut has_more) = (Vec::new(), false);
    for deployment in upstream::reachable(&state, &principal) {
        let answer = upstream::get(&state, &deployment, &path).await?;
        let Ok(mut list) = serde_json::from_slice::<Value>(&answer.body) else { continue };
        has_more |= list.get("has_more").and_then(Value::as_bool).unwrap_or(false);
        let Some(batches) = list.get_mut("data").and_then(Value::as_array_mut) else { continue };
        for mut b in batches.drain(..) {
            if b.pointer(&format!("/metadata/{OWNER_KEY}")).and_then(Value::as_str) != Some(key_id) {
                continue;
            }
            let model = b
                .pointer(&format!("/metadata/{OWNER_MODEL}"))
                .and_then(Value::as_str)
                .filter(|m| state.router.model_names().iter().any(|n| n == m))
                .map_or_else(|| deployment.model_name.clone(), str::to_owned);
            state.batches.present(&mut b, key_id, &model, &deployment);
            data.push(b);
        }
    }
    let first_id = data.first().and_then(|b| b.get("id")).cloned().unwrap_or(Value::Null);
    let last_id = data.last().and_then(|b| b.get("id")).cloned().unwrap_or(Value::Null);
    Ok(HttpResponse::Ok()
        .json(json!({"object": "list", "data": data, "first_id": first_id, "last_id": last_id, "has_more": has_more})))
}

/// The batch `id` names, if it is a genuine id made for the caller's key: 404 otherwise,
/// without a provider call.
fn owned_batch(state: &AppState, principal: &Principal, id: &str, seen: &Seen) -> Result<BatchRef, GatewayError> {
    seen.principal(principal);
    let batch = state.batches.batch_ref(id, &principal.key.key_id).ok_or_else(|| not_found("batch", id))?;
    seen.model(state, &batch.model);
    Ok(batch)
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

/// A provider's batch answer as its owner sees it (`Batches::present`); an error passed on.
fn presented(state: &AppState, answer: Answer, key_id: &str, model: &str, d: &Deployment) -> HttpResponse {
    match serde_json::from_slice::<Value>(&answer.body) {
        Ok(mut value) if answer.ok() && value.is_object() => {
            state.batches.present(&mut value, key_id, model, d);
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
            Value::Object((0..13).map(|i| (i.to_string(), json!("v"))).collect()),
            json!({"tollgate_max_cost": "1"}),
        ] {
            assert!(checked_metadata(m(bad.clone())).is_err(), "{bad}");
        }
    }
}
