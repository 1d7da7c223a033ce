//! The background poll of the batches this gateway has to bill: every
//! `gateway.batches.poll_interval_secs`, each open batch is retrieved from its provider and
//! billed if it has ended, so a batch is billed even when its client never asks again. One
//! batch at a time; a failure waits for the next round.
//!
//! A gateway knows the batches created or retrieved through it since it started. So that a
//! restart (or a replica that went away) leaves none unbilled, the poll first recovers, once
//! and within bounds, the batches its provider accounts list with Tollgate's owner metadata
//! and created in the last [`RECOVERY_WINDOW_SECS`]: at most [`RECOVERY_PAGES`] pages of 100
//! per account. Those that ended before are billed again; their events' ids are fixed, so the
//! ledger counts them once (docs/design.md §2.13).

use super::hold::{self, HOLD_META};
use super::upstream::{self, OWNER_CUSTOMER, OWNER_KEY, OWNER_MODEL, OWNER_TAGS};
use super::{billing, BatchEntry, Billing};
use crate::providers::Deployment;
use crate::AppState;
use actix_web::web;
use metrics::counter;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Batches created longer ago than this are not recovered: OpenAI's completion window (24 h)
/// and as long again for a gateway that was down.
pub const RECOVERY_WINDOW_SECS: i64 = 48 * 3600;
/// Pages of a provider account's batch list read at most when recovering (100 batches each).
pub const RECOVERY_PAGES: usize = 10;

/// Polls until `stop` is cancelled; returns at once when polling is off (interval 0).
pub async fn run(state: web::Data<AppState>, stop: CancellationToken) {
    let secs = state.batches.settings.poll_interval_secs;
    if secs == 0 {
        return;
    }
    tokio::select! {
        () = stop.cancelled() => return,
        () = recover(&state) => {}
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(secs)) => {}
        }
        for (id, entry) in state.batches.open() {
            if stop.is_cancelled() {
                return;
            }
            match upstream::retrieve(&state, &entry.deployment, &id).await {
                Ok((answer, batch)) if answer.ok() && batch.id == id => {
                    billing::bill_if_ended(&state, &entry, &batch).await;
                }
                Ok(_) | Err(_) => tracing::debug!(batch = %id, "batch not retrieved; polled again later"),
            }
        }
    }
}

/// Remembers, to be polled, the recent batches of Tollgate's at every provider account.
async fn recover(state: &AppState) {
    let since = chrono::Utc::now().timestamp() - RECOVERY_WINDOW_SECS;
    let mut found = 0u64;
    for deployment in upstream::accounts(state, |_| true) {
        let mut after: Option<String> = None;
        for _ in 0..RECOVERY_PAGES {
            let path = match &after {
                Some(a) => format!("batches?limit=100&after={a}"),
                None => "batches?limit=100".to_owned(),
            };
            let page = match upstream::get(state, &deployment, &path).await {
                Ok(answer) if answer.ok() => serde_json::from_slice::<Value>(&answer.body).unwrap_or_default(),
                Ok(_) | Err(_) => {
                    tracing::warn!(deployment = %deployment.id, "could not list batches to recover");
                    break;
                }
            };
            let batches = page.get("data").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            let mut older = false;
            for b in batches {
                older |= b.get("created_at").and_then(Value::as_i64).is_some_and(|t| t < since);
                if !older && adopt(state, &deployment, b).await {
                    found += 1;
                }
            }
            let last = batches.last().and_then(|b| b.get("id")).and_then(Value::as_str);
            let more = page.get("has_more").and_then(Value::as_bool).unwrap_or(false);
            match last.filter(|l| upstream::good_id(l) && more && !older) {
                Some(l) => after = Some(l.to_owned()),
                None => break,
            }
        }
    }
    counter!("tollgate_batches_recovered_total").increment(found);
    if found > 0 {
        tracing::info!(batches = found, "recovered batches to bill");
    }
}

/// Remembers the listed batch `b` if Tollgate created it for a key that still exists and this
/// gateway does not know it yet; whether it did.
async fn adopt(state: &AppState, deployment: &Arc<Deployment>, b: &Value) -> bool {
    let id = b.get("id").and_then(Value::as_str).unwrap_or_default();
    let owner = |field: &str| b.pointer(&format!("/metadata/{field}")).and_then(Value::as_str);
    let Some(key_id) = owner(OWNER_KEY) else { return false };
    if !upstream::good_id(id) || b.get("status").and_then(Value::as_str) == Some("failed") {
        return false;
    }
    if state.batches.batch(id).is_some() {
        return false;
    }
    let principal = match state.tenancy.owner(key_id).await {
        Ok(Some(p)) => p,
        Ok(None) | Err(_) => {
            tracing::warn!(batch = %id, "the key that created a batch is unknown; not billed here");
            return false;
        }
    };
    let principal = billing::as_owner(state, principal, owner(OWNER_CUSTOMER), owner(OWNER_TAGS)).await;
    let model = owner(OWNER_MODEL)
        .filter(|m| state.router.model_names().iter().any(|n| n == m))
        .map_or_else(|| deployment.model_name.clone(), str::to_owned);
    // Still running: what it held before the restart is held again (docs/design.md §2.13).
    let running = !matches!(b.get("status").and_then(Value::as_str), Some("completed" | "cancelled" | "expired"));
    let hold = match owner(HOLD_META).and_then(hold::parse_meta) {
        Some(amount) if running => hold::hold_recovered(state, &principal, &model, amount).await,
        _ => None,
    };
    let entry =
        BatchEntry { owner: Arc::new(principal), model, deployment: deployment.clone(), billing: Billing::Open, hold };
    state.batches.remember_batch(id, entry);
    true
}
