//! The embedded default (docs/design.md §7): one SQLite file holds the usage log, both ledger
//! layers and the tenancy records, for a gateway that runs alone with no Kafka and no Cassandra.
//!
//! The log plays Kafka's part: each usage event is appended with a stable, ever-growing offset
//! (`AUTOINCREMENT`, never reused), and [`fold_next`] folds it into the ledgers with the very same
//! code as the Kafka consumer (`apply::fold_batch` over [`LedgerStore`]), then moves a stored
//! cursor: the same exactly-once protocol, the same event format, one partition. A record the
//! ledger refuses (docs/security.md) moves from the log to `dead_letters`, and folding goes on.
//!
//! Layer 2 has no separate read model here: `spend_aggregates` is both the authoritative rows and
//! what readers query, and `bucket_fences` holds the fence of each bucket. A bucket step (fence
//! check, fence and rows) is one transaction. Rows written before buckets existed keep their own
//! `applied_offset` as their fence (see `fold`).
//!
//! Layer 1's key index is an SQLite index on `usage_events (key_id, day, event_id)`, part of the
//! very rows it indexes: unlike Cassandra's `usage_events_by_key`, it cannot disagree with them,
//! so reconciling it would compare a table with itself.
//!
//! Writes are durable when their transaction commits (`synchronous=FULL`, WAL); callers batch
//! events into one transaction (group commit).

use crate::apply::{fold_batch, FoldError, Folded, LogRecord};
use crate::dead_letter::{DeadLetter, NoTopic};
use crate::fold::{BucketState, BucketStep, Message, RowKey, RowState};
use crate::ledger::{LedgerError, LedgerStore};
use futures::future::BoxFuture;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tollgate_schemas::logs::{
    read_newest_first, LogCursor, LogFields, LogPage, LogQuery, LogRow, LogScope, LogSlices, Slice,
};
use tollgate_schemas::store::{
    DailyQuery, DailyTotals, SpendSource, SpendTotal, StoreError, Stored, TenancyStore, MAX_DAILY_ROWS,
};
use tollgate_schemas::tenancy::Kind;
use tollgate_schemas::{NanoUsd, UsageEvent};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS usage_log (log_offset INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS log_cursor (name TEXT PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (log_offset INTEGER PRIMARY KEY, reason TEXT NOT NULL, body BLOB NOT NULL,
  message TEXT, event_id TEXT, dead_lettered_at INTEGER);
CREATE TABLE IF NOT EXISTS usage_events (
  event_id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, day TEXT NOT NULL,
  log_partition INTEGER NOT NULL, log_offset INTEGER NOT NULL, body TEXT NOT NULL, key_id TEXT);
CREATE TABLE IF NOT EXISTS spend_aggregates (
  scope_id TEXT NOT NULL, window_id TEXT NOT NULL, log_partition INTEGER NOT NULL,
  spent_nano_usd INTEGER NOT NULL, events INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL, applied_offset INTEGER NOT NULL,
  PRIMARY KEY (scope_id, window_id, log_partition));
CREATE TABLE IF NOT EXISTS bucket_fences (
  log_partition INTEGER NOT NULL, bucket INTEGER NOT NULL, applied_offset INTEGER NOT NULL,
  PRIMARY KEY (log_partition, bucket));
CREATE TABLE IF NOT EXISTS tenancy (kind TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL, version INTEGER NOT NULL,
  PRIMARY KEY (kind, id));
";

/// The one partition of the embedded log.
pub const PARTITION: i32 = 0;
const CURSOR: &str = "ledger";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("embedded database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
}

/// The embedded database: one SQLite connection, shared.
pub struct EmbeddedDb {
    conn: Mutex<Connection>,
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Query(e.to_string())
}

impl EmbeddedDb {
    /// Opens (creating if needed) the database file and its schema.
    pub fn open(path: &Path) -> Result<Arc<EmbeddedDb>, EmbeddedError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| EmbeddedError::Dir { path: dir.display().to_string(), source })?;
        }
        let conn = Connection::open(path).map_err(|source| EmbeddedError::Open { path: shown.clone(), source })?;
        conn.execute_batch(SCHEMA)
            .and_then(|()| add_dead_letter_columns(&conn))
            .and_then(|()| index_events(&conn))
            .map_err(|source| EmbeddedError::Open { path: shown, source })?;
        Ok(Arc::new(EmbeddedDb { conn: Mutex::new(conn) }))
    }

    /// Caps the database file at about `max_bytes` (SQLite's `max_page_count`): writes beyond it
    /// fail as a full disk would, which the gateway answers with 503 instead of a hang.
    pub fn limit_size(&self, max_bytes: u64) -> Result<u64, rusqlite::Error> {
        let conn = self.lock();
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = (max_bytes / page_size.max(1)).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get(0))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends encoded events to the log in one transaction (one fsync for the batch).
    pub fn append(&self, bodies: &[Vec<u8>]) -> Result<(), rusqlite::Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO usage_log (body) VALUES (?1)")?;
            for b in bodies {
                stmt.execute(params![b])?;
            }
        }
        tx.commit()
    }

    /// Records ever appended to the log: the last offset given (folded records are deleted,
    /// their offsets are not given again).
    pub fn appended(&self) -> Result<i64, rusqlite::Error> {
        let conn = self.lock();
        conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'usage_log'", [], |r| r.get(0))
    }

    /// Log records not folded yet: how far the ledger lags behind the log.
    pub fn backlog(&self) -> Result<i64, rusqlite::Error> {
        let conn = self.lock();
        let next = cursor(&conn)?;
        conn.query_row("SELECT COUNT(*) FROM usage_log WHERE log_offset >= ?1", params![next], |r| r.get(0))
    }
}

/// `dead_letters` of a file from before its `message`, `event_id` and `dead_lettered_at`
/// columns gets them (its rows keep their message in `reason`).
fn add_dead_letter_columns(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('dead_letters')")?;
    let present: HashSet<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for (column, ty) in [("message", "TEXT"), ("event_id", "TEXT"), ("dead_lettered_at", "INTEGER")] {
        if !present.contains(column) {
            conn.execute_batch(&format!("ALTER TABLE dead_letters ADD COLUMN {column} {ty}"))?;
        }
    }
    Ok(())
}

/// The event ledger's indexes, newest first within a day: by key (a key's request logs read its
/// events only), by budget owner, and by day. A file from before `key_id` gets the column,
/// filled from each row's body, and loses the indexes these replace.
fn index_events(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('usage_events')")?;
    let present: HashSet<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    if !present.contains("key_id") {
        conn.execute_batch(
            "ALTER TABLE usage_events ADD COLUMN key_id TEXT;
             UPDATE usage_events SET key_id = json_extract(body, '$.key_id');",
        )?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS usage_events_by_key ON usage_events (key_id, day, event_id);
         CREATE INDEX IF NOT EXISTS usage_events_by_owner ON usage_events (owner_id, day, event_id);
         CREATE INDEX IF NOT EXISTS usage_events_by_day ON usage_events (day, event_id);
         DROP INDEX IF EXISTS usage_events_owner_day;
         DROP INDEX IF EXISTS usage_events_day;",
    )
}

fn cursor(conn: &Connection) -> Result<i64, rusqlite::Error> {
    Ok(conn
        .query_row("SELECT next_offset FROM log_cursor WHERE name = ?1", params![CURSOR], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Folds up to `max` log records after the cursor into both ledger layers, then moves the cursor
/// (the Kafka consumer's protocol, with the log's offsets). Records the ledger refuses go to
/// `dead_letters` with the reason. Returns what was folded (nothing when the log is drained).
pub async fn fold_next(db: &EmbeddedDb, max: usize) -> Result<Folded, FoldError> {
    let records = db.read_log(max)?;
    let Some(last) = records.last().map(|r| r.0) else { return Ok(Folded::default()) };
    let log: Vec<LogRecord<'_>> =
        records.iter().map(|(offset, body)| LogRecord { offset: *offset, value: Some(body.as_slice()) }).collect();
    let folded = fold_batch(db, &NoTopic, PARTITION, &log).await?;
    // Only now may the cursor move; folded records leave the log (they are in Layer 1 or in
    // dead_letters).
    db.move_cursor_past(last)?;
    metrics::counter!("tollgate_ledger_events_folded_total")
        .increment(folded.messages.len().saturating_sub(folded.applied.duplicates) as u64);
    Ok(folded)
}

impl EmbeddedDb {
    /// Up to `max` log records after the cursor, `(offset, value)` in offset order.
    fn read_log(&self, max: usize) -> Result<Vec<(i64, Vec<u8>)>, LedgerError> {
        let conn = self.lock();
        let next = cursor(&conn)?;
        let mut stmt = conn.prepare_cached(
            "SELECT log_offset, body FROM usage_log WHERE log_offset >= ?1 ORDER BY log_offset LIMIT ?2",
        )?;
        let rows =
            stmt.query_map(params![next, i64::try_from(max).unwrap_or(i64::MAX)], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves the cursor past `last` and drops the log records up to it.
    fn move_cursor_past(&self, last: i64) -> Result<(), LedgerError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO log_cursor (name, next_offset) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET next_offset = ?2",
            params![CURSOR, last + 1],
        )?;
        tx.execute("DELETE FROM usage_log WHERE log_offset <= ?1", params![last])?;
        Ok(tx.commit()?)
    }
}

/// A bucket's fence: the last log offset folded into it (`None`: never written).
fn bucket_fence(conn: &Connection, partition: i32, bucket: i32) -> Result<Option<i64>, LedgerError> {
    conn.query_row(
        "SELECT applied_offset FROM bucket_fences WHERE log_partition = ?1 AND bucket = ?2",
        params![partition, bucket],
        |r| r.get(0),
    )
    .optional()
    .map_err(LedgerError::from)
}

impl LedgerStore for EmbeddedDb {
    async fn insert_events(&self, partition: i32, messages: &[Message]) -> Result<(), LedgerError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO usage_events (event_id, owner_id, day, log_partition, log_offset, body, key_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for m in messages {
                let body = serde_json::to_string(&m.event)?;
                stmt.execute(params![
                    m.event.event_id.to_string(),
                    m.event.budget_owner(),
                    m.event.day().to_string(),
                    partition,
                    m.offset,
                    body,
                    m.event.key_id
                ])?;
            }
        }
        Ok(tx.commit()?)
    }

    async fn find_events(&self, messages: &[Message]) -> Result<HashMap<uuid::Uuid, (i32, i64)>, LedgerError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT log_partition, log_offset FROM usage_events WHERE event_id = ?1")?;
        let mut found = HashMap::new();
        for m in messages {
            let hit: Option<(i32, i64)> =
                stmt.query_row(params![m.event.event_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            if let Some(at) = hit {
                found.insert(m.event.event_id, at);
            }
        }
        Ok(found)
    }

    async fn read_bucket(
        &self,
        partition: i32,
        bucket: i32,
        keys: &[RowKey],
        _serial: bool,
    ) -> Result<BucketState, LedgerError> {
        let conn = self.lock();
        let fence = bucket_fence(&conn, partition, bucket)?;
        let mut stmt = conn.prepare_cached(
            "SELECT spent_nano_usd, events, prompt_tokens, completion_tokens, applied_offset FROM spend_aggregates \
                 WHERE scope_id = ?1 AND window_id = ?2 AND log_partition = ?3",
        )?;
        let mut rows = HashMap::with_capacity(keys.len());
        for key in keys {
            let row = stmt
                .query_row(params![key.0, key.1, partition], |r| {
                    Ok(RowState {
                        spent: NanoUsd(r.get(0)?),
                        events: r.get(1)?,
                        prompt_tokens: r.get(2)?,
                        completion_tokens: r.get(3)?,
                        applied_offset: r.get(4)?,
                    })
                })
                .optional()?;
            if let Some(row) = row {
                rows.insert(key.clone(), row);
            }
        }
        Ok(BucketState { fence, rows })
    }

    async fn write_bucket(&self, partition: i32, bucket: i32, step: &BucketStep) -> Result<bool, LedgerError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if bucket_fence(&tx, partition, bucket)? != step.expected {
            return Ok(false); // dropping the transaction rolls it back
        }
        tx.execute(
            "INSERT INTO bucket_fences (log_partition, bucket, applied_offset) VALUES (?1, ?2, ?3) \
             ON CONFLICT (log_partition, bucket) DO UPDATE SET applied_offset = ?3",
            params![partition, bucket, step.fence],
        )?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO spend_aggregates (scope_id, window_id, log_partition, spent_nano_usd, events, \
                     prompt_tokens, completion_tokens, applied_offset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (scope_id, window_id, log_partition) DO UPDATE SET spent_nano_usd = ?4, events = ?5, \
                     prompt_tokens = ?6, completion_tokens = ?7, applied_offset = ?8",
            )?;
            for ((scope, window), s) in &step.rows {
                stmt.execute(params![
                    scope,
                    window,
                    partition,
                    s.spent.0,
                    s.events,
                    s.prompt_tokens,
                    s.completion_tokens,
                    s.applied_offset
                ])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    async fn write_read_model(&self, _partition: i32, _rows: &[(RowKey, RowState)]) -> Result<(), LedgerError> {
        // spend_aggregates is the authoritative table here: the bucket step already wrote it.
        Ok(())
    }

    async fn dead_letter_offsets(&self, _partition: i32, first: i64, last: i64) -> Result<HashSet<i64>, LedgerError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT log_offset FROM dead_letters WHERE log_offset BETWEEN ?1 AND ?2")?;
        let offsets = stmt.query_map(params![first, last], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(offsets)
    }

    async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<(), LedgerError> {
        // The whole value moves here from the log (which drops it once the cursor passes it).
        self.lock().execute(
            "INSERT OR IGNORE INTO dead_letters (log_offset, reason, body, message, event_id, dead_lettered_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                letter.offset,
                letter.reason.code(),
                letter.body.as_deref().unwrap_or_default(),
                letter.message,
                letter.event_id.map(|id| id.to_string()),
                chrono::Utc::now().timestamp_millis()
            ],
        )?;
        Ok(())
    }
}

impl TenancyStore for EmbeddedDb {
    fn get(&self, kind: Kind, id: &str) -> BoxFuture<'_, Result<Option<Stored>, StoreError>> {
        let found = self
            .lock()
            .query_row(
                "SELECT doc, version FROM tenancy WHERE kind = ?1 AND id = ?2",
                params![kind.as_str(), id],
                |r| Ok(Stored { doc: r.get(0)?, version: r.get(1)? }),
            )
            .optional()
            .map_err(store_err);
        Box::pin(async move { found })
    }

    fn create(&self, kind: Kind, id: &str, doc: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let n = self
            .lock()
            .execute(
                "INSERT OR IGNORE INTO tenancy (kind, id, doc, version) VALUES (?1, ?2, ?3, 1)",
                params![kind.as_str(), id, doc],
            )
            .map_err(store_err);
        Box::pin(async move { Ok(n? == 1) })
    }

    fn update(&self, kind: Kind, id: &str, doc: &str, expected: i64) -> BoxFuture<'_, Result<bool, StoreError>> {
        let n = self
            .lock()
            .execute(
                "UPDATE tenancy SET doc = ?1, version = ?2 WHERE kind = ?3 AND id = ?4 AND version = ?5",
                params![doc, expected + 1, kind.as_str(), id, expected],
            )
            .map_err(store_err);
        Box::pin(async move { Ok(n? == 1) })
    }

    fn delete(&self, kind: Kind, id: &str, expected: i64) -> BoxFuture<'_, Result<bool, StoreError>> {
        let n = self
            .lock()
            .execute(
                "DELETE FROM tenancy WHERE kind = ?1 AND id = ?2 AND version = ?3",
                params![kind.as_str(), id, expected],
            )
            .map_err(store_err);
        Box::pin(async move { Ok(n? == 1) })
    }

    fn list(&self, kind: Kind) -> BoxFuture<'_, Result<Vec<(String, Stored)>, StoreError>> {
        let listed = (|| {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached("SELECT id, doc, version FROM tenancy WHERE kind = ?1 ORDER BY id")?;
            let rows = stmt.query_map(params![kind.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, Stored { doc: r.get(1)?, version: r.get(2)? }))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })()
        .map_err(store_err);
        Box::pin(async move { listed })
    }
}

fn total_of(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<SpendTotal> {
    Ok(SpendTotal {
        spent: NanoUsd(r.get::<_, Option<i64>>(first)?.unwrap_or(0)),
        events: r.get::<_, Option<i64>>(first + 1)?.unwrap_or(0),
        prompt_tokens: r.get::<_, Option<i64>>(first + 2)?.unwrap_or(0),
        completion_tokens: r.get::<_, Option<i64>>(first + 3)?.unwrap_or(0),
    })
}

fn decode_event(body: &str) -> Result<UsageEvent, StoreError> {
    UsageEvent::decode(body.as_bytes()).map_err(|e| StoreError::Corrupt {
        kind: "usage event",
        id: String::new(),
        reason: e.to_string(),
    })
}

fn decode_events(bodies: Vec<String>) -> Result<Vec<UsageEvent>, StoreError> {
    bodies.iter().map(|b| decode_event(b)).collect()
}

/// The request logs of one scope, a day at a time (one slice, one shard: SQLite orders a day's
/// events by event id through the indexes of [`index_events`]).
struct EmbeddedLog<'a> {
    db: &'a EmbeddedDb,
    /// The indexed column and its value, or every event of the day.
    scope: Option<(&'static str, String)>,
}

impl LogSlices for EmbeddedLog<'_> {
    type Payload = UsageEvent;
    type Error = StoreError;

    fn slices(&self) -> i16 {
        1
    }

    fn shards(&self) -> i16 {
        1
    }

    async fn read(
        &self,
        Slice { day, .. }: Slice,
        _shard: i16,
        before: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<Vec<LogRow<UsageEvent>>, StoreError> {
        use rusqlite::types::Value;
        let mut sql = String::from("SELECT body FROM usage_events WHERE day = ?");
        let mut values = vec![Value::Text(day.to_string())];
        if let Some((column, value)) = &self.scope {
            sql.push_str(&format!(" AND {column} = ?"));
            values.push(Value::Text(value.clone()));
        }
        if let Some(before) = before {
            sql.push_str(" AND event_id < ?");
            values.push(Value::Text(before.to_string()));
        }
        sql.push_str(" ORDER BY event_id DESC LIMIT ?");
        values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let bodies = (|| {
            let conn = self.db.lock();
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| r.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()
        })()
        .map_err(store_err)?;
        bodies
            .iter()
            .map(|b| {
                let event = decode_event(b)?;
                Ok(LogRow { event_id: event.event_id, fields: LogFields::of(&event), payload: event })
            })
            .collect()
    }
}

impl SpendSource for EmbeddedDb {
    fn total(&self, scope: &str, window: &str) -> BoxFuture<'_, Result<SpendTotal, StoreError>> {
        let total = self
            .lock()
            .query_row(
                "SELECT SUM(spent_nano_usd), SUM(events), SUM(prompt_tokens), SUM(completion_tokens) \
                 FROM spend_aggregates WHERE scope_id = ?1 AND window_id = ?2",
                params![scope, window],
                |r| total_of(r, 0),
            )
            .map_err(store_err);
        Box::pin(async move { total })
    }

    fn daily(&self, query: DailyQuery) -> BoxFuture<'_, Result<DailyTotals, StoreError>> {
        // The kind's scopes are those from `<kind>/` up to `<kind>0` ('0' follows '/').
        let (first, past) = match &query.scope {
            Some(scope) => (scope.clone(), format!("{scope}/model0")),
            None => (format!("{}/", query.kind), format!("{}0", query.kind)),
        };
        // None: more than MAX_DAILY_ROWS rows.
        type Rows = Option<Vec<(String, String, SpendTotal)>>;
        let rows = (|| -> Result<Rows, rusqlite::Error> {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT scope_id, window_id, SUM(spent_nano_usd), SUM(events), SUM(prompt_tokens), SUM(completion_tokens) \
                 FROM spend_aggregates WHERE window_id >= ?1 AND window_id <= ?2 AND scope_id >= ?3 AND scope_id < ?4 \
                 GROUP BY scope_id, window_id",
            )?;
            let rows = stmt.query_map(
                params![format!("d:{}", query.from), format!("d:{}", query.to), first, past],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, total_of(r, 2)?)),
            )?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?);
                if out.len() > MAX_DAILY_ROWS {
                    return Ok(None);
                }
            }
            Ok(Some(out))
        })()
        .map_err(store_err)
        .and_then(|rows| rows.ok_or(StoreError::TooManyRows { limit: MAX_DAILY_ROWS }))
        .map(|rows| {
            rows.into_iter()
                .filter(|(scope, _, _)| query.wants(scope))
                .filter_map(|(scope, window, t)| {
                    let day = chrono::NaiveDate::parse_from_str(window.strip_prefix("d:")?, "%Y-%m-%d").ok()?;
                    Some((scope, day, t))
                })
                .collect()
        });
        Box::pin(async move { rows })
    }

    fn logs(&self, query: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>> {
        Box::pin(async move {
            if matches!(query.after, Some(LogCursor::Ledger { .. })) {
                return Err(StoreError::InvalidCursor);
            }
            let scope = match query.scope() {
                LogScope::Key(key) => Some(("key_id", key.to_owned())),
                LogScope::Owner(owner) => Some(("owner_id", owner)),
                // Every event of each day, newest first, through the day index.
                LogScope::All => None,
            };
            let taken = read_newest_first(&EmbeddedLog { db: self, scope }, &query).await?;
            Ok(LogPage { events: taken.entries, next: taken.next, examined: taken.examined, missing: 0 })
        })
    }
}

/// Every `(scope, window)` total of the spend aggregates whose window has not ended, to seed a
/// budget view at start-up.
pub fn open_window_totals(
    db: &EmbeddedDb,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(String, String, NanoUsd)>, StoreError> {
    let conn = db.lock();
    let mut stmt = conn
        .prepare("SELECT scope_id, window_id, SUM(spent_nano_usd) FROM spend_aggregates GROUP BY scope_id, window_id")
        .map_err(store_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, NanoUsd(r.get(2)?))))
        .map_err(store_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_err)?;
    Ok(rows
        .into_iter()
        .filter(|(_, w, _)| tollgate_schemas::tenancy::window_end(w).is_none_or(|end| end > now))
        .collect())
}

/// `(scope, window, spent nano-USD, events)` of the spend aggregates.
pub type AggregateRow = (String, String, i64, i64);

/// Every (scope, window) total of the aggregates and every event of the event ledger, for
/// reconciliation of the embedded ledger (same comparison as the Cassandra one). Events
/// dead-lettered at the offset their row records are left out, as `reconcile` does.
pub fn scan(db: &EmbeddedDb) -> Result<(Vec<UsageEvent>, Vec<AggregateRow>), StoreError> {
    let conn = db.lock();
    let bodies = {
        let mut stmt = conn
            .prepare(
                "SELECT body FROM usage_events u WHERE NOT EXISTS \
                 (SELECT 1 FROM dead_letters d WHERE d.log_offset = u.log_offset AND d.event_id = u.event_id)",
            )
            .map_err(store_err)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(store_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(store_err)?
    };
    let mut stmt = conn
        .prepare("SELECT scope_id, window_id, SUM(spent_nano_usd), SUM(events) FROM spend_aggregates GROUP BY scope_id, window_id")
        .map_err(store_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(store_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_err)?;
    Ok((decode_events(bodies)?, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::Reason;

    fn event(key: &str, cost: i64) -> UsageEvent {
        crate::fold::tests::event(key, None, cost)
    }

    #[tokio::test]
    async fn the_log_folds_exactly_once_across_reopen_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = EmbeddedDb::open(&path).unwrap();
        let e1 = event("k", 10);
        let bodies: Vec<Vec<u8>> = vec![e1.encode().unwrap(), event("k", 5).encode().unwrap(), e1.encode().unwrap()];
        db.append(&bodies).unwrap();
        db.append(&[b"not an event".to_vec()]).unwrap();
        let folded = fold_next(&db, 100).await.unwrap();
        assert_eq!(folded.messages.len(), 3);
        assert_eq!(folded.applied.duplicates, 1);
        assert_eq!(folded.dead_letters.len(), 1);
        assert_eq!(db.total("key/k", "all").await.unwrap().spent, NanoUsd(15));
        drop(db);
        // Reopened: nothing left to fold, nothing counted twice; new events continue the log.
        let db = EmbeddedDb::open(&path).unwrap();
        assert!(fold_next(&db, 100).await.unwrap().messages.is_empty());
        db.append(&[event("k", 7).encode().unwrap()]).unwrap();
        fold_next(&db, 100).await.unwrap();
        assert_eq!(
            db.total("key/k", "all").await.unwrap(),
            SpendTotal { spent: NanoUsd(22), events: 3, prompt_tokens: 3, completion_tokens: 3 }
        );
        assert_eq!(db.backlog().unwrap(), 0);
    }

    #[tokio::test]
    async fn rows_from_before_buckets_keep_their_own_fence() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        let (counted, next) = (event("k", 10).encode().unwrap(), event("k", 1).encode().unwrap());
        // A ledger written before buckets: the row holds offset 5, no bucket has a fence, and
        // the batch is replayed after a crash that left the cursor before offset 5.
        db.lock().execute("INSERT INTO spend_aggregates VALUES ('key/k', 'all', 0, 10, 1, 1, 1, 5)", []).unwrap();
        let log = [LogRecord { offset: 5, value: Some(&counted) }, LogRecord { offset: 6, value: Some(&next) }];
        let folded = fold_batch(db.as_ref(), &NoTopic, PARTITION, &log).await.unwrap();
        assert!(folded.applied.conditional_batches > 0);
        assert_eq!(db.total("key/k", "all").await.unwrap().spent, NanoUsd(11));
        assert_eq!(db.total("key/k/model/m", "all").await.unwrap().spent, NanoUsd(11));
    }

    #[tokio::test]
    async fn poison_rows_move_to_dead_letters_and_folding_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        let mut long_customer = event("k", 1_000);
        long_customer.customer_id = Some("c".repeat(65_500));
        let mut negative = event("k", -5);
        negative.request_id = "negative".into();
        db.append(&[
            event("k", 10).encode().unwrap(),
            b"{not json".to_vec(),
            long_customer.encode().unwrap(),
            negative.encode().unwrap(),
            event("k", 7).encode().unwrap(),
        ])
        .unwrap();
        let folded = fold_next(&db, 100).await.unwrap();
        assert_eq!(folded.messages.len(), 2);
        let reasons: Vec<_> = folded.dead_letters.iter().map(|l| (l.offset, l.reason)).collect();
        assert_eq!(reasons, vec![(2, Reason::NotJson), (3, Reason::SchemaViolation), (4, Reason::SchemaViolation)]);
        assert_eq!(db.total("key/k", "all").await.unwrap().spent, NanoUsd(17));
        assert_eq!(db.backlog().unwrap(), 0, "the log moved on past the poison rows");
        type Cells = (i64, String, usize, Option<String>, Option<String>);
        let rows: Vec<Cells> = db
            .lock()
            .prepare("SELECT log_offset, reason, length(body), message, event_id FROM dead_letters ORDER BY log_offset")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[1].1.as_str(), rows[1].3.as_deref()),
            ("schema_violation", Some("`customer_id` is longer than 256 bytes"))
        );
        assert!(rows[1].2 > 65_500, "the whole value moved from the log");
        assert_eq!(rows[1].4, Some(long_customer.event_id.to_string()));
        assert_eq!((rows[0].1.as_str(), rows[0].4.as_deref()), ("not_json", None));
        let (events, _) = scan(&db).unwrap();
        assert_eq!(events.len(), 2, "no Layer 1 row for a refused record");
    }

    #[test]
    fn an_older_file_gets_the_new_dead_letter_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE dead_letters (log_offset INTEGER PRIMARY KEY, reason TEXT NOT NULL, body BLOB NOT NULL);\
                 INSERT INTO dead_letters VALUES (3, 'not a usage event: expected value', x'00');",
            )
            .unwrap();
        let db = EmbeddedDb::open(&path).unwrap();
        let (offset, message): (i64, Option<String>) = db
            .lock()
            .query_row("SELECT log_offset, message FROM dead_letters", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((offset, message), (3, None));
        drop(db);
        EmbeddedDb::open(&path).unwrap();
    }

    fn log_query(filter: tollgate_schemas::logs::LogFilter, limit: usize) -> LogQuery {
        let today = chrono::Utc::now().date_naive();
        LogQuery { filter, from: today, to: today, after: None, skip: 0, limit }
    }

    /// Every page of `query`, following the cursor.
    async fn every_page(db: &EmbeddedDb, mut query: LogQuery) -> Vec<uuid::Uuid> {
        let mut ids = Vec::new();
        loop {
            let page = db.logs(query.clone()).await.unwrap();
            ids.extend(page.events.iter().map(|e| e.event_id));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return ids,
            }
        }
    }

    #[tokio::test]
    async fn a_keys_logs_are_its_own_events_newest_first_a_page_at_a_time() {
        use tollgate_schemas::logs::LogFilter;
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        let mut events = Vec::new();
        for i in 0..30 {
            let mut e = event(["a", "b", "solo"][i % 3], 1);
            e.team_id = (i % 3 != 2).then(|| "t".to_owned());
            events.push(e);
        }
        db.append(&events.iter().map(|e| e.encode().unwrap()).collect::<Vec<_>>()).unwrap();
        fold_next(&db, 100).await.unwrap();
        let newest_first = |key: Option<&str>| {
            let mut ids: Vec<uuid::Uuid> =
                events.iter().filter(|e| key.is_none_or(|k| e.key_id == k)).map(|e| e.event_id).collect();
            ids.sort_by(|a, b| b.cmp(a));
            ids
        };
        let by_key = |k: &str| LogFilter { key_id: Some(k.into()), ..LogFilter::default() };
        assert_eq!(every_page(&db, log_query(by_key("a"), 3)).await, newest_first(Some("a")));
        assert_eq!(every_page(&db, log_query(by_key("solo"), 100)).await, newest_first(Some("solo")));
        let team = LogFilter { team_id: Some("t".into()), ..LogFilter::default() };
        assert_eq!(every_page(&db, log_query(team, 7)).await.len(), 20);
        assert_eq!(every_page(&db, log_query(LogFilter::default(), 4)).await, newest_first(None));
        // Page numbers skip, and a scan's cursor does not continue a key's pages.
        let mut second = log_query(by_key("b"), 4);
        second.skip = 4;
        let page = db.logs(second.clone()).await.unwrap();
        assert_eq!(page.events.iter().map(|e| e.event_id).collect::<Vec<_>>(), newest_first(Some("b"))[4..8]);
        second.after = Some(LogCursor::Ledger { owner: "key/b".into(), day: second.to, shard: 0, event_id: None });
        assert!(matches!(db.logs(second).await, Err(StoreError::InvalidCursor)));
    }

    #[test]
    fn a_keys_logs_read_the_key_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        let plan: Vec<String> = db
            .lock()
            .prepare(
                "EXPLAIN QUERY PLAN SELECT body FROM usage_events WHERE day = ? AND key_id = ? AND event_id < ? \
                 ORDER BY event_id DESC LIMIT ?",
            )
            .unwrap()
            .query_map(params!["2026-12-05", "k", "x", 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("usage_events_by_key") && !plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[tokio::test]
    async fn an_older_event_ledger_gets_its_key_column_and_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let e = event("k-old", 3);
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "CREATE TABLE usage_events (event_id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, day TEXT NOT NULL, \
                   log_partition INTEGER NOT NULL, log_offset INTEGER NOT NULL, body TEXT NOT NULL);\
                 CREATE INDEX usage_events_owner_day ON usage_events (owner_id, day);\
                 INSERT INTO usage_events VALUES ('{}', 'key/k-old', '{}', 0, 1, '{}');",
                e.event_id,
                e.day(),
                serde_json::to_string(&e).unwrap()
            ))
            .unwrap();
        let db = EmbeddedDb::open(&path).unwrap();
        let filter = tollgate_schemas::logs::LogFilter { key_id: Some("k-old".into()), ..Default::default() };
        assert_eq!(every_page(&db, log_query(filter, 10)).await, vec![e.event_id]);
        let indexes: Vec<String> = db
            .lock()
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_events' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(indexes.contains(&"usage_events_by_key".to_owned()), "{indexes:?}");
        assert!(!indexes.contains(&"usage_events_owner_day".to_owned()), "{indexes:?}");
    }

    #[tokio::test]
    async fn a_stale_bucket_step_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        let key = ("key/k".to_owned(), "all".to_owned());
        let bucket = tollgate_schemas::ledger::ledger_bucket(&key.0, &key.1);
        let row = RowState { spent: NanoUsd(3), events: 1, prompt_tokens: 1, completion_tokens: 1, applied_offset: 4 };
        let step = BucketStep { expected: None, fence: 4, rows: vec![(key.clone(), row)] };
        assert!(db.write_bucket(PARTITION, bucket, &step).await.unwrap());
        assert!(!db.write_bucket(PARTITION, bucket, &step).await.unwrap(), "the fence moved on");
        let state = db.read_bucket(PARTITION, bucket, std::slice::from_ref(&key), false).await.unwrap();
        assert_eq!((state.fence, state.rows.get(&key)), (Some(4), Some(&row)));
    }

    #[tokio::test]
    async fn tenancy_writes_are_conditional_on_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        assert!(db.create(Kind::Team, "t", "{}").await.unwrap());
        assert!(!db.create(Kind::Team, "t", "{}").await.unwrap());
        assert!(db.update(Kind::Team, "t", "{\"a\":1}", 1).await.unwrap());
        assert!(!db.update(Kind::Team, "t", "{\"a\":2}", 1).await.unwrap(), "stale version");
        assert_eq!(db.get(Kind::Team, "t").await.unwrap().map(|s| s.version), Some(2));
        assert_eq!(db.list(Kind::Team).await.unwrap().len(), 1);
        assert!(db.delete(Kind::Team, "t", 2).await.unwrap());
    }
}
