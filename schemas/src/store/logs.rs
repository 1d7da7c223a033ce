//! Request logs from Cassandra/ScyllaDB, a page at a time (`crate::logs` holds the contract).
//!
//! A page is read in two steps. First the rows that say which events it holds, without their
//! bodies: a key's rows of the key index (`usage_events_by_key`), a team's columns of the event
//! ledger, or for a query naming neither, a scan of the event ledger a partition at a time. Every
//! read is a single-partition query with a `LIMIT`, newest first. Then the bodies of the page's
//! events only, from `usage_events`, by primary key.
//!
//! Never read a day, a key or a team whole: a read asks for what the page still needs.

use super::{query_err, CqlSpend, StoreError};
use crate::event::{budget_owner_of, ledger_shard_of, EVENT_LEDGER_SHARDS};
use crate::logs::{
    read_newest_first, LogCursor, LogFields, LogPage, LogQuery, LogRow, LogScope, LogSlices, PageBuilder, Slice, Taken,
    MAX_READ_ROWS,
};
use crate::UsageEvent;
use chrono::NaiveDate;
use futures::stream::{self, StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use std::collections::HashMap;
use uuid::Uuid;

/// Where an event's body is: its event ledger row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct EventAt {
    owner: String,
    day: NaiveDate,
    shard: i16,
    event_id: Uuid,
}

/// Partition keys of the event ledger one scan read returns, at most.
const SCAN_KEYS_PER_READ: usize = 1_000;
/// Event ledger partitions a scan looks at per call, at most (in range or not).
pub const MAX_SCAN_PARTITIONS: usize = 10_000;
/// Partitions of the range a scan starts reading at once.
const SCAN_READ_CONCURRENCY: usize = 16;
/// Event ids per body read: ScyllaDB refuses more than 100 clustering keys in one `IN` by default.
const BODIES_PER_READ: usize = 100;
/// Body reads in flight per page.
const BODY_READ_CONCURRENCY: usize = 8;

/// The prepared statements of the logs.
pub(super) struct LogStatements {
    key_rows: PreparedStatement,
    key_rows_before: PreparedStatement,
    owner_rows: PreparedStatement,
    owner_rows_before: PreparedStatement,
    bodies: PreparedStatement,
    scan_first: PreparedStatement,
    scan_after: PreparedStatement,
}

impl LogStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<LogStatements, StoreError> {
        let prepare = |cql: String| async move { session.prepare(cql).await.map_err(query_err) };
        let key = format!(
            "SELECT event_id, team_id, user_id, customer_id, requested_model FROM {ks}.usage_events_by_key \
             WHERE key_id = ? AND day = ? AND hour = ?"
        );
        // `usage_events` is clustered oldest first: these reads go backwards through a partition.
        let owner = format!(
            "SELECT event_id, key_id, team_id, user_id, customer_id, requested_model FROM {ks}.usage_events \
             WHERE owner_id = ? AND day = ? AND shard = ?"
        );
        Ok(LogStatements {
            key_rows: prepare(format!("{key} LIMIT ?")).await?,
            key_rows_before: prepare(format!("{key} AND event_id < ? LIMIT ?")).await?,
            owner_rows: prepare(format!("{owner} ORDER BY event_id DESC LIMIT ?")).await?,
            owner_rows_before: prepare(format!("{owner} AND event_id < ? ORDER BY event_id DESC LIMIT ?")).await?,
            bodies: prepare(format!(
                "SELECT event_id, body FROM {ks}.usage_events WHERE owner_id = ? AND day = ? AND shard = ? \
                 AND event_id IN ?"
            ))
            .await?,
            scan_first: prepare(format!("SELECT DISTINCT owner_id, day, shard FROM {ks}.usage_events LIMIT ?")).await?,
            scan_after: prepare(format!(
                "SELECT DISTINCT owner_id, day, shard FROM {ks}.usage_events \
                 WHERE token(owner_id, day, shard) > token(?, ?, ?) LIMIT ?"
            ))
            .await?,
        })
    }
}

fn cql_limit(n: usize) -> i32 {
    i32::try_from(n.clamp(1, MAX_READ_ROWS)).unwrap_or(1)
}

/// A key's rows of the key index: a partition per UTC hour.
struct KeyIndex<'a> {
    spend: &'a CqlSpend,
    key: &'a str,
}

type KeyRow = (Uuid, Option<String>, Option<String>, Option<String>, Option<String>);

impl LogSlices for KeyIndex<'_> {
    type Payload = EventAt;
    type Error = StoreError;

    fn slices(&self) -> i16 {
        24
    }

    fn shards(&self) -> i16 {
        1
    }

    async fn read(
        &self,
        at: Slice,
        _shard: i16,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<LogRow<EventAt>>, StoreError> {
        let (s, key, day, hour) = (&self.spend.logs, self.key, at.day, at.slice);
        let result = match before {
            None => self.spend.session.execute_unpaged(&s.key_rows, (key, day, hour, cql_limit(limit))).await,
            Some(b) => {
                let values = (key, day, hour, b, cql_limit(limit));
                self.spend.session.execute_unpaged(&s.key_rows_before, values).await
            }
        }
        .map_err(query_err)?;
        let rows = result.into_rows_result().map_err(query_err)?;
        let mut out = Vec::new();
        for row in rows.rows::<KeyRow>().map_err(query_err)? {
            let (event_id, team_id, user_id, customer_id, model) = row.map_err(query_err)?;
            // Its event ledger row: the same day, the owner from the key and team, the shard from
            // the event id.
            let at = EventAt {
                owner: budget_owner_of(key, team_id.as_deref()),
                day,
                shard: ledger_shard_of(&event_id),
                event_id,
            };
            let fields =
                LogFields { key_id: key.to_owned(), team_id, user_id, customer_id, model: model.unwrap_or_default() };
            out.push(LogRow { event_id, fields, payload: at });
        }
        Ok(out)
    }
}

/// A budget owner's partitions of the event ledger: a day in 8 shards.
struct OwnerLedger<'a> {
    spend: &'a CqlSpend,
    owner: &'a str,
}

type OwnerRow = (Uuid, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

impl LogSlices for OwnerLedger<'_> {
    type Payload = EventAt;
    type Error = StoreError;

    fn slices(&self) -> i16 {
        1
    }

    fn shards(&self) -> i16 {
        i16::from(EVENT_LEDGER_SHARDS)
    }

    async fn read(
        &self,
        at: Slice,
        shard: i16,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<LogRow<EventAt>>, StoreError> {
        let (s, day) = (&self.spend.logs, at.day);
        let result = match before {
            None => self.spend.session.execute_unpaged(&s.owner_rows, (self.owner, day, shard, cql_limit(limit))).await,
            Some(b) => {
                let values = (self.owner, day, shard, b, cql_limit(limit));
                self.spend.session.execute_unpaged(&s.owner_rows_before, values).await
            }
        }
        .map_err(query_err)?;
        let rows = result.into_rows_result().map_err(query_err)?;
        let mut out = Vec::new();
        for row in rows.rows::<OwnerRow>().map_err(query_err)? {
            let (event_id, key_id, team_id, user_id, customer_id, model) = row.map_err(query_err)?;
            let fields = LogFields {
                key_id: key_id.unwrap_or_default(),
                team_id,
                user_id,
                customer_id,
                model: model.unwrap_or_default(),
            };
            let at = EventAt { owner: self.owner.to_owned(), day, shard, event_id };
            out.push(LogRow { event_id, fields, payload: at });
        }
        Ok(out)
    }
}

impl CqlSpend {
    pub(super) async fn log_page(&self, query: &LogQuery) -> Result<LogPage, StoreError> {
        let taken = match query.scope() {
            LogScope::Key(key) => {
                refuse_scan_cursor(query)?;
                read_newest_first(&KeyIndex { spend: self, key }, query).await?
            }
            LogScope::Owner(owner) => {
                refuse_scan_cursor(query)?;
                read_newest_first(&OwnerLedger { spend: self, owner: &owner }, query).await?
            }
            LogScope::All => self.scan_ledger(query).await?,
        };
        let Taken { entries, next, examined } = taken;
        let (events, missing) = self.bodies(entries).await?;
        Ok(LogPage { events, next, examined, missing })
    }

    /// A page of a query naming no key or team: the event ledger partition by partition in its
    /// storage (token) order, each partition of the date range newest first. At most
    /// [`MAX_SCAN_PARTITIONS`] partitions and `logs::MAX_EXAMINED` rows a call.
    async fn scan_ledger(&self, query: &LogQuery) -> Result<Taken<EventAt>, StoreError> {
        let mut page = PageBuilder::new(query);
        let in_range = |day: NaiveDate| day >= query.from && day <= query.to;
        let mut resume = None;
        match &query.after {
            None => {}
            Some(LogCursor::Ledger { owner, day, shard, event_id }) => {
                if let (Some(before), true) = (event_id, in_range(*day)) {
                    self.scan_partition(&mut page, owner, *day, *shard, Some(*before)).await?;
                    if page.done() {
                        return Ok(page.finish());
                    }
                    page.passed(LogCursor::Ledger { owner: owner.clone(), day: *day, shard: *shard, event_id: None });
                }
                resume = Some((owner.clone(), *day, *shard));
            }
            Some(LogCursor::Newest { .. }) => return Err(StoreError::InvalidCursor),
        }
        let mut seen = 0;
        loop {
            let want = SCAN_KEYS_PER_READ.min(MAX_SCAN_PARTITIONS - seen);
            if want == 0 {
                page.stop_here();
                return Ok(page.finish());
            }
            let result = match &resume {
                None => self.session.execute_unpaged(&self.logs.scan_first, (cql_limit(want),)).await,
                Some((owner, day, shard)) => {
                    let values = (owner.as_str(), *day, *shard, cql_limit(want));
                    self.session.execute_unpaged(&self.logs.scan_after, values).await
                }
            }
            .map_err(query_err)?;
            let rows = result.into_rows_result().map_err(query_err)?;
            let keys: Vec<(String, NaiveDate, i16)> = rows
                .rows::<(String, NaiveDate, i16)>()
                .map_err(query_err)?
                .collect::<Result<_, _>>()
                .map_err(query_err)?;
            let ran_out = keys.len() < want;
            // Groups of consecutive partitions holding up to SCAN_READ_CONCURRENCY of the range's:
            // those out of it cost no read, so a short range over a long ledger (today's logs
            // among a month's) does not pay a round trip per 16 partitions it passes over.
            for group in read_groups(&keys, |(_, day, _)| in_range(*day), SCAN_READ_CONCURRENCY) {
                // The first rows of the group's partitions of the range, read at once; offered in
                // order, each partition's rest read only when the page gets that far.
                let limit = page.wanted().min(page.room()).clamp(1, MAX_READ_ROWS);
                let firsts = futures::future::try_join_all(group.iter().map(|(owner, day, shard)| async move {
                    if !in_range(*day) {
                        return Ok(None);
                    }
                    let at = Slice { day: *day, slice: 0 };
                    OwnerLedger { spend: self, owner }.read(at, *shard, None, limit).await.map(Some)
                }))
                .await?;
                for ((owner, day, shard), first) in group.iter().zip(firsts) {
                    seen += 1;
                    if let Some(rows) = first {
                        let more = rows.len() == limit;
                        let mut before = None;
                        for row in rows {
                            before = Some(row.event_id);
                            let at = LogCursor::Ledger {
                                owner: owner.clone(),
                                day: *day,
                                shard: *shard,
                                event_id: Some(row.event_id),
                            };
                            if !page.offer(at, &row.fields, row.payload) {
                                return Ok(page.finish());
                            }
                        }
                        if more {
                            self.scan_partition(&mut page, owner, *day, *shard, before).await?;
                            if page.done() {
                                return Ok(page.finish());
                            }
                        }
                    }
                    page.passed(LogCursor::Ledger { owner: owner.clone(), day: *day, shard: *shard, event_id: None });
                    resume = Some((owner.clone(), *day, *shard));
                }
            }
            if ran_out {
                return Ok(page.finish());
            }
        }
    }

    /// Offers the rows of one event ledger partition, newest first (after `before`), to `page`.
    async fn scan_partition(
        &self,
        page: &mut PageBuilder<EventAt>,
        owner: &str,
        day: NaiveDate,
        shard: i16,
        mut before: Option<Uuid>,
    ) -> Result<(), StoreError> {
        let ledger = OwnerLedger { spend: self, owner };
        let mut limit = page.wanted();
        loop {
            let asked = limit.min(page.room()).clamp(1, MAX_READ_ROWS);
            let rows = ledger.read(Slice { day, slice: 0 }, shard, before, asked).await?;
            let ran_out = rows.len() < asked;
            for row in rows {
                before = Some(row.event_id);
                let at = LogCursor::Ledger { owner: owner.to_owned(), day, shard, event_id: Some(row.event_id) };
                if !page.offer(at, &row.fields, row.payload) {
                    return Ok(());
                }
            }
            if ran_out {
                return Ok(());
            }
            limit = limit.saturating_mul(2);
        }
    }

    /// The events at `entries`, in their order, read by primary key; and how many were not found.
    async fn bodies(&self, entries: Vec<EventAt>) -> Result<(Vec<UsageEvent>, usize), StoreError> {
        let mut groups: HashMap<(&str, NaiveDate, i16), Vec<Uuid>> = HashMap::new();
        for at in &entries {
            groups.entry((at.owner.as_str(), at.day, at.shard)).or_default().push(at.event_id);
        }
        // Owned, so the reads' futures borrow nothing but `self`.
        let reads: Vec<(String, NaiveDate, i16, Vec<Uuid>)> = groups
            .into_iter()
            .flat_map(|((owner, day, shard), ids)| {
                ids.chunks(BODIES_PER_READ).map(|c| (owner.to_owned(), day, shard, c.to_vec())).collect::<Vec<_>>()
            })
            .collect();
        let found: Vec<Vec<(EventAt, UsageEvent)>> = stream::iter(reads)
            .map(|(owner, day, shard, ids)| async move {
                let values = (owner.as_str(), day, shard, ids);
                let result = self.session.execute_unpaged(&self.logs.bodies, values).await.map_err(query_err)?;
                let rows = result.into_rows_result().map_err(query_err)?;
                let mut out = Vec::new();
                for row in rows.rows::<(Uuid, Option<String>)>().map_err(query_err)? {
                    let (event_id, body) = row.map_err(query_err)?;
                    out.push((EventAt { owner: owner.clone(), day, shard, event_id }, super::decode_body(body)?));
                }
                Ok::<_, StoreError>(out)
            })
            .buffer_unordered(BODY_READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut by_place: HashMap<EventAt, UsageEvent> = found.into_iter().flatten().collect();
        let events: Vec<UsageEvent> = entries.iter().filter_map(|at| by_place.remove(at)).collect();
        let missing = entries.len() - events.len();
        Ok((events, missing))
    }
}

/// `items` cut into consecutive groups, each with at most `per_group` items that `reads` (the
/// last group may have fewer), in order: the partitions one round of a scan reads at once,
/// with those it passes over without a read between them.
fn read_groups<T>(items: &[T], reads: impl Fn(&T) -> bool, per_group: usize) -> Vec<&[T]> {
    let per_group = per_group.max(1);
    let mut groups = Vec::new();
    let (mut start, mut counted) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        if reads(item) {
            if counted == per_group {
                groups.push(&items[start..i]);
                (start, counted) = (i, 0);
            }
            counted += 1;
        }
    }
    if start < items.len() {
        groups.push(&items[start..]);
    }
    groups
}

/// A scan's cursor does not continue a key's or a team's pages.
fn refuse_scan_cursor(query: &LogQuery) -> Result<(), StoreError> {
    match query.after {
        Some(LogCursor::Ledger { .. }) => Err(StoreError::InvalidCursor),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::read_groups;

    #[test]
    fn a_group_holds_at_most_so_many_reads_and_every_item_once_in_order() {
        let items: Vec<u32> = (0..40).collect();
        // Every fifth item is read: 8 reads, three to a group.
        let groups = read_groups(&items, |i| i % 5 == 0, 3);
        let reads = |g: &[u32]| g.iter().filter(|i| *i % 5 == 0).count();
        assert_eq!(groups.iter().map(|g| reads(g)).collect::<Vec<_>>(), [3, 3, 2]);
        assert_eq!(groups.concat(), items, "each item once, in order");
        // A group starts at a read (after the first), so the items passed over go with the reads before.
        assert_eq!(groups[1].first(), Some(&15));
        assert_eq!(groups[0].last(), Some(&14));
    }

    #[test]
    fn items_without_reads_make_one_group_and_no_items_none() {
        let items = [1, 3, 5];
        assert_eq!(read_groups(&items, |i| i % 2 == 0, 16), vec![&items[..]]);
        assert!(read_groups(&[] as &[u32], |_| true, 16).is_empty());
        let all: Vec<u32> = (0..5).collect();
        assert_eq!(read_groups(&all, |_| true, 2), vec![&all[0..2], &all[2..4], &all[4..5]]);
    }
}
