//! Many scopes' totals in one window, read in few queries (`SpendSource::totals`): a listing by
//! spend (`GET /key/list?sort=spend`) needs the spend of up to hundreds of keys. One query a
//! scope costs a round trip and a request each; here [`SCOPES_PER_QUERY`] scopes share one
//! query (`scope_id IN ? AND window_id = ? AND partition IN ?` on `spend_aggregates`), so the
//! same rows are read with a tenth of the requests. The sums are the same rows `total` sums,
//! added the same way: exact, in integer nano-USD.

use super::{query_err, CqlSpend, SpendTotal, StoreError};
use futures::stream::{self, StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use std::collections::HashMap;

/// Scopes one query reads: with 64 ledger partitions, 640 CQL partitions a query. Measured on
/// the console bench (100 keys of a team): 10 a query answered as fast as 25 or 50 and faster
/// than 100, where the coordinator's one request grows too long.
pub const SCOPES_PER_QUERY: usize = 10;

/// Queries in flight at once for one call.
const QUERIES_IN_FLIGHT: usize = 8;

/// The most scopes one call may ask for (callers bound theirs well below).
pub const MAX_TOTALS_SCOPES: usize = 10_000;

pub(super) async fn prepare(session: &Session, keyspace: &str) -> Result<PreparedStatement, StoreError> {
    session
        .prepare(format!(
            "SELECT scope_id, spent_nano_usd, events, prompt_tokens, completion_tokens FROM {keyspace}.spend_aggregates \
             WHERE scope_id IN ? AND window_id = ? AND partition IN ?"
        ))
        .await
        .map_err(query_err)
}

type TotalsRow = (String, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

impl CqlSpend {
    /// The total of each of `scopes` in `window`, in the order asked (a scope named twice is
    /// read once and answered twice).
    pub(super) async fn many_totals(&self, scopes: &[String], window: &str) -> Result<Vec<SpendTotal>, StoreError> {
        if scopes.len() > MAX_TOTALS_SCOPES {
            return Err(StoreError::TooManyRows { limit: MAX_TOTALS_SCOPES });
        }
        let mut distinct: Vec<&String> = scopes.iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let jobs: Vec<(Vec<String>, Vec<i32>)> = distinct
            .chunks(SCOPES_PER_QUERY)
            .flat_map(|c| self.partitions.iter().map(move |p| (c.iter().map(|s| (*s).clone()).collect(), p.clone())))
            .collect();
        let reads: Vec<_> =
            jobs.into_iter().map(|(chunk, partitions)| self.read_chunk(chunk, window, partitions)).collect();
        let read: Vec<Vec<TotalsRow>> = stream::iter(reads).buffer_unordered(QUERIES_IN_FLIGHT).try_collect().await?;
        let mut sums: HashMap<String, SpendTotal> = HashMap::with_capacity(distinct.len());
        for (scope, spent, events, prompt, completion) in read.into_iter().flatten() {
            sums.entry(scope).or_default().add(&SpendTotal {
                spent: crate::NanoUsd(spent.unwrap_or(0)),
                events: events.unwrap_or(0),
                prompt_tokens: prompt.unwrap_or(0),
                completion_tokens: completion.unwrap_or(0),
            });
        }
        Ok(scopes.iter().map(|s| sums.get(s).copied().unwrap_or_default()).collect())
    }

    /// The rows of one query: `chunk`'s scopes in `window`, over `partitions`.
    async fn read_chunk(
        &self,
        chunk: Vec<String>,
        window: &str,
        partitions: Vec<i32>,
    ) -> Result<Vec<TotalsRow>, StoreError> {
        let result =
            self.session.execute_unpaged(&self.totals, (chunk, window, partitions)).await.map_err(query_err)?;
        let rows = result.into_rows_result().map_err(query_err)?;
        rows.rows::<TotalsRow>().map_err(query_err)?.map(|r| r.map_err(query_err)).collect()
    }
}
