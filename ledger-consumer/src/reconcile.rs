//! Reconciliation: the event ledger (Layer 1) and the spend aggregates (Layer 2's read model) must
//! agree to the nano-dollar, at every scope and window, and the read model must equal the
//! authoritative `partition_spend` it is derived from, row by row. `compare` and
//! `compare_read_model` are the pure core; `tollgate-ledger-consumer reconcile` feeds them full
//! scans of the tables and exits non-zero on any difference.

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

/// `(scope, window, Kafka partition)`: one row of Layer 2.
pub type RowId = (String, String, i32);

/// A row where the read model differs from the authoritative ledger it is derived from: its
/// copies lag (a consumer between its conditional write and its copies) or were lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaggingRow {
    pub row: RowId,
    pub authoritative: Totals,
    pub read_model: Totals,
}

/// Every row where `read_model` differs from `authoritative`, including rows present on one
/// side only.
pub fn compare_read_model(
    authoritative: &BTreeMap<RowId, Totals>,
    read_model: &BTreeMap<RowId, Totals>,
) -> Vec<LaggingRow> {
    let keys: std::collections::BTreeSet<&RowId> = authoritative.keys().chain(read_model.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let a = authoritative.get(k).copied().unwrap_or_default();
            let b = read_model.get(k).copied().unwrap_or_default();
            (a != b).then(|| LaggingRow { row: k.clone(), authoritative: a, read_model: b })
        })
        .collect()
}

/// Sums rows over partitions per `(scope, window)`.
pub fn scope_totals(rows: &BTreeMap<RowId, Totals>) -> BTreeMap<(String, String), Totals> {
    let mut totals: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for ((scope, window, _), t) in rows {
        let sum = totals.entry((scope.clone(), window.clone())).or_default();
        sum.spent = sum.spent.saturating_add(t.spent);
        sum.events += t.events;
    }
    totals
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
    fn a_lagging_read_model_is_reported_per_row() {
        let row = |s: &str, p| (s.to_owned(), "all".to_owned(), p);
        let authoritative = BTreeMap::from([(row("key/a", 0), t(10, 1)), (row("key/a", 1), t(5, 1))]);
        let read_model = BTreeMap::from([(row("key/a", 0), t(10, 1))]);
        let lag = compare_read_model(&authoritative, &read_model);
        assert_eq!(lag, vec![LaggingRow { row: row("key/a", 1), authoritative: t(5, 1), read_model: t(0, 0) }]);
        assert!(compare_read_model(&authoritative, &authoritative).is_empty());
        assert_eq!(scope_totals(&authoritative)[&("key/a".to_owned(), "all".to_owned())], t(15, 2));
    }

    #[test]
    fn a_range_selects_days() {
        let r = Range { from: Some("2026-11-01".into()), to: Some("2026-11-30".into()) };
        assert!(r.includes("d:2026-11-15") && !r.includes("d:2026-12-01") && !r.includes("all"));
        assert!(Range::default().includes("all"));
    }
}
