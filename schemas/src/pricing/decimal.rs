//! Exact prices: USD amounts as LiteLLM writes them (`1.25e-10`) to whole atto-USD (10⁻¹⁸ USD),
//! and a request's atto-USD total to nano-USD, rounded once. Never a float in arithmetic.

use crate::money::MoneyOverflow;
use crate::NanoUsd;

/// Decimals of a USD amount one atto-USD holds.
const ATTO_DECIMALS: usize = 18;
const ATTO_PER_NANO: i128 = 1_000_000_000;

/// An amount in atto-USD (10⁻¹⁸ USD): a price per token or per request, or a request's exact
/// total before it is rounded to nano-USD. Fine enough for every per-token price of LiteLLM's
/// catalogue (the finest, 2.5e-11 USD per token, is 25 000 000 atto-USD).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttoUsd(pub i128);

impl AttoUsd {
    pub const ZERO: AttoUsd = AttoUsd(0);

    pub const fn from_nanos(nanos: i64) -> AttoUsd {
        AttoUsd(nanos as i128 * ATTO_PER_NANO)
    }

    pub fn checked_add(self, other: AttoUsd) -> Result<AttoUsd, MoneyOverflow> {
        self.0.checked_add(other.0).map(AttoUsd).ok_or(MoneyOverflow)
    }

    /// `price per unit × units`.
    pub fn checked_mul_units(self, units: u64) -> Result<AttoUsd, MoneyOverflow> {
        self.0.checked_mul(i128::from(units)).map(AttoUsd).ok_or(MoneyOverflow)
    }

    /// The nano-USD charged for this exact amount: rounded up to the next whole nano-USD, so a
    /// request is never charged less than it cost, and at most 1 nano-USD more.
    pub fn to_nanos_rounded_up(self) -> Result<NanoUsd, MoneyOverflow> {
        let nanos = self.0.checked_add(ATTO_PER_NANO - 1).ok_or(MoneyOverflow)?.div_euclid(ATTO_PER_NANO);
        i64::try_from(nanos).map(NanoUsd).map_err(|_| MoneyOverflow)
    }
}

impl AttoUsd {
    /// This amount in whole nano-USD rounded down, and the atto-USD left over (for a
    /// non-negative amount, `0 ≤ remainder < 10⁹`).
    pub fn to_nanos_with_remainder(self) -> Result<(NanoUsd, i128), MoneyOverflow> {
        let nanos = self.0.div_euclid(ATTO_PER_NANO);
        Ok((NanoUsd(i64::try_from(nanos).map_err(|_| MoneyOverflow)?), self.0.rem_euclid(ATTO_PER_NANO)))
    }
}

/// Why a price in USD is not an amount of atto-USD.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PriceError {
    #[error("{0} is not a non-negative number")]
    Negative(f64),
    #[error("{0} is too large")]
    TooLarge(String),
}

/// USD as LiteLLM writes it (`0.00000015`, `1.25e-10`) to atto-USD. A JSON or YAML number
/// arrives as the float nearest its text; that float's shortest decimal form is the text again,
/// so the conversion is exact for every amount of at most 18 decimals. A longer one (the
/// catalogue has some: float noise such as `4.0000000000000003e-07`, repeating fractions such
/// as `1.1428571428571428e-06`) is rounded to the nearest atto-USD, half up: at most half an
/// atto-USD per token off, far below the nano-USD a request's total is rounded to.
pub fn usd_to_atto(usd: f64) -> Result<AttoUsd, PriceError> {
    if !usd.is_finite() || usd < 0.0 {
        return Err(PriceError::Negative(usd));
    }
    let text = decimal_text(usd);
    let (whole, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let (kept, dropped) = frac.split_at(frac.len().min(ATTO_DECIMALS));
    let round_up = dropped.as_bytes().first().is_some_and(|d| *d >= b'5');
    let too_large = || PriceError::TooLarge(text.clone());
    let whole: i128 = whole.parse().map_err(|_| too_large())?;
    let kept: i128 =
        if kept.is_empty() { 0 } else { format!("{kept:0<ATTO_DECIMALS$}").parse().map_err(|_| too_large())? };
    whole
        .checked_mul(10_i128.pow(ATTO_DECIMALS as u32))
        .and_then(|w| w.checked_add(kept))
        .and_then(|a| a.checked_add(i128::from(round_up)))
        .map(AttoUsd)
        .ok_or_else(too_large)
}

/// Whether `usd` is a whole number of atto-USD (at most 18 decimals).
pub fn is_exact_in_atto(usd: f64) -> bool {
    let text = decimal_text(usd);
    text.split_once('.').is_none_or(|(_, frac)| frac.len() <= ATTO_DECIMALS)
}

/// The shortest decimal digits that read back as `usd`, without an exponent (`Display`).
fn decimal_text(usd: f64) -> String {
    format!("{usd}")
}
