//! Daily spend of one scope kind, or of one scope, read from `spend_daily`
//! (`cql/012_spend_daily.cql`, docs/design.md §4.5): the rows of the days asked for and that kind
//! only, so a month of every team's spend reads a month of team rows whatever else the ledger holds.

use super::{query_err, CqlSpend, DailyTotals, SpendTotal, StoreError};
use chrono::NaiveDate;
use futures::stream::{self, StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use std::collections::BTreeMap;

/// Most rows one daily read takes in before it gives up ([`StoreError::TooManyRows`]): a month of
/// a kind with this many (scope, model, day, partition) rows is too much for one answer; the
/// caller narrows the range, or asks for one scope.
pub const MAX_DAILY_ROWS: usize = 250_000;

/// Days read at once.
const DAYS_IN_FLIGHT: usize = 8;

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

type Row = (String, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

impl CqlSpend {
    /// Every (scope, day) total of `query`, all partitions summed.
    pub(super) async fn daily_rows(&self, query: &DailyQuery) -> Result<DailyTotals, StoreError> {
        let mut reads = Vec::new();
        for day in query.days() {
            for parts in &self.partitions {
                reads.push(self.day_rows(query, day, parts));
            }
        }
        let mut per_day = stream::iter(reads).buffer_unordered(DAYS_IN_FLIGHT);
        let mut totals: BTreeMap<(String, NaiveDate), SpendTotal> = BTreeMap::new();
        let mut taken = 0usize;
        while let Some(rows) = per_day.next().await {
            let (day, rows) = rows?;
            taken += rows.len();
            if taken > MAX_DAILY_ROWS {
                return Err(StoreError::TooManyRows { limit: MAX_DAILY_ROWS });
            }
            for (scope, spent, events, prompt, completion) in rows {
                totals.entry((scope, day)).or_default().add(&SpendTotal {
                    spent: crate::NanoUsd(spent.unwrap_or(0)),
                    events: events.unwrap_or(0),
                    prompt_tokens: prompt.unwrap_or(0),
                    completion_tokens: completion.unwrap_or(0),
                });
            }
        }
        Ok(totals.into_iter().map(|((scope, day), t)| (scope, day, t)).collect())
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
