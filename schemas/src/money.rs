//! Money as an integer number of nano-USD (10⁻⁹ USD). Never a float.
//!
//! Nano-USD is fine enough to price a single token of the cheapest models exactly
//! (e.g. $0.02 per million tokens = 20 nano-USD per token) and `i64` still holds
//! more than nine billion dollars.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of money in nano-USD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NanoUsd(pub i64);

/// Returned when money arithmetic would overflow: the caller must treat it as an error,
/// never wrap or saturate silently.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("money arithmetic overflowed")]
pub struct MoneyOverflow;

impl NanoUsd {
    pub const ZERO: NanoUsd = NanoUsd(0);

    pub fn checked_add(self, other: NanoUsd) -> Result<NanoUsd, MoneyOverflow> {
        self.0.checked_add(other.0).map(NanoUsd).ok_or(MoneyOverflow)
    }

    pub fn checked_sub(self, other: NanoUsd) -> Result<NanoUsd, MoneyOverflow> {
        self.0.checked_sub(other.0).map(NanoUsd).ok_or(MoneyOverflow)
    }

    /// `price per unit × units`, e.g. nano-USD per token × tokens.
    pub fn checked_mul_units(self, units: u64) -> Result<NanoUsd, MoneyOverflow> {
        let units = i64::try_from(units).map_err(|_| MoneyOverflow)?;
        self.0.checked_mul(units).map(NanoUsd).ok_or(MoneyOverflow)
    }

    /// Whole micro-USD, rounded down (finance reports in micro-USD).
    pub fn as_micro_usd_floor(self) -> i64 {
        self.0.div_euclid(1_000)
    }
}

impl fmt::Display for NanoUsd {
    /// Exact decimal USD, e.g. `0.000001250` for 1,250 nano-USD.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn displays_exact_decimal_usd() {
        assert_eq!(NanoUsd(1_250).to_string(), "0.000001250");
        assert_eq!(NanoUsd(3_000_000_001).to_string(), "3.000000001");
        assert_eq!(NanoUsd(-5).to_string(), "-0.000000005");
    }

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(NanoUsd(i64::MAX).checked_add(NanoUsd(1)), Err(MoneyOverflow));
        assert_eq!(NanoUsd(2).checked_mul_units(u64::MAX), Err(MoneyOverflow));
    }

    proptest! {
        #[test]
        fn add_then_sub_round_trips(a in -1_000_000_000_000i64..1_000_000_000_000, b in -1_000_000_000_000i64..1_000_000_000_000) {
            let sum = NanoUsd(a).checked_add(NanoUsd(b)).unwrap();
            prop_assert_eq!(sum.checked_sub(NanoUsd(b)).unwrap(), NanoUsd(a));
        }
    }
}
