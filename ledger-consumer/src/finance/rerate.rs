//! Re-rating (docs/finance.md, "Re-rating"): the events of a period priced again under a price
//! file, folded in memory into a shadow ledger (old and new spend per scope), and the
//! adjustment events that bring the real ledger to the new prices. Pure code, no I/O: `mod.rs`
//! reads the event ledger and `publish.rs` sends the adjustments.
//!
//! An event's cost so far is its own cost plus every adjustment of it already in the event
//! ledger, by token type. Only an event whose new cost differs from that, in total or in any
//! token type, gets an adjustment: so a run applied twice finds nothing to adjust the second
//! time once the first's adjustments are folded. Until they are, it computes the same
//! adjustments with the same ids, and the ledger counts each id once.

use super::Period;
use std::collections::{BTreeMap, HashMap};
use tollgate_ledger::reconcile::RecordedEvent;
use tollgate_schemas::event::adjustment::adjustment_id;
use tollgate_schemas::event::cost_by_type::{MAX_PARTS, TOKEN_TYPES, UNSPLIT};
use tollgate_schemas::event::{Adjustment, TokenTypeCost};
use tollgate_schemas::pricing::{cost_by_token_type, Tokens};
use tollgate_schemas::{ledger, NanoUsd, UsageEvent};
use uuid::Uuid;

use super::prices::PriceBook;

/// The gateway id adjustments are published under (their `ce_source`).
pub const RERATE_SOURCE: &str = "tollgate-rerate";

/// Old and new spend of one scope over the period, in nano-USD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScopeDiff {
    pub old_nano_usd: i128,
    pub new_nano_usd: i128,
}

impl ScopeDiff {
    pub fn delta(&self) -> i128 {
        self.new_nano_usd - self.old_nano_usd
    }
}

/// What a run found: the shadow ledger's spend per scope (every scope of every event of the
/// period, `ledger::scopes_of`), the adjustments to publish, and how many events it priced.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub run: String,
    pub scopes: BTreeMap<String, ScopeDiff>,
    pub adjustments: Vec<UsageEvent>,
    pub events: usize,
    /// Events of a model the price file does not price then: left as they are.
    pub not_priced: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RerateError {
    #[error("event {0}: its new cost overflows")]
    Overflow(Uuid),
    #[error("event {0}: its adjustment would have more than {MAX_PARTS} token types")]
    TooManyParts(Uuid),
}

/// Cost by token type so far: an event's own parts and its adjustments'.
type Parts = BTreeMap<String, i64>;

/// Prices every event of `period` again (dead-lettered ones already left out of `events`) and
/// plans the adjustments of run `run`, published to usage-topic generation `generation`.
pub fn plan(
    events: &[&RecordedEvent],
    period: Period,
    book: &PriceBook,
    run: &str,
    generation: u8,
) -> Result<Plan, RerateError> {
    let mut prior: HashMap<Uuid, (Parts, Vec<Uuid>)> = HashMap::new();
    for r in events {
        if let Some(a) = &r.event.adjustment {
            let (parts, ids) = prior.entry(a.adjusts_event_id).or_default();
            add_parts(parts, &r.event, 1);
            ids.push(r.event.event_id);
        }
    }
    let mut plan = Plan { run: run.to_owned(), ..Plan::default() };
    let originals = events.iter().map(|r| &r.event).filter(|e| e.adjustment.is_none() && period.contains(e.day()));
    for e in originals {
        plan.events += 1;
        let (mut old, mut ids) = prior.remove(&e.event_id).unwrap_or_default();
        add_parts(&mut old, e, 1);
        let old_total: i64 = old.values().sum();
        let new_total = match book.price_at(&e.requested_model, e.occurred_at) {
            None => {
                plan.not_priced += 1;
                old_total
            }
            Some(price) => {
                let (total, parts) =
                    cost_by_token_type(price, tokens_of(e)).map_err(|_| RerateError::Overflow(e.event_id))?;
                let delta = difference(&old, &parts);
                if !delta.is_empty() {
                    ids.sort_unstable();
                    plan.adjustments.push(adjustment(e, run, &ids, delta, generation)?);
                }
                total.0
            }
        };
        for scope in ledger::scopes_of(e) {
            let d = plan.scopes.entry(scope).or_default();
            d.old_nano_usd += i128::from(old_total);
            d.new_nano_usd += i128::from(new_total);
        }
    }
    Ok(plan)
}

/// The tokens an event reports, as the gateway priced them.
pub fn tokens_of(e: &UsageEvent) -> Tokens {
    Tokens {
        prompt: e.prompt_tokens,
        completion: e.completion_tokens,
        cached: e.cached_tokens,
        cache_write: e.cache_write_tokens,
        reasoning: e.reasoning_tokens,
        audio_input: e.audio_input_tokens,
        audio_output: e.audio_output_tokens,
        image_input: e.image_input_tokens,
        image_output: e.image_output_tokens,
        search_units: e.search_units,
        characters: e.characters,
        images: e.images,
        pixels: e.pixels,
        seconds: e.audio_seconds,
    }
}

/// Adds `e`'s cost by token type to `parts`; an event without a breakdown as `unsplit`.
fn add_parts(parts: &mut Parts, e: &UsageEvent, sign: i64) {
    if e.cost_by_token_type.is_empty() {
        if e.cost_nano_usd.0 != 0 {
            *parts.entry(UNSPLIT.to_owned()).or_default() += sign * e.cost_nano_usd.0;
        }
        return;
    }
    for p in &e.cost_by_token_type {
        *parts.entry(p.token_type.clone()).or_default() += sign * p.cost_nano_usd.0;
    }
}

/// New minus old, by token type, the types with no difference left out; in the gateway's order
/// of token types, then any other by name.
fn difference(old: &Parts, new: &[TokenTypeCost]) -> Vec<(String, i64)> {
    let mut delta: Parts = old.iter().map(|(t, n)| (t.clone(), -n)).collect();
    for p in new {
        *delta.entry(p.token_type.clone()).or_default() += p.cost_nano_usd.0;
    }
    let rank = |t: &str| TOKEN_TYPES.iter().position(|k| *k == t).unwrap_or(TOKEN_TYPES.len());
    let mut out: Vec<(String, i64)> = delta.into_iter().filter(|(_, n)| *n != 0).collect();
    out.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    out
}

/// The adjustment of `e` by run `run`: its tenants, model and instant, no tokens, the
/// difference as cost. Its id covers the adjustments of `e` it was computed over (`prior`), so
/// a run applied again after another run has moved the cost gets a new id.
fn adjustment(
    e: &UsageEvent,
    run: &str,
    prior: &[Uuid],
    delta: Vec<(String, i64)>,
    generation: u8,
) -> Result<UsageEvent, RerateError> {
    if delta.len() > MAX_PARTS {
        return Err(RerateError::TooManyParts(e.event_id));
    }
    let parts: Vec<TokenTypeCost> = delta
        .into_iter()
        .map(|(token_type, n)| TokenTypeCost { token_type, tokens: 0, cost_nano_usd: NanoUsd(n) })
        .collect();
    Ok(UsageEvent {
        version: e.version,
        event_id: adjustment_id(run, &e.event_id, prior),
        occurred_at: e.occurred_at,
        gateway_id: RERATE_SOURCE.to_owned(),
        request_id: e.request_id.clone(),
        key_id: e.key_id.clone(),
        key_alias: e.key_alias.clone(),
        team_id: e.team_id.clone(),
        user_id: e.user_id.clone(),
        customer_id: e.customer_id.clone(),
        organization_id: e.organization_id.clone(),
        requested_model: e.requested_model.clone(),
        served_model: e.served_model.clone(),
        provider: e.provider.clone(),
        deployment: e.deployment.clone(),
        cost_nano_usd: NanoUsd(parts.iter().map(|p| p.cost_nano_usd.0).sum()),
        cost_by_token_type: parts,
        status: e.status,
        budget_windows: e.budget_windows.clone(),
        tags: e.tags.clone(),
        usage_generation: generation,
        adjustment: Some(Adjustment { adjusts_event_id: e.event_id, rerate_run: run.to_owned() }),
        ..UsageEvent::default()
    })
}

#[cfg(test)]
mod tests;
