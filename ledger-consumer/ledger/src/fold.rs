//! The ledger fold: pure arithmetic from a batch of one partition's events to new Layer 2 row
//! states (docs/design.md §4.4). No I/O here, so property tests can hammer it.
//!
//! The rows a Kafka partition owns are kept in buckets (`schemas::ledger::ledger_bucket`), each
//! with a fence: every event of the partition with an offset up to the fence that maps into the
//! bucket is folded into its rows. An event counts in a row only if its offset is greater than
//! the bucket's fence (and than the row's own `applied_offset`, which embedded ledgers from before
//! buckets still carry). A bucket moves from one fence to the next in [`BucketStep`]s. Replaying
//! any prefix or suffix of a partition therefore never counts an event twice, whatever batch
//! boundaries the replay uses.

use std::collections::{BTreeMap, HashMap, HashSet};
use tollgate_schemas::ledger::{budget_windows_of, ledger_bucket, scopes_of, windows_of};
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

/// The rows a batch touches, grouped by bucket: `bucket -> row -> messages` (offset order).
pub fn rows_by_bucket(batch: &[Message]) -> BTreeMap<i32, BTreeMap<RowKey, Vec<&Message>>> {
    let mut buckets: BTreeMap<i32, BTreeMap<RowKey, Vec<&Message>>> = BTreeMap::new();
    for (key, messages) in rows_by_key(batch) {
        buckets.entry(ledger_bucket(&key.0, &key.1)).or_default().insert(key, messages);
    }
    buckets
}

/// What a ledger holds of one bucket: its fence (`None` before its first write) and the rows
/// read from it. A row's `applied_offset` is the fence its values reflect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketState {
    pub fence: Option<i64>,
    pub rows: HashMap<RowKey, RowState>,
}

impl BucketState {
    /// The bucket after `step` was written.
    pub fn advance(&mut self, step: &BucketStep) {
        self.fence = Some(step.fence);
        for (key, row) in &step.rows {
            self.rows.insert(key.clone(), *row);
        }
    }
}

/// One conditional write of a bucket: from fence `expected` to `fence`, with the new state of
/// every row it changes (their `applied_offset` is `fence`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketStep {
    pub expected: Option<i64>,
    pub fence: i64,
    pub rows: Vec<(RowKey, RowState)>,
}

/// The messages of a bucket's rows (from [`rows_by_bucket`]) that are beyond its fence, split in
/// offset order into consecutive chunks that each touch at most `max_rows` rows (a message
/// touching more rows on its own gets a chunk of its own). Each chunk becomes one
/// [`BucketStep`]; an empty result means the bucket already holds every message (a replay).
pub fn pending_chunks<'a>(
    rows: &BTreeMap<RowKey, Vec<&'a Message>>,
    fence: Option<i64>,
    max_rows: usize,
) -> Vec<BTreeMap<RowKey, Vec<&'a Message>>> {
    let fence = fence.unwrap_or(-1);
    // (offset, row) pairs beyond the fence, in offset order.
    let mut touches: Vec<(i64, &RowKey, &'a Message)> = rows
        .iter()
        .flat_map(|(key, messages)| messages.iter().filter(|m| m.offset > fence).map(move |m| (m.offset, key, *m)))
        .collect();
    touches.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut chunks: Vec<BTreeMap<RowKey, Vec<&'a Message>>> = Vec::new();
    let mut current: BTreeMap<RowKey, Vec<&'a Message>> = BTreeMap::new();
    let mut i = 0;
    while i < touches.len() {
        // All touches of one message go into the same chunk.
        let offset = touches[i].0;
        let end = touches[i..].iter().position(|t| t.0 != offset).map_or(touches.len(), |n| i + n);
        let message_rows = &touches[i..end];
        let new_rows = message_rows.iter().filter(|t| !current.contains_key(t.1)).count();
        if !current.is_empty() && current.len() + new_rows > max_rows {
            chunks.push(std::mem::take(&mut current));
        }
        for (_, key, message) in message_rows {
            current.entry((*key).clone()).or_default().push(message);
        }
        i = end;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The conditional write that folds `chunk` (from [`pending_chunks`]) into `state`: the new
/// fence is the chunk's last offset. `None` when nothing in it is beyond the fences.
pub fn fold_step(
    state: &BucketState,
    chunk: &BTreeMap<RowKey, Vec<&Message>>,
) -> Result<Option<BucketStep>, MoneyOverflow> {
    let bucket_fence = state.fence.unwrap_or(-1);
    let Some(fence) = chunk.values().flatten().map(|m| m.offset).max().filter(|last| *last > bucket_fence) else {
        return Ok(None);
    };
    let mut rows = Vec::with_capacity(chunk.len());
    for (key, messages) in chunk {
        let current = state.rows.get(key).copied().unwrap_or(RowState::NEW);
        // A row read from a bucket carries the fence it reflects; one from an embedded ledger
        // older than buckets carries its own, possibly beyond the bucket's.
        let base = RowState { applied_offset: current.applied_offset.max(bucket_fence), ..current };
        if let Some(next) = fold_row(base, messages)? {
            rows.push((key.clone(), RowState { applied_offset: fence, ..next }));
        }
    }
    Ok(Some(BucketStep { expected: state.fence, fence, rows }))
}

/// What [`select`] made of a partition's batch.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The events to fold, in offset order.
    pub fresh: Vec<Message>,
    /// Copies of events already counted at a lower offset.
    pub duplicates: usize,
    /// Events the ledger must refuse: adding one would overflow one of its rows.
    pub overflowing: Vec<Message>,
}

/// Splits a partition's batch (ascending offsets) into the events to count, the duplicates to
/// skip and the events that would overflow a row. Each message comes with its rows
/// ([`rows_of`], computed once by the caller).
///
/// An event counts at its lowest offset in its partition where a copy of it was accepted: a
/// later copy (published twice, e.g. replayed from a gateway's spool after a crash) is a
/// duplicate. `seen` maps event ids already in the event ledger to the `(partition, offset)`
/// they were first recorded at. A copy recorded at this very offset is a replay of this message,
/// not a duplicate: it stays, and the bucket fence decides whether it still counts.
///
/// An event overflows when adding it to one of its rows, as the events before it in the
/// partition left that row, does not fit (`states` holds the rows of the touched buckets as read
/// before any write of the batch). Events are weighed in offset order, a refused event is not
/// counted anywhere and does not hide a later copy of itself, so which events overflow depends on
/// the partition's events alone, never on where batches begin or end. Rows that already hold an
/// event (its offset is at most their fence: a replay) are not weighed again for it.
pub fn select<'a>(
    batch: impl IntoIterator<Item = (&'a Message, &'a [RowKey])>,
    partition: i32,
    seen: &HashMap<uuid::Uuid, (i32, i64)>,
    states: &HashMap<i32, BucketState>,
) -> Selection {
    let mut accepted: HashSet<uuid::Uuid> = HashSet::new();
    // Rows as the events accepted so far leave them.
    let mut running: HashMap<&RowKey, RowState> = HashMap::new();
    let mut out = Selection::default();
    for (m, rows) in batch {
        let earlier_elsewhere = match seen.get(&m.event.event_id) {
            Some(&(p, o)) => p != partition || o < m.offset,
            None => false,
        };
        if earlier_elsewhere || accepted.contains(&m.event.event_id) {
            out.duplicates += 1;
            continue;
        }
        match added(m, rows, states, &running) {
            Ok(rows) => {
                running.extend(rows);
                accepted.insert(m.event.event_id);
                out.fresh.push(m.clone());
            }
            Err(MoneyOverflow) => out.overflowing.push(m.clone()),
        }
    }
    out
}

/// The rows of `m` (`keys`) it still changes (beyond their fences), with `m` added; or the
/// overflow.
fn added<'a>(
    m: &Message,
    keys: &'a [RowKey],
    states: &HashMap<i32, BucketState>,
    running: &HashMap<&RowKey, RowState>,
) -> Result<Vec<(&'a RowKey, RowState)>, MoneyOverflow> {
    let mut rows = Vec::new();
    for key in keys {
        let state = states.get(&ledger_bucket(&key.0, &key.1));
        let bucket_fence = state.and_then(|s| s.fence).unwrap_or(-1);
        let current =
            running.get(key).or_else(|| state.and_then(|s| s.rows.get(key))).copied().unwrap_or(RowState::NEW);
        let base = RowState { applied_offset: current.applied_offset.max(bucket_fence), ..current };
        if let Some(next) = fold_row(base, &[m])? {
            rows.push((key, next));
        }
    }
    Ok(rows)
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
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};
    use tollgate_schemas::USAGE_EVENT_VERSION;

    /// An event of `key` (and `team`) costing `cost`, one prompt and one completion token;
    /// also the embedded ledger's tests' event.
    pub(crate) fn event(key: &str, team: Option<&str>, cost: i64) -> UsageEvent {
        UsageEvent {
            version: USAGE_EVENT_VERSION,
            event_id: uuid::Uuid::now_v7(),
            occurred_at: Utc::now(),
            gateway_id: "gw".into(),
            request_id: "r".into(),
            key_id: key.into(),
            team_id: team.map(str::to_owned),
            requested_model: "m".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            cost_nano_usd: NanoUsd(cost),
            latency_ms: 1,
            status: 200,
            ..UsageEvent::default()
        }
    }

    /// `messages` cut into consecutive batches of the given sizes (cycled; at least 1 each).
    fn batches<'a>(messages: &'a [Message], batch_sizes: &[usize]) -> Vec<&'a [Message]> {
        let mut out = Vec::new();
        let mut rest = messages;
        let mut sizes = batch_sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            let (batch, tail) = rest.split_at(n);
            out.push(batch);
            rest = tail;
        }
        out
    }

    /// Folds `messages` in batches of the given sizes into an in-memory ledger.
    fn fold_all(messages: &[Message], batch_sizes: &[usize], ledger: &mut HashMap<RowKey, RowState>) {
        for batch in batches(messages, batch_sizes) {
            for (key, messages) in rows_by_key(batch) {
                let current = ledger.get(&key).copied().unwrap_or(RowState::NEW);
                if let Some(next) = fold_row(current, &messages).unwrap() {
                    ledger.insert(key, next);
                }
            }
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

    /// [`select`] on partition 0, each message with its rows.
    fn select_all(
        batch: &[Message],
        seen: &HashMap<uuid::Uuid, (i32, i64)>,
        states: &HashMap<i32, BucketState>,
    ) -> Selection {
        let rows: Vec<Vec<RowKey>> = batch.iter().map(|m| rows_of(&m.event)).collect();
        select(batch.iter().zip(rows.iter().map(Vec::as_slice)), 0, seen, states)
    }

    #[test]
    fn duplicates_count_once_at_their_lowest_offset() {
        let e = event("k1", None, 100);
        let batch = vec![
            Message { offset: 10, event: e.clone() },
            Message { offset: 11, event: event("k1", None, 5) },
            Message { offset: 12, event: e.clone() },
        ];
        let none = HashMap::new();
        let s = select_all(&batch, &HashMap::new(), &none);
        assert_eq!((s.fresh.len(), s.duplicates), (2, 1));
        // A replay of the same messages: offset 10 is the recorded copy, 12 is still a duplicate.
        let seen = HashMap::from([(e.event_id, (0, 10))]);
        let s = select_all(&batch, &seen, &none);
        assert_eq!((s.fresh.iter().map(|m| m.offset).collect::<Vec<_>>(), s.duplicates), (vec![10, 11], 1));
        // The copy at offset 12 alone, after 10 was recorded: a duplicate.
        let s = select_all(&batch[2..], &seen, &none);
        assert_eq!((s.fresh.len(), s.duplicates), (0, 1));
    }

    #[test]
    fn a_replayed_batch_changes_nothing() {
        let batch = vec![Message { offset: 7, event: event("k1", None, 100) }];
        let rows = rows_by_key(&batch);
        let messages = &rows[&("key/k1".to_owned(), "all".to_owned())];
        let once = fold_row(RowState::NEW, messages).unwrap().unwrap();
        assert_eq!(fold_row(once, messages).unwrap(), None);
    }

    /// A bucketed ledger in memory: what `partition_spend` holds of one partition.
    type Buckets = HashMap<i32, BucketState>;

    /// Folds `messages` in batches of the given sizes into bucketed ledger state, writing at most
    /// `max_rows` rows per step and stopping (a crash) after `steps_left` steps.
    fn fold_buckets(
        messages: &[Message],
        batch_sizes: &[usize],
        max_rows: usize,
        ledger: &mut Buckets,
        mut steps_left: usize,
    ) -> bool {
        for batch in batches(messages, batch_sizes) {
            for (bucket, rows) in rows_by_bucket(batch) {
                let state = ledger.entry(bucket).or_default();
                for chunk in pending_chunks(&rows, state.fence, max_rows) {
                    if steps_left == 0 {
                        return false;
                    }
                    steps_left -= 1;
                    let step = fold_step(state, &chunk).unwrap().unwrap();
                    assert!(step.rows.len() <= max_rows.max(18), "a step stays small");
                    assert!(step.fence > state.fence.unwrap_or(-1), "fences only grow");
                    state.advance(&step);
                }
            }
        }
        true
    }

    fn bucket_total(ledger: &Buckets, key: &RowKey) -> i64 {
        ledger.values().filter_map(|b| b.rows.get(key)).map(|r| r.spent.0).sum()
    }

    #[test]
    fn chunks_keep_offset_order_and_size() {
        let batch: Vec<Message> =
            (0..40).map(|i| Message { offset: 100 + i, event: event(&format!("k{i}"), Some("t"), 1) }).collect();
        for (_, rows) in rows_by_bucket(&batch) {
            let chunks = pending_chunks(&rows, Some(110), 3);
            let mut last = 110;
            for chunk in &chunks {
                let offsets: Vec<i64> = chunk.values().flatten().map(|m| m.offset).collect();
                assert!(offsets.iter().all(|o| *o > last), "chunks follow each other in offset order");
                last = *offsets.iter().max().unwrap();
                assert!(chunk.len() <= 3 || offsets.iter().all(|o| *o == offsets[0]));
            }
        }
    }

    #[test]
    fn a_replayed_bucket_has_nothing_pending() {
        let batch = vec![Message { offset: 7, event: event("k1", Some("t"), 100) }];
        for (_, rows) in rows_by_bucket(&batch) {
            let mut state = BucketState::default();
            let chunks = pending_chunks(&rows, state.fence, 100);
            assert_eq!(chunks.len(), 1);
            state.advance(&fold_step(&state, &chunks[0]).unwrap().unwrap());
            assert_eq!(state.fence, Some(7));
            assert!(pending_chunks(&rows, state.fence, 100).is_empty());
        }
    }

    #[test]
    fn a_row_fence_beyond_the_bucket_fence_still_counts() {
        // An embedded ledger from before buckets: rows with their own fences, no bucket fence.
        let batch = vec![
            Message { offset: 5, event: event("k1", None, 10) },
            Message { offset: 6, event: event("k1", None, 1) },
        ];
        let key = ("key/k1".to_owned(), "all".to_owned());
        let rows = rows_by_bucket(&batch);
        let bucket_rows = rows.values().find(|r| r.contains_key(&key)).unwrap();
        let legacy = RowState { spent: NanoUsd(10), events: 1, applied_offset: 5, ..RowState::NEW };
        let state = BucketState { fence: None, rows: HashMap::from([(key.clone(), legacy)]) };
        let chunks = pending_chunks(bucket_rows, state.fence, 100);
        let step = fold_step(&state, &chunks[0]).unwrap().unwrap();
        let row = step.rows.iter().find(|(k, _)| *k == key).unwrap().1;
        assert_eq!((row.spent, row.events, row.applied_offset), (NanoUsd(11), 2, 6));
    }

    // === overflowing events ===

    /// A third of `i64::MAX`: the third such event in one row overflows it.
    const BIG: i64 = i64::MAX / 3;

    /// An event of key `k{key}` in team `t` at a fixed instant (every row of a test in the same
    /// day and month), or a copy of an earlier one.
    fn poison_log(spec: &[(usize, i64, Option<usize>)]) -> Vec<Message> {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z").unwrap().with_timezone(&Utc);
        let mut messages: Vec<Message> = Vec::new();
        for (i, (key, cost, copy_of)) in spec.iter().enumerate() {
            let event = match copy_of.filter(|j| *j < i) {
                Some(j) => messages[j].event.clone(),
                None => UsageEvent { occurred_at: at, ..event(&format!("k{key}"), Some("t"), *cost) },
            };
            messages.push(Message { offset: i as i64 * 2 + 1, event });
        }
        messages
    }

    /// The rule, written out on its own: in offset order, a copy of an accepted event is a
    /// duplicate; any other event is refused exactly when its key's or its team's total would no
    /// longer fit. Returns the refused offsets and the totals.
    fn overflow_model(messages: &[Message]) -> (BTreeSet<i64>, HashMap<String, i64>) {
        let mut accepted = std::collections::HashSet::new();
        let mut refused = BTreeSet::new();
        let mut totals: HashMap<String, i64> = HashMap::new();
        for m in messages {
            if accepted.contains(&m.event.event_id) {
                continue;
            }
            let scopes = [format!("key/{}", m.event.key_id), "team/t".to_owned()];
            let cost = m.event.cost_nano_usd.0;
            if scopes.iter().all(|s| totals.get(s).copied().unwrap_or(0).checked_add(cost).is_some()) {
                for s in scopes {
                    *totals.entry(s).or_default() += cost;
                }
                accepted.insert(m.event.event_id);
            } else {
                refused.insert(m.offset);
            }
        }
        (refused, totals)
    }

    /// What a consumer keeps between batches: Layer 2's buckets, Layer 1's event ids and the
    /// dead letters.
    #[derive(Clone, Default)]
    struct Kept {
        buckets: Buckets,
        layer1: HashMap<uuid::Uuid, (i32, i64)>,
        dead: BTreeSet<i64>,
    }

    /// Folds `messages` batch by batch as `apply::fold_batch` does (known dead letters out,
    /// select, refusals on record, Layer 1, bucket steps of at most 7 rows). Stops (a crash)
    /// after `steps_left` bucket steps, returning the index of the first message of the batch
    /// it was in: where a consumer that committed every finished batch resumes.
    fn fold_selecting(
        messages: &[Message],
        batch_sizes: &[usize],
        kept: &mut Kept,
        mut steps_left: usize,
    ) -> Option<usize> {
        let mut start = 0;
        for batch in batches(messages, batch_sizes) {
            let candidates: Vec<Message> = batch.iter().filter(|m| !kept.dead.contains(&m.offset)).cloned().collect();
            let selection = select_all(&candidates, &kept.layer1, &kept.buckets);
            kept.dead.extend(selection.overflowing.iter().map(|m| m.offset));
            for m in &selection.fresh {
                let first = kept.layer1.entry(m.event.event_id).or_insert((0, m.offset));
                first.1 = first.1.min(m.offset);
            }
            for (bucket, rows) in rows_by_bucket(&selection.fresh) {
                let state = kept.buckets.entry(bucket).or_default();
                for chunk in pending_chunks(&rows, state.fence, 7) {
                    if steps_left == 0 {
                        return Some(start);
                    }
                    steps_left -= 1;
                    let step = fold_step(state, &chunk).expect("select refused whatever would overflow").unwrap();
                    state.advance(&step);
                }
            }
            start += batch.len();
        }
        None
    }

    fn poison_spec() -> impl Strategy<Value = Vec<(usize, i64, Option<usize>)>> {
        let cost = prop_oneof![3 => 0i64..1_000_000, 2 => (BIG - 1_000)..(BIG + 1_000)];
        let copy_of = prop_oneof![4 => Just(None), 1 => (0usize..40).prop_map(Some)];
        proptest::collection::vec((0usize..3, cost, copy_of), 1..45)
    }

    #[test]
    fn an_event_that_would_overflow_a_row_is_refused_alone() {
        let log = poison_log(&[
            (0, BIG, None),
            (1, BIG, None),
            (0, 5, None),
            (2, BIG, None),
            (1, 7, None),
            (0, BIG, Some(3)),
        ]);
        let mut kept = Kept::default();
        assert_eq!(fold_selecting(&log, &[100], &mut kept, usize::MAX), None);
        // The third BIG overflows the team row; its copy at offset 11 is weighed on its own and
        // overflows too; the small events after it still count.
        assert_eq!(kept.dead, BTreeSet::from([7, 11]));
        assert_eq!(bucket_total(&kept.buckets, &("team/t".to_owned(), "all".to_owned())), 2 * BIG + 12);
        assert_eq!(bucket_total(&kept.buckets, &("key/k0".to_owned(), "all".to_owned())), BIG + 5);
    }

    proptest! {
        /// Overflowing events (and copies of them) are refused, exactly those the rule names,
        /// and every other event folds exactly, whatever the batches.
        #[test]
        fn overflowing_events_are_refused_exactly_and_the_rest_folds_exactly(
            spec in poison_spec(),
            sizes in proptest::collection::vec(1usize..12, 1..5),
        ) {
            let log = poison_log(&spec);
            let (refused, totals) = overflow_model(&log);
            let mut kept = Kept::default();
            prop_assert_eq!(fold_selecting(&log, &sizes, &mut kept, usize::MAX), None);
            prop_assert_eq!(&kept.dead, &refused);
            for scope in ["key/k0", "key/k1", "key/k2", "team/t"] {
                let expected = totals.get(scope).copied().unwrap_or(0);
                for window in ["all", "d:2026-11-23", "m:2026-11"] {
                    prop_assert_eq!(bucket_total(&kept.buckets, &(scope.to_owned(), window.to_owned())), expected);
                }
            }
        }

        /// A crash after any number of bucket steps, then a replay from where the consumer
        /// committed (or from the very start), with other batches: the same totals and the same
        /// dead letters as one clean pass.
        #[test]
        fn replaying_any_prefix_with_poison_refuses_the_same_events(
            spec in poison_spec(),
            first in proptest::collection::vec(1usize..12, 1..5),
            second in proptest::collection::vec(1usize..12, 1..5),
            crash_after_steps in 0usize..120,
            from_the_start in any::<bool>(),
        ) {
            let log = poison_log(&spec);
            let mut clean = Kept::default();
            fold_selecting(&log, &[1], &mut clean, usize::MAX);
            let mut kept = Kept::default();
            let resume = fold_selecting(&log, &first, &mut kept, crash_after_steps).unwrap_or(log.len());
            let resume = if from_the_start { 0 } else { resume };
            prop_assert_eq!(fold_selecting(&log[resume..], &second, &mut kept, usize::MAX), None);
            prop_assert_eq!(&kept.dead, &clean.dead);
            prop_assert_eq!(&kept.dead, &overflow_model(&log).0);
            for scope in ["key/k0", "key/k1", "key/k2", "team/t", "key/k0/model/m", "team/t/model/m"] {
                for window in ["all", "d:2026-11-23", "m:2026-11"] {
                    let key = (scope.to_owned(), window.to_owned());
                    prop_assert_eq!(bucket_total(&kept.buckets, &key), bucket_total(&clean.buckets, &key));
                }
            }
        }

        /// Bucketed: any batching and step size, a crash after any number of steps, then a
        /// replay of everything with any other batching, gives the same totals as summing the
        /// events directly.
        #[test]
        fn bucket_replays_never_double_count(
            costs in proptest::collection::vec((0usize..30, 0i64..1_000_000), 1..80),
            first in proptest::collection::vec(1usize..20, 1..5),
            second in proptest::collection::vec(1usize..20, 1..5),
            max_rows in 1usize..40,
            crash_after_steps in 0usize..200,
        ) {
            let messages: Vec<Message> = costs
                .iter()
                .enumerate()
                .map(|(i, (k, c))| Message { offset: i as i64 * 2 + 1, event: event(&format!("k{k}"), Some("t"), *c) })
                .collect();
            let mut ledger = Buckets::new();
            fold_buckets(&messages, &first, max_rows, &mut ledger, crash_after_steps);
            prop_assert!(fold_buckets(&messages, &second, max_rows, &mut ledger, usize::MAX));
            let team_total: i64 = costs.iter().map(|(_, c)| c).sum();
            prop_assert_eq!(bucket_total(&ledger, &("team/t".to_owned(), "all".to_owned())), team_total);
            for k in 0..30 {
                let expected: i64 = costs.iter().filter(|(kk, _)| *kk == k).map(|(_, c)| c).sum();
                prop_assert_eq!(bucket_total(&ledger, &(format!("key/k{k}"), "all".to_owned())), expected);
            }
            // Every bucket's fence covers the last message that maps into it.
            let last = messages.last().map(|m| m.offset).unwrap();
            for state in ledger.values() {
                prop_assert!(state.fence.is_some_and(|f| f <= last));
            }
        }

        /// A stale writer holding an old state of a bucket computes a step from it; the fence
        /// refuses it (its `expected` is no longer the bucket's fence), and recomputing from the
        /// bucket as it is then counts nothing twice.
        #[test]
        fn a_stale_step_is_refused_by_the_fence(
            costs in proptest::collection::vec((0usize..5, 0i64..1_000_000), 2..40),
            split in 1usize..39,
        ) {
            let messages: Vec<Message> = costs
                .iter()
                .enumerate()
                .map(|(i, (k, c))| Message { offset: i as i64, event: event(&format!("k{k}"), Some("t"), *c) })
                .collect();
            let split = split.min(messages.len() - 1);
            let mut ledger = Buckets::new();
            fold_buckets(&messages[..split], &[split], 1000, &mut ledger, usize::MAX);
            let stale = ledger.clone();
            // The new owner folds everything; the stale one then tries the rest from its copy.
            fold_buckets(&messages, &[messages.len()], 1000, &mut ledger, usize::MAX);
            for (bucket, rows) in rows_by_bucket(&messages[split..]) {
                let old = stale.get(&bucket).cloned().unwrap_or_default();
                for chunk in pending_chunks(&rows, old.fence, 1000) {
                    let step = fold_step(&old, &chunk).unwrap().unwrap();
                    prop_assert_ne!(step.expected, ledger[&bucket].fence, "the fence moved on");
                }
                prop_assert!(pending_chunks(&rows, ledger[&bucket].fence, 1000).is_empty());
            }
            let team_total: i64 = costs.iter().map(|(_, c)| c).sum();
            prop_assert_eq!(bucket_total(&ledger, &("team/t".to_owned(), "all".to_owned())), team_total);
        }

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
