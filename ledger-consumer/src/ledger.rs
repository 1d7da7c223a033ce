//! Ledger storage. [`LedgerStore`] is the boundary; [`CqlLedger`] speaks CQL to Cassandra or
//! ScyllaDB (nothing Scylla-only, nothing Cassandra-only).
//!
//! Layer 2 is authoritative in `partition_spend`: the rows a Kafka partition owns, in buckets,
//! each changed only by a conditional batch on the bucket's fence (`IF applied_offset = ?`).
//! `spend_aggregates` is the scope-keyed read model derived from it by plain writes stamped
//! with the fence the values reflect (DESIGN §3). Never write `partition_spend` without the
//! condition.

use crate::fold::{BucketState, BucketStep, Message, RowKey, RowState};
use futures::stream::{FuturesUnordered, StreamExt};
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
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
    /// Layer 2: the fence of a bucket of `partition`, then those of `keys` that exist, with
    /// serial consistency when `serial` (after a lost condition, to see the winner's write).
    /// The fence is read first: rows read later can only be newer, and a step computed from
    /// newer rows is refused by its condition on the older fence.
    fn read_bucket(
        &self,
        partition: i32,
        bucket: i32,
        keys: &[RowKey],
        serial: bool,
    ) -> impl Future<Output = Result<BucketState, LedgerError>> + Send;
    /// Layer 2: writes `step` in one conditional write if the bucket's fence is still
    /// `step.expected`. `false` when another writer moved it first.
    fn write_bucket(
        &self,
        partition: i32,
        bucket: i32,
        step: &BucketStep,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
    /// Read model: copies rows of `partition` (values as of their `applied_offset`) to the
    /// scope-keyed read model. Idempotent, and a copy never replaces one of a higher fence.
    fn write_read_model(
        &self,
        partition: i32,
        rows: &[(RowKey, RowState)],
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

pub struct CqlLedger {
    session: std::sync::Arc<Session>,
    insert_event: PreparedStatement,
    find_events: PreparedStatement,
    select_fence: PreparedStatement,
    select_fence_serial: PreparedStatement,
    select_rows: PreparedStatement,
    select_rows_serial: PreparedStatement,
    write_row: PreparedStatement,
    write_fence: PreparedStatement,
    copy_row: PreparedStatement,
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
        let mut select_fence = prepare(format!(
            "SELECT applied_offset FROM {ks}.partition_spend WHERE partition = ? AND bucket = ? LIMIT 1"
        ))
        .await?;
        select_fence.set_consistency(Consistency::LocalQuorum);
        let mut select_fence_serial = select_fence.clone();
        select_fence_serial.set_consistency(Consistency::LocalSerial);
        let mut select_rows = prepare(format!(
            "SELECT scope_id, window_id, spent_nano_usd, events, prompt_tokens, completion_tokens, applied_offset \
             FROM {ks}.partition_spend WHERE partition = ? AND bucket = ? AND (scope_id, window_id) IN ?"
        ))
        .await?;
        select_rows.set_consistency(Consistency::LocalQuorum);
        let mut select_rows_serial = select_rows.clone();
        select_rows_serial.set_consistency(Consistency::LocalSerial);
        // Every statement of a step's batch carries the same condition and sets the same fence:
        // one statement shape, so a batch is N copies of it.
        let write_row = prepare(format!(
            "UPDATE {ks}.partition_spend SET applied_offset = ?, spent_nano_usd = ?, events = ?, prompt_tokens = ?, \
             completion_tokens = ? WHERE partition = ? AND bucket = ? AND scope_id = ? AND window_id = ? \
             IF applied_offset = ?"
        ))
        .await?;
        let mut write_fence = prepare(format!(
            "UPDATE {ks}.partition_spend SET applied_offset = ? WHERE partition = ? AND bucket = ? IF applied_offset = ?"
        ))
        .await?;
        write_fence.set_consistency(Consistency::LocalQuorum);
        write_fence.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        let mut copy_row = prepare(format!(
            "UPDATE {ks}.spend_aggregates USING TIMESTAMP ? SET spent_nano_usd = ?, events = ?, prompt_tokens = ?, \
             completion_tokens = ?, applied_offset = ? WHERE scope_id = ? AND window_id = ? AND partition = ?"
        ))
        .await?;
        copy_row.set_consistency(Consistency::LocalQuorum);
        Ok(CqlLedger {
            session,
            insert_event,
            find_events,
            select_fence,
            select_fence_serial,
            select_rows,
            select_rows_serial,
            write_row,
            write_fence,
            copy_row,
        })
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

    /// Every row of a Layer 2 table (`spend_aggregates` or `partition_spend`), per
    /// `(scope, window, partition)` (a full scan: an audit tool, not a hot path).
    pub async fn scan_rows(
        &self,
        keyspace: &str,
        table: &str,
    ) -> Result<std::collections::BTreeMap<crate::reconcile::RowId, crate::reconcile::Totals>, LedgerError> {
        let mut stmt = scylla::statement::Statement::new(format!(
            "SELECT scope_id, window_id, partition, spent_nano_usd, events FROM {keyspace}.{table}"
        ));
        stmt.set_page_size(5_000);
        let mut rows = self
            .session
            .query_iter(stmt, &[])
            .await
            .map_err(query_err)?
            .rows_stream::<(Option<String>, Option<String>, i32, Option<i64>, Option<i64>)>()
            .map_err(|e| LedgerError::Result(e.to_string()))?;
        let mut totals = std::collections::BTreeMap::new();
        while let Some(row) = rows.next().await {
            let (scope, window, partition, spent, events) = row.map_err(query_err)?;
            // A bucket of partition_spend that has a fence and no rows yet shows as one row of
            // nulls: nothing to count.
            let (Some(scope), Some(window)) = (scope, window) else { continue };
            let t = crate::reconcile::Totals { spent: spent.unwrap_or(0), events: events.unwrap_or(0) };
            totals.insert((scope, window, partition), t);
        }
        Ok(totals)
    }

    /// Inserts events that share one CQL partition of the event ledger as one unlogged batch:
    /// a single mutation for Cassandra or ScyllaDB to apply, instead of one request per event.
    async fn insert_partition_batch(&self, rows: Vec<EventRow<'_>>) -> Result<(), LedgerError> {
        if let [row] = rows.as_slice() {
            self.session.execute_unpaged(&self.insert_event, row).await.map_err(query_err)?;
            return Ok(());
        }
        let mut batch = Batch::new(BatchType::Unlogged);
        for _ in &rows {
            batch.append_statement(self.insert_event.clone());
        }
        self.session.batch(&batch, rows).await.map_err(query_err)?;
        Ok(())
    }
}

/// The Layer 1 row of one message.
fn event_row(partition: i32, m: &Message) -> Result<EventRow<'_>, LedgerError> {
    let e = &m.event;
    let body = serde_json::to_string(e).map_err(|err| LedgerError::Query(err.to_string()))?;
    Ok(EventRow {
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
    })
}

/// Groups a batch's event rows by their CQL partition `(owner, day, shard)`, in chunks of at
/// most [`BATCH_ROWS`] rows and [`BATCH_BYTES`] of event bodies: well under the batch size
/// limits of a stock Cassandra (50 KiB) and ScyllaDB.
fn partition_batches(rows: Vec<EventRow<'_>>) -> Vec<Vec<EventRow<'_>>> {
    let mut groups: HashMap<(String, chrono::NaiveDate, i16), Vec<EventRow<'_>>> = HashMap::new();
    for row in rows {
        groups.entry((row.owner_id.clone(), row.day, row.shard)).or_default().push(row);
    }
    let mut out = Vec::new();
    for (_, group) in groups {
        let mut chunk: Vec<EventRow<'_>> = Vec::new();
        let mut bytes = 0;
        for row in group {
            if !chunk.is_empty() && (chunk.len() >= BATCH_ROWS || bytes + row.body.len() > BATCH_BYTES) {
                out.push(std::mem::take(&mut chunk));
                bytes = 0;
            }
            bytes += row.body.len();
            chunk.push(row);
        }
        if !chunk.is_empty() {
            out.push(chunk);
        }
    }
    out
}

/// Rows per Layer 1 batch.
const BATCH_ROWS: usize = 16;
/// Event bodies per Layer 1 batch, in bytes.
const BATCH_BYTES: usize = 24 * 1024;

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

/// Base of the read model's write timestamps, beyond Layer 1's: a copy of a row is stamped with
/// this plus the fence its values reflect, so the copy of the highest fence wins.
const HIGHEST_FENCE_WINS: i64 = 1 << 61;

/// Rows per read of a bucket: ScyllaDB refuses more than 100 clustering keys in one `IN` by
/// default (`max_clustering_key_restrictions_per_query`).
const ROWS_PER_READ: usize = 100;

/// Read-model copies in flight per bucket.
const COPY_CONCURRENCY: usize = 32;

/// `[applied]` of an LWT result.
fn applied(result: scylla::response::query_result::QueryResult) -> Result<bool, LedgerError> {
    tollgate_schemas::store::lwt_applied(result).map_err(|e| LedgerError::Result(e.to_string()))
}

impl LedgerStore for CqlLedger {
    async fn insert_events(&self, partition: i32, messages: &[Message]) -> Result<(), LedgerError> {
        let rows = messages.iter().map(|m| event_row(partition, m)).collect::<Result<Vec<_>, _>>()?;
        // A sliding window of batches in flight.
        let mut pending = FuturesUnordered::new();
        let mut rest = partition_batches(rows).into_iter();
        loop {
            while pending.len() < INSERT_CONCURRENCY {
                match rest.next() {
                    Some(batch) => pending.push(self.insert_partition_batch(batch)),
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

    async fn read_bucket(
        &self,
        partition: i32,
        bucket: i32,
        keys: &[RowKey],
        serial: bool,
    ) -> Result<BucketState, LedgerError> {
        let (fence_stmt, rows_stmt) = if serial {
            (&self.select_fence_serial, &self.select_rows_serial)
        } else {
            (&self.select_fence, &self.select_rows)
        };
        let result = self.session.execute_unpaged(fence_stmt, (partition, bucket)).await.map_err(query_err)?;
        let fence = result
            .into_rows_result()
            .map_err(|e| LedgerError::Result(e.to_string()))?
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(|e| LedgerError::Result(e.to_string()))?
            .and_then(|(f,)| f);
        let mut state = BucketState { fence, rows: HashMap::with_capacity(keys.len()) };
        if fence.is_none() {
            return Ok(state); // a bucket without a fence has never been written
        }
        for chunk in keys.chunks(ROWS_PER_READ) {
            let wanted: Vec<(&str, &str)> = chunk.iter().map(|(s, w)| (s.as_str(), w.as_str())).collect();
            let result =
                self.session.execute_unpaged(rows_stmt, (partition, bucket, wanted)).await.map_err(query_err)?;
            let rows = result.into_rows_result().map_err(|e| LedgerError::Result(e.to_string()))?;
            type Cells = (String, String, Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
            for row in rows.rows::<Cells>().map_err(|e| LedgerError::Result(e.to_string()))? {
                let (scope, window, spent, events, prompt, completion, applied) =
                    row.map_err(|e| LedgerError::Result(e.to_string()))?;
                let row = RowState {
                    spent: NanoUsd(spent.unwrap_or(0)),
                    events: events.unwrap_or(0),
                    prompt_tokens: prompt.unwrap_or(0),
                    completion_tokens: completion.unwrap_or(0),
                    applied_offset: applied.unwrap_or(-1),
                };
                state.rows.insert((scope, window), row);
            }
        }
        Ok(state)
    }

    async fn write_bucket(&self, partition: i32, bucket: i32, step: &BucketStep) -> Result<bool, LedgerError> {
        if step.rows.is_empty() {
            let values = (step.fence, partition, bucket, step.expected);
            return applied(self.session.execute_unpaged(&self.write_fence, values).await.map_err(query_err)?);
        }
        let statement = BatchStatement::PreparedStatement(self.write_row.clone());
        let mut batch = Batch::new_with_statements(BatchType::Logged, vec![statement; step.rows.len()]);
        batch.set_consistency(Consistency::LocalQuorum);
        batch.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        let values: Vec<RowWrite<'_>> = step
            .rows
            .iter()
            .map(|((scope, window), r)| RowWrite {
                fence: step.fence,
                spent: r.spent.0,
                events: r.events,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                partition,
                bucket,
                scope,
                window,
                expected: step.expected,
            })
            .collect();
        applied(self.session.batch(&batch, values).await.map_err(query_err)?)
    }

    async fn write_read_model(&self, partition: i32, rows: &[(RowKey, RowState)]) -> Result<(), LedgerError> {
        let mut pending = FuturesUnordered::new();
        let mut rest = rows.iter();
        loop {
            while pending.len() < COPY_CONCURRENCY {
                let Some(((scope, window), r)) = rest.next() else { break };
                let values = (
                    HIGHEST_FENCE_WINS.saturating_add(r.applied_offset),
                    r.spent.0,
                    r.events,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.applied_offset,
                    scope.as_str(),
                    window.as_str(),
                    partition,
                );
                pending.push(async move { self.session.execute_unpaged(&self.copy_row, values).await });
            }
            match pending.next().await {
                Some(result) => {
                    result.map_err(query_err)?;
                }
                None => break,
            }
        }
        Ok(())
    }
}

/// One statement of a step's conditional batch, bound in statement order.
#[derive(scylla::SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct RowWrite<'a> {
    fence: i64,
    spent: i64,
    events: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    partition: i32,
    bucket: i32,
    scope: &'a str,
    window: &'a str,
    expected: Option<i64>,
}
