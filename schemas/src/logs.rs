//! Request logs (`/spend/logs`) read from the event ledger one page at a time: the query, its
//! opaque cursor, the filter, and how a page is assembled from rows read newest first. The
//! stores (`store::CqlSpend`, the embedded ledger) only say how their rows are laid out and how
//! to read one partition ([`LogSlices`]); [`read_newest_first`] walks the time slices back from
//! the newest, merging each slice's shards by event id.
//!
//! What a call reads is bounded whatever the ledger holds: one page, the rows it skips
//! ([`MAX_SKIP`]) and at most [`MAX_EXAMINED`] rows looked at in all, read [`MAX_READ_ROWS`] at a
//! time at most. Nothing here may read a range whole into memory.

use crate::UsageEvent;
use chrono::NaiveDate;
use std::collections::VecDeque;
use std::future::Future;
use uuid::Uuid;

/// Entries per page, at most.
pub const MAX_PAGE_SIZE: usize = 1_000;
/// Entries a page number may skip (`(page - 1) × page_size`), at most: deeper pages are read by
/// following the cursor, which costs the same at any depth.
pub const MAX_SKIP: usize = 10_000;
/// Rows one call looks at, at most, matching or not. A page whose filter matches few of the rows
/// it reads may stop short of full, with a cursor to go on from.
pub const MAX_EXAMINED: usize = 50_000;
/// Rows per read of one shard, at most.
pub const MAX_READ_ROWS: usize = 1_000;
/// Longest cursor accepted, in characters.
pub const MAX_CURSOR_LEN: usize = 1_024;

/// What the entries must match. `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// The key's identity (`key_id`, its hash).
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub customer_id: Option<String>,
    /// The model the client asked for.
    pub model: Option<String>,
}

/// The fields of a row a filter looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFields {
    pub key_id: String,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub customer_id: Option<String>,
    pub model: String,
}

impl LogFields {
    pub fn of(e: &UsageEvent) -> LogFields {
        LogFields {
            key_id: e.key_id.clone(),
            team_id: e.team_id.clone(),
            user_id: e.user_id.clone(),
            customer_id: e.customer_id.clone(),
            model: e.requested_model.clone(),
        }
    }
}

impl LogFilter {
    pub fn matches(&self, f: &LogFields) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        same(&self.key_id, Some(&f.key_id))
            && same(&self.team_id, f.team_id.as_deref())
            && same(&self.user_id, f.user_id.as_deref())
            && same(&self.customer_id, f.customer_id.as_deref())
            && same(&self.model, Some(&f.model))
    }
}

/// Which ledger partitions a query reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogScope<'a> {
    /// The key index (`usage_events_by_key`) of this key: its events only.
    Key(&'a str),
    /// The event ledger's partitions of this budget owner (`team/<id>`).
    Owner(String),
    /// No key or team named: every partition (a bounded scan per call).
    All,
}

/// One page of request logs to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogQuery {
    pub filter: LogFilter,
    /// UTC days, inclusive.
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Go on after this position (the previous page's `next`).
    pub after: Option<LogCursor>,
    /// Matching entries to pass over before the page (page numbers).
    pub skip: usize,
    /// Entries in the page.
    pub limit: usize,
}

impl LogQuery {
    /// The narrowest set of partitions that holds every entry the filter can match: a key's
    /// index, else a team's ledger partitions, else all.
    pub fn scope(&self) -> LogScope<'_> {
        match (&self.filter.key_id, &self.filter.team_id) {
            (Some(key), _) => LogScope::Key(key),
            (None, Some(team)) => LogScope::Owner(crate::ledger::scope_id("team", team)),
            (None, None) => LogScope::All,
        }
    }
}

/// Where a page ended: what a client passes back to read the next one. Opaque to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogCursor {
    /// After this entry in newest-first order: day, then time slice of the day, then event id,
    /// each descending.
    Newest { day: NaiveDate, slice: i16, event_id: Uuid },
    /// After this position of a scan of the whole event ledger in its storage order: within the
    /// partition `(owner, day, shard)` after `event_id` (newest first), or after the whole
    /// partition when `event_id` is `None`.
    Ledger { owner: String, day: NaiveDate, shard: i16, event_id: Option<Uuid> },
}

#[derive(Debug, thiserror::Error)]
#[error("not a cursor of this API")]
pub struct InvalidCursor;

/// The cursor as JSON: short names, so the hex stays short.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorDoc {
    v: u8,
    d: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<i16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<i16>,
}

impl LogCursor {
    /// Hex of a small JSON document: safe in a query string as it is.
    pub fn encode(&self) -> String {
        let doc = match self {
            LogCursor::Newest { day, slice, event_id } => {
                CursorDoc { v: 1, d: *day, t: Some(*slice), e: Some(*event_id), o: None, s: None }
            }
            LogCursor::Ledger { owner, day, shard, event_id } => {
                CursorDoc { v: 1, d: *day, t: None, e: *event_id, o: Some(owner.clone()), s: Some(*shard) }
            }
        };
        // Serialising this struct cannot fail (no maps, no non-string keys).
        hex::encode(serde_json::to_vec(&doc).unwrap_or_default())
    }

    pub fn decode(text: &str) -> Result<LogCursor, InvalidCursor> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(InvalidCursor);
        }
        let bytes = hex::decode(text).map_err(|_| InvalidCursor)?;
        let doc: CursorDoc = serde_json::from_slice(&bytes).map_err(|_| InvalidCursor)?;
        match doc {
            CursorDoc { v: 1, d, t: Some(t), e: Some(e), o: None, s: None } => {
                Ok(LogCursor::Newest { day: d, slice: t, event_id: e })
            }
            CursorDoc { v: 1, d, t: None, e, o: Some(o), s: Some(s) } => {
                Ok(LogCursor::Ledger { owner: o, day: d, shard: s, event_id: e })
            }
            _ => Err(InvalidCursor),
        }
    }
}

/// What a page read found: its entries in order, where to go on from (`None`: nothing after
/// them), and how many rows were looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken<P> {
    pub entries: Vec<P>,
    pub next: Option<LogCursor>,
    pub examined: usize,
}

/// A page of request logs: the events, newest first (or in ledger order for a scan), and where
/// the next page starts. `missing` counts entries whose event could not be read (an index row
/// whose event ledger row is gone): they are left out of `events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPage {
    pub events: Vec<UsageEvent>,
    pub next: Option<LogCursor>,
    pub examined: usize,
    pub missing: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The page is full and one more matching row was seen.
    Full,
    /// [`MAX_EXAMINED`] rows (or partitions) were looked at.
    Bound,
}

/// Assembles a page from rows offered in read order: filters, skips, takes, and knows where the
/// next page starts.
#[derive(Debug)]
pub struct PageBuilder<P> {
    filter: LogFilter,
    skip: usize,
    limit: usize,
    examined: usize,
    taken: Vec<(LogCursor, P)>,
    /// The last position looked at.
    position: Option<LogCursor>,
    stop: Option<Stop>,
}

impl<P> PageBuilder<P> {
    pub fn new(query: &LogQuery) -> PageBuilder<P> {
        PageBuilder {
            filter: query.filter.clone(),
            skip: query.skip,
            limit: query.limit.max(1),
            examined: 0,
            taken: Vec::new(),
            position: None,
            stop: None,
        }
    }

    /// Whether the page needs no more rows.
    pub fn done(&self) -> bool {
        self.stop.is_some()
    }

    /// Matching rows still wanted: those to skip, those to take, and one more to know whether
    /// anything follows.
    pub fn wanted(&self) -> usize {
        self.skip + (self.limit - self.taken.len()) + 1
    }

    /// Rows that may still be looked at.
    pub fn room(&self) -> usize {
        MAX_EXAMINED.saturating_sub(self.examined)
    }

    /// Looks at the next row in read order, at position `at`. Returns whether more rows are wanted.
    pub fn offer(&mut self, at: LogCursor, fields: &LogFields, payload: P) -> bool {
        if self.done() {
            return false;
        }
        self.examined += 1;
        if self.filter.matches(fields) {
            if self.skip > 0 {
                self.skip -= 1;
            } else if self.taken.len() < self.limit {
                self.taken.push((at.clone(), payload));
            } else {
                // The row after a full page: it belongs to the next one.
                self.stop = Some(Stop::Full);
                return false;
            }
        }
        self.position = Some(at);
        if self.examined >= MAX_EXAMINED {
            self.stop = Some(Stop::Bound);
        }
        !self.done()
    }

    /// Records a position reached without a row (the end of a scanned partition).
    pub fn passed(&mut self, at: LogCursor) {
        if !self.done() {
            self.position = Some(at);
        }
    }

    /// Stops here: a bound other than the rows looked at was reached (partitions of a scan).
    pub fn stop_here(&mut self) {
        if !self.done() {
            self.stop = Some(Stop::Bound);
        }
    }

    /// The page. Without a stop, the rows ran out: nothing follows.
    pub fn finish(self) -> Taken<P> {
        let next = match self.stop {
            None => None,
            Some(Stop::Full) => self.taken.last().map(|(at, _)| at.clone()),
            Some(Stop::Bound) => self.position,
        };
        Taken { entries: self.taken.into_iter().map(|(_, p)| p).collect(), next, examined: self.examined }
    }
}

/// A row of one partition, as a store reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRow<P> {
    pub event_id: Uuid,
    pub fields: LogFields,
    /// What the store needs to show the entry (the event, or where its body is).
    pub payload: P,
}

/// A time slice of a UTC day: slice `0..slices` of `day`, the highest the newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slice {
    pub day: NaiveDate,
    pub slice: i16,
}

/// How a store lays out a scope's rows: each UTC day cut into time slices, read one after the
/// other from the newest, and each slice spread over shards, read at once and merged by event id.
/// One partition is one (day, slice, shard).
pub trait LogSlices: Sync {
    type Payload: Send;
    type Error: Send;
    /// Time slices per day (`0..slices()`).
    fn slices(&self) -> i16;
    /// Shards per slice (`0..shards()`).
    fn shards(&self) -> i16;
    /// Up to `limit` rows of one partition with event ids below `before`, newest first.
    fn read(
        &self,
        at: Slice,
        shard: i16,
        before: Option<Uuid>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LogRow<Self::Payload>>, Self::Error>> + Send;
}

/// Partition reads in flight at most, when empty slices make the walk read ahead.
const MAX_READS_AT_ONCE: usize = 32;

/// Rows per first read of each shard: the page's share of the shard with a margin, so most
/// pages take one read per shard.
fn first_read(wanted: usize, shards: usize) -> usize {
    (wanted.saturating_mul(5) / 4 / shards.max(1) + 2).clamp(1, MAX_READ_ROWS)
}

struct Shard<P> {
    shard: i16,
    rows: VecDeque<LogRow<P>>,
    before: Option<Uuid>,
    exhausted: bool,
    next_read: usize,
}

impl<P> Shard<P> {
    /// The shard after a read of `asked` rows returned `rows`.
    fn took(&mut self, rows: Vec<LogRow<P>>, asked: usize) {
        self.exhausted = rows.len() < asked;
        if let Some(last) = rows.last() {
            self.before = Some(last.event_id);
        }
        self.rows.extend(rows);
        self.next_read = self.next_read.saturating_mul(2).min(MAX_READ_ROWS);
    }
}

/// The slices from `start` back to the first of `from`, newest first.
fn slices_back(start: Slice, from: NaiveDate, slices: i16) -> impl Iterator<Item = Slice> {
    std::iter::successors(Some(start), move |s| match s.slice {
        0 => s.day.pred_opt().map(|day| Slice { day, slice: slices - 1 }),
        n => Some(Slice { day: s.day, slice: n - 1 }),
    })
    .take_while(move |s| s.day >= from)
}

/// One page, newest first: slice by slice from the cursor's (or the last of `to`) back to the
/// first of `from`, each slice's shards read a few rows at a time and merged by event id, until
/// the page is full. After a slice without rows the next ones are read ahead, twice as many
/// each time (a sparse key over a month costs a few rounds, not one per slice). A cursor of a
/// scan (`Ledger`) is the caller's to refuse; here it reads as no cursor.
pub async fn read_newest_first<S: LogSlices>(source: &S, query: &LogQuery) -> Result<Taken<S::Payload>, S::Error> {
    let mut page = PageBuilder::new(query);
    let (slices, shards) = (source.slices().max(1), source.shards().max(1));
    let shard_count = usize::try_from(shards).unwrap_or(1);
    let (start, mut before) = match &query.after {
        Some(LogCursor::Newest { day, slice, event_id }) if *day <= query.to => {
            (Slice { day: *day, slice: (*slice).clamp(0, slices - 1) }, Some(*event_id))
        }
        _ => (Slice { day: query.to, slice: slices - 1 }, None),
    };
    let mut walk = slices_back(start, query.from, slices);
    let most_ahead = (MAX_READS_AT_ONCE / shard_count).max(1);
    let mut ahead = 1;
    while !page.done() {
        let group: Vec<Slice> = walk.by_ref().take(ahead).collect();
        if group.is_empty() {
            break;
        }
        // The first rows of every shard of the group's slices, read at once.
        let asked = first_read(page.wanted(), shard_count).min(page.room().max(1));
        let starts: Vec<(usize, Slice, i16, Option<Uuid>)> = group
            .iter()
            .enumerate()
            .flat_map(|(g, at)| (0..shards).map(move |shard| (g, *at, shard, if g == 0 { before } else { None })))
            .collect();
        let firsts =
            futures::future::try_join_all(starts.iter().map(|&(_, at, shard, b)| source.read(at, shard, b, asked)))
                .await?;
        let mut by_slice: Vec<Vec<Shard<S::Payload>>> = group.iter().map(|_| Vec::new()).collect();
        for (&(g, _, shard, b), rows) in starts.iter().zip(firsts) {
            let mut s = Shard { shard, rows: VecDeque::new(), before: b, exhausted: false, next_read: asked };
            s.took(rows, asked);
            by_slice[g].push(s);
        }
        let mut found = false;
        for (at, shards) in group.into_iter().zip(by_slice) {
            found |= shards.iter().any(|s| !s.rows.is_empty());
            merge_slice(source, &mut page, at, shards).await?;
            if page.done() {
                break;
            }
        }
        before = None;
        ahead = if found { 1 } else { (ahead * 2).min(most_ahead) };
    }
    Ok(page.finish())
}

/// Merges the shards of the slice `at` into `page` until it is done or the slice runs out.
async fn merge_slice<S: LogSlices>(
    source: &S,
    page: &mut PageBuilder<S::Payload>,
    at: Slice,
    mut shards: Vec<Shard<S::Payload>>,
) -> Result<(), S::Error> {
    loop {
        // Every shard must show its newest unread row before one can be picked: refill the dry ones.
        let dry: Vec<usize> =
            (0..shards.len()).filter(|&i| shards[i].rows.is_empty() && !shards[i].exhausted).collect();
        if !dry.is_empty() {
            // Never more than the rows the page may still look at.
            let asks: Vec<(usize, usize)> =
                dry.iter().map(|&i| (i, shards[i].next_read.min(page.room().max(1)))).collect();
            let reads = asks.iter().map(|&(i, limit)| source.read(at, shards[i].shard, shards[i].before, limit));
            let results = futures::future::try_join_all(reads).await?;
            for (&(i, asked), rows) in asks.iter().zip(results) {
                shards[i].took(rows, asked);
            }
        }
        let newest = shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.rows.front().map(|r| (r.event_id, i)))
            .max()
            .map(|(_, i)| i);
        let Some(row) = newest.and_then(|i| shards[i].rows.pop_front()) else { return Ok(()) };
        let cursor = LogCursor::Newest { day: at.day, slice: at.slice, event_id: row.event_id };
        if !page.offer(cursor, &row.fields, row.payload) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
