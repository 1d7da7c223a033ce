use super::*;
use futures::executor::block_on;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An in-memory ledger of (day, slice, shard, event id, fields), read the way the stores read
/// theirs. An event's slice comes from its time (like an hour), its shard from its last byte.
struct Memory {
    rows: Vec<(NaiveDate, i16, i16, Uuid, LogFields)>,
    slices: i16,
    shards: i16,
    reads: AtomicUsize,
    rows_read: AtomicUsize,
}

/// Milliseconds of the test ids per day: an id's slice is its share of the day.
const DAY_MS: u64 = 1_000_000;

impl Memory {
    fn new(rows: Vec<(NaiveDate, Uuid, LogFields)>, slices: i16, shards: i16) -> Memory {
        let rows = rows
            .into_iter()
            .map(|(d, id, f)| {
                let ms = u64::try_from(id.as_u128() >> 80).unwrap_or(0) % DAY_MS;
                let slice = i16::try_from(ms * u64::try_from(slices).unwrap_or(1) / DAY_MS).unwrap_or(0);
                (d, slice, i16::from(id.as_bytes()[15]) % shards, id, f)
            })
            .collect();
        Memory { rows, slices, shards, reads: AtomicUsize::new(0), rows_read: AtomicUsize::new(0) }
    }

    /// Every matching entry in the order pages must show them.
    fn expected(&self, query: &LogQuery) -> Vec<Uuid> {
        let mut rows: Vec<&(NaiveDate, i16, i16, Uuid, LogFields)> = self
            .rows
            .iter()
            .filter(|(d, _, _, _, f)| *d >= query.from && *d <= query.to && query.filter.matches(f))
            .collect();
        rows.sort_by_key(|(d, slice, _, id, _)| std::cmp::Reverse((*d, *slice, *id)));
        rows.into_iter().map(|(_, _, _, id, _)| *id).collect()
    }
}

impl LogSlices for Memory {
    type Payload = Uuid;
    type Error = std::convert::Infallible;

    fn slices(&self) -> i16 {
        self.slices
    }

    fn shards(&self) -> i16 {
        self.shards
    }

    async fn read(
        &self,
        at: Slice,
        shard: i16,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<LogRow<Uuid>>, Self::Error> {
        let mut rows: Vec<LogRow<Uuid>> = self
            .rows
            .iter()
            .filter(|(d, sl, sh, id, _)| {
                *d == at.day && *sl == at.slice && *sh == shard && before.is_none_or(|b| *id < b)
            })
            .map(|(_, _, _, id, f)| LogRow { event_id: *id, fields: f.clone(), payload: *id })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.event_id));
        rows.truncate(limit);
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.rows_read.fetch_add(rows.len(), Ordering::Relaxed);
        Ok(rows)
    }
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, d).unwrap_or_default()
}

/// A UUIDv7-like id: time first (milliseconds of the day, below [`DAY_MS`]), then random bits
/// (the shard comes from the last byte).
fn id(ms: u64, random: u64) -> Uuid {
    Uuid::from_u128((u128::from(ms) << 80) | (0x7u128 << 76) | u128::from(random))
}

fn fields(key: &str, model: &str) -> LogFields {
    LogFields { key_id: key.into(), model: model.into(), ..LogFields::default() }
}

fn query(limit: usize) -> LogQuery {
    LogQuery { filter: LogFilter::default(), from: day(1), to: day(3), after: None, skip: 0, limit }
}

/// Every page of `q` by cursor, concatenated.
fn all_pages(m: &Memory, mut q: LogQuery) -> (Vec<Uuid>, usize) {
    let mut out = Vec::new();
    let mut calls = 0;
    loop {
        let page = block_on(read_newest_first(m, &q)).unwrap_or_else(|e| match e {});
        calls += 1;
        out.extend(page.entries);
        match page.next {
            Some(next) => q.after = Some(next),
            None => return (out, calls),
        }
        assert!(calls < 10_000, "paging does not end");
    }
}

#[test]
fn pages_by_cursor_show_every_entry_once_newest_first() {
    let rows: Vec<(NaiveDate, Uuid, LogFields)> = (0..500u64)
        .map(|i| (day(1 + (i % 3) as u32), id(i * 1_997, i * 7919), fields(if i % 4 == 0 { "k2" } else { "k1" }, "m")))
        .collect();
    // The event ledger's layout (one slice a day, 8 shards), the key index's (24 hours, one
    // shard) and one in between.
    for (slices, shards) in [(1, 8), (24, 1), (4, 2)] {
        let m = Memory::new(rows.clone(), slices, shards);
        for limit in [1, 7, 50, 1_000] {
            let q = query(limit);
            let (got, calls) = all_pages(&m, q.clone());
            assert_eq!(got, m.expected(&q), "{slices}x{shards}, page size {limit}");
            assert_eq!(calls, 500usize.div_ceil(limit), "page size {limit}: one call a page, no empty last page");
        }
        let mut q = query(10);
        q.filter.key_id = Some("k2".into());
        assert_eq!(all_pages(&m, q.clone()).0, m.expected(&q));
    }
}

#[test]
fn page_numbers_skip_matching_entries() {
    let rows: Vec<(NaiveDate, Uuid, LogFields)> =
        (0..300u64).map(|i| (day(2), id(i * 3_001, i * 31), fields("k", if i % 3 == 0 { "a" } else { "b" }))).collect();
    for (slices, shards) in [(1, 8), (24, 1)] {
        let m = Memory::new(rows.clone(), slices, shards);
        let mut q = query(20);
        q.filter.model = Some("a".into());
        let all = m.expected(&q);
        for page in 0..6 {
            q.skip = page * 20;
            let got = block_on(read_newest_first(&m, &q)).unwrap_or_else(|e| match e {});
            let want: Vec<Uuid> = all.iter().skip(page * 20).take(20).copied().collect();
            assert_eq!(got.entries, want, "{slices}x{shards}, page {}", page + 1);
            assert_eq!(got.next.is_some(), all.len() > (page + 1) * 20);
        }
    }
}

#[test]
fn a_page_reads_about_its_own_rows_not_the_day() {
    // 100,000 rows over the first 90% of the day: the last slices of the key index are empty.
    let rows: Vec<(NaiveDate, Uuid, LogFields)> =
        (0..100_000u64).map(|i| (day(3), id(i * 9, i.wrapping_mul(0x9e37_79b9)), fields("k", "m"))).collect();
    for (slices, shards) in [(1, 8), (24, 1)] {
        let m = Memory::new(rows.clone(), slices, shards);
        let page = block_on(read_newest_first(&m, &query(50))).unwrap_or_else(|e| match e {});
        assert_eq!(page.entries, m.expected(&query(50))[..50]);
        let (reads, rows_read) = (m.reads.load(Ordering::Relaxed), m.rows_read.load(Ordering::Relaxed));
        assert!(reads <= 24 && rows_read <= 400, "{slices}x{shards}: {reads} reads, {rows_read} rows for 50");
    }
}

#[test]
fn a_sparse_range_costs_one_read_per_slice_and_no_more() {
    // One entry at the very start of a 31-day range of hourly slices: 744 slices to walk (read
    // ahead in groups of up to 32 at once, so in about 28 rounds rather than 744).
    let rows = vec![(day(1), id(5, 1), fields("k", "m"))];
    let m = Memory::new(rows, 24, 1);
    let mut q = query(50);
    q.to = day(31);
    let page = block_on(read_newest_first(&m, &q)).unwrap_or_else(|e| match e {});
    assert_eq!((page.entries.len(), page.next), (1, None));
    assert_eq!(m.reads.load(Ordering::Relaxed), 744);
}

#[test]
fn a_filter_that_matches_little_stops_at_the_bound_and_the_cursor_goes_on() {
    let n = MAX_EXAMINED as u64 + 5_000;
    let rows = (0..n).map(|i| (day(1), id(i, i * 13), fields("k", if i == 3 { "rare" } else { "common" }))).collect();
    let m = Memory::new(rows, 1, 4);
    let mut q = query(10);
    q.filter.model = Some("rare".into());
    let first = block_on(read_newest_first(&m, &q)).unwrap_or_else(|e| match e {});
    assert!(first.entries.is_empty() && first.examined == MAX_EXAMINED, "{} examined", first.examined);
    assert!(m.rows_read.load(Ordering::Relaxed) <= MAX_EXAMINED + 4 * MAX_READ_ROWS);
    q.after = first.next;
    assert!(q.after.is_some(), "a page stopped by the bound says where to go on");
    let second = block_on(read_newest_first(&m, &q)).unwrap_or_else(|e| match e {});
    assert_eq!((second.entries, second.next), (vec![id(3, 39)], None));
}

#[test]
fn a_cursor_outside_the_range_or_of_a_scan_is_bounded_by_the_range() {
    let rows = (0..30u64).map(|i| (day(1 + (i % 3) as u32), id(i * 30_011, i), fields("k", "m"))).collect();
    let m = Memory::new(rows, 24, 1);
    let mut q = query(100);
    q.to = day(2);
    q.after = Some(LogCursor::Newest { day: day(9), slice: 3, event_id: Uuid::nil() });
    assert_eq!(block_on(read_newest_first(&m, &q)).unwrap_or_else(|e| match e {}).entries, m.expected(&q));
    // A slice beyond the day's is its last.
    q.after = Some(LogCursor::Newest { day: day(1), slice: 99, event_id: Uuid::max() });
    let got = block_on(read_newest_first(&m, &q)).unwrap_or_else(|e| match e {}).entries;
    assert!(got.len() == 10 && got.iter().all(|e| m.rows.iter().any(|r| r.3 == *e && r.0 == day(1))));
}

#[test]
fn cursors_round_trip_and_garbage_is_refused() {
    let cursors = [
        LogCursor::Newest { day: day(4), slice: 13, event_id: id(5, 6) },
        LogCursor::Ledger { owner: "team/a.b".into(), day: day(5), shard: 7, event_id: Some(id(1, 2)) },
        LogCursor::Ledger { owner: "key/abc".into(), day: day(5), shard: 0, event_id: None },
    ];
    for c in cursors {
        let text = c.encode();
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        assert_eq!(LogCursor::decode(&text).ok(), Some(c));
    }
    let without_slice = hex::encode(br#"{"v":1,"d":"2026-12-01","e":"019ab0c4-5e3a-7cc2-9d1e-4f6a2b3c4d5e"}"#);
    let newer = hex::encode(br#"{"v":2,"d":"2026-12-01","t":0,"e":null}"#);
    for bad in ["", "zz", "7b7d", &without_slice, &newer, &"0".repeat(2_000)] {
        assert!(LogCursor::decode(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_scope_is_the_narrowest_named() {
    let mut q = query(1);
    assert_eq!(q.scope(), LogScope::All);
    q.filter.team_id = Some("t".into());
    assert_eq!(q.scope(), LogScope::Owner("team/t".into()));
    q.filter.key_id = Some("k".into());
    assert_eq!(q.scope(), LogScope::Key("k"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the rows, shards, filter and page size: paging by cursor shows exactly the
    /// matching rows of the range, newest first, and page numbers show the same pages.
    #[test]
    fn pages_equal_the_sorted_filtered_range(
        rows in proptest::collection::vec((1u32..6, 0u64..DAY_MS, 0u64..u64::MAX, 0usize..3), 0..400),
        slices in prop_oneof![Just(1i16), Just(4), Just(24)],
        shards in 1i16..9,
        limit in 1usize..40,
        want_model in proptest::option::of(0usize..3),
        from in 1u32..4,
    ) {
        let models = ["a", "b", "c"];
        // Event ids are unique in a ledger.
        let rows: std::collections::BTreeMap<Uuid, (NaiveDate, LogFields)> = rows
            .into_iter()
            .map(|(d, ms, r, m)| (id(ms, r & 0xfff_ffff_ffff_ffff), (day(d), fields("k", models[m]))))
            .collect();
        let rows = rows.into_iter().map(|(id, (d, f))| (d, id, f)).collect();
        let m = Memory::new(rows, slices, shards);
        let mut q = query(limit);
        q.from = day(from);
        q.to = day(from + 2);
        q.filter.model = want_model.map(|i| models[i].to_owned());
        let expected = m.expected(&q);
        let (got, _) = all_pages(&m, q.clone());
        prop_assert_eq!(&got, &expected);
        for page in 0..3 {
            q.skip = page * limit;
            let taken = block_on(read_newest_first(&m, &q)).unwrap_or_else(|e| match e {});
            let want: Vec<Uuid> = expected.iter().skip(page * limit).take(limit).copied().collect();
            prop_assert_eq!(taken.entries, want);
        }
    }
}
