//! A finished batch billed: its output file read (`output`), and one usage event per answered
//! line published through the usage sink, as every request's event is (§2.8, §3), at the
//! deployment's batch price (`pricing::batch_price`).
//!
//! Exactly once: each event's id is derived from (batch id, `custom_id`) ([`event_id`]) and its `occurred_at`
//! the instant the provider says the batch ended, so every billing of the same batch — a
//! client's retrieval and the poller, two gateways, a restart — writes the same events, which
//! the ledger counts once (§4.3). In one process a batch is billed at most once
//! (`Batches::claim`); a billing that could not publish every event is tried again later.

use super::output::{self, Answered};
use super::upstream::{self, BatchObject};
use super::BatchEntry;
use crate::error::GatewayError;
use crate::limits::pricing::{batch_price, cost_by_token_type};
use crate::providers::Deployment;
use crate::tenancy::auth::Principal;
use crate::AppState;
use chrono::{DateTime, Utc};
use metrics::counter;
use tollgate_schemas::{NanoUsd, UsageEvent, USAGE_EVENT_VERSION};
use uuid::Uuid;

/// The statuses after which a provider writes no more answers; each may have an output file
/// (a cancelled or expired batch has the answers given before it stopped, which the provider
/// bills).
const ENDED: &[&str] = &["completed", "cancelled", "expired"];

/// The event id of line `custom_id` of batch `batch_id`, the same in every gateway: the first
/// 16 bytes of SHA-256(tag, batch id, `custom_id`) as a UUID version 8, as re-rating
/// adjustments are named (`event::adjustment::adjustment_id`).
pub fn event_id(batch_id: &str, custom_id: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tollgate-batch-line\0");
    h.update(batch_id.as_bytes());
    h.update(b"\0");
    h.update(custom_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The instant the batch ended, as its provider says; the events' `occurred_at`.
fn ended_at(batch: &BatchObject) -> Option<DateTime<Utc>> {
    let at = batch.completed_at.or(batch.cancelled_at).or(batch.expired_at).or(batch.created_at)?;
    DateTime::from_timestamp(at, 0)
}

/// A batch that failed (its input refused by the provider) answered nothing: its hold is
/// released and there is nothing to bill.
const FAILED: &str = "failed";

/// Bills `batch` if it has ended and nobody in this process has billed it; failures are
/// logged (the batch is tried again at the next poll or retrieval), never answered. Once it is
/// billed, its hold becomes what it was charged (`hold::BatchHold::settle`).
pub async fn bill_if_ended(state: &AppState, entry: &BatchEntry, batch: &BatchObject) {
    let failed = batch.status == FAILED;
    if !(failed || ENDED.contains(&batch.status.as_str())) || !state.batches.claim(&batch.id) {
        return;
    }
    let result = if failed { Ok(NanoUsd::ZERO) } else { bill(state, entry, batch).await };
    match &result {
        Ok(charged) => {
            if let Some(hold) = &entry.hold {
                hold.settle(*charged);
            }
        }
        Err(e) => {
            counter!("tollgate_batch_billing_failures_total").increment(1);
            tracing::warn!(batch = %batch.id, error = %e, "could not bill a finished batch; will try again");
        }
    }
    state.batches.billed(&batch.id, result.is_ok());
}

/// Publishes the events of `batch`'s answered lines; what they were charged in all.
async fn bill(state: &AppState, entry: &BatchEntry, batch: &BatchObject) -> Result<NanoUsd, GatewayError> {
    let at = ended_at(batch).ok_or_else(|| GatewayError::Internal("the batch says no time".into()))?;
    let Some(file) = batch.output_file_id.as_deref() else {
        // Nothing was answered (every line failed): nothing to charge.
        return Ok(NanoUsd::ZERO);
    };
    if !upstream::good_id(file) {
        return Err(GatewayError::Internal("the batch's output file id is out of bounds".into()));
    }
    let answer = upstream::content(state, &entry.deployment, file).await?;
    if !answer.ok() {
        return Err(GatewayError::UpstreamUnavailable { model: entry.model.clone() });
    }
    let read = output::read(&answer.body, state.batches.settings.max_lines);
    let windows = crate::limits::admission::budget_windows_of(&entry.owner, &entry.model);
    let mut charged = NanoUsd::ZERO;
    for line in &read.answered {
        let mut event =
            line_event(&state.gateway_id, &batch.id, at, &entry.owner, &entry.model, &entry.deployment, line);
        event.budget_windows = windows.clone();
        let permit = crate::pipeline::usage_permit(state)?;
        charged = NanoUsd(charged.0.saturating_add(event.cost_nano_usd.0.max(0)));
        if event.cost_nano_usd.0 > 0 {
            counter!("tollgate_spend_nano_usd_total", "model" => state.router.metric_label(&entry.model))
                .increment(event.cost_nano_usd.0.unsigned_abs());
        }
        let _not_awaited = state.sink.publish(permit, event);
    }
    counter!("tollgate_batch_lines_total", "result" => "billed").increment(read.answered.len() as u64);
    counter!("tollgate_batch_lines_total", "result" => "failed").increment(read.failed as u64);
    counter!("tollgate_batch_lines_total", "result" => "unreadable").increment(read.unreadable as u64);
    if read.unreadable > 0 {
        tracing::warn!(batch = %batch.id, lines = read.unreadable, "batch output lines could not be read; not charged");
    }
    Ok(charged)
}

/// `principal` as the owner of a batch it did not see created: its customer
/// ([`with_customer`]) and its events' tags (`tenancy::tags::past_usage_tags`: the key's and
/// team's as they are now, then the request's own, kept in the batch's `tollgate_tags`).
pub async fn as_owner(state: &AppState, principal: Principal, customer: Option<&str>, tags: Option<&str>) -> Principal {
    let mut principal = with_customer(state, principal, customer).await;
    principal.tags = crate::tenancy::tags::past_usage_tags(&principal, tags);
    principal
}

/// `principal` with the customer a batch was created for (its metadata's
/// `tollgate_customer_id`): its id on the events and, when it has a record, its budget windows.
/// The customer was admitted when the batch was created, so it is charged even if the key may
/// no longer name it; an id out of bounds is no customer.
pub async fn with_customer(state: &AppState, mut principal: Principal, customer: Option<&str>) -> Principal {
    let Some(id) = customer.filter(|c| tollgate_schemas::limits::check_id("customer", c).is_ok()) else {
        return principal;
    };
    match state.tenancy.with_customer(&mut principal, id, true).await {
        Ok(Some(party)) => principal.parties.push(party),
        Ok(None) => {}
        Err(_) => principal.customer_id = Some(id.to_owned()),
    }
    principal
}

/// The usage event of one answered line, charged to `owner` at the deployment's batch price.
pub fn line_event(
    gateway_id: &str,
    batch_id: &str,
    at: DateTime<Utc>,
    owner: &Principal,
    model: &str,
    deployment: &Deployment,
    line: &Answered,
) -> UsageEvent {
    let key = &owner.key;
    let max_name = tollgate_schemas::limits::MAX_NAME_BYTES;
    let served =
        line.served_model.clone().filter(|m| tollgate_schemas::limits::check_name("served_model", m, max_name).is_ok());
    let mut event = UsageEvent {
        version: USAGE_EVENT_VERSION,
        event_id: event_id(batch_id, &line.custom_id),
        occurred_at: at,
        gateway_id: gateway_id.to_owned(),
        request_id: format!("{batch_id}/{}", line.custom_id),
        key_id: key.key_id.clone(),
        key_alias: key.key_alias.clone(),
        team_id: key.team_id.clone(),
        user_id: key.user_id.clone(),
        customer_id: owner.customer_id.clone(),
        organization_id: owner.organization_id.clone(),
        requested_model: model.to_owned(),
        served_model: served.or_else(|| Some(deployment.upstream_model.clone())),
        provider: Some(deployment.provider.clone()),
        deployment: Some(deployment.id.clone()),
        prompt_tokens: line.tokens.prompt,
        completion_tokens: line.tokens.completion,
        cached_tokens: line.tokens.cached,
        cache_write_tokens: line.tokens.cache_write,
        reasoning_tokens: line.tokens.reasoning,
        audio_input_tokens: line.tokens.audio_input,
        audio_output_tokens: line.tokens.audio_output,
        image_input_tokens: line.tokens.image_input,
        image_output_tokens: line.tokens.image_output,
        status: 200,
        tags: owner.tags.clone(),
        ..UsageEvent::default()
    };
    match &deployment.price {
        Some(price) => match cost_by_token_type(&batch_price(price), line.tokens) {
            Ok((cost, parts)) if cost <= tollgate_schemas::limits::MAX_COST_PER_REQUEST => {
                event.cost_nano_usd = cost;
                event.cost_by_token_type = parts;
            }
            _ => {
                counter!("tollgate_cost_clamped_total").increment(1);
                event.cost_nano_usd = tollgate_schemas::limits::MAX_COST_PER_REQUEST;
            }
        },
        None => {
            event.unpriced = true;
            event.cost_nano_usd = NanoUsd::ZERO;
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_depend_on_the_batch_and_the_line_only() {
        assert_eq!(event_id("batch_1", "a"), event_id("batch_1", "a"));
        assert_ne!(event_id("batch_1", "a"), event_id("batch_1", "b"));
        assert_ne!(event_id("batch_1", "a"), event_id("batch_2", "a"));
        assert_ne!(event_id("batch_1", "ab"), event_id("batch_1a", "b"));
        assert_eq!(event_id("batch_1", "a").get_version_num(), 8);
    }

    #[test]
    fn a_batch_ends_when_its_provider_says() {
        let b = BatchObject { completed_at: Some(1_700_000_000), created_at: Some(1), ..BatchObject::default() };
        assert_eq!(ended_at(&b).map(|t| t.timestamp()), Some(1_700_000_000));
        let b = BatchObject { cancelled_at: Some(5), created_at: Some(1), ..BatchObject::default() };
        assert_eq!(ended_at(&b).map(|t| t.timestamp()), Some(5));
        assert!(ended_at(&BatchObject::default()).is_none());
    }
}
