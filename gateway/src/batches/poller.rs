//! The background poll of the batches this gateway created and has not billed: every
//! `gateway.batches.poll_interval_secs`, each is retrieved from its provider and billed if it
//! has ended, so a batch is billed even when its client never asks again. One batch at a
//! time; a failure waits for the next round.

use super::{billing, upstream};
use crate::AppState;
use actix_web::web;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Polls until `stop` is cancelled; returns at once when polling is off (interval 0).
pub async fn run(state: web::Data<AppState>, stop: CancellationToken) {
    let secs = state.batches.settings.poll_interval_secs;
    if secs == 0 {
        return;
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
