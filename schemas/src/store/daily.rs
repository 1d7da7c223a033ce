//! Daily spend of one scope kind, or of one scope, read from `spend_daily`
//! (`cql/012_spend_daily.cql`, docs/design.md §4.5): the rows of the days asked for and that kind
//! only, so a month of every team's spend reads a month of team rows whatever else the ledger holds.
//! With [`CqlSpend::with_closed_day_cache`], the rows of days already over (UTC) are kept in memory
//! for a short while: a month read again within that while reads only today from Cassandra. The
//! cache never holds today's rows, and never serves a closed day's rows older than its TTL.
//! (Sums of a range of closed days are kept beside it: `range.rs`.)

use super::{query_err, CqlSpend, DailyTotals, SpendTotal, StoreError};
use chrono::{NaiveDate, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Most rows one daily read takes in before it gives up ([`StoreError::TooManyRows`]): a month of
/// a kind with this many (scope, model, day, partition) rows is too much for one answer; the
/// caller narrows the range, or asks for one scope.
pub const MAX_DAILY_ROWS: usize = 250_000;

/// Days read at once.
const DAYS_IN_FLIGHT: usize = 8;

/// How long the gateway serves a closed day's rows from memory: a late event (a consumer behind,
/// a spool replayed after midnight) shows in a closed day's spend within this time.
pub const CLOSED_DAY_TTL: Duration = Duration::from_secs(30);

/// Most ledger rows the closed-day cache holds, all days and kinds together (a row is about 150
/// bytes: some 75 MB at most). A month of a kind is at most [`MAX_DAILY_ROWS`] rows, so two such
/// months fit; beyond, the least used days are dropped and read again when asked for.
pub const MAX_CACHED_DAY_ROWS: u64 = 500_000;

/// One closed day's rows of one read: the query's kind and scope, the day, and the generation
/// of the usage topic (the partitions' list) they were read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct DayKey {
    kind: String,
    scope: Option<String>,
    day: NaiveDate,
    generation: usize,
}

/// Closed days' rows, as Cassandra returned them, bounded by rows and by age.
pub(super) type ClosedDays = moka::sync::Cache<DayKey, Arc<Vec<Row>>>;

/// What a daily read asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyQuery {
    /// The scope kind: `key`, `team`, `user`, `customer`, `org` or `global`.
    pub kind: String,
    /// One scope of that kind (`team/payments`): its rows and its per-model rows only.
    pub scope: Option<String>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DailyQuery {
    /// The UTC days asked for, in order.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> {
        self.from.iter_days().take_while({
            let to = self.to;
            move |d| *d <= to
        })
    }

    /// Whether a ledger scope is one this query reads (for readers that filter rows themselves).
    pub fn wants(&self, scope: &str) -> bool {
        match &self.scope {
            Some(s) => scope == s || scope.strip_prefix(s.as_str()).is_some_and(|rest| rest.starts_with("/model/")),
            None => scope.split_once('/').is_some_and(|(kind, _)| kind == self.kind),
        }
    }
}

/// The prepared reads of `spend_daily`.
pub(super) struct DailyStatements {
    kind: PreparedStatement,
    scope: PreparedStatement,
    models: PreparedStatement,
}

impl DailyStatements {
    pub(super) async fn prepare(session: &Session, keyspace: &str) -> Result<DailyStatements, StoreError> {
        let select = "SELECT scope_id, spent_nano_usd, events, prompt_tokens, completion_tokens";
        let at = "WHERE kind = ? AND day = ? AND partition IN ?";
        let prepare = |cql: String| async move {
            let mut stmt = session.prepare(cql).await.map_err(query_err)?;
            stmt.set_page_size(5_000);
            Ok::<_, StoreError>(stmt)
        };
        Ok(DailyStatements {
            kind: prepare(format!("{select} FROM {keyspace}.spend_daily {at}")).await?,
            scope: prepare(format!("{select} FROM {keyspace}.spend_daily {at} AND scope_id = ?")).await?,
            models: prepare(format!("{select} FROM {keyspace}.spend_daily {at} AND scope_id >= ? AND scope_id < ?"))
                .await?,
        })
    }
}

pub(super) type Row = (String, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

impl CqlSpend {
    /// Keeps the rows of days before today (UTC) for `ttl` (at most [`MAX_CACHED_DAY_ROWS`]
    /// rows): daily reads then read only today's rows and the closed days not read within `ttl`.
    /// Answers are the same rows summed the same way; a row written to a closed day after it
    /// was read shows within `ttl`.
    pub fn with_closed_day_cache(mut self, ttl: Duration) -> CqlSpend {
        let cache = moka::sync::Cache::builder()
            .max_capacity(MAX_CACHED_DAY_ROWS)
            .weigher(|_: &DayKey, rows: &Arc<Vec<Row>>| u32::try_from(rows.len()).unwrap_or(u32::MAX).max(1))
            .time_to_live(ttl)
            .build();
        self.closed_days = Some(cache);
        self.closed_ranges = Some(super::range::closed_ranges(ttl));
        self
    }

    /// Every (scope, day) total of `query`, all partitions summed.
    pub(super) async fn daily_rows(&self, query: &DailyQuery) -> Result<DailyTotals, StoreError> {
        let mut totals: BTreeMap<(String, NaiveDate), SpendTotal> = BTreeMap::new();
        let mut taken = 0usize;
        self.each_row(query, Utc::now().date_naive(), &mut taken, |day, scope, t| {
            totals.entry((scope.to_owned(), day)).or_default().add(&t);
        })
        .await?;
        Ok(totals.into_iter().map(|((scope, day), t)| (scope, day, t)).collect())
    }

    /// Hands every row of `query`'s days to `each` as (day, scope, total), closed days through
    /// the closed-day cache; counts them in `taken` (which may carry a count from an earlier
    /// read of the same answer), at most [`MAX_DAILY_ROWS`].
    pub(super) async fn each_row(
        &self,
        query: &DailyQuery,
        today: NaiveDate,
        taken: &mut usize,
        mut each: impl FnMut(NaiveDate, &str, SpendTotal),
    ) -> Result<(), StoreError> {
        let mut reads = Vec::new();
        for day in query.days() {
            for (generation, parts) in self.partitions.iter().enumerate() {
                reads.push(self.kept_day_rows(query, day, generation, parts, today));
            }
        }
        let mut per_day = stream::iter(reads).buffer_unordered(DAYS_IN_FLIGHT);
        while let Some(rows) = per_day.next().await {
            let (day, rows) = rows?;
            *taken += rows.len();
            if *taken > MAX_DAILY_ROWS {
                return Err(StoreError::TooManyRows { limit: MAX_DAILY_ROWS });
            }
            for (scope, spent, events, prompt, completion) in rows.iter() {
                let (spent, events, prompt, completion) = (*spent, *events, *prompt, *completion);
                each(
                    day,
                    scope,
                    SpendTotal {
                        spent: crate::NanoUsd(spent.unwrap_or(0)),
                        events: events.unwrap_or(0),
                        prompt_tokens: prompt.unwrap_or(0),
                        completion_tokens: completion.unwrap_or(0),
                    },
                );
            }
        }
        Ok(())
    }

    /// One day's rows of `query` in the ledger partitions `parts` (of `generation`): from the
    /// closed-day cache when the day is before `today` and was read within the TTL.
    async fn kept_day_rows(
        &self,
        query: &DailyQuery,
        day: NaiveDate,
        generation: usize,
        parts: &[i32],
        today: NaiveDate,
    ) -> Result<(NaiveDate, Arc<Vec<Row>>), StoreError> {
        let cache = match &self.closed_days {
            Some(cache) if day < today => cache,
            _ => return self.day_rows(query, day, parts).await.map(|(day, rows)| (day, Arc::new(rows))),
        };
        let key = DayKey { kind: query.kind.clone(), scope: query.scope.clone(), day, generation };
        if let Some(rows) = cache.get(&key) {
            return Ok((day, rows));
        }
        let rows = Arc::new(self.day_rows(query, day, parts).await?.1);
        cache.insert(key, rows.clone());
        Ok((day, rows))
    }

    /// One day's rows of `query` in the ledger partitions `parts`.
    async fn day_rows(
        &self,
        query: &DailyQuery,
        day: NaiveDate,
        parts: &[i32],
    ) -> Result<(NaiveDate, Vec<Row>), StoreError> {
        let day_text = day.format("%Y-%m-%d").to_string();
        let (kind, at) = (query.kind.as_str(), day_text.as_str());
        let mut rows = Vec::new();
        match &query.scope {
            None => self.collect(&self.daily.kind, (kind, at, parts), &mut rows).await?,
            Some(scope) => {
                self.collect(&self.daily.scope, (kind, at, parts, scope.as_str()), &mut rows).await?;
                // `<scope>/model/` up to `<scope>/model0`: exactly the scope's per-model rows.
                let (first, past) = (format!("{scope}/model/"), format!("{scope}/model0"));
                self.collect(&self.daily.models, (kind, at, parts, first.as_str(), past.as_str()), &mut rows).await?;
            }
        }
        Ok((day, rows))
    }

    async fn collect(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
        into: &mut Vec<Row>,
    ) -> Result<(), StoreError> {
        let mut pages = self
            .session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(query_err)?
            .rows_stream::<Row>()
            .map_err(query_err)?;
        while let Some(row) = pages.try_next().await.map_err(query_err)? {
            into.push(row);
            if into.len() > MAX_DAILY_ROWS {
                return Err(StoreError::TooManyRows { limit: MAX_DAILY_ROWS });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(kind: &str, scope: Option<&str>) -> DailyQuery {
        let d = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        DailyQuery { kind: kind.into(), scope: scope.map(str::to_owned), from: d, to: d + chrono::Days::new(2) }
    }

    #[test]
    fn days_run_from_the_first_to_the_last_inclusive() {
        let days: Vec<String> = q("team", None).days().map(|d| d.to_string()).collect();
        assert_eq!(days, ["2026-11-30", "2026-12-01", "2026-12-02"]);
    }

    #[test]
    fn a_scope_query_wants_the_scope_and_its_models_only() {
        let one = q("team", Some("team/pay"));
        assert!(one.wants("team/pay"));
        assert!(one.wants("team/pay/model/gpt-4o"));
        assert!(one.wants("team/pay/model/openai/gpt-4o"));
        assert!(!one.wants("team/payroll"), "a longer id is another team");
        assert!(!one.wants("team/pay-x/model/m"));
        let kind = q("team", None);
        assert!(kind.wants("team/pay") && kind.wants("team/x/model/m"));
        assert!(!kind.wants("key/team") && !kind.wants("teams/x") && !kind.wants("team"));
    }
}
