//! Spend over a range of days summed per scope (`SpendSource::range`): what a report by team
//! over a month needs, one total per scope, rather than one per scope and day. With the
//! closed-day cache (`CqlSpend::with_closed_day_cache`), the sums of the range's closed days
//! (before today, UTC) are kept as long as the closed days' rows are: a range read again sums
//! today's rows into them, a few thousand additions instead of a month of rows. Never holds
//! today's rows; sums only what `daily` reads, so the answers are the same to the nano-dollar.

use super::daily::DailyQuery;
use super::{CqlSpend, DailyTotals, SpendTotal, StoreError};
use chrono::{NaiveDate, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Totals per scope over a range of days: (scope, total), in no particular order.
pub type RangeTotals = Vec<(String, SpendTotal)>;

/// Most scopes the range cache holds, all ranges together (a scope's sum is about 100 bytes:
/// some 20 MB at most). A month of every team at 1,000 teams and 3 models is 4,000 scopes.
pub const MAX_CACHED_RANGE_SCOPES: u64 = 200_000;

/// The closed days of one range read: kind, scope, first and last day (the last before today).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct RangeKey {
    kind: String,
    scope: Option<String>,
    from: NaiveDate,
    to: NaiveDate,
}

/// Closed days' sums per scope, bounded by scopes and by age.
pub(super) type ClosedRanges = moka::sync::Cache<RangeKey, Arc<HashMap<String, SpendTotal>>>;

pub(super) fn closed_ranges(ttl: Duration) -> ClosedRanges {
    moka::sync::Cache::builder()
        .max_capacity(MAX_CACHED_RANGE_SCOPES)
        .weigher(|_: &RangeKey, sums: &Arc<HashMap<String, SpendTotal>>| {
            u32::try_from(sums.len()).unwrap_or(u32::MAX).max(1)
        })
        .time_to_live(ttl)
        .build()
}

/// `daily`'s rows summed over their days: one total per scope.
pub fn sum_days(rows: DailyTotals) -> RangeTotals {
    let mut sums: HashMap<String, SpendTotal> = HashMap::new();
    for (scope, _, t) in rows {
        sums.entry(scope).or_default().add(&t);
    }
    sums.into_iter().collect()
}

/// Adds `t` to `scope`'s sum, allocating the scope's name only the first time it is seen.
fn add_to(sums: &mut HashMap<String, SpendTotal>, scope: &str, t: &SpendTotal) {
    match sums.get_mut(scope) {
        Some(sum) => sum.add(t),
        None => {
            sums.insert(scope.to_owned(), *t);
        }
    }
}

impl CqlSpend {
    /// Every scope's total over `query`'s days: the closed days' sums from the range cache when
    /// this range's were summed within the TTL, today's (and any later day's) rows read afresh.
    pub(super) async fn range_totals(&self, query: &DailyQuery) -> Result<RangeTotals, StoreError> {
        let today = Utc::now().date_naive();
        let mut sums = HashMap::new();
        let mut taken = 0usize;
        if let Some(last_closed) = today.pred_opt().map(|d| d.min(query.to)).filter(|d| *d >= query.from) {
            let closed = DailyQuery { to: last_closed, ..query.clone() };
            let key =
                RangeKey { kind: closed.kind.clone(), scope: closed.scope.clone(), from: closed.from, to: last_closed };
            let kept = self.closed_ranges.as_ref().and_then(|cache| cache.get(&key));
            let closed_sums = match kept {
                Some(kept) => kept,
                None => {
                    let mut fresh = HashMap::new();
                    self.each_row(&closed, today, &mut taken, |_, scope, t| add_to(&mut fresh, scope, &t)).await?;
                    let fresh = Arc::new(fresh);
                    if let Some(cache) = &self.closed_ranges {
                        cache.insert(key, fresh.clone());
                    }
                    fresh
                }
            };
            sums = (*closed_sums).clone();
        }
        if query.to >= today {
            let open = DailyQuery { from: query.from.max(today), ..query.clone() };
            self.each_row(&open, today, &mut taken, |_, scope, t| add_to(&mut sums, scope, &t)).await?;
        }
        Ok(sums.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(spent: i64, events: i64) -> SpendTotal {
        SpendTotal { spent: crate::NanoUsd(spent), events, prompt_tokens: 2 * events, completion_tokens: events }
    }

    #[test]
    fn days_sum_per_scope_to_the_nano_dollar() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let rows = vec![
            ("team/a".to_owned(), d, t(1_000_000_001, 1)),
            ("team/a".to_owned(), d.succ_opt().unwrap(), t(2, 2)),
            ("team/a/model/m".to_owned(), d, t(1_000_000_001, 1)),
            ("team/b".to_owned(), d, t(7, 3)),
        ];
        let mut sums = sum_days(rows);
        sums.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            sums,
            [
                ("team/a".to_owned(), t(1_000_000_003, 3)),
                ("team/a/model/m".to_owned(), t(1_000_000_001, 1)),
                ("team/b".to_owned(), t(7, 3)),
            ]
        );
    }

    #[test]
    fn a_scope_is_named_once_however_many_rows_it_has() {
        let mut sums = HashMap::new();
        add_to(&mut sums, "team/a", &t(1, 1));
        add_to(&mut sums, "team/a", &t(2, 1));
        add_to(&mut sums, "team/ab", &t(4, 1));
        assert_eq!(sums.len(), 2);
        assert_eq!(sums["team/a"], t(3, 2));
    }
}
