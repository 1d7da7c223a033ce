//! Ledger storage. [`LedgerStore`] is the boundary; [`CqlLedger`] speaks CQL to Cassandra or
//! ScyllaDB (nothing Scylla-only, nothing Cassandra-only).
//!
//! Layer 1 is `usage_events`, by budget owner, and its key index `usage_events_by_key`, written
//! in the same step right after the rows it points at (an index row never points at nothing).
//!
//! Layer 2 is authoritative in `partition_spend`: the rows a Kafka partition owns, in buckets, each
//! changed only by a conditional batch on the bucket's fence (`IF applied_offset = ?`).
//! `spend_aggregates` is the scope-keyed read model derived from it by plain writes stamped with
//! the fence the values reflect (docs/design.md §4.4, §4.5). Never write `partition_spend` without
//! the condition.

use crate::dead_letter::DeadLetter;
use crate::fold::{BucketState, BucketStep, Message, RowKey, RowState};
use futures::stream::{FuturesUnordered, StreamExt};
use scylla::client::pager::TypedRowStream;
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::MaybeUnset;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use tollgate_schemas::money::MoneyOverflow;
use tollgate_schemas::NanoUsd;

/// A ledger call that failed. `dead_letter::classify` tells permanent failures (the values of
/// an event are at fault) from transient ones.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot connect to the ledger database: {0}")]
    Connect(String),
    #[error("ledger schema: {0}")]
    Schema(String),
    /// A statement the database (or the driver, before sending it) did not carry out.
    #[error("ledger statement failed: {0}")]
    Cql(Box<scylla::errors::ExecutionError>),
    /// A statement of the embedded ledger failed.
    #[error("embedded ledger statement failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Any other query failure (preparing at start-up, paging through a scan).
    #[error("ledger query failed: {0}")]
    Query(String),
    #[error("unexpected ledger result: {0}")]
    Result(String),
    /// Folding would overflow a row of this bucket (events are checked for this before any
    /// write, so this is only seen when another writer folded something else).
    #[error("bucket {bucket} of partition {partition}: {source}")]
    Overflow { partition: i32, bucket: i32, source: MoneyOverflow },
    #[error("bucket {bucket} of partition {partition}: too many conflicting writers")]
    Contended { partition: i32, bucket: i32 },
    #[error("cannot encode an event for the event ledger: {0}")]
    Encode(#[from] serde_json::Error),
}

impl LedgerError {
    /// What failed, in a word: safe to log and count. The error's own text can quote the
    /// database's message, which can quote the values written: it stays out of logs.
    pub fn kind(&self) -> &'static str {
        use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
        match self {
            LedgerError::Connect(_) => "connect",
            LedgerError::Schema(_) => "schema",
            LedgerError::Cql(e) => match e.as_ref() {
                ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => match db {
                    DbError::SyntaxError | DbError::Invalid => "refused",
                    DbError::Unavailable { .. } => "unavailable",
                    DbError::Overloaded | DbError::RateLimitReached { .. } => "overloaded",
                    DbError::IsBootstrapping => "bootstrapping",
                    DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => "timeout",
                    DbError::ReadFailure { .. } | DbError::WriteFailure { .. } => "replica_failure",
                    DbError::AuthenticationError | DbError::Unauthorized => "not_authorized",
                    _ => "database_error",
                },
                ExecutionError::RequestTimeout(_) => "timeout",
                ExecutionError::BadQuery(_) => "refused",
                _ => "connection",
            },
            LedgerError::Sqlite(_) => "sqlite",
            LedgerError::Query(_) => "query",
            LedgerError::Result(_) => "unexpected_result",
            LedgerError::Overflow { .. } => "overflow",
            LedgerError::Contended { .. } => "contended",
            LedgerError::Encode(_) => "encode",
        }
    }
}

impl From<scylla::errors::ExecutionError> for LedgerError {
    fn from(e: scylla::errors::ExecutionError) -> Self {
        LedgerError::Cql(Box::new(e))
    }
}

pub(crate) fn query_err(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Query(e.to_string())
}

pub(crate) fn result_err(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Result(e.to_string())
}

/// The rows of `cql`, read a page of 5,000 at a time: for full scans (`reindex`, `reconcile`,
/// finance), audit tools and never a hot path.
pub(crate) async fn full_scan<R>(session: &Session, cql: String) -> Result<TypedRowStream<R>, LedgerError>
where
    R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
{
    let mut stmt = scylla::statement::Statement::new(cql);
    stmt.set_page_size(5_000);
    session.query_iter(stmt, &[]).await.map_err(query_err)?.rows_stream::<R>().map_err(result_err)
}

/// Where the two ledger layers live.
pub trait LedgerStore: Send + Sync + 'static {
    /// Layer 1: inserts the events and their key index rows (idempotent: the same event writes
    /// the same cells).
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
    /// Dead letters: the offsets of `partition` within `first..=last` already refused (by this
    /// run or an earlier one). Read after the bucket states a decision is made from: a writer
    /// records its refusals before its first bucket write, so one that sees that write also
    /// sees them.
    fn dead_letter_offsets(
        &self,
        partition: i32,
        first: i64,
        last: i64,
    ) -> impl Future<Output = Result<HashSet<i64>, LedgerError>> + Send;
    /// Dead letters: records `letter` durably. Idempotent: a second record of the same
    /// `(partition, offset)` changes nothing.
    fn record_dead_letter(&self, letter: &DeadLetter) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

pub struct CqlLedger {
    session: std::sync::Arc<Session>,
    insert_event: PreparedStatement,
    insert_key_index: PreparedStatement,
    find_events: PreparedStatement,
    select_fence: PreparedStatement,
    select_fence_serial: PreparedStatement,
    select_rows: PreparedStatement,
    select_rows_serial: PreparedStatement,
    write_row: PreparedStatement,
    write_fence: PreparedStatement,
    copy_row: PreparedStatement,
    copy_daily_row: PreparedStatement,
    insert_dead_letter: PreparedStatement,
    select_dead_letters: PreparedStatement,
    /// The usage topic: dead letters are kept per topic, partition and offset.
    usage_topic: String,
}

/// Offsets of a Kafka partition per CQL partition of `dead_letters` (`offset_block`).
const DEAD_LETTER_BLOCK: i64 = 1 << 16;

/// Parallel Layer 1 inserts in flight per batch.
const INSERT_CONCURRENCY: usize = 64;

impl CqlLedger {
    /// Connects, applies the schema when `create_schema`, and prepares every statement, for the
    /// events of `usage_topic`.
    pub async fn connect(
        connection: &tollgate_schemas::store::CqlConnection,
        keyspace: &str,
        usage_topic: &str,
        create_schema: bool,
    ) -> Result<CqlLedger, LedgerError> {
        let session =
            tollgate_schemas::store::connect(connection).await.map_err(|e| LedgerError::Connect(e.to_string()))?;
        if create_schema {
            tollgate_schemas::store::apply_schema(&session, keyspace, &connection.replication)
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
        let insert_key_index = prepare(format!(
            "INSERT INTO {ks}.usage_events_by_key (key_id, day, hour, event_id, team_id, user_id, customer_id, \
             requested_model) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        ))
        .await?;
        let find_events = prepare(format!(
            "SELECT event_id, kafka_partition, kafka_offset FROM {ks}.usage_events \
             WHERE owner_id = ? AND day = ? AND shard = ? AND event_id IN ?"
        ))
        .await?;
        let select_fence = prepare(format!(
            "SELECT applied_offset FROM {ks}.partition_spend WHERE partition = ? AND bucket = ? LIMIT 1"
        ))
        .await?;
        let mut select_fence_serial = select_fence.clone();
        select_fence_serial.set_consistency(tollgate_schemas::store::serial_read(&session));
        let select_rows = prepare(format!(
            "SELECT scope_id, window_id, spent_nano_usd, events, prompt_tokens, completion_tokens, applied_offset \
             FROM {ks}.partition_spend WHERE partition = ? AND bucket = ? AND (scope_id, window_id) IN ?"
        ))
        .await?;
        let mut select_rows_serial = select_rows.clone();
        select_rows_serial.set_consistency(tollgate_schemas::store::serial_read(&session));
        // Every statement of a step's batch carries the same condition and sets the same fence:
        // one statement shape, so a batch is N copies of it.
        let write_row = prepare(format!(
            "UPDATE {ks}.partition_spend SET applied_offset = ?, spent_nano_usd = ?, events = ?, prompt_tokens = ?, \
             completion_tokens = ? WHERE partition = ? AND bucket = ? AND scope_id = ? AND window_id = ? \
             IF applied_offset = ?"
        ))
        .await?;
        let write_fence = prepare(format!(
            "UPDATE {ks}.partition_spend SET applied_offset = ? WHERE partition = ? AND bucket = ? IF applied_offset = ?"
        ))
        .await?;
        let copy_row = prepare(format!(
            "UPDATE {ks}.spend_aggregates USING TIMESTAMP ? SET spent_nano_usd = ?, events = ?, prompt_tokens = ?, \
             completion_tokens = ?, applied_offset = ? WHERE scope_id = ? AND window_id = ? AND partition = ?"
        ))
        .await?;
        let copy_daily_row = prepare(format!(
            "UPDATE {ks}.spend_daily USING TIMESTAMP ? SET spent_nano_usd = ?, events = ?, prompt_tokens = ?, \
             completion_tokens = ?, applied_offset = ? WHERE kind = ? AND day = ? AND partition = ? AND scope_id = ?"
        ))
        .await?;
        // The first record of a refusal stays: a replay that refuses the record again (after a
        // crash before its offset was stored) changes nothing.
        let insert_dead_letter = prepare(format!(
            "INSERT INTO {ks}.dead_letters (topic, partition, offset_block, kafka_offset, event_id, reason, message, \
             body, body_bytes, dead_lettered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        ))
        .await?;
        let select_dead_letters = prepare(format!(
            "SELECT kafka_offset FROM {ks}.dead_letters WHERE topic = ? AND partition = ? AND offset_block = ? \
             AND kafka_offset >= ? AND kafka_offset <= ?"
        ))
        .await?;
        Ok(CqlLedger {
            session,
            insert_event,
            insert_key_index,
            find_events,
            select_fence,
            select_fence_serial,
            select_rows,
            select_rows_serial,
            write_row,
            write_fence,
            copy_row,
            copy_daily_row,
            insert_dead_letter,
            select_dead_letters,
            usage_topic: usage_topic.to_owned(),
        })
    }

    /// Copies Layer 2 rows of `partition` to the read model: each to `spend_aggregates` (unless
    /// `daily_only`), and a day window's also to `spend_daily` (by kind and day), with the same
    /// values and timestamp, so the highest fence wins in both whatever order copies arrive in.
    async fn copy_rows(
        &self,
        partition: i32,
        rows: &[(RowKey, RowState)],
        daily_only: bool,
    ) -> Result<(), LedgerError> {
        let mut writes = Vec::with_capacity(rows.len() * 2);
        for ((scope, window), r) in rows {
            if !daily_only {
                writes.push((scope, ReadModelWrite::Scope { window }, r));
            }
            if let (Some(day), Some((kind, _))) = (window.strip_prefix("d:"), scope.split_once('/')) {
                writes.push((scope, ReadModelWrite::Daily { kind, day }, r));
            }
        }
        let mut pending = FuturesUnordered::new();
        let mut rest = writes.into_iter();
        loop {
            while pending.len() < COPY_CONCURRENCY {
                let Some((scope, write, r)) = rest.next() else { break };
                let stamp = HIGHEST_FENCE_WINS.saturating_add(r.applied_offset);
                let (spent, events, prompt, completion, fence) =
                    (r.spent.0, r.events, r.prompt_tokens, r.completion_tokens, r.applied_offset);
                pending.push(async move {
                    match write {
                        ReadModelWrite::Scope { window } => {
                            let values =
                                (stamp, spent, events, prompt, completion, fence, scope.as_str(), window, partition);
                            self.session.execute_unpaged(&self.copy_row, values).await
                        }
                        ReadModelWrite::Daily { kind, day } => {
                            let values =
                                (stamp, spent, events, prompt, completion, fence, kind, day, partition, scope.as_str());
                            self.session.execute_unpaged(&self.copy_daily_row, values).await
                        }
                    }
                });
            }
            match pending.next().await {
                Some(result) => {
                    result?;
                }
                None => break,
            }
        }
        Ok(())
    }

    pub fn session(&self) -> &std::sync::Arc<Session> {
        &self.session
    }

    /// The rows of `cql`, read a page of 5,000 at a time: for full scans (`reindex`,
    /// `reconcile`), audit tools and never a hot path.
    pub(crate) async fn full_scan<R>(&self, cql: String) -> Result<TypedRowStream<R>, LedgerError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        full_scan(&self.session, cql).await
    }

    /// Inserts rows that share one CQL partition as one unlogged batch: a single mutation for
    /// Cassandra or ScyllaDB to apply, instead of one request per row.
    async fn insert_batch<R: SerializeRow>(
        &self,
        statement: &PreparedStatement,
        rows: Vec<R>,
    ) -> Result<(), LedgerError> {
        if let [row] = rows.as_slice() {
            self.session.execute_unpaged(statement, row).await?;
            return Ok(());
        }
        let mut batch = Batch::new(BatchType::Unlogged);
        for _ in &rows {
            batch.append_statement(statement.clone());
        }
        self.session.batch(&batch, rows).await?;
        Ok(())
    }

    /// Writes `batches` (each one CQL partition's rows) with a sliding window of batches in flight.
    async fn insert_batches<R: SerializeRow>(
        &self,
        statement: &PreparedStatement,
        batches: Vec<Vec<R>>,
    ) -> Result<(), LedgerError> {
        let mut pending = FuturesUnordered::new();
        let mut rest = batches.into_iter();
        loop {
            while pending.len() < INSERT_CONCURRENCY {
                match rest.next() {
                    Some(batch) => pending.push(self.insert_batch(statement, batch)),
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

    /// Writes `spend_daily` again from `spend_aggregates`' day rows (a full scan): for a ledger
    /// whose day rows predate the daily read model. Each copy keeps its row's fence as its
    /// timestamp, so a copy the consumer makes meanwhile is never overwritten by an older one.
    pub async fn reindex_daily(&self, keyspace: &str) -> Result<u64, LedgerError> {
        type Cells =
            (Option<String>, Option<String>, i32, Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
        let mut rows = self
            .full_scan::<Cells>(format!(
                "SELECT scope_id, window_id, partition, spent_nano_usd, events, prompt_tokens, completion_tokens, \
                 applied_offset FROM {keyspace}.spend_aggregates"
            ))
            .await?;
        let mut written = 0u64;
        let mut by_partition: HashMap<i32, Vec<(RowKey, RowState)>> = HashMap::new();
        loop {
            let row = rows.next().await.transpose().map_err(query_err)?;
            let end = row.is_none();
            if let Some((Some(scope), Some(window), partition, spent, events, prompt, completion, fence)) = row {
                if window.starts_with("d:") {
                    let state = row_state(spent, events, prompt, completion, fence);
                    by_partition.entry(partition).or_default().push(((scope, window), state));
                }
            }
            let full = by_partition.values().map(Vec::len).sum::<usize>() >= 5_000;
            if full || end {
                for (partition, chunk) in by_partition.drain() {
                    written += chunk.len() as u64;
                    self.copy_rows(partition, &chunk, true).await?;
                }
            }
            if end {
                return Ok(written);
            }
        }
    }

    /// Writes the key index rows of every event of the event ledger (`reindex`): for a ledger
    /// written before the index existed. Idempotent, in pages of the event ledger, with the
    /// timestamps the consumer would have used.
    pub async fn reindex_keys(&self, keyspace: &str) -> Result<u64, LedgerError> {
        type Cells = (
            Option<String>,
            chrono::NaiveDate,
            Option<chrono::DateTime<chrono::Utc>>,
            uuid::Uuid,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
        );
        let mut rows = self
            .full_scan::<Cells>(format!(
                "SELECT key_id, day, occurred_at, event_id, team_id, user_id, customer_id, requested_model, \
                 kafka_offset FROM {keyspace}.usage_events"
            ))
            .await?;
        let mut written = 0u64;
        let mut chunk: Vec<Cells> = Vec::new();
        loop {
            let row = rows.next().await.transpose().map_err(query_err)?;
            let end = row.is_none();
            chunk.extend(row);
            if chunk.len() >= 5_000 || (end && !chunk.is_empty()) {
                let index: Vec<KeyIndexRow<'_>> = chunk
                    .iter()
                    .map(|(key, day, at, id, team, user, customer, model, offset)| KeyIndexRow {
                        key_id: key.as_deref().unwrap_or_default(),
                        day: *day,
                        hour: at.map_or(0, |at| hour_of(&at)),
                        event_id: *id,
                        team_id: unset_if_absent(team),
                        user_id: unset_if_absent(user),
                        customer_id: unset_if_absent(customer),
                        requested_model: model.as_deref().unwrap_or_default(),
                        write_timestamp: LOWEST_OFFSET_WINS - offset.unwrap_or(-1),
                    })
                    .collect();
                written += index.len() as u64;
                self.insert_batches(&self.insert_key_index, key_index_batches(index)).await?;
                chunk.clear();
            }
            if end {
                return Ok(written);
            }
        }
    }
}

/// The Layer 1 row of one message. Absent optional fields stay unset, never null: a null is a
/// tombstone, and a few per event made reads of an owner's events wade through thousands.
fn event_row(partition: i32, m: &Message) -> Result<EventRow<'_>, LedgerError> {
    let e = &m.event;
    let body = serde_json::to_string(e)?;
    Ok(EventRow {
        owner_id: e.budget_owner(),
        day: e.day(),
        shard: e.shard(),
        event_id: e.event_id,
        occurred_at: e.occurred_at,
        key_id: &e.key_id,
        team_id: unset_if_absent(&e.team_id),
        user_id: unset_if_absent(&e.user_id),
        customer_id: unset_if_absent(&e.customer_id),
        organization_id: unset_if_absent(&e.organization_id),
        requested_model: &e.requested_model,
        served_model: unset_if_absent(&e.served_model),
        provider: unset_if_absent(&e.provider),
        prompt_tokens: i64::try_from(e.prompt_tokens).unwrap_or(i64::MAX),
        completion_tokens: i64::try_from(e.completion_tokens).unwrap_or(i64::MAX),
        cached_tokens: i64::try_from(e.cached_tokens).unwrap_or(i64::MAX),
        cost_nano_usd: e.cost_nano_usd.0,
        status: i32::from(e.status),
        kafka_partition: partition,
        kafka_offset: m.offset,
        body,
        // The copy at the lowest offset wins if two are ever written (see
        // fold::select): a lower offset gets a later write timestamp.
        write_timestamp: LOWEST_OFFSET_WINS - m.offset,
    })
}

fn unset_if_absent(value: &Option<String>) -> MaybeUnset<&str> {
    MaybeUnset::from_option(value.as_deref())
}

/// The key index row of one message: where its Layer 1 row is (the same day; the owner follows
/// from the key and team, the shard from the event id) and what the request logs filter on.
/// Absent fields stay unset, and the write timestamp is the Layer 1 row's, so the same copy wins
/// in both tables.
fn key_index_row(m: &Message) -> KeyIndexRow<'_> {
    let e = &m.event;
    KeyIndexRow {
        key_id: &e.key_id,
        day: e.day(),
        hour: e.hour(),
        event_id: e.event_id,
        team_id: unset_if_absent(&e.team_id),
        user_id: unset_if_absent(&e.user_id),
        customer_id: unset_if_absent(&e.customer_id),
        requested_model: &e.requested_model,
        write_timestamp: LOWEST_OFFSET_WINS - m.offset,
    }
}

/// The UTC hour of `at`, as the key index's partition key holds it.
fn hour_of(at: &chrono::DateTime<chrono::Utc>) -> i16 {
    use chrono::Timelike;
    i16::try_from(at.hour()).unwrap_or(0)
}

/// Groups key index rows by their CQL partition `(key, day, hour)`, at most
/// [`INDEX_BATCH_ROWS`] a batch: a key's events of one consumer batch are seconds apart, so
/// they go as one batch.
fn key_index_batches(rows: Vec<KeyIndexRow<'_>>) -> Vec<Vec<KeyIndexRow<'_>>> {
    let mut groups: HashMap<(&str, chrono::NaiveDate, i16), Vec<KeyIndexRow<'_>>> = HashMap::new();
    for row in rows {
        groups.entry((row.key_id, row.day, row.hour)).or_default().push(row);
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        while group.len() > INDEX_BATCH_ROWS {
            let rest = group.split_off(INDEX_BATCH_ROWS);
            out.push(std::mem::replace(&mut group, rest));
        }
        out.push(group);
    }
    out
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
/// Rows per key index batch: about 100 bytes each on the wire, so a batch stays near 5 KiB.
const INDEX_BATCH_ROWS: usize = 48;
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
    team_id: MaybeUnset<&'a str>,
    user_id: MaybeUnset<&'a str>,
    customer_id: MaybeUnset<&'a str>,
    organization_id: MaybeUnset<&'a str>,
    requested_model: &'a str,
    served_model: MaybeUnset<&'a str>,
    provider: MaybeUnset<&'a str>,
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

/// A key index row, bound in statement order (the last marker is `USING TIMESTAMP`).
#[derive(scylla::SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct KeyIndexRow<'a> {
    key_id: &'a str,
    day: chrono::NaiveDate,
    hour: i16,
    event_id: uuid::Uuid,
    team_id: MaybeUnset<&'a str>,
    user_id: MaybeUnset<&'a str>,
    customer_id: MaybeUnset<&'a str>,
    requested_model: &'a str,
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

/// A row as read (absent cells are zero; an absent fence is -1, a row not written yet).
fn row_state(
    spent: Option<i64>,
    events: Option<i64>,
    prompt: Option<i64>,
    completion: Option<i64>,
    applied: Option<i64>,
) -> RowState {
    RowState {
        spent: NanoUsd(spent.unwrap_or(0)),
        events: events.unwrap_or(0),
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        applied_offset: applied.unwrap_or(-1),
    }
}

/// Where one read-model copy of a row goes: `spend_aggregates` under its window, or `spend_daily`
/// under its scope's kind and day.
#[derive(Clone, Copy)]
enum ReadModelWrite<'a> {
    Scope { window: &'a str },
    Daily { kind: &'a str, day: &'a str },
}

/// `[applied]` of an LWT result.
fn applied(result: scylla::response::query_result::QueryResult) -> Result<bool, LedgerError> {
    tollgate_schemas::store::lwt_applied(result).map_err(result_err)
}

impl LedgerStore for CqlLedger {
    async fn insert_events(&self, partition: i32, messages: &[Message]) -> Result<(), LedgerError> {
        let rows = messages.iter().map(|m| event_row(partition, m)).collect::<Result<Vec<_>, _>>()?;
        self.insert_batches(&self.insert_event, partition_batches(rows)).await?;
        // Only once the rows they point at are written. A failure here fails the batch, which is
        // written again whole (Layer 1 included) before its offset is stored.
        let index = messages.iter().map(key_index_row).collect();
        self.insert_batches(&self.insert_key_index, key_index_batches(index)).await
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
            let rows = result?.into_rows_result().map_err(result_err)?;
            for row in rows.rows::<(uuid::Uuid, Option<i32>, Option<i64>)>().map_err(result_err)? {
                let (id, partition, offset) = row.map_err(result_err)?;
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
        let result = self.session.execute_unpaged(fence_stmt, (partition, bucket)).await?;
        let fence = result
            .into_rows_result()
            .map_err(result_err)?
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(result_err)?
            .and_then(|(f,)| f);
        let mut state = BucketState { fence, rows: HashMap::with_capacity(keys.len()) };
        if fence.is_none() {
            return Ok(state); // a bucket without a fence has never been written
        }
        for chunk in keys.chunks(ROWS_PER_READ) {
            let wanted: Vec<(&str, &str)> = chunk.iter().map(|(s, w)| (s.as_str(), w.as_str())).collect();
            let result = self.session.execute_unpaged(rows_stmt, (partition, bucket, wanted)).await?;
            let rows = result.into_rows_result().map_err(result_err)?;
            type Cells = (String, String, Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
            for row in rows.rows::<Cells>().map_err(result_err)? {
                let (scope, window, spent, events, prompt, completion, applied) = row.map_err(result_err)?;
                let row = row_state(spent, events, prompt, completion, applied);
                state.rows.insert((scope, window), row);
            }
        }
        Ok(state)
    }

    async fn write_bucket(&self, partition: i32, bucket: i32, step: &BucketStep) -> Result<bool, LedgerError> {
        if step.rows.is_empty() {
            let values = (step.fence, partition, bucket, step.expected);
            return applied(self.session.execute_unpaged(&self.write_fence, values).await?);
        }
        let statement = BatchStatement::PreparedStatement(self.write_row.clone());
        let batch = Batch::new_with_statements(BatchType::Logged, vec![statement; step.rows.len()]);
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
        applied(self.session.batch(&batch, values).await?)
    }

    async fn write_read_model(&self, partition: i32, rows: &[(RowKey, RowState)]) -> Result<(), LedgerError> {
        self.copy_rows(partition, rows, false).await
    }

    async fn dead_letter_offsets(&self, partition: i32, first: i64, last: i64) -> Result<HashSet<i64>, LedgerError> {
        let mut found = HashSet::new();
        for block in first.div_euclid(DEAD_LETTER_BLOCK)..=last.div_euclid(DEAD_LETTER_BLOCK) {
            let values = (self.usage_topic.as_str(), partition, block, first, last);
            let rows = self.session.execute_unpaged(&self.select_dead_letters, values).await?;
            for row in rows.into_rows_result().map_err(result_err)?.rows::<(i64,)>().map_err(result_err)? {
                found.insert(row.map_err(result_err)?.0);
            }
        }
        Ok(found)
    }

    async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<(), LedgerError> {
        let (body, body_bytes) = letter.body_prefix();
        let values = DeadLetterWrite {
            topic: &self.usage_topic,
            partition: letter.partition,
            offset_block: letter.offset.div_euclid(DEAD_LETTER_BLOCK),
            kafka_offset: letter.offset,
            event_id: MaybeUnset::from_option(letter.event_id),
            reason: letter.reason.code(),
            message: &letter.message,
            body: MaybeUnset::from_option(letter.body.as_ref().map(|_| body)),
            body_bytes: i32::try_from(body_bytes).unwrap_or(i32::MAX),
            dead_lettered_at: chrono::Utc::now(),
        };
        // Applied or not (a replay found the first record), the refusal is on record.
        self.session.execute_unpaged(&self.insert_dead_letter, values).await?;
        Ok(())
    }
}

/// A row of `dead_letters`, bound in statement order. An absent event id or value stays unset.
#[derive(scylla::SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct DeadLetterWrite<'a> {
    topic: &'a str,
    partition: i32,
    offset_block: i64,
    kafka_offset: i64,
    event_id: MaybeUnset<uuid::Uuid>,
    reason: &'a str,
    message: &'a str,
    body: MaybeUnset<&'a [u8]>,
    body_bytes: i32,
    dead_lettered_at: chrono::DateTime<chrono::Utc>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_of_an_event_row_stay_unset() {
        let event: tollgate_schemas::UsageEvent =
            serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1_minimal.json")).unwrap();
        let message = Message { offset: 7, event };
        let row = event_row(3, &message).unwrap();
        let unset = [row.team_id, row.user_id, row.customer_id, row.organization_id, row.served_model, row.provider];
        assert!(unset.iter().all(|v| matches!(v, MaybeUnset::Unset)), "a null would be a tombstone");

        let golden: tollgate_schemas::UsageEvent =
            serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1.json")).unwrap();
        let message = Message { offset: 8, event: golden };
        let row = event_row(3, &message).unwrap();
        assert!(matches!(row.team_id, MaybeUnset::Set("team-payments")));
        assert!(matches!(row.provider, MaybeUnset::Set("openai")));
    }

    #[test]
    fn key_index_rows_point_at_their_event_and_leave_absent_fields_unset() {
        let event: tollgate_schemas::UsageEvent =
            serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1_minimal.json")).unwrap();
        let message = Message { offset: 7, event };
        let row = key_index_row(&message);
        let unset = [row.team_id, row.user_id, row.customer_id];
        assert!(unset.iter().all(|v| matches!(v, MaybeUnset::Unset)), "a null would be a tombstone");
        let layer1 = event_row(3, &message).unwrap();
        assert_eq!((row.day, row.event_id), (layer1.day, layer1.event_id));
        assert_eq!(tollgate_schemas::event::ledger_shard_of(&row.event_id), layer1.shard);
        assert_eq!(row.hour, hour_of(&message.event.occurred_at));
        assert_eq!(tollgate_schemas::event::budget_owner_of(row.key_id, None), layer1.owner_id);
        assert_eq!(row.write_timestamp, layer1.write_timestamp, "the same copy wins in both tables");

        let golden: tollgate_schemas::UsageEvent =
            serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1.json")).unwrap();
        let message = Message { offset: 8, event: golden };
        let row = key_index_row(&message);
        assert!(matches!(row.team_id, MaybeUnset::Set("team-payments")));
        assert_eq!(
            tollgate_schemas::event::budget_owner_of(row.key_id, Some("team-payments")),
            message.event.budget_owner()
        );
    }

    #[test]
    fn key_index_batches_hold_one_partition_each_and_are_bounded() {
        let event: tollgate_schemas::UsageEvent =
            serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1_minimal.json")).unwrap();
        let messages: Vec<Message> = (0..200)
            .map(|i| {
                let mut e = event.clone();
                e.event_id = uuid::Uuid::now_v7();
                e.key_id = format!("k{}", i % 2);
                Message { offset: i, event: e }
            })
            .collect();
        let batches = key_index_batches(messages.iter().map(key_index_row).collect());
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 200);
        for b in &batches {
            assert!(!b.is_empty() && b.len() <= INDEX_BATCH_ROWS);
            assert!(b.iter().all(|r| (r.key_id, r.day, r.hour) == (b[0].key_id, b[0].day, b[0].hour)));
        }
    }
}
