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

    /// Parses a decimal amount of USD exactly (`"10"`, `"0.25"`, `"1e-3"`), as admins write
    /// budgets. More than nine decimals, a sign other than a leading `-`, or an amount that
    /// does not fit are errors, never rounded.
    pub fn parse_usd(text: &str) -> Result<NanoUsd, ParseUsdError> {
        let bad = || ParseUsdError(text.to_owned());
        let t = text.trim();
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (mantissa, exponent) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| bad())?),
            None => (t, 0),
        };
        // Bounded so no input makes the loops below long: an i64 of nano-USD has 19 digits.
        if !(-40..=40).contains(&exponent) || mantissa.len() > 60 {
            return Err(bad());
        }
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac_part.is_empty()) || !digits_ok(int_part) || !digits_ok(frac_part) {
            return Err(bad());
        }
        // value = digits × 10^(exponent − len(frac)); nano = value × 10^9.
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let scale = exponent - i32::try_from(frac_part.len()).map_err(|_| bad())? + 9;
        let mut nano: i128 = 0;
        for b in digits.bytes() {
            nano = nano.checked_mul(10).and_then(|n| n.checked_add(i128::from(b - b'0'))).ok_or_else(bad)?;
            if nano > i128::from(i64::MAX) * 1_000_000_000 {
                return Err(bad());
            }
        }
        if scale >= 0 {
            for _ in 0..scale {
                nano = nano.checked_mul(10).ok_or_else(bad)?;
                if nano > i128::from(i64::MAX) {
                    return Err(bad());
                }
            }
        } else {
            for _ in 0..scale.unsigned_abs() {
                if nano % 10 != 0 {
                    return Err(bad());
                }
                nano /= 10;
            }
        }
        let nano = i64::try_from(nano).map_err(|_| bad())?;
        Ok(NanoUsd(if negative { -nano } else { nano }))
    }

    /// The amount as a JSON number of USD, for APIs that speak dollars (LiteLLM's admin API).
    /// Display only: exact amounts travel as integers of nano-USD.
    pub fn as_usd_display(self) -> f64 {
        self.to_string().parse().unwrap_or(0.0)
    }

    /// Whole micro-USD, rounded down (finance reports in micro-USD).
    pub fn as_micro_usd_floor(self) -> i64 {
        self.0.div_euclid(1_000)
    }
}

/// An amount of USD that is not a valid nano-USD amount.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an amount of USD with at most 9 decimals")]
pub struct ParseUsdError(pub String);

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
    fn parses_usd_exactly() {
        assert_eq!(NanoUsd::parse_usd("10"), Ok(NanoUsd(10_000_000_000)));
        assert_eq!(NanoUsd::parse_usd("0.1"), Ok(NanoUsd(100_000_000)));
        assert_eq!(NanoUsd::parse_usd("0.000000001"), Ok(NanoUsd(1)));
        assert_eq!(NanoUsd::parse_usd("1e-7"), Ok(NanoUsd(100)));
        assert_eq!(NanoUsd::parse_usd("2.5E2"), Ok(NanoUsd(250_000_000_000)));
        assert_eq!(NanoUsd::parse_usd("-3"), Ok(NanoUsd(-3_000_000_000)));
        assert!(NanoUsd::parse_usd("0.0000000001").is_err());
        for bad in ["", ".", "abc", "1.2.3", "+1", "1e", "99999999999999999999", "- 1", "1e2147483647", "0e-2147483648"]
        {
            assert!(NanoUsd::parse_usd(bad).is_err(), "{bad}");
        }
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
