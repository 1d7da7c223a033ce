//! Reconciliation: the event ledger (Layer 1) and the spend aggregates (Layer 2's read model) must
//! agree to the nano-dollar, at every scope and window, and the read model must equal the
//! authoritative `partition_spend` it is derived from, row by row. `compare` and
//! `compare_read_model` are the pure core; `tollgate-ledger-consumer reconcile` feeds them the
//! full scans of the tables at the end of this module (`CqlLedger::scan_*`) and exits non-zero
//! on any difference. Behind the feature `reconcile`: the gateway's embedded mode does not
//! need it.
//!
//! Dead-lettered events are not counted: an event refused while its batch was being written may
//! have left its Layer 1 row (docs/security.md), and [`without_dead_letters`] leaves such rows out
//! of the event ledger's totals; `reconcile` reports how many events were refused, by reason.
//!
//! The key index (`usage_events_by_key`) must hold exactly one row per event of the event
//! ledger, pointing at it ([`compare_key_index`]); rows of dead-lettered events may be there or
//! not (the refusal may have come before or after them).

use crate::fold::rows_of;
use crate::ledger::{query_err, CqlLedger, LedgerError};
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use tollgate_schemas::UsageEvent;

pub use crate::scan::{counted_records, without_dead_letters, DeadLetterRow, RecordedEvent};

/// A row of the key index, as reconcile reads it and as an event of the event ledger implies it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyIndexEntry {
    pub key_id: String,
    pub day: chrono::NaiveDate,
    pub hour: i16,
    pub event_id: uuid::Uuid,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub customer_id: Option<String>,
    pub model: String,
}

impl KeyIndexEntry {
    /// The row the consumer writes for `e`.
    pub fn of(e: &UsageEvent) -> KeyIndexEntry {
        KeyIndexEntry {
            key_id: e.key_id.clone(),
            day: e.day(),
            hour: e.hour(),
            event_id: e.event_id,
            team_id: e.team_id.clone(),
            user_id: e.user_id.clone(),
            customer_id: e.customer_id.clone(),
            model: e.requested_model.clone(),
        }
    }
}

/// Where the key index and the event ledger disagree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndexDifference {
    /// Rows the events imply that the index lacks (or holds with other values).
    pub missing: Vec<KeyIndexEntry>,
    /// Index rows no event implies: they point at nothing, or at an event with other values.
    pub extra: Vec<KeyIndexEntry>,
}

impl KeyIndexDifference {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }
}

/// Compares the key index with the events of the event ledger (`counted`, without dead letters).
/// Rows of `excluded` events (dead-lettered ones) are allowed either way.
pub fn compare_key_index(
    counted: &[&UsageEvent],
    excluded: &HashSet<uuid::Uuid>,
    index: &[KeyIndexEntry],
) -> KeyIndexDifference {
    let expected: std::collections::BTreeSet<KeyIndexEntry> = counted.iter().map(|e| KeyIndexEntry::of(e)).collect();
    let actual: std::collections::BTreeSet<&KeyIndexEntry> = index.iter().collect();
    KeyIndexDifference {
        missing: expected.iter().filter(|e| !actual.contains(e)).cloned().collect(),
        extra: actual
            .into_iter()
            .filter(|e| !expected.contains(*e) && !excluded.contains(&e.event_id))
            .cloned()
            .collect(),
    }
}

/// Dead letters per reason code.
pub fn dead_letters_by_reason(dead: &[DeadLetterRow]) -> BTreeMap<&str, usize> {
    let mut by_reason = BTreeMap::new();
    for d in dead {
        *by_reason.entry(d.reason.as_str()).or_default() += 1;
    }
    by_reason
}

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

// === full scans of the Cassandra/ScyllaDB ledger ===

/// The tables as `reconcile` reads them: full scans, an audit tool and not a hot path.
impl CqlLedger {
    /// Every event in the event ledger with the `(partition, offset)` it was recorded at (a
    /// full scan: an audit tool, not a hot path).
    pub async fn scan_events(&self, keyspace: &str) -> Result<Vec<RecordedEvent>, LedgerError> {
        crate::scan::events(self.session(), keyspace).await
    }

    /// Every dead letter of the keyspace, of every topic (a full scan: an audit tool).
    pub async fn scan_dead_letters(&self, keyspace: &str) -> Result<Vec<DeadLetterRow>, LedgerError> {
        crate::scan::dead_letters(self.session(), keyspace).await
    }

    /// Every row of a Layer 2 table (`spend_aggregates` or `partition_spend`), per
    /// `(scope, window, partition)` (a full scan: an audit tool, not a hot path).
    pub async fn scan_rows(
        &self,
        keyspace: &str,
        table: &str,
    ) -> Result<std::collections::BTreeMap<RowId, Totals>, LedgerError> {
        let mut rows = self
            .full_scan::<(Option<String>, Option<String>, i32, Option<i64>, Option<i64>)>(format!(
                "SELECT scope_id, window_id, partition, spent_nano_usd, events FROM {keyspace}.{table}"
            ))
            .await?;
        let mut totals = std::collections::BTreeMap::new();
        while let Some(row) = rows.next().await {
            let (scope, window, partition, spent, events) = row.map_err(query_err)?;
            // A bucket of partition_spend that has a fence and no rows yet shows as one row of
            // nulls: nothing to count.
            let (Some(scope), Some(window)) = (scope, window) else { continue };
            let t = Totals { spent: spent.unwrap_or(0), events: events.unwrap_or(0) };
            totals.insert((scope, window, partition), t);
        }
        Ok(totals)
    }

    /// Every row of the daily read model (`spend_daily`), as the `spend_aggregates` row it copies:
    /// `(scope, d:<day>, partition)` (a full scan: an audit tool).
    pub async fn scan_daily_rows(
        &self,
        keyspace: &str,
    ) -> Result<std::collections::BTreeMap<RowId, Totals>, LedgerError> {
        let mut rows = self
            .full_scan::<(String, i32, String, Option<i64>, Option<i64>)>(format!(
                "SELECT day, partition, scope_id, spent_nano_usd, events FROM {keyspace}.spend_daily"
            ))
            .await?;
        let mut totals = std::collections::BTreeMap::new();
        while let Some(row) = rows.next().await {
            let (day, partition, scope, spent, events) = row.map_err(query_err)?;
            let t = Totals { spent: spent.unwrap_or(0), events: events.unwrap_or(0) };
            totals.insert((scope, format!("d:{day}"), partition), t);
        }
        Ok(totals)
    }

    /// Every row of the key index (a full scan: an audit tool).
    pub async fn scan_key_index(&self, keyspace: &str) -> Result<Vec<KeyIndexEntry>, LedgerError> {
        type Cells = (
            String,
            chrono::NaiveDate,
            i16,
            uuid::Uuid,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let mut rows = self
            .full_scan::<Cells>(format!(
                "SELECT key_id, day, hour, event_id, team_id, user_id, customer_id, requested_model \
                 FROM {keyspace}.usage_events_by_key"
            ))
            .await?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next().await {
            let (key_id, day, hour, event_id, team_id, user_id, customer_id, model) = row.map_err(query_err)?;
            entries.push(KeyIndexEntry {
                key_id,
                day,
                hour,
                event_id,
                team_id,
                user_id,
                customer_id,
                model: model.unwrap_or_default(),
            });
        }
        Ok(entries)
    }
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
    fn dead_lettered_events_leave_the_event_ledger_totals() {
        let event = |cost| {
            let mut e: UsageEvent =
                serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1_minimal.json")).unwrap();
            e.event_id = uuid::Uuid::now_v7();
            e.cost_nano_usd = tollgate_schemas::NanoUsd(cost);
            e
        };
        let (good, refused, copy) = (event(10), event(1_000), event(5));
        let events = vec![
            RecordedEvent { event: good.clone(), partition: 0, offset: 1 },
            RecordedEvent { event: refused.clone(), partition: 0, offset: 2 },
            RecordedEvent { event: copy.clone(), partition: 1, offset: 7 },
        ];
        let dead = vec![
            DeadLetterRow {
                partition: 0,
                offset: 2,
                event_id: Some(refused.event_id),
                reason: "refused_by_database".into(),
            },
            // A copy of `copy` refused elsewhere does not hide the copy that was folded.
            DeadLetterRow { partition: 1, offset: 9, event_id: Some(copy.event_id), reason: "schema_violation".into() },
            DeadLetterRow { partition: 2, offset: 3, event_id: None, reason: "not_json".into() },
        ];
        let kept = without_dead_letters(&events, &dead);
        assert_eq!(kept, vec![&good, &copy]);
        let totals = event_ledger_totals(kept, &Range::default());
        assert_eq!(totals[&(format!("key/{}", good.key_id), "all".to_owned())], t(15, 2));
        let by_reason = dead_letters_by_reason(&dead);
        assert_eq!(
            by_reason.into_iter().collect::<Vec<_>>(),
            vec![("not_json", 1), ("refused_by_database", 1), ("schema_violation", 1)]
        );
    }

    #[test]
    fn the_key_index_must_hold_exactly_the_events() {
        let event = |key: &str| {
            let mut e: UsageEvent =
                serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1_minimal.json")).unwrap();
            e.event_id = uuid::Uuid::now_v7();
            e.key_id = key.into();
            e
        };
        let (a, b, refused) = (event("k1"), event("k2"), event("k1"));
        let counted = vec![&a, &b];
        let excluded = HashSet::from([refused.event_id]);
        let mut index = vec![KeyIndexEntry::of(&a), KeyIndexEntry::of(&b), KeyIndexEntry::of(&refused)];
        assert!(compare_key_index(&counted, &excluded, &index).is_empty(), "a dead letter's row may stay");
        assert!(compare_key_index(&counted, &excluded, &index[..2]).is_empty(), "or be absent");
        index[1].customer_id = Some("someone-else".into());
        let stray = KeyIndexEntry::of(&event("k3"));
        index.push(stray.clone());
        let diff = compare_key_index(&counted, &excluded, &index[1..]);
        assert_eq!(diff.missing, vec![KeyIndexEntry::of(&a), KeyIndexEntry::of(&b)]);
        assert_eq!(diff.extra.len(), 2);
        assert!(diff.extra.contains(&stray) && diff.extra.contains(&index[1]));
    }

    #[test]
    fn a_range_selects_days() {
        let r = Range { from: Some("2026-11-01".into()), to: Some("2026-11-30".into()) };
        assert!(r.includes("d:2026-11-15") && !r.includes("d:2026-12-01") && !r.includes("all"));
        assert!(Range::default().includes("all"));
    }
}
