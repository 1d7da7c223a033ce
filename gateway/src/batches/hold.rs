//! What a running batch holds against the hard budgets it counts against (docs/design.md
//! §2.13, "Budgets"): its most possible cost (`max_cost`), reserved through the credit leases
//! (§5.4) when it is created — so the lease store, and through it every gateway, counts it as
//! spent — and replaced by what it was charged once it is billed.
//!
//! - At creation ([`hold_for_creation`]): only when a hard budget applies. The input file is
//!   read back from the provider and bounded; a batch whose maximum is more than what is left of
//!   any hard budget (in this gateway's view, then in its lease) is refused, and nothing is
//!   reserved. The maximum goes into the batch's provider-side metadata ([`HOLD_META`]).
//! - While it runs: the reservation is a lease [`Hold`] like a request's, so the lease cannot be
//!   handed back and its slice stays granted in the store.
//! - When it is billed ([`BatchHold::settle`]): the reservation becomes what its answered lines
//!   were charged; a batch that failed releases it.
//! - At a clean stop ([`crate::batches::Batches::release_holds`]): released before the leases
//!   go back, so nothing is stranded; at start, the poller's recovery takes the hold again for
//!   each batch still running ([`hold_recovered`]), from [`HOLD_META`].
//!
//! Never refuses a batch without a hard budget, and never reads its input file then.

use super::jsonl;
use super::max_cost::{default_output, max_cost};
use super::upstream;
use super::FileEntry;
use crate::error::GatewayError;
use crate::limits::admission::Admitted;
use crate::limits::leases::Hold;
use crate::tenancy::auth::Principal;
use crate::AppState;
use chrono::{DateTime, Utc};
use metrics::counter;
use std::sync::{Arc, Mutex};
use tollgate_schemas::NanoUsd;

/// The batch's provider-side metadata key holding its maximum (decimal nano-USD): hidden from
/// clients as the owner's are (`upstream::strip_owner`).
pub const HOLD_META: &str = "tollgate_max_cost";
/// The longest [`HOLD_META`] value read back: `i64::MAX` has 19 digits.
const MAX_HOLD_DIGITS: usize = 19;

/// A running batch's hold: its maximum and the lease reservations taken for it (none when
/// `budgets.leases` is off: the maximum was then checked against this gateway's view only).
pub struct BatchHold {
    amount: NanoUsd,
    holds: Mutex<Vec<Hold>>,
}

impl BatchHold {
    pub fn new(amount: NanoUsd, holds: Vec<Hold>) -> Arc<BatchHold> {
        Arc::new(BatchHold { amount, holds: Mutex::new(holds) })
    }

    /// The batch's most possible cost.
    pub fn amount(&self) -> NanoUsd {
        self.amount
    }

    /// Whether lease reservations are still held.
    pub fn is_held(&self) -> bool {
        self.holds.lock().map(|h| !h.is_empty()).unwrap_or(false)
    }

    /// Replaces the reservations with `charged`, what the batch's lines were charged: once;
    /// later calls do nothing.
    pub fn settle(&self, charged: NanoUsd) {
        let holds = self.take();
        let now_ms = Utc::now().timestamp_millis();
        for h in &holds {
            h.settle(charged, now_ms);
        }
    }

    /// Releases the reservations untouched (a batch that failed, or a clean stop).
    pub fn release(&self) {
        drop(self.take());
    }

    fn take(&self) -> Vec<Hold> {
        // A poisoned lock still holds whole reservations: take them.
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *holds)
    }
}

/// [`HOLD_META`]'s value for `amount`.
pub fn meta_value(amount: NanoUsd) -> String {
    amount.0.max(0).to_string()
}

/// A [`HOLD_META`] value read back from a provider: decimal digits only, within nano-USD.
pub fn parse_meta(value: &str) -> Option<NanoUsd> {
    if value.is_empty() || value.len() > MAX_HOLD_DIGITS || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<i64>().ok().filter(|n| *n > 0).map(NanoUsd)
}

/// The hold of a batch about to be created from `file`, once admitted (`admitted`): `None`
/// without a hard budget or a price (nothing to hold). Refuses the batch — 400
/// `budget_exceeded` with the code of the budget's scope — when its maximum is more than what
/// is left of a hard budget.
pub async fn hold_for_creation(
    state: &AppState,
    admitted: &mut Admitted,
    file: &FileEntry,
    now: DateTime<Utc>,
) -> Result<Option<Arc<BatchHold>>, GatewayError> {
    if !admitted.has_hard_budget() {
        return Ok(None);
    }
    let Some(price) = file.deployment.price.as_ref() else { return Ok(None) };
    let answer = upstream::content(state, &file.deployment, &file.provider_id).await?;
    if !answer.ok() {
        return Err(GatewayError::UpstreamUnavailable { model: file.model.clone() });
    }
    // The file was checked when it was uploaded; read back, it is checked again (bounded).
    let input = jsonl::check(&answer.body, state.batches.settings.max_lines).map_err(|e| {
        GatewayError::invalid(format!("the batch input file cannot be bounded: {e}"), Some("input_file_id"))
    })?;
    let reserve = state.budget_settings.reserve_output_tokens;
    let amount = max_cost(&input, price, default_output(&file.deployment, reserve))?;
    admitted.check_headroom(amount).inspect_err(crate::observability::usage::refused)?;
    let holds = match state.leases.as_ref() {
        Some(leases) => {
            admitted.hold_whole(leases, amount, now).await.inspect_err(crate::observability::usage::refused)?
        }
        None => Vec::new(),
    };
    counter!("tollgate_batch_holds_total", "result" => "held").increment(1);
    Ok(Some(BatchHold::new(amount, holds)))
}

/// The hold of a batch found running at start (`poller::recover`), created earlier with the
/// maximum `amount`: reserved again against `owner`'s hard budgets for `model`, as much of it
/// as the leases still cover. A batch whose hold cannot be taken again runs unheld (logged and
/// counted): it was admitted, and is billed when it ends.
pub async fn hold_recovered(
    state: &AppState,
    owner: &Principal,
    model: &str,
    amount: NanoUsd,
) -> Option<Arc<BatchHold>> {
    let leases = state.leases.as_ref()?;
    let now = Utc::now();
    let mut admitted = crate::limits::admission::budgets_of(owner, model, &state.budget_view, now);
    if !admitted.has_hard_budget() {
        return None;
    }
    if admitted.reserve(leases, amount, now).await.is_err() {
        counter!("tollgate_batch_holds_total", "result" => "unheld").increment(1);
        tracing::warn!("a running batch's budget hold could not be taken again; it runs unheld");
    } else {
        counter!("tollgate_batch_holds_total", "result" => "recovered").increment(1);
    }
    Some(BatchHold::new(amount, admitted.take_holds()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::leases::{Leases, LocalLeases, Slot};

    #[tokio::test]
    async fn a_hold_is_settled_or_released_once() {
        let leases = Leases::new(Arc::new(LocalLeases::default()), 1, std::time::Duration::from_secs(5));
        let slot = Slot { scope: "key/k", window: "all", max: NanoUsd(100), seen_spent: NanoUsd::ZERO };
        let reserve = |n| leases.reserve(&slot, NanoUsd(n), 0);
        let held = BatchHold::new(NanoUsd(90), vec![reserve(90).await.ok().unwrap()]);
        assert!(held.is_held() && held.amount() == NanoUsd(90));
        assert!(reserve(20).await.ok().unwrap().partial(), "only 10 left while the batch runs");
        // Billed at 30: 70 free again; settling again changes nothing.
        held.settle(NanoUsd(30));
        held.settle(NanoUsd(0));
        held.release();
        assert!(!held.is_held());
        let after = reserve(70).await.ok().unwrap();
        assert!(!after.partial());
        assert!(reserve(1).await.is_err(), "30 spent and 70 reserved: nothing left");
        // Released untouched (a failed batch, a clean stop): all of it free again.
        drop(after);
        let failed = BatchHold::new(NanoUsd(70), vec![reserve(70).await.ok().unwrap()]);
        failed.release();
        assert!(!reserve(70).await.ok().unwrap().partial());
    }

    #[test]
    fn the_metadata_value_is_bounded_digits() {
        assert_eq!(parse_meta(&meta_value(NanoUsd(1_234))), Some(NanoUsd(1_234)));
        assert_eq!(parse_meta(&meta_value(NanoUsd(i64::MAX))), Some(NanoUsd(i64::MAX)));
        for bad in ["", "0", "-5", "+5", "1e9", " 5", "9223372036854775808", "99999999999999999999", "１２"] {
            assert_eq!(parse_meta(bad), None, "{bad}");
        }
    }
}
