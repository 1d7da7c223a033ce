//! `tollgate-gateway import-litellm`: LiteLLM's keys, teams, users, organizations, end users
//! and budgets, read from its PostgreSQL database and written as Tollgate's tenancy records
//! through the same store the admin API writes (Cassandra/ScyllaDB with a `database`, else the
//! embedded file). Keys keep working unchanged: LiteLLM stores each key's SHA-256, Tollgate
//! finds a key by it and moves it to its keyed hash on first use (`Tenancy::rehash`).
//!
//! One concern per file: [`postgres`] reads, [`map`] maps (pure), [`write`] writes,
//! [`spend`] carries running spend as opening-balance usage events, [`report`] tells what
//! happened. The import can be re-run: unchanged records are skipped, opening balances are
//! counted once per budget window. It never prints the database URL or a key.

pub mod map;
pub mod postgres;
pub mod report;
pub mod rows;
pub mod spend;
pub mod write;

use crate::config::Config;
use crate::metering::sink::UsageSink;
use futures::StreamExt;
use report::{Counts, Report};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_schemas::store::{StoreError, TenancyStore};
use tollgate_schemas::tenancy::Record;
use write::Writer;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("LiteLLM database: {0}")]
    Postgres(String),
    #[error("LiteLLM table {table} has more than {max} rows")]
    TooManyRows { table: &'static str, max: usize },
    #[error("the config has no tenancy store: a `kafka` section needs a `database` section for the import")]
    NoStore,
    #[error("cannot open Tollgate's store: {0}")]
    Start(#[from] crate::StartError),
    #[error("Tollgate's store: {0}")]
    Store(#[from] StoreError),
    #[error("{kind} {id:?} kept changing while it was imported; run the import again")]
    Contended { kind: &'static str, id: String },
    #[error("opening balances not all delivered ({0}); run the import again (it counts each balance once)")]
    Spend(String),
    #[error("{0}")]
    Internal(String),
}

/// What the command line asks for.
#[derive(Clone, Debug)]
pub struct Options {
    /// `postgres://user:password@host:port/db?sslmode=...`
    pub database_url: String,
    /// Carry running spend as opening balances.
    pub spend: bool,
    /// Carry spend as opening balances summed from `LiteLLM_SpendLogs` over each owner's current
    /// Tollgate window, instead of the running `spend` columns.
    pub spend_logs: bool,
    /// Read and compare, write nothing.
    pub dry_run: bool,
}

/// Writes in flight at once.
const CONCURRENCY: usize = 64;
/// How long opening balances may take to be delivered.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Imports LiteLLM's database into the store `config` names.
pub async fn run(config: &Config, options: &Options) -> Result<Report, ImportError> {
    let started = Instant::now();
    let mut client = postgres::connect(&options.database_url).await?;
    let db = postgres::read_all(&mut client).await?;
    let read_time = started.elapsed();
    let target = Target::open(config).await?;
    let writer = Writer { store: target.store.clone(), changes: target.changes.clone(), dry_run: options.dry_run };
    let writing = Instant::now();
    let mut report = Report { dry_run: options.dry_run, rows_read: db.rows(), read_time, ..Report::default() };
    report.kinds.push(("budgets", each(&db.budgets, |r| write_one(&writer, &r.budget_id, r, map::budget)).await?));
    report.kinds.push((
        "organizations",
        each(&db.organizations, |r| write_one(&writer, &r.organization_id, r, map::organization)).await?,
    ));
    report.kinds.push(("teams", each(&db.teams, |r| write_one(&writer, &r.team_id, r, map::team)).await?));
    report.kinds.push(("users", each(&db.users, |r| write_one(&writer, &r.user_id, r, map::user)).await?));
    report.kinds.push(("customers", each(&db.end_users, |r| write_one(&writer, &r.user_id, r, map::customer)).await?));
    report.kinds.push(("keys", each(&db.keys, |r| write_key(&writer, &target, r)).await?));
    if options.spend || options.spend_logs {
        let now = chrono::Utc::now();
        let (counts, events) = match options.spend_logs {
            true => spend::balances_from_logs(&db, &client, now).await?,
            false => spend::balances(&db, now),
        };
        if !options.dry_run {
            let sink = target.sink(config)?;
            spend::publish(sink, events, FLUSH_TIMEOUT).await?;
        }
        report.spend = Some(counts);
    }
    report.write_time = writing.elapsed();
    Ok(report)
}

/// Each row through `write`, [`CONCURRENCY`] at a time, counted.
async fn each<'a, T: Sync, F, Fut>(rows: &'a [T], write: F) -> Result<Counts, ImportError>
where
    F: Fn(&'a T) -> Fut,
    Fut: std::future::Future<Output = Result<write::Outcome, ImportError>> + 'a,
{
    let mut counts = Counts::default();
    let mut outcomes = futures::stream::iter(rows.iter().map(write)).buffer_unordered(CONCURRENCY);
    while let Some(outcome) = outcomes.next().await {
        counts.add(outcome?);
    }
    Ok(counts)
}

async fn write_one<T, R: Record + PartialEq + Default>(
    writer: &Writer,
    id: &str,
    row: &T,
    map: fn(&T, R) -> Result<R, map::Refused>,
) -> Result<write::Outcome, ImportError> {
    writer.write(&[id.to_owned()], |base| map(row, base)).await
}

/// A key is stored under its SHA-256, or, once a gateway rehashed it, under its keyed hash.
async fn write_key(writer: &Writer, target: &Target, row: &rows::LiteKey) -> Result<write::Outcome, ImportError> {
    let sha256 = row.token.to_ascii_lowercase();
    let mut ids = vec![sha256.clone()];
    if map::is_sha256_hex(&sha256) {
        ids.extend(target.hasher.lookup_of_legacy(&sha256));
    }
    writer.write(&ids, |base| map::key(row, base)).await
}

/// Where the import writes: the store, the change log (with a database), the key hasher.
struct Target {
    store: Arc<dyn TenancyStore>,
    changes: Option<Arc<crate::tenancy::changes::ChangeLog>>,
    hasher: crate::tenancy::auth::KeyHasher,
    embedded: Option<Arc<tollgate_ledger::embedded::EmbeddedDb>>,
}

impl Target {
    async fn open(config: &Config) -> Result<Target, ImportError> {
        let secret = crate::key_hash_secret(config)?;
        let hasher = crate::tenancy::auth::KeyHasher::new(secret.as_deref());
        match (&config.kafka, &config.database) {
            (Some(_), Some(db)) => {
                let session = crate::open_database(db).await?;
                let store = tollgate_schemas::store::CqlTenancy::new(session.clone(), &db.keyspace).await?;
                let changes = crate::tenancy::changes::ChangeLog::new(session, &db.keyspace).await?;
                Ok(Target { store: Arc::new(store), changes: Some(Arc::new(changes)), hasher, embedded: None })
            }
            (Some(_), None) => Err(ImportError::NoStore),
            (None, _) => {
                let db = crate::open_embedded(config)?;
                Ok(Target { store: db.clone(), changes: None, hasher, embedded: Some(db) })
            }
        }
    }

    /// Where opening balances go: Kafka's usage topic through a spool of the import's own
    /// beside the gateway's (a running gateway's spool is locked; what one import could not
    /// deliver the next one sends first), or the embedded log.
    fn sink(&self, config: &Config) -> Result<Arc<dyn UsageSink>, ImportError> {
        let start = |e: crate::metering::sink::SinkError| ImportError::Spend(e.to_string());
        match (&config.kafka, &self.embedded) {
            (Some(kafka), _) => {
                let mut name = config.spool.dir.file_name().unwrap_or_default().to_os_string();
                name.push("-import-litellm");
                let dir = config.spool.dir.with_file_name(name);
                let spool = crate::config::SpoolConfig {
                    dir,
                    max_segment_bytes: config.spool.max_segment_bytes,
                    queue_capacity: config.spool.queue_capacity,
                    when_full: config.spool.when_full,
                    // No client waits for an imported balance.
                    answer_after: crate::config::AnswerAfter::Queued,
                };
                Ok(Arc::new(crate::metering::kafka::KafkaSink::new(kafka, &spool, spend::GATEWAY_ID).map_err(start)?))
            }
            (None, Some(db)) => Ok(Arc::new(
                crate::metering::embedded::EmbeddedSink::start(
                    db.clone(),
                    Arc::new(crate::limits::budget_view::BudgetView::new()),
                    config.spool.queue_capacity,
                    config.spool.when_full,
                    crate::config::AnswerAfter::Queued,
                )
                .map_err(|e| ImportError::Spend(e.to_string()))?,
            )),
            (None, None) => Err(ImportError::NoStore),
        }
    }
}
