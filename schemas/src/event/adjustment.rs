//! Re-rating adjustments (docs/finance.md, "Re-rating"): a usage event that corrects the cost
//! of an earlier event after its price changed. It carries the difference, new cost minus cost
//! so far (negative when the price fell), split by token type, and no tokens: the original
//! event already counted them. It keeps the original's tenants, model and `occurred_at`, so it
//! folds into the same spend rows and is billed in the same period, or, when that period is
//! closed, as a correction in the first open one.
//!
//! Its `event_id` is derived from the re-rating run and the original event, so publishing the
//! same run twice publishes the same ids, and the ledger counts each once.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Hex digits of a run identity (a SHA-256).
pub const RUN_ID_HEX: usize = 64;

/// What an adjustment corrects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    /// The event whose cost this adjusts.
    pub adjusts_event_id: Uuid,
    /// The re-rating run: SHA-256 (hex) of the price file and the period it re-rated.
    pub rerate_run: String,
}

/// The identity of a re-rating run: SHA-256 (hex) of the price file's bytes and the period.
pub fn run_id(price_file: &[u8], period: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tollgate-rerate-run\0");
    h.update(period.as_bytes());
    h.update(b"\0");
    h.update(price_file);
    hex::encode(h.finalize())
}

/// The `event_id` of the adjustment of `original` by run `run`, computed over the adjustments
/// of `original` already in the ledger (`prior`, sorted): the first 16 bytes of SHA-256(run,
/// original, prior), as a UUID version 8 (custom). The same run over the same ledger always
/// gives the same id; a run applied again after another run adjusted the event gets a new one.
pub fn adjustment_id(run: &str, original: &Uuid, prior: &[Uuid]) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"tollgate-rerate-adjustment\0");
    h.update(run.as_bytes());
    h.update(original.as_bytes());
    for id in prior {
        h.update(id.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Whether `run` is a run identity: 64 lower-case hex digits.
pub fn is_run_id(run: &str) -> bool {
    run.len() == RUN_ID_HEX && run.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let run = run_id(b"prices: {}", "2026-11");
        assert!(is_run_id(&run));
        assert_eq!(run, run_id(b"prices: {}", "2026-11"));
        assert_ne!(run, run_id(b"prices: {}", "2026-12"));
        assert_ne!(run, run_id(b"prices: {} ", "2026-11"));
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(adjustment_id(&run, &a, &[]), adjustment_id(&run, &a, &[]));
        assert_ne!(adjustment_id(&run, &a, &[]), adjustment_id(&run, &b, &[]));
        assert_ne!(adjustment_id(&run, &a, &[]), adjustment_id(&run_id(b"x", "2026-11"), &a, &[]));
        assert_ne!(adjustment_id(&run, &a, &[]), adjustment_id(&run, &a, &[b]), "after another run");
        assert_eq!(adjustment_id(&run, &a, &[]).get_version_num(), 8);
        assert!(!is_run_id("ABC"));
    }
}
