//! FOCUS 1.2 charge rows from usage events (docs/finance.md, "The FOCUS export"): pure code, no
//! I/O. One row per charge period (UTC day) × billing scope × model × token type, its cost the
//! exact sum of the events' nano-USD parts. Money never passes through a float; [`decimal`]
//! writes nano-USD as a decimal with 9 places, exactly.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use std::collections::BTreeMap;
use tollgate_schemas::UsageEvent;

pub use tollgate_ledger::close::{lines_of, month_of};

/// `BillingAccountId` of events without an organization.
pub const NO_ORGANIZATION: &str = "no-organization";
/// `ProviderName` of events that name no provider.
pub const UNKNOWN_PROVIDER: &str = "unknown";

/// What a row is: everything but its amounts. The order of the fields is the order of rows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChargeKey {
    pub day: NaiveDate,
    pub organization: Option<String>,
    pub team: Option<String>,
    pub key_id: String,
    pub key_alias: Option<String>,
    pub user: Option<String>,
    pub customer: Option<String>,
    pub provider: Option<String>,
    pub model: String,
    pub token_type: String,
    /// An adjustment to a closed period, billed in the first open one (`ChargeClass`
    /// `Correction`).
    pub correction: bool,
}

/// A row's amounts: the exact sum of its events' parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub nano_usd: i128,
    pub quantity: u128,
    pub events: u64,
}

/// The key of an event's line, billed on `day` (its own day, or the first open day for a
/// correction).
pub fn key_of(e: &UsageEvent, token_type: String, day: NaiveDate, correction: bool) -> ChargeKey {
    ChargeKey {
        day,
        organization: e.organization_id.clone(),
        team: e.team_id.clone(),
        key_id: e.key_id.clone(),
        key_alias: e.key_alias.clone(),
        user: e.user_id.clone(),
        customer: e.customer_id.clone(),
        provider: e.provider.clone(),
        model: e.requested_model.clone(),
        token_type,
        correction,
    }
}

/// Rows of charges, summed exactly.
#[derive(Clone, Debug, Default)]
pub struct Charges {
    pub rows: BTreeMap<ChargeKey, Amounts>,
}

impl Charges {
    /// Adds every line of `e` on its own day (`correction` false) or on `billed_on`.
    pub fn add(&mut self, e: &UsageEvent, billed_on: Option<NaiveDate>) {
        let day = billed_on.unwrap_or_else(|| e.day());
        for (token_type, tokens, nanos) in lines_of(e) {
            let row = self.rows.entry(key_of(e, token_type, day, billed_on.is_some())).or_default();
            row.nano_usd += i128::from(nanos);
            row.quantity += u128::from(tokens);
            row.events += 1;
        }
    }

    /// The exact total of every row, in nano-USD.
    pub fn total(&self) -> i128 {
        self.rows.values().map(|a| a.nano_usd).sum()
    }
}

/// Nano-USD as a decimal amount of USD with exactly 9 places (`-0.000000005`, `12.345678900`).
/// Exact: a nano-USD is 10⁻⁹ USD, so nothing is rounded.
pub fn decimal(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// The first instant of `day`, UTC.
pub fn start_of(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_schemas::event::cost_by_type::UNSPLIT;
    use tollgate_schemas::event::TokenTypeCost;
    use tollgate_schemas::NanoUsd;

    fn event(cost: i64, parts: &[(&str, u64, i64)]) -> UsageEvent {
        let mut e: UsageEvent =
            serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1_minimal.json")).unwrap();
        e.event_id = uuid::Uuid::now_v7();
        e.cost_nano_usd = NanoUsd(cost);
        e.prompt_tokens = 10;
        e.completion_tokens = 5;
        e.cost_by_token_type = parts
            .iter()
            .map(|(t, n, c)| TokenTypeCost { token_type: (*t).into(), tokens: *n, cost_nano_usd: NanoUsd(*c) })
            .collect();
        e
    }

    #[test]
    fn money_is_written_exactly_with_nine_places() {
        assert_eq!(decimal(0), "0.000000000");
        assert_eq!(decimal(1), "0.000000001");
        assert_eq!(decimal(12_345_678_900), "12.345678900");
        assert_eq!(decimal(-5), "-0.000000005");
        assert_eq!(decimal(i128::from(i64::MAX) * 16), "147573952589.676412912");
    }

    #[test]
    fn rows_sum_the_parts_of_each_token_type_exactly() {
        let mut charges = Charges::default();
        let a = event(7, &[("input", 10, 3), ("output", 5, 4)]);
        let b = event(9, &[("input", 1, 1), ("output", 2, 8)]);
        let older = event(11, &[]);
        let nothing = UsageEvent { prompt_tokens: 0, completion_tokens: 0, ..event(0, &[]) };
        for e in [&a, &b, &older, &nothing] {
            charges.add(e, None);
        }
        let got: Vec<(&str, i128, u128, u64)> =
            charges.rows.iter().map(|(k, v)| (k.token_type.as_str(), v.nano_usd, v.quantity, v.events)).collect();
        assert_eq!(got, vec![("input", 4, 11, 2), ("output", 12, 7, 2), (UNSPLIT, 11, 15, 1)]);
        assert_eq!(charges.total(), 7 + 9 + 11);
    }

    #[test]
    fn a_correction_is_a_row_of_its_own_on_the_day_it_is_billed() {
        let mut charges = Charges::default();
        let e = event(7, &[("input", 10, 7)]);
        let open = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        charges.add(&e, None);
        charges.add(&e, Some(open));
        let keys: Vec<(NaiveDate, bool)> = charges.rows.keys().map(|k| (k.day, k.correction)).collect();
        assert_eq!(keys, vec![(e.day(), false), (open, true)]);
    }

    #[test]
    fn months_and_days() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        assert_eq!(
            month_of(d),
            (NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(), NaiveDate::from_ymd_opt(2027, 1, 1).unwrap())
        );
        assert_eq!(start_of(d).to_rfc3339(), "2026-12-31T00:00:00+00:00");
    }
}
