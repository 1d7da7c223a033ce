//! The ledger fold: pure arithmetic from a batch of one partition's events to new Layer 2 row
//! states (DESIGN §3). No I/O here, so property tests can hammer it.
//!
//! Invariant: an event counts in a row only if its offset is greater than the row's
//! `applied_offset`. Replaying any prefix or suffix of a partition therefore never counts an
//! event twice, whatever batch boundaries the replay uses.

use std::collections::BTreeMap;
use tollgate_schemas::ledger::{budget_windows_of, scopes_of, windows_of};
use tollgate_schemas::money::MoneyOverflow;
use tollgate_schemas::{NanoUsd, UsageEvent};

/// A decoded usage event and where it sits in its Kafka partition.
#[derive(Clone, Debug)]
pub struct Message {
    pub offset: i64,
    pub event: UsageEvent,
}

/// `(scope_id, window_id)`; the partition is implied by the batch.
pub type RowKey = (String, String);

/// A Layer 2 row's content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowState {
    pub spent: NanoUsd,
    pub events: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Last offset of this partition folded into the row; -1 for a row that does not exist yet.
    pub applied_offset: i64,
}

impl RowState {
    pub const NEW: RowState =
        RowState { spent: NanoUsd::ZERO, events: 0, prompt_tokens: 0, completion_tokens: 0, applied_offset: -1 };
}

/// Every row an event counts in.
pub fn rows_of(event: &UsageEvent) -> Vec<RowKey> {
    let windows = windows_of(event);
    let mut rows = Vec::new();
    for scope in scopes_of(event) {
        for w in windows.iter().cloned().chain(budget_windows_of(event, &scope)) {
            rows.push((scope.clone(), w));
        }
    }
    rows
}

/// Every row the batch touches, in a stable order, with the messages that count in it (in
/// offset order). Each message's rows are computed once.
pub fn rows_by_key(batch: &[Message]) -> BTreeMap<RowKey, Vec<&Message>> {
    let mut rows: BTreeMap<RowKey, Vec<&Message>> = BTreeMap::new();
    for m in batch {
        for key in rows_of(&m.event) {
            rows.entry(key).or_default().push(m);
        }
    }
    rows
}

/// Splits a partition's batch into the events to count and the duplicates to skip.
///
/// An event counts at its lowest offset in its partition: a later copy (published twice, e.g.
/// replayed from a gateway's spool after a crash) is a duplicate. `seen` maps event ids already
/// in the event ledger to the `(partition, offset)` they were first recorded at. A copy recorded
/// at this very offset is a replay of this message, not a duplicate: it stays, and the row fence
/// decides whether it still counts.
pub fn select_fresh(
    batch: &[Message],
    partition: i32,
    seen: &std::collections::HashMap<uuid::Uuid, (i32, i64)>,
) -> (Vec<Message>, usize) {
    let mut first_in_batch: std::collections::HashSet<uuid::Uuid> = std::collections::HashSet::new();
    let mut fresh = Vec::with_capacity(batch.len());
    let mut duplicates = 0;
    for m in batch {
        let earlier_elsewhere = match seen.get(&m.event.event_id) {
            Some(&(p, o)) => p != partition || o < m.offset,
            None => false,
        };
        if earlier_elsewhere || !first_in_batch.insert(m.event.event_id) {
            duplicates += 1;
        } else {
            fresh.push(m.clone());
        }
    }
    (fresh, duplicates)
}

/// The row after folding its messages (from [`rows_by_key`]) into `current`, or `None` when
/// none is beyond `applied_offset` (a replay).
pub fn fold_row(current: RowState, messages: &[&Message]) -> Result<Option<RowState>, MoneyOverflow> {
    let mut next = current;
    let mut changed = false;
    for m in messages {
        if m.offset <= current.applied_offset {
            continue;
        }
        next.spent = next.spent.checked_add(m.event.cost_nano_usd)?;
        next.events = next.events.checked_add(1).ok_or(MoneyOverflow)?;
        next.prompt_tokens =
            next.prompt_tokens.saturating_add(i64::try_from(m.event.prompt_tokens).unwrap_or(i64::MAX));
        next.completion_tokens =
            next.completion_tokens.saturating_add(i64::try_from(m.event.completion_tokens).unwrap_or(i64::MAX));
        next.applied_offset = next.applied_offset.max(m.offset);
        changed = true;
    }
    Ok(changed.then_some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn event(key: &str, team: Option<&str>, cost: i64) -> UsageEvent {
        UsageEvent {
            version: 1,
            event_id: uuid::Uuid::now_v7(),
            occurred_at: Utc::now(),
            gateway_id: "gw".into(),
            request_id: "r".into(),
            key_id: key.into(),
            key_alias: None,
            team_id: team.map(str::to_owned),
            user_id: None,
            customer_id: None,
            organization_id: None,
            requested_model: "m".into(),
            served_model: None,
            provider: None,
            deployment: None,
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0,
            cost_nano_usd: NanoUsd(cost),
            latency_ms: 1,
            status: 200,
            error_type: None,
            stream: false,
            partial: false,
            estimated: false,
            budget_windows: Default::default(),
        }
    }

    /// Folds `messages` in batches of the given sizes into an in-memory ledger.
    fn fold_all(messages: &[Message], batch_sizes: &[usize], ledger: &mut HashMap<RowKey, RowState>) {
        let mut rest = messages;
        let mut sizes = batch_sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            let (batch, tail) = rest.split_at(n);
            for (key, messages) in rows_by_key(batch) {
                let current = ledger.get(&key).copied().unwrap_or(RowState::NEW);
                if let Some(next) = fold_row(current, &messages).unwrap() {
                    ledger.insert(key, next);
                }
            }
            rest = tail;
        }
    }

    #[test]
    fn counts_key_and_team_rows() {
        let batch = vec![
            Message { offset: 0, event: event("k1", Some("t"), 100) },
            Message { offset: 1, event: event("k2", Some("t"), 50) },
        ];
        let mut ledger = HashMap::new();
        fold_all(&batch, &[10], &mut ledger);
        assert_eq!(ledger[&("key/k1".to_owned(), "all".to_owned())].spent, NanoUsd(100));
        assert_eq!(ledger[&("key/k1/model/m".to_owned(), "all".to_owned())].spent, NanoUsd(100));
        assert_eq!(ledger[&("team/t".to_owned(), "all".to_owned())].spent, NanoUsd(150));
        assert_eq!(ledger[&("team/t".to_owned(), "all".to_owned())].applied_offset, 1);
    }

    #[test]
    fn duplicates_count_once_at_their_lowest_offset() {
        let e = event("k1", None, 100);
        let batch = vec![
            Message { offset: 10, event: e.clone() },
            Message { offset: 11, event: event("k1", None, 5) },
            Message { offset: 12, event: e.clone() },
        ];
        let (fresh, dups) = select_fresh(&batch, 0, &HashMap::new());
        assert_eq!((fresh.len(), dups), (2, 1));
        // A replay of the same messages: offset 10 is the recorded copy, 12 is still a duplicate.
        let seen = HashMap::from([(e.event_id, (0, 10))]);
        let (fresh, dups) = select_fresh(&batch, 0, &seen);
        assert_eq!((fresh.iter().map(|m| m.offset).collect::<Vec<_>>(), dups), (vec![10, 11], 1));
        // The copy at offset 12 alone, after 10 was recorded: a duplicate.
        let (fresh, dups) = select_fresh(&batch[2..], 0, &seen);
        assert_eq!((fresh.len(), dups), (0, 1));
    }

    #[test]
    fn a_replayed_batch_changes_nothing() {
        let batch = vec![Message { offset: 7, event: event("k1", None, 100) }];
        let rows = rows_by_key(&batch);
        let messages = &rows[&("key/k1".to_owned(), "all".to_owned())];
        let once = fold_row(RowState::NEW, messages).unwrap().unwrap();
        assert_eq!(fold_row(once, messages).unwrap(), None);
    }

    proptest! {
        /// Any batching, followed by a full replay with any other batching, gives the same totals
        /// as summing the events directly.
        #[test]
        fn replays_never_double_count(
            costs in proptest::collection::vec((0usize..4, 0i64..1_000_000), 1..60),
            first in proptest::collection::vec(1usize..9, 1..5),
            second in proptest::collection::vec(1usize..9, 1..5),
            crash_after in 0usize..60,
        ) {
            let messages: Vec<Message> = costs
                .iter()
                .enumerate()
                .map(|(i, (k, c))| Message { offset: i as i64 * 3, event: event(&format!("k{k}"), Some("t"), *c) })
                .collect();
            let mut ledger = HashMap::new();
            // A consumer that got through a prefix, then a replay of everything from offset 0.
            let prefix = &messages[..crash_after.min(messages.len())];
            fold_all(prefix, &first, &mut ledger);
            fold_all(&messages, &second, &mut ledger);
            let team_total: i64 = costs.iter().map(|(_, c)| c).sum();
            prop_assert_eq!(ledger[&("team/t".to_owned(), "all".to_owned())].spent, NanoUsd(team_total));
            for k in 0..4 {
                let expected: i64 = costs.iter().filter(|(kk, _)| *kk == k).map(|(_, c)| c).sum();
                let got = ledger.get(&(format!("key/k{k}"), "all".to_owned())).map_or(0, |r| r.spent.0);
                prop_assert_eq!(got, expected);
            }
        }
    }
}
