//! The one implementation of reading and writing tenancy records in Cassandra or ScyllaDB,
//! shared by the gateway and the ledger consumer (feature `cql`), and of reading spend from the
//! ledgers ([`CqlSpend`]: totals, daily rows, request logs a page at a time). Nothing
//! Scylla-only, nothing Cassandra-only.
//!
//! Every write is a lightweight transaction on the record's `version`, so two admins changing
//! the same record at once cannot lose one change: the second is told to retry.

use crate::logs::{LogPage, LogQuery};
use crate::tenancy::{Kind, Record};
use futures::future::BoxFuture;
use futures::StreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("database schema: {0}")]
    Schema(String),
    #[error("database query failed: {0}")]
    Query(String),
    #[error("stored {kind} record {id:?} does not decode: {reason}")]
    Corrupt { kind: &'static str, id: String, reason: String },
    /// A request logs cursor that does not continue this query (a client's mistake).
    #[error("the cursor does not continue this query")]
    InvalidCursor,
    /// A read that would take in more than `limit` rows (a client's question too wide).
    #[error("more than {limit} rows would be read")]
    TooManyRows { limit: usize },
}

impl StoreError {
    /// What failed, in a word: safe to log and to count (the error's own text may quote the
    /// database's message and must not reach logs or clients).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Connect(_) => "connect",
            StoreError::Schema(_) => "schema",
            StoreError::Query(_) => "query",
            StoreError::Corrupt { .. } => "corrupt_record",
            StoreError::InvalidCursor => "invalid_cursor",
            StoreError::TooManyRows { .. } => "too_many_rows",
        }
    }
}

mod consistency;
mod daily;
mod ledger_health;
mod logs;
mod range;
mod totals;
pub use daily::{DailyQuery, CLOSED_DAY_TTL, MAX_CACHED_DAY_ROWS, MAX_DAILY_ROWS};
pub use ledger_health::{record_reconcile, DeadLetterSummary, ReconcileRun, DEAD_LETTER_SAMPLE};
pub use range::{sum_days, RangeTotals, MAX_CACHED_RANGE_SCOPES};
pub use totals::{MAX_TOTALS_SCOPES, SCOPES_PER_QUERY};

pub use consistency::{serial_read, CqlConsistency};

fn query_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Query(e.to_string())
}

/// A stored document and its version (incremented by every update).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub doc: String,
    pub version: i64,
}

/// Where tenancy records live. Object-safe, so the gateway can hold any store.
pub trait TenancyStore: Send + Sync + 'static {
    fn get(&self, kind: Kind, id: &str) -> BoxFuture<'_, Result<Option<Stored>, StoreError>>;
    /// Creates the record; `false` when one with this id exists.
    fn create(&self, kind: Kind, id: &str, doc: &str) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Replaces the record if its version is still `expected` (the new version is
    /// `expected + 1`); `false` otherwise (changed or deleted meanwhile).
    fn update(&self, kind: Kind, id: &str, doc: &str, expected: i64) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Deletes the record if its version is still `expected`.
    fn delete(&self, kind: Kind, id: &str, expected: i64) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Every record of `kind` (a full scan, for listings: not a request path).
    fn list(&self, kind: Kind) -> BoxFuture<'_, Result<Vec<(String, Stored)>, StoreError>>;
    /// Every record of `kind`, handed to `visit` a page at a time, so a scan of millions of
    /// records never holds them all (the gateway's key index is built this way). By default one
    /// page: [`TenancyStore::list`].
    fn visit_pages<'a>(&'a self, kind: Kind, visit: PageVisitor<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut visit = visit;
            visit(self.list(kind).await?);
            Ok(())
        })
    }
}

/// What [`TenancyStore::visit_pages`] hands each page to.
pub type PageVisitor<'a> = Box<dyn FnMut(Vec<(String, Stored)>) + Send + 'a>;

/// Records a [`CqlTenancy`] scan reads a page.
const SCAN_PAGE: usize = 1_000;

/// Typed reads on top of a [`TenancyStore`].
pub async fn get_record<R: Record>(store: &dyn TenancyStore, id: &str) -> Result<Option<(R, i64)>, StoreError> {
    let Some(stored) = store.get(R::KIND, id).await? else { return Ok(None) };
    let record = serde_json::from_str(&stored.doc).map_err(|e| StoreError::Corrupt {
        kind: R::KIND.as_str(),
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Some((record, stored.version)))
}

/// Every record of a kind, decoded; records that do not decode are an error naming them.
pub async fn list_records<R: Record>(store: &dyn TenancyStore) -> Result<Vec<(R, i64)>, StoreError> {
    let mut out = Vec::new();
    for (id, stored) in store.list(R::KIND).await? {
        let record = serde_json::from_str(&stored.doc).map_err(|e| StoreError::Corrupt {
            kind: R::KIND.as_str(),
            id: id.clone(),
            reason: e.to_string(),
        })?;
        out.push((record, stored.version));
    }
    Ok(out)
}

struct Statements {
    get: PreparedStatement,
    create: PreparedStatement,
    update: PreparedStatement,
    delete: PreparedStatement,
    list: String,
}

/// Tenancy records in Cassandra/ScyllaDB (`cql/004_tenancy.cql`).
pub struct CqlTenancy {
    session: Arc<Session>,
    statements: HashMap<Kind, Statements>,
}

/// How to reach Cassandra or ScyllaDB: the `database` section of the gateway and the
/// `cassandra` section of the ledger consumer (the same fields in both).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CqlConnection {
    pub contact_points: Vec<String>,
    /// With `PasswordAuthenticator` (Cassandra) or `PasswordAuthenticator`/LDAP (ScyllaDB).
    #[serde(default)]
    pub username: Option<String>,
    /// May be `os.environ/VAR`.
    #[serde(default)]
    pub password: Option<crate::secret::Secret>,
    /// Client-to-node encryption.
    #[serde(default)]
    pub tls: Option<CqlTls>,
    /// The keyspace's replication, used when the schema is applied.
    #[serde(default)]
    pub replication: crate::cql::Replication,
    /// Consistency levels of every statement (default LOCAL_QUORUM, LOCAL_SERIAL).
    #[serde(default)]
    pub consistency: CqlConsistency,
    /// The data centre this process talks to: requests go to its nodes only, never to another
    /// data centre's (the `LOCAL_*` levels count replicas there). None: every node.
    #[serde(default)]
    pub local_datacenter: Option<String>,
}

/// The `database` section of the gateway and the `cassandra` section of the ledger consumer:
/// where the ledgers and tenancy records live, and how to connect.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CqlDatabase {
    pub contact_points: Vec<String>,
    #[serde(default = "default_keyspace")]
    pub keyspace: String,
    /// Apply `schemas/cql` at start-up (idempotent).
    #[serde(default = "default_create_schema")]
    pub create_schema: bool,
    /// For nodes that require authentication; with `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// May be `os.environ/VAR`.
    #[serde(default)]
    pub password: Option<crate::secret::Secret>,
    /// Client-to-node TLS: `ca_file`, and `cert_file` with `key_file` for a client certificate.
    #[serde(default)]
    pub tls: Option<CqlTls>,
    /// The keyspace's replication when the schema is applied: `SimpleStrategy` RF 1 unless set
    /// (a cluster: `NetworkTopologyStrategy` with RF 3 in its data centre).
    #[serde(default)]
    pub replication: crate::cql::Replication,
    /// Consistency of reads and writes (`level`) and of lightweight transactions (`serial`).
    #[serde(default)]
    pub consistency: CqlConsistency,
    /// The data centre to send requests to (its nodes only, no fail-over to another). Set it
    /// on a cluster of more than one data centre, where `LOCAL_QUORUM` and `LOCAL_SERIAL` are
    /// meant for the local one (docs/deploy.md).
    #[serde(default)]
    pub local_datacenter: Option<String>,
}

impl CqlDatabase {
    /// How to connect.
    pub fn connection(&self) -> CqlConnection {
        CqlConnection {
            contact_points: self.contact_points.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            tls: self.tls.clone(),
            replication: self.replication.clone(),
            consistency: self.consistency,
            local_datacenter: self.local_datacenter.clone(),
        }
    }
}

fn default_keyspace() -> String {
    "tollgate".to_owned()
}

fn default_create_schema() -> bool {
    true
}

/// TLS to the database nodes. The server certificate is always verified (against `ca_file`,
/// else the system's roots); a client certificate is sent when `cert_file` and `key_file` are
/// given.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CqlTls {
    /// PEM file of the certificate authority that signed the nodes' certificates.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate (for nodes that require one).
    #[serde(default)]
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

impl CqlConnection {
    /// Checks the fields that need no network; `Err` is (field, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.contact_points.is_empty() {
            return Err(("contact_points", "at least one node is required".into()));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(("password", "give `username` and `password` together".into()));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(("tls.key_file", "give `cert_file` and `key_file` together".into()));
            }
        }
        self.replication.validate().map_err(|e| ("replication", e.to_string()))?;
        if let Some(dc) = &self.local_datacenter {
            if dc.is_empty() || dc.len() > 128 || dc.chars().any(char::is_control) {
                return Err(("local_datacenter", "a data centre name of 1 to 128 printable characters".into()));
            }
        }
        Ok(())
    }

    /// Resolves `os.environ/VAR` in the password (`vars`: the config file's own environment).
    pub fn resolve(&mut self, vars: &HashMap<String, crate::secret::Secret>) -> Result<(), (&'static str, String)> {
        if let Some(p) = &self.password {
            self.password = Some(p.resolve(vars).map_err(|m| ("password", m.to_string()))?);
        }
        Ok(())
    }

    fn tls_context(&self) -> Result<Option<openssl::ssl::SslContext>, StoreError> {
        let Some(tls) = &self.tls else { return Ok(None) };
        use openssl::ssl::{SslContextBuilder, SslFiletype, SslMethod, SslVerifyMode};
        let tls_err = |what: &str, e: openssl::error::ErrorStack| StoreError::Connect(format!("TLS {what}: {e}"));
        let mut builder = SslContextBuilder::new(SslMethod::tls()).map_err(|e| tls_err("setup", e))?;
        builder.set_verify(SslVerifyMode::PEER);
        match &tls.ca_file {
            Some(ca) => builder.set_ca_file(ca).map_err(|e| tls_err("ca_file", e))?,
            None => builder.set_default_verify_paths().map_err(|e| tls_err("system roots", e))?,
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            builder.set_certificate_chain_file(cert).map_err(|e| tls_err("cert_file", e))?;
            builder.set_private_key_file(key, SslFiletype::PEM).map_err(|e| tls_err("key_file", e))?;
        }
        Ok(Some(builder.build()))
    }
}

/// Connects to the database as `connection` says.
pub async fn connect(connection: &CqlConnection) -> Result<Session, StoreError> {
    let mut profile = connection.consistency.profile().to_builder();
    if let Some(dc) = &connection.local_datacenter {
        let policy = scylla::policies::load_balancing::DefaultPolicy::builder()
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false)
            .build();
        profile = profile.load_balancing_policy(policy);
    }
    let mut builder = SessionBuilder::new()
        .known_nodes(&connection.contact_points)
        .default_execution_profile_handle(profile.build().into_handle());
    if let (Some(user), Some(password)) = (&connection.username, &connection.password) {
        builder = builder.user(user, password.expose());
    }
    builder = builder.tls_context(connection.tls_context()?);
    builder.build().await.map_err(|e| StoreError::Connect(e.to_string()))
}

/// Applies every statement of `schemas/cql` to `keyspace`, replicated as `replication` (all
/// idempotent).
pub async fn apply_schema(
    session: &Session,
    keyspace: &str,
    replication: &crate::cql::Replication,
) -> Result<(), StoreError> {
    let statements = crate::cql::statements(keyspace, replication).map_err(|e| StoreError::Schema(e.to_string()))?;
    for stmt in statements {
        session.query_unpaged(stmt, &[]).await.map_err(|e| StoreError::Schema(e.to_string()))?;
    }
    session.await_schema_agreement().await.map_err(|e| StoreError::Schema(e.to_string()))?;
    Ok(())
}

/// `[applied]` of an LWT result.
pub fn lwt_applied(result: scylla::response::query_result::QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(query_err)?;
    let row: Option<Row> = rows.maybe_first_row::<Row>().map_err(query_err)?;
    match row.and_then(|r| r.columns.into_iter().next().flatten()) {
        Some(CqlValue::Boolean(b)) => Ok(b),
        other => Err(StoreError::Query(format!("LWT answered without [applied]: {other:?}"))),
    }
}

impl CqlTenancy {
    /// Prepares the statements of every tenancy table in `keyspace` (the schema must exist:
    /// see [`apply_schema`]).
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<CqlTenancy, StoreError> {
        crate::cql::validate_keyspace(keyspace).map_err(|e| StoreError::Schema(e.to_string()))?;
        let mut statements = HashMap::new();
        for kind in Kind::ALL {
            let table = format!("{keyspace}.{}", kind.table());
            let prepare = |cql: String| {
                let session = &session;
                async move { session.prepare(cql).await.map_err(query_err) }
            };
            let get = prepare(format!("SELECT doc, version FROM {table} WHERE id = ?")).await?;
            // Reads and writes at the session's levels (`database.consistency`).
            let create =
                prepare(format!("INSERT INTO {table} (id, doc, version) VALUES (?, ?, 1) IF NOT EXISTS")).await?;
            let update =
                prepare(format!("UPDATE {table} SET doc = ?, version = ? WHERE id = ? IF version = ?")).await?;
            let delete = prepare(format!("DELETE FROM {table} WHERE id = ? IF version = ?")).await?;
            let list = format!("SELECT id, doc, version FROM {table}");
            statements.insert(kind, Statements { get, create, update, delete, list });
        }
        Ok(CqlTenancy { session, statements })
    }

    fn stmts(&self, kind: Kind) -> Result<&Statements, StoreError> {
        self.statements.get(&kind).ok_or_else(|| StoreError::Schema(format!("no statements for {}", kind.as_str())))
    }
}

impl TenancyStore for CqlTenancy {
    fn get(&self, kind: Kind, id: &str) -> BoxFuture<'_, Result<Option<Stored>, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let s = self.stmts(kind)?;
            let result = self.session.execute_unpaged(&s.get, (&id,)).await.map_err(query_err)?;
            let rows = result.into_rows_result().map_err(query_err)?;
            let row = rows.maybe_first_row::<(Option<String>, Option<i64>)>().map_err(query_err)?;
            Ok(row.map(|(doc, version)| Stored { doc: doc.unwrap_or_default(), version: version.unwrap_or(0) }))
        })
    }

    fn create(&self, kind: Kind, id: &str, doc: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let (id, doc) = (id.to_owned(), doc.to_owned());
        Box::pin(async move {
            let s = self.stmts(kind)?;
            lwt_applied(self.session.execute_unpaged(&s.create, (&id, &doc)).await.map_err(query_err)?)
        })
    }

    fn update(&self, kind: Kind, id: &str, doc: &str, expected: i64) -> BoxFuture<'_, Result<bool, StoreError>> {
        let (id, doc) = (id.to_owned(), doc.to_owned());
        Box::pin(async move {
            let s = self.stmts(kind)?;
            let values = (&doc, expected + 1, &id, expected);
            lwt_applied(self.session.execute_unpaged(&s.update, values).await.map_err(query_err)?)
        })
    }

    fn delete(&self, kind: Kind, id: &str, expected: i64) -> BoxFuture<'_, Result<bool, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let s = self.stmts(kind)?;
            lwt_applied(self.session.execute_unpaged(&s.delete, (&id, expected)).await.map_err(query_err)?)
        })
    }

    fn list(&self, kind: Kind) -> BoxFuture<'_, Result<Vec<(String, Stored)>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            self.visit_pages(kind, Box::new(|page| out.extend(page))).await?;
            Ok(out)
        })
    }

    fn visit_pages<'a>(&'a self, kind: Kind, visit: PageVisitor<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut visit = visit;
            let s = self.stmts(kind)?;
            let mut stmt = scylla::statement::Statement::new(s.list.clone());
            stmt.set_page_size(SCAN_PAGE as i32);
            let mut rows = self
                .session
                .query_iter(stmt, &[])
                .await
                .map_err(query_err)?
                .rows_stream::<(String, Option<String>, Option<i64>)>()
                .map_err(query_err)?;
            let mut page = Vec::with_capacity(SCAN_PAGE);
            while let Some(row) = rows.next().await {
                let (id, doc, version) = row.map_err(query_err)?;
                page.push((id, Stored { doc: doc.unwrap_or_default(), version: version.unwrap_or(0) }));
                if page.len() == SCAN_PAGE {
                    visit(std::mem::replace(&mut page, Vec::with_capacity(SCAN_PAGE)));
                }
            }
            visit(page);
            Ok(())
        })
    }
}

pub use crate::topics::{ledger_partition, MAX_USAGE_GENERATIONS, MAX_USAGE_PARTITIONS};

/// A scope's spend in one window, all partitions summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpendTotal {
    pub spent: crate::NanoUsd,
    pub events: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl SpendTotal {
    /// Adds `other` in (the spend saturating, as every sum of the ledgers' rows does).
    pub fn add(&mut self, other: &SpendTotal) {
        self.spent = crate::NanoUsd(self.spent.0.saturating_add(other.spent.0));
        self.events += other.events;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// Daily totals: (scope, UTC day, total).
pub type DailyTotals = Vec<(String, chrono::NaiveDate, SpendTotal)>;

/// Spend read from the ledgers (for the admin and spend APIs and budget push-back; never on the
/// request path).
pub trait SpendSource: Send + Sync + 'static {
    /// A scope's total in one window.
    fn total(&self, scope: &str, window: &str) -> BoxFuture<'_, Result<SpendTotal, StoreError>>;
    /// The total of each of `scopes` (at most [`MAX_TOTALS_SCOPES`]) in one window, in the order
    /// asked: the same sums as `total` of each. By default one `total` a scope, 16 at once;
    /// [`CqlSpend`] reads [`SCOPES_PER_QUERY`] scopes a query.
    fn totals<'a>(
        &'a self,
        scopes: &'a [String],
        window: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SpendTotal>, StoreError>> {
        Box::pin(async move {
            if scopes.len() > MAX_TOTALS_SCOPES {
                return Err(StoreError::TooManyRows { limit: MAX_TOTALS_SCOPES });
            }
            let reads: Vec<_> = scopes.iter().map(|s| self.total(s, window)).collect();
            futures::stream::iter(reads).buffered(16).collect::<Vec<_>>().await.into_iter().collect()
        })
    }
    /// Every (scope, UTC day) total `query` asks for: the day rows of one scope kind, or of one
    /// scope and its models, never the whole read model. At most [`MAX_DAILY_ROWS`] rows are
    /// read ([`StoreError::TooManyRows`] beyond).
    fn daily(&self, query: DailyQuery) -> BoxFuture<'_, Result<DailyTotals, StoreError>>;
    /// The rows of `query` summed over its days: one total per scope, exactly the sums of
    /// `daily`'s rows per scope. By default `daily` summed ([`sum_days`]); [`CqlSpend`] with
    /// its closed-day cache keeps the closed days' sums as well, so that a range read again
    /// sums only today's rows into them.
    fn range(&self, query: DailyQuery) -> BoxFuture<'_, Result<RangeTotals, StoreError>> {
        Box::pin(async move { self.daily(query).await.map(sum_days) })
    }
    /// One page of request logs from the event ledger (`crate::logs`): never the whole range.
    fn logs(&self, query: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>>;
    /// The dead letters counted by reason, from a bounded read; `None` where the ledger keeps
    /// none this source reads.
    fn dead_letters(&self) -> BoxFuture<'_, Result<Option<DeadLetterSummary>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
    /// The newest run of `reconcile`; `None` when none was recorded (or this source keeps none).
    fn last_reconcile(&self) -> BoxFuture<'_, Result<Option<ReconcileRun>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}

/// [`SpendSource`] on Cassandra/ScyllaDB.
pub struct CqlSpend {
    session: Arc<Session>,
    keyspace: String,
    /// The ledger partitions whose rows a total sums: one list per generation of the usage
    /// topic (one query each, so no `IN` list is longer than [`MAX_USAGE_PARTITIONS`]).
    partitions: Vec<Vec<i32>>,
    total: PreparedStatement,
    /// Many scopes' totals in one window (`totals`).
    totals: PreparedStatement,
    logs: logs::LogStatements,
    daily: daily::DailyStatements,
    /// Closed days' rows kept for a short while (`with_closed_day_cache`); none by default.
    closed_days: Option<daily::ClosedDays>,
    /// Closed days' rows summed per scope over a range, kept as long (`range`).
    closed_ranges: Option<range::ClosedRanges>,
}

impl CqlSpend {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<CqlSpend, StoreError> {
        crate::cql::validate_keyspace(keyspace).map_err(|e| StoreError::Schema(e.to_string()))?;
        let total = session
            .prepare(format!(
                "SELECT spent_nano_usd, events, prompt_tokens, completion_tokens FROM {keyspace}.spend_aggregates \
                 WHERE scope_id = ? AND window_id = ? AND partition IN ?"
            ))
            .await
            .map_err(query_err)?;
        let totals = totals::prepare(&session, keyspace).await?;
        let logs = logs::LogStatements::prepare(&session, keyspace).await?;
        let daily = daily::DailyStatements::prepare(&session, keyspace).await?;
        let partitions = vec![(0..MAX_USAGE_PARTITIONS).collect()];
        Ok(CqlSpend {
            session,
            keyspace: keyspace.to_owned(),
            partitions,
            total,
            totals,
            logs,
            daily,
            closed_days: None,
            closed_ranges: None,
        })
    }
}

impl CqlSpend {
    /// Sums only the rows of partitions `0..n` of generation 0 (the usage topic's partition
    /// count, when known; fewer partitions read per total).
    pub fn with_partitions(self, n: i32) -> CqlSpend {
        self.with_generations(&[n])
    }

    /// Sums the rows of every generation of the usage topic: `counts[g]` is generation `g`'s
    /// partition count ([`MAX_USAGE_PARTITIONS`] when unknown). Generations beyond
    /// [`MAX_USAGE_GENERATIONS`] are ignored.
    pub fn with_generations(mut self, counts: &[i32]) -> CqlSpend {
        self.partitions = (0..MAX_USAGE_GENERATIONS)
            .zip(counts)
            .map(|(g, n)| (0..(*n).clamp(1, MAX_USAGE_PARTITIONS)).map(|p| ledger_partition(g, p)).collect())
            .collect();
        if self.partitions.is_empty() {
            self.partitions = vec![(0..MAX_USAGE_PARTITIONS).collect()];
        }
        self
    }

    /// A paged full scan (reports and audits, never a request path).
    async fn scan<RowT>(&self, cql: String) -> Result<scylla::client::pager::TypedRowStream<RowT>, StoreError>
    where
        RowT: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        let mut stmt = scylla::statement::Statement::new(cql);
        stmt.set_page_size(5_000);
        self.session.query_iter(stmt, &[]).await.map_err(query_err)?.rows_stream::<RowT>().map_err(query_err)
    }
}

fn decode_body(body: Option<String>) -> Result<crate::UsageEvent, StoreError> {
    crate::UsageEvent::decode(body.unwrap_or_default().as_bytes()).map_err(|e| StoreError::Corrupt {
        kind: "usage event",
        id: String::new(),
        reason: e.to_string(),
    })
}

impl SpendSource for CqlSpend {
    fn total(&self, scope: &str, window: &str) -> BoxFuture<'_, Result<SpendTotal, StoreError>> {
        let (scope, window) = (scope.to_owned(), window.to_owned());
        Box::pin(async move {
            let queries = self
                .partitions
                .iter()
                .map(|partitions| self.session.execute_unpaged(&self.total, (&scope, &window, partitions)));
            let mut t = SpendTotal::default();
            for result in futures::future::try_join_all(queries).await.map_err(query_err)? {
                let rows = result.into_rows_result().map_err(query_err)?;
                for row in rows.rows::<(Option<i64>, Option<i64>, Option<i64>, Option<i64>)>().map_err(query_err)? {
                    let (spent, events, prompt, completion) = row.map_err(query_err)?;
                    t.add(&SpendTotal {
                        spent: crate::NanoUsd(spent.unwrap_or(0)),
                        events: events.unwrap_or(0),
                        prompt_tokens: prompt.unwrap_or(0),
                        completion_tokens: completion.unwrap_or(0),
                    });
                }
            }
            Ok(t)
        })
    }

    fn totals<'a>(
        &'a self,
        scopes: &'a [String],
        window: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SpendTotal>, StoreError>> {
        Box::pin(self.many_totals(scopes, window))
    }

    fn daily(&self, query: DailyQuery) -> BoxFuture<'_, Result<DailyTotals, StoreError>> {
        Box::pin(async move { self.daily_rows(&query).await })
    }

    fn range(&self, query: DailyQuery) -> BoxFuture<'_, Result<RangeTotals, StoreError>> {
        Box::pin(async move { self.range_totals(&query).await })
    }

    fn logs(&self, query: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>> {
        Box::pin(async move { self.log_page(&query).await })
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Option<DeadLetterSummary>, StoreError>> {
        Box::pin(async move { self.dead_letter_summary().await.map(Some) })
    }

    fn last_reconcile(&self) -> BoxFuture<'_, Result<Option<ReconcileRun>, StoreError>> {
        Box::pin(self.newest_reconcile())
    }
}
