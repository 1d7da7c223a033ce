//! Reconciliation: the event ledger (Layer 1) and the spend aggregates (Layer 2) must agree to the
//! nano-dollar, at every scope and window. `compare` is the pure core; `tollgate-ledger-consumer
//! reconcile` feeds it full scans of both tables and exits non-zero on any difference.

use crate::fold::rows_of;
use std::collections::BTreeMap;
use tollgate_schemas::UsageEvent;

/// Totals of one `(scope, window)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub spent: i64,
    pub events: i64,
}

/// A `(scope, window)` where the layers disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub scope: String,
    pub window: String,
    pub event_ledger: Totals,
    pub aggregates: Totals,
}

/// Which windows to compare: `d:` days within `[from, to]` (inclusive, `YYYY-MM-DD`) and, when
/// no range is given, every window including all-time and months.
#[derive(Clone, Debug, Default)]
pub struct Range {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl Range {
    pub fn includes(&self, window: &str) -> bool {
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        let Some(day) = window.strip_prefix("d:") else { return false };
        self.from.as_deref().is_none_or(|f| day >= f) && self.to.as_deref().is_none_or(|t| day <= t)
    }
}

/// Sums events per row as the fold would.
pub fn event_ledger_totals<'a>(
    events: impl IntoIterator<Item = &'a UsageEvent>,
    range: &Range,
) -> BTreeMap<(String, String), Totals> {
    let mut totals: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for e in events {
        for (scope, window) in rows_of(e) {
            if range.includes(&window) {
                let t = totals.entry((scope, window)).or_default();
                t.spent = t.spent.saturating_add(e.cost_nano_usd.0);
                t.events += 1;
            }
        }
    }
    totals
}

/// Every `(scope, window)` where the two sides differ, including rows present on one side only.
pub fn compare(
    event_ledger: &BTreeMap<(String, String), Totals>,
    aggregates: &BTreeMap<(String, String), Totals>,
) -> Vec<Difference> {
    let keys: std::collections::BTreeSet<&(String, String)> = event_ledger.keys().chain(aggregates.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let a = event_ledger.get(k).copied().unwrap_or_default();
            let b = aggregates.get(k).copied().unwrap_or_default();
            (a != b).then(|| Difference { scope: k.0.clone(), window: k.1.clone(), event_ledger: a, aggregates: b })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(spent: i64, events: i64) -> Totals {
        Totals { spent, events }
    }

    #[test]
    fn reports_every_difference_both_ways() {
        let l1 =
            BTreeMap::from([(("key/a".into(), "all".into()), t(10, 1)), (("key/b".into(), "all".into()), t(5, 1))]);
        let l2 =
            BTreeMap::from([(("key/a".into(), "all".into()), t(10, 1)), (("key/c".into(), "all".into()), t(1, 1))]);
        let diffs = compare(&l1, &l2);
        assert_eq!(diffs.len(), 2);
        assert_eq!(diffs[0].scope, "key/b");
        assert_eq!(diffs[1].aggregates, t(1, 1));
        assert!(compare(&l1, &l1).is_empty());
    }

    #[test]
    fn a_range_selects_days() {
        let r = Range { from: Some("2026-11-01".into()), to: Some("2026-11-30".into()) };
        assert!(r.includes("d:2026-11-15") && !r.includes("d:2026-12-01") && !r.includes("all"));
        assert!(Range::default().includes("all"));
    }
}
