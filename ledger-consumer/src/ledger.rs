//! Ledger storage. [`LedgerStore`] is the boundary; [`CqlLedger`] speaks CQL to Cassandra or
//! ScyllaDB (nothing Scylla-only, nothing Cassandra-only).
//!
//! Layer 2 rows are created only by `INSERT ... IF NOT EXISTS` and changed only by
//! `UPDATE ... IF applied_offset = ?`: plain writes and LWTs never mix on a row (DESIGN §3).

use crate::fold::{Message, RowKey, RowState};
use futures::stream::{FuturesUnordered, StreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use std::collections::HashMap;
use std::future::Future;
use tollgate_schemas::NanoUsd;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot connect to the ledger database: {0}")]
    Connect(String),
    #[error("ledger schema: {0}")]
    Schema(String),
    #[error("ledger query failed: {0}")]
    Query(String),
    #[error("unexpected ledger result: {0}")]
    Result(String),
}

fn query_err(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Query(e.to_string())
}

/// Where the two ledger layers live.
pub trait LedgerStore: Send + Sync + 'static {
    /// Layer 1: inserts the events (idempotent: the same event writes the same cells).
    fn insert_events(
        &self,
        partition: i32,
        messages: &[Message],
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Layer 1: where each of these events was first recorded, `(partition, offset)`, for
    /// those already in the event ledger.
    fn find_events(
        &self,
        messages: &[Message],
    ) -> impl Future<Output = Result<HashMap<uuid::Uuid, (i32, i64)>, LedgerError>> + Send;
    /// Layer 2: the row of `partition`, read with serial consistency when `serial` (after a
    /// failed condition, to see the winner's write).
    fn read_row(
        &self,
        key: &RowKey,
        partition: i32,
        serial: bool,
    ) -> impl Future<Output = Result<Option<RowState>, LedgerError>> + Send;
    /// Creates the row with `state` if it does not exist. `false` when someone created it first.
    fn create_row(
        &self,
        key: &RowKey,
        partition: i32,
        state: &RowState,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
    /// Replaces the row with `state` if its `applied_offset` is still `expected`.
    fn update_row(
        &self,
        key: &RowKey,
        partition: i32,
        expected: i64,
        state: &RowState,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
}

pub struct CqlLedger {
    session: std::sync::Arc<Session>,
    insert_event: PreparedStatement,
    find_events: PreparedStatement,
    select_row: PreparedStatement,
    select_row_serial: PreparedStatement,
    create_row: PreparedStatement,
    update_row: PreparedStatement,
}

/// Parallel Layer 1 inserts in flight per batch.
const INSERT_CONCURRENCY: usize = 64;

impl CqlLedger {
    /// Connects, applies the schema when `create_schema`, and prepares every statement.
    pub async fn connect(
        contact_points: &[String],
        keyspace: &str,
        create_schema: bool,
    ) -> Result<CqlLedger, LedgerError> {
        let session =
            tollgate_schemas::store::connect(contact_points).await.map_err(|e| LedgerError::Connect(e.to_string()))?;
        if create_schema {
            tollgate_schemas::store::apply_schema(&session, keyspace)
                .await
                .map_err(|e| LedgerError::Schema(e.to_string()))?;
        }
        let session = std::sync::Arc::new(session);
        let ks = keyspace;
        let prepare = |cql: String| {
            let session = &session;
            async move { session.prepare(cql).await.map_err(query_err) }
        };
        let insert_event = prepare(format!(
            "INSERT INTO {ks}.usage_events (owner_id, day, shard, event_id, occurred_at, key_id, team_id, user_id, \
             customer_id, organization_id, requested_model, served_model, provider, prompt_tokens, completion_tokens, \
             cached_tokens, cost_nano_usd, status, kafka_partition, kafka_offset, body) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        ))
        .await?;
        let find_events = prepare(format!(
            "SELECT event_id, kafka_partition, kafka_offset FROM {ks}.usage_events \
             WHERE owner_id = ? AND day = ? AND shard = ? AND event_id IN ?"
        ))
        .await?;
        let row_cols = "spent_nano_usd, events, prompt_tokens, completion_tokens, applied_offset";
        let mut select_row = prepare(format!(
            "SELECT {row_cols} FROM {ks}.spend_aggregates WHERE scope_id = ? AND window_id = ? AND partition = ?"
        ))
        .await?;
        select_row.set_consistency(Consistency::LocalQuorum);
        let mut select_row_serial = select_row.clone();
        select_row_serial.set_consistency(Consistency::LocalSerial);
        let mut create_row = prepare(format!(
            "INSERT INTO {ks}.spend_aggregates (scope_id, window_id, partition, {row_cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        ))
        .await?;
        create_row.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        let mut update_row = prepare(format!(
            "UPDATE {ks}.spend_aggregates SET spent_nano_usd = ?, events = ?, prompt_tokens = ?, completion_tokens = ?, \
             applied_offset = ? WHERE scope_id = ? AND window_id = ? AND partition = ? IF applied_offset = ?"
        ))
        .await?;
        update_row.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        Ok(CqlLedger { session, insert_event, find_events, select_row, select_row_serial, create_row, update_row })
    }

    pub fn session(&self) -> &std::sync::Arc<Session> {
        &self.session
    }

    /// Every event in the event ledger (a full scan: an audit tool, not a hot path).
    pub async fn scan_events(&self, keyspace: &str) -> Result<Vec<tollgate_schemas::UsageEvent>, LedgerError> {
        let mut stmt = scylla::statement::Statement::new(format!("SELECT body FROM {keyspace}.usage_events"));
        stmt.set_page_size(5_000);
        let mut rows = self
            .session
            .query_iter(stmt, &[])
            .await
            .map_err(query_err)?
            .rows_stream::<(Option<String>,)>()
            .map_err(|e| LedgerError::Result(e.to_string()))?;
        let mut events = Vec::new();
        while let Some(row) = rows.next().await {
            let (body,) = row.map_err(query_err)?;
            let body = body.unwrap_or_default();
            let event = tollgate_schemas::UsageEvent::decode(body.as_bytes())
                .map_err(|e| LedgerError::Result(format!("event ledger row does not decode: {e}")))?;
            events.push(event);
        }
        Ok(events)
    }

    /// Every spend aggregate row, summed over partitions per `(scope, window)`.
    pub async fn scan_aggregates(
        &self,
        keyspace: &str,
    ) -> Result<std::collections::BTreeMap<(String, String), crate::reconcile::Totals>, LedgerError> {
        let mut stmt = scylla::statement::Statement::new(format!(
            "SELECT scope_id, window_id, spent_nano_usd, events FROM {keyspace}.spend_aggregates"
        ));
        stmt.set_page_size(5_000);
        let mut rows = self
            .session
            .query_iter(stmt, &[])
            .await
            .map_err(query_err)?
            .rows_stream::<(String, String, Option<i64>, Option<i64>)>()
            .map_err(|e| LedgerError::Result(e.to_string()))?;
        let mut totals: std::collections::BTreeMap<(String, String), crate::reconcile::Totals> = Default::default();
        while let Some(row) = rows.next().await {
            let (scope, window, spent, events) = row.map_err(query_err)?;
            let t = totals.entry((scope, window)).or_default();
            t.spent = t.spent.saturating_add(spent.unwrap_or(0));
            t.events += events.unwrap_or(0);
        }
        Ok(totals)
    }

    async fn insert_event(&self, partition: i32, m: &Message) -> Result<(), LedgerError> {
        let e = &m.event;
        let body = serde_json::to_string(e).map_err(|err| LedgerError::Query(err.to_string()))?;
        let values = EventRow {
            owner_id: e.budget_owner(),
            day: e.day(),
            shard: e.shard(),
            event_id: e.event_id,
            occurred_at: e.occurred_at,
            key_id: &e.key_id,
            team_id: e.team_id.as_deref(),
            user_id: e.user_id.as_deref(),
            customer_id: e.customer_id.as_deref(),
            organization_id: e.organization_id.as_deref(),
            requested_model: &e.requested_model,
            served_model: e.served_model.as_deref(),
            provider: e.provider.as_deref(),
            prompt_tokens: i64::try_from(e.prompt_tokens).unwrap_or(i64::MAX),
            completion_tokens: i64::try_from(e.completion_tokens).unwrap_or(i64::MAX),
            cached_tokens: i64::try_from(e.cached_tokens).unwrap_or(i64::MAX),
            cost_nano_usd: e.cost_nano_usd.0,
            status: i32::from(e.status),
            kafka_partition: partition,
            kafka_offset: m.offset,
            body,
            // The copy at the lowest offset wins if two are ever written (see
            // fold::select_fresh): a lower offset gets a later write timestamp.
            write_timestamp: LOWEST_OFFSET_WINS - m.offset,
        };
        self.session.execute_unpaged(&self.insert_event, values).await.map_err(query_err)?;
        Ok(())
    }
}

/// A Layer 1 row, bound in statement order (the last marker is `USING TIMESTAMP`).
#[derive(scylla::SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct EventRow<'a> {
    owner_id: String,
    day: chrono::NaiveDate,
    shard: i16,
    event_id: uuid::Uuid,
    occurred_at: chrono::DateTime<chrono::Utc>,
    key_id: &'a str,
    team_id: Option<&'a str>,
    user_id: Option<&'a str>,
    customer_id: Option<&'a str>,
    organization_id: Option<&'a str>,
    requested_model: &'a str,
    served_model: Option<&'a str>,
    provider: Option<&'a str>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    cost_nano_usd: i64,
    status: i32,
    kafka_partition: i32,
    kafka_offset: i64,
    body: String,
    write_timestamp: i64,
}

/// Base of the Layer 1 write timestamps (microseconds, far beyond any wall clock).
const LOWEST_OFFSET_WINS: i64 = 1 << 60;

/// `[applied]` of an LWT result.
fn applied(result: scylla::response::query_result::QueryResult) -> Result<bool, LedgerError> {
    tollgate_schemas::store::lwt_applied(result).map_err(|e| LedgerError::Result(e.to_string()))
}

impl LedgerStore for CqlLedger {
    async fn insert_events(&self, partition: i32, messages: &[Message]) -> Result<(), LedgerError> {
        // A sliding window of inserts in flight.
        let mut pending = FuturesUnordered::new();
        let mut rest = messages.iter();
        loop {
            while pending.len() < INSERT_CONCURRENCY {
                match rest.next() {
                    Some(m) => pending.push(self.insert_event(partition, m)),
                    None => break,
                }
            }
            match pending.next().await {
                Some(result) => result?,
                None => break,
            }
        }
        Ok(())
    }

    async fn find_events(&self, messages: &[Message]) -> Result<HashMap<uuid::Uuid, (i32, i64)>, LedgerError> {
        let mut groups: HashMap<(String, chrono::NaiveDate, i16), Vec<uuid::Uuid>> = HashMap::new();
        for m in messages {
            let e = &m.event;
            groups.entry((e.budget_owner(), e.day(), e.shard())).or_default().push(e.event_id);
        }
        let mut found = HashMap::new();
        let mut pending = FuturesUnordered::new();
        let mut rest = groups.into_iter();
        loop {
            while pending.len() < INSERT_CONCURRENCY {
                match rest.next() {
                    Some(((owner, day, shard), ids)) => pending.push(async move {
                        self.session.execute_unpaged(&self.find_events, (owner, day, shard, ids)).await
                    }),
                    None => break,
                }
            }
            let Some(result) = pending.next().await else { break };
            let rows = result.map_err(query_err)?.into_rows_result().map_err(|e| LedgerError::Result(e.to_string()))?;
            for row in
                rows.rows::<(uuid::Uuid, Option<i32>, Option<i64>)>().map_err(|e| LedgerError::Result(e.to_string()))?
            {
                let (id, partition, offset) = row.map_err(|e| LedgerError::Result(e.to_string()))?;
                found.insert(id, (partition.unwrap_or(-1), offset.unwrap_or(-1)));
            }
        }
        Ok(found)
    }

    async fn read_row(&self, key: &RowKey, partition: i32, serial: bool) -> Result<Option<RowState>, LedgerError> {
        let stmt = if serial { &self.select_row_serial } else { &self.select_row };
        let result = self.session.execute_unpaged(stmt, (&key.0, &key.1, partition)).await.map_err(query_err)?;
        let rows = result.into_rows_result().map_err(|e| LedgerError::Result(e.to_string()))?;
        let row = rows
            .maybe_first_row::<(Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>)>()
            .map_err(|e| LedgerError::Result(e.to_string()))?;
        Ok(row.map(|(spent, events, prompt, completion, applied)| RowState {
            spent: NanoUsd(spent.unwrap_or(0)),
            events: events.unwrap_or(0),
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
            applied_offset: applied.unwrap_or(-1),
        }))
    }

    async fn create_row(&self, key: &RowKey, partition: i32, s: &RowState) -> Result<bool, LedgerError> {
        let values =
            (&key.0, &key.1, partition, s.spent.0, s.events, s.prompt_tokens, s.completion_tokens, s.applied_offset);
        applied(self.session.execute_unpaged(&self.create_row, values).await.map_err(query_err)?)
    }

    async fn update_row(&self, key: &RowKey, partition: i32, expected: i64, s: &RowState) -> Result<bool, LedgerError> {
        let values = (
            s.spent.0,
            s.events,
            s.prompt_tokens,
            s.completion_tokens,
            s.applied_offset,
            &key.0,
            &key.1,
            partition,
            expected,
        );
        applied(self.session.execute_unpaged(&self.update_row, values).await.map_err(query_err)?)
    }
}
