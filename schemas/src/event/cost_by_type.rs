//! The cost of one usage event by token type (`UsageEvent::cost_by_token_type`), and the check
//! the ledger consumer makes of it: finance bills one line per token type, so the parts must
//! add up to `cost_nano_usd` exactly (docs/design.md §2.7, "Cost by token type").
//!
//! The parts are computed by the gateway; nothing here prices or rounds. A reader must never
//! trust parts that do not sum to the total: `check` refuses such an event as a whole.

use crate::limits::{check_name, BoundError, MAX_COST_PER_REQUEST, MAX_TOKENS_PER_REQUEST};
use crate::NanoUsd;
use serde::{Deserialize, Serialize};

/// Token types the gateway writes today. Within version 1 new names may be added: readers take
/// `token_type` as an opaque name.
pub const TOKEN_TYPES: [&str; 10] = [
    "cached_input",
    "cache_write",
    "audio_input",
    "image_input",
    "input",
    "reasoning",
    "audio_output",
    "image_output",
    "output",
    "request",
];

/// The token type of an event that carries no breakdown (written before the field existed, or
/// whose cost was clamped to the per-request bound): its whole cost on one line.
pub const UNSPLIT: &str = "unsplit";

/// Most parts one event may carry: room for types added within version 1.
pub const MAX_PARTS: usize = 16;

/// Longest token type name, in bytes.
pub const MAX_TYPE_BYTES: usize = 32;

/// One token type's share of an event's cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenTypeCost {
    /// `input` (text prompt tokens), `cached_input`, `cache_write`, `audio_input`,
    /// `image_input`, `output` (text completion tokens), `reasoning`, `audio_output`,
    /// `image_output`, or `request` (a per-request price; `tokens` is then 1).
    pub token_type: String,
    /// How many tokens of this type were charged (the count the price applied to).
    pub tokens: u64,
    /// This type's share of `cost_nano_usd`, in nano-USD.
    pub cost_nano_usd: NanoUsd,
}

/// Checks an event's breakdown: each part bounded, no type twice, and the parts sum to the
/// event's cost exactly. An empty breakdown passes (the event is billed unsplit). `signed`: the
/// parts of a re-rating adjustment are differences, from −$1,000,000 to $1,000,000.
pub fn check(parts: &[TokenTypeCost], total: NanoUsd, signed: bool) -> Result<(), BoundError> {
    const FIELD: &str = "cost_by_token_type";
    let range = |detail: String| BoundError::Range { field: FIELD.into(), detail };
    if parts.is_empty() {
        return Ok(());
    }
    if parts.len() > MAX_PARTS {
        return Err(range(format!("at most {MAX_PARTS} token types")));
    }
    let mut sum: i64 = 0;
    let mut seen: Vec<&str> = Vec::with_capacity(parts.len());
    for p in parts {
        check_name(FIELD, &p.token_type, MAX_TYPE_BYTES)?;
        if seen.contains(&p.token_type.as_str()) {
            return Err(range("each token type at most once".into()));
        }
        seen.push(&p.token_type);
        if p.tokens > MAX_TOKENS_PER_REQUEST {
            return Err(range(format!("at most {MAX_TOKENS_PER_REQUEST} tokens a part")));
        }
        let lowest = if signed { -MAX_COST_PER_REQUEST.0 } else { 0 };
        if p.cost_nano_usd.0 < lowest || p.cost_nano_usd > MAX_COST_PER_REQUEST {
            return Err(range(format!("each part's cost {lowest} to {}", MAX_COST_PER_REQUEST.0)));
        }
        // Each part is at most 10^15 in size, at most 16 parts: no overflow.
        sum += p.cost_nano_usd.0;
    }
    if sum != total.0 {
        return Err(range("the parts' costs must sum to cost_nano_usd".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(t: &str, tokens: u64, cost: i64) -> TokenTypeCost {
        TokenTypeCost { token_type: t.into(), tokens, cost_nano_usd: NanoUsd(cost) }
    }

    #[test]
    fn parts_must_sum_to_the_total_exactly() {
        let parts = [part("input", 1000, 150_000), part("output", 100, 60_001)];
        assert!(check(&parts, NanoUsd(210_001), false).is_ok());
        assert!(check(&parts, NanoUsd(210_000), false).is_err());
        assert!(check(&parts, NanoUsd(210_002), false).is_err());
        assert!(check(&[], NanoUsd(5), false).is_ok(), "no breakdown: billed unsplit");
    }

    #[test]
    fn hostile_parts_are_refused() {
        let twice = [part("input", 1, 1), part("input", 1, 1)];
        assert!(check(&twice, NanoUsd(2), false).is_err());
        let negative = [part("input", 1, -5), part("output", 1, 10)];
        assert!(check(&negative, NanoUsd(5), false).is_err());
        let too_many: Vec<_> = (0..=MAX_PARTS).map(|i| part(&format!("t{i}"), 0, 0)).collect();
        assert!(check(&too_many, NanoUsd(0), false).is_err());
        assert!(check(&too_many[..MAX_PARTS], NanoUsd(0), false).is_ok());
        assert!(check(&[part(&"x".repeat(MAX_TYPE_BYTES + 1), 0, 0)], NanoUsd(0), false).is_err());
        assert!(check(&[part("input", MAX_TOKENS_PER_REQUEST + 1, 0)], NanoUsd(0), false).is_err());
        let huge = [part("input", 1, MAX_COST_PER_REQUEST.0 + 1), part("output", 1, -1)];
        assert!(check(&huge, MAX_COST_PER_REQUEST, false).is_err());
        assert!(check(&[part("", 1, 0)], NanoUsd(0), false).is_err());
        // An adjustment's parts are differences: negative within the bound.
        assert!(check(&negative, NanoUsd(5), true).is_ok());
        let below = [part("input", 0, -MAX_COST_PER_REQUEST.0 - 1), part("output", 0, 1)];
        assert!(check(&below, NanoUsd(-MAX_COST_PER_REQUEST.0), true).is_err());
    }
}
