//! Tollgate's gateway: an OpenAI-compatible front door that authenticates virtual keys from a
//! cached view, routes to providers, and publishes one usage event per request.
//!
//! `main.rs` only parses arguments; tests and benchmarks call [`build_state`] and [`run`].

pub mod admin;
pub mod batches;
pub mod cache;

pub mod config;
pub mod console;
pub mod error;
pub mod guardrails;
pub mod http;
pub mod import;

pub mod limits;
pub mod metering;
pub mod observability;
pub mod pipeline;
pub mod providers;
pub mod routing;
pub mod sse;
pub mod telemetry;
pub mod tenancy;
pub mod traces;

use crate::http::routes;
use actix_web::{web, App, HttpServer};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::config::{BudgetSettings, Config, ConfigError, EmbeddedConfig};
use crate::limits::budget_view::{BudgetView, ListenerConfig};
use crate::limits::ratelimit::RateLimiter;
use crate::metering::kafka::KafkaSink;
use crate::metering::sink::UsageSink;
use crate::routing::router::Router;
use crate::tenancy::auth::Tenancy;
use crate::tenancy::changes::ControlPublisher;
use tollgate_schemas::store::{CqlSpend, SpendSource, TenancyStore};

/// Everything a request handler needs; built once at start-up.
pub struct AppState {
    pub gateway_id: String,
    pub tenancy: Arc<Tenancy>,
    pub budget_view: Arc<BudgetView>,
    pub budget_settings: BudgetSettings,
    /// Credit leases of hard budgets; `None` when `budgets.leases` is off.
    pub leases: Option<Arc<crate::limits::leases::Leases>>,
    pub limiter: RateLimiter,
    /// Admin API changes go out here (none in embedded mode: there is one gateway).
    pub control: Option<Arc<ControlPublisher>>,
    /// Admin changes are logged here too, so every gateway learns of them while Kafka is down
    /// (with a database only).
    pub changes: Option<Arc<tenancy::changes::ChangeLog>>,
    /// Spend from the ledger, for the admin and spend APIs (with a database).
    pub spend: Option<Arc<dyn SpendSource>>,
    /// Period statements from the ledger, for the admin API (with a database).
    pub statements: Option<Arc<admin::statements::StatementReader>>,
    /// SHA-256 of `general_settings.master_key`.
    pub master_key_hash: Option<String>,
    pub router: Arc<Router>,
    /// The config's guardrails, compiled at load (empty when none).
    pub guardrails: Arc<guardrails::Guardrails>,
    pub sink: Arc<dyn UsageSink>,
    /// The one upstream HTTP client of the process.
    pub client: reqwest::Client,
    pub max_body_bytes: usize,
    /// Largest upload body (`gateway.max_upload_bytes`).
    pub max_upload_bytes: usize,
    /// Whether customers owned by no team or organization may be charged by any key.
    pub shared_customers: bool,
    /// Requests may not tag their spend themselves
    /// (`general_settings.reject_clientside_metadata_tags`).
    pub reject_client_tags: bool,
    /// Largest non-streamed answer read from a provider.
    pub max_response_bytes: usize,
    /// The response cache (`litellm_settings.cache`), when on.
    pub cache: Option<Arc<cache::ResponseCache>>,
    pub metrics: PrometheusHandle,
    /// `/metrics` on its own address (then not on the main listener), see `gateway.metrics`.
    pub metrics_listen: Option<String>,
    /// The admin API, spend API and console on a listener of their own (`gateway.admin`).
    pub admin: crate::config::AdminSettings,
    /// SHA-256 of the bearer token `/metrics` requires, if any.
    pub metrics_token_hash: Option<String>,
    pub workers: usize,
    /// How a request whose client hung up is charged (`billing.on_client_disconnect`).
    pub disconnect_policy: crate::config::DisconnectPolicy,
    /// Work that outlives a request (a provider's answer read to its end for billing): shutdown
    /// waits for it, within `shutdown_timeout`.
    pub background: tokio_util::task::TaskTracker,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// How long queued usage events may take to be delivered at shutdown.
    pub flush_timeout: Duration,
    /// Idle time allowed on a client connection between requests (`gateway.keep_alive_secs`).
    pub keep_alive: Duration,
    /// Time a new connection has for its first request's headers
    /// (`gateway.client_request_timeout_ms`).
    pub client_request_timeout: Duration,
    /// The web console's sessions and sign-in throttle (`gateway.console`).
    pub console: Arc<console::Console>,
    /// The files and batches of `/v1/files` and `/v1/batches`, and their settings.
    pub batches: Arc<batches::Batches>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start usage metering: {0}")]
    Sink(#[from] crate::metering::sink::SinkError),
    #[error("cannot create the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("database: {0}")]
    Database(#[from] tollgate_schemas::store::StoreError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Embedded(#[from] tollgate_ledger::embedded::EmbeddedError),
    #[error("budget leases: {0}")]
    Leases(String),
    #[error("embedded database size limit: {0}")]
    EmbeddedSize(String),
    #[error("key hash secret: {0}")]
    Secret(String),
    #[error("{0}")]
    Listener(#[from] std::io::Error),
    #[error(transparent)]
    Cache(#[from] cache::redis_store::BadAddress),
}

fn default_gateway_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "gateway".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The server secret virtual keys are hashed with: `gateway.key_hash_secret`, else the first
/// line of `gateway.key_hash_secret_file`, else `TOLLGATE_KEY_HASH_SECRET`; on the embedded
/// default without any of them, a random one kept beside the database (created 0600).
pub(crate) fn key_hash_secret(config: &Config) -> Result<Option<Vec<u8>>, StartError> {
    let g = &config.gateway;
    let given = match (&g.key_hash_secret, &g.key_hash_secret_file) {
        (Some(s), _) => Some(s.expose().as_bytes().to_vec()),
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| StartError::Secret(format!("{}: {e}", path.display())))?;
            Some(text.lines().next().unwrap_or_default().trim().as_bytes().to_vec())
        }
        (None, None) => std::env::var("TOLLGATE_KEY_HASH_SECRET").ok().map(String::into_bytes),
    };
    if let Some(secret) = given {
        if secret.len() < tenancy::auth::MIN_KEY_HASH_SECRET {
            return Err(StartError::Secret(format!(
                "the key hash secret must be at least {} bytes",
                tenancy::auth::MIN_KEY_HASH_SECRET
            )));
        }
        return Ok(Some(secret));
    }
    if config.kafka.is_some() {
        return Ok(None);
    }
    let db = config.embedded.as_ref().map_or_else(|| EmbeddedConfig::default().path, |e| e.path.clone());
    let path = db.parent().unwrap_or(std::path::Path::new(".")).join("key-hash.secret");
    metering::embedded::local_secret(&path)
        .map(Some)
        .map_err(|e| StartError::Secret(format!("{}: {e}", path.display())))
}

/// The secret file and batch ids are authenticated with (`batches::ids`):
/// `gateway.batches.id_secret` (checked when the config is read), else
/// `TOLLGATE_BATCH_ID_SECRET`, else one derived from the key hash secret, which every gateway
/// sharing a database already shares (and the embedded set-up keeps beside its database). With
/// none of them, a random one: ids are then good in this process only, which a warning says.
pub(crate) fn batch_id_secret(config: &Config, key_hash_secret: Option<&[u8]>) -> Result<Vec<u8>, StartError> {
    use hmac::Mac;
    if let Some(s) = &config.gateway.batches.id_secret {
        return Ok(s.expose().as_bytes().to_vec());
    }
    if let Ok(s) = std::env::var("TOLLGATE_BATCH_ID_SECRET") {
        if s.len() < batches::ids::MIN_SECRET_BYTES {
            return Err(StartError::Secret(format!(
                "TOLLGATE_BATCH_ID_SECRET must be at least {} bytes",
                batches::ids::MIN_SECRET_BYTES
            )));
        }
        return Ok(s.into_bytes());
    }
    if let Some(secret) = key_hash_secret {
        // A secret of its own, so that an id never exposes anything computed with the key hash
        // secret itself.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
            .map_err(|_| StartError::Secret("the key hash secret cannot key HMAC".into()))?;
        mac.update(b"tollgate batch and file ids");
        return Ok(mac.finalize().into_bytes().to_vec());
    }
    tracing::warn!(
        "no gateway.batches.id_secret, TOLLGATE_BATCH_ID_SECRET or key hash secret: file and batch ids are good \
         in this process only (docs/design.md §2.13)"
    );
    Ok([uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes()].concat())
}

/// Validates everything that needs no network (used by `--check-config`).
pub fn check_config(config: &Config, origin: &str) -> Result<(), ConfigError> {
    Router::from_config(config, origin).map(|_| ())
}

/// Builds the shared state: price table, router, tenancy view (and database connection),
/// budget listener, Kafka producers, HTTP client.
pub async fn build_state(config: &Config, origin: &str) -> Result<AppState, StartError> {
    let router = Arc::new(Router::from_config(config, origin)?);
    for setting in config.unsupported() {
        tracing::warn!("{origin}: {setting}; ignored");
    }
    let gateway_id = config.gateway.id.clone().unwrap_or_else(default_gateway_id);
    let client = providers::upstream_client()?;
    let budget_view = Arc::new(BudgetView::new());
    let Backends { sink, store, spend, statements, control, lease_store, change_log } = match &config.kafka {
        Some(kafka) => kafka_backends(config, kafka, &gateway_id).await?,
        None => embedded_backends(config, &budget_view)?,
    };
    let secret = key_hash_secret(config)?;
    if store.is_some() && secret.is_none() {
        return Err(StartError::Config(ConfigError::Invalid {
            path: origin.to_owned(),
            field: "gateway.key_hash_secret".into(),
            message: "required with `database`: every gateway must hash virtual keys with the same secret \
                      (at least 32 bytes; `os.environ/VAR`, `key_hash_secret_file` or TOLLGATE_KEY_HASH_SECRET)"
                .into(),
        }));
    }
    let batches =
        batches::Batches::new(config.gateway.batches.clone(), &batch_id_secret(config, secret.as_deref())?, &router);
    let hasher = tenancy::auth::KeyHasher::new(secret.as_deref());
    let tenancy = Arc::new(Tenancy::new(store, &config.virtual_keys, hasher, control.clone()));
    if let Some(kafka) = &config.kafka {
        limits::budget_view::listen(
            ListenerConfig {
                client: kafka.client_config(),
                budget_state_topic: kafka.budget_state_topic.clone(),
                control_topic: kafka.control_topic.clone(),
            },
            budget_view.clone(),
            tenancy.clone(),
        )?;
    }
    let master_key_hash = config
        .general_settings
        .as_ref()
        .and_then(|g| g.master_key.as_ref())
        .map(|k| tenancy::auth::hash_key(k.expose()));
    let workers = config.gateway.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    Ok(AppState {
        gateway_id,
        tenancy,
        budget_view,
        budget_settings: config.budgets.clone(),
        leases: config.budgets.leases.then(|| {
            Arc::new(crate::limits::leases::Leases::new(
                lease_store,
                config.gateway.replicas,
                Duration::from_secs(config.budgets.lease_idle_secs),
            ))
        }),
        limiter: RateLimiter::new(config.gateway.replicas),
        control,
        changes: change_log,
        spend,
        statements,
        master_key_hash,
        router,
        guardrails: config.guardrail_set.clone(),
        sink,
        client,
        max_body_bytes: config.gateway.max_body_bytes,
        max_upload_bytes: config.gateway.max_upload_bytes,
        shared_customers: config.gateway.shared_customers,
        reject_client_tags: config.general_settings.as_ref().is_some_and(|g| g.reject_clientside_metadata_tags),
        max_response_bytes: config.gateway.max_response_bytes,
        cache: config.litellm_settings.response_cache().map(cache::ResponseCache::new).transpose()?.map(Arc::new),
        metrics: {
            observability::install(&config.gateway.metrics);
            let handle = telemetry::metrics_handle();
            observability::scrape::register_zeroes();
            handle
        },
        metrics_listen: config.gateway.metrics.listen.clone(),
        admin: config.gateway.admin.clone(),
        metrics_token_hash: config.gateway.metrics.token.as_ref().map(|t| tenancy::auth::hash_key(t.expose())),
        workers,
        disconnect_policy: config.billing.on_client_disconnect,
        background: tokio_util::task::TaskTracker::new(),
        shutdown_timeout: Duration::from_secs(config.gateway.shutdown_timeout_secs),
        flush_timeout: Duration::from_secs(config.gateway.flush_timeout_secs),
        keep_alive: Duration::from_secs(config.gateway.keep_alive_secs),
        client_request_timeout: Duration::from_millis(config.gateway.client_request_timeout_ms),
        console: Arc::new(console::Console::new(&config.gateway.console)),
        batches: Arc::new(batches),
    })
}

/// What a set-up puts behind the gateway: where usage events go, the tenancy store, the spend
/// reader, the control-topic publisher, the credit-lease store and the change log.
struct Backends {
    sink: Arc<dyn UsageSink>,
    store: Option<Arc<dyn TenancyStore>>,
    spend: Option<Arc<dyn SpendSource>>,
    statements: Option<Arc<admin::statements::StatementReader>>,
    control: Option<Arc<ControlPublisher>>,
    lease_store: Arc<dyn crate::limits::leases::LeaseStore>,
    change_log: Option<Arc<tenancy::changes::ChangeLog>>,
}

/// Kafka, with a database (production) or without one (config-file keys, leases in the process).
async fn kafka_backends(
    config: &Config,
    kafka: &crate::config::KafkaConfig,
    gateway_id: &str,
) -> Result<Backends, StartError> {
    let mut backends = Backends {
        sink: Arc::new(KafkaSink::new(kafka, &config.spool, gateway_id)?),
        store: None,
        spend: None,
        statements: None,
        // Tenancy changes come from the admin API, which writes to the database: without one
        // there is nothing to announce, and no producer (its threads and buffers) is kept.
        control: None,
        lease_store: Arc::new(crate::limits::leases::LocalLeases::default()),
        change_log: None,
    };
    if let Some(db) = &config.database {
        let session = open_database(db).await?;
        let store: Arc<dyn TenancyStore> =
            Arc::new(tollgate_schemas::store::CqlTenancy::new(session.clone(), &db.keyspace).await?);
        backends.store = Some(store);
        backends.control = Some(Arc::new(ControlPublisher::new(kafka)?));
        backends.lease_store = Arc::new(
            crate::limits::leases::CqlLeases::new(session.clone(), &db.keyspace)
                .await
                .map_err(|e| StartError::Leases(e.to_string()))?,
        );
        backends.change_log = Some(Arc::new(tenancy::changes::ChangeLog::new(session.clone(), &db.keyspace).await?));
        backends.statements = Some(Arc::new(admin::statements::StatementReader {
            session: session.clone(),
            keyspace: db.keyspace.clone(),
        }));
        // Totals sum the rows of every generation of the usage topic up to the current one.
        let generations = vec![tollgate_schemas::store::MAX_USAGE_PARTITIONS; usize::from(kafka.usage_generation) + 1];
        let spend: Arc<dyn SpendSource> =
            Arc::new(CqlSpend::new(session, &db.keyspace).await?.with_generations(&generations));
        backends.spend = Some(spend);
    }
    Ok(backends)
}

/// A session to the `database` section's cluster, with the schema applied when it says so.
pub(crate) async fn open_database(
    db: &tollgate_schemas::store::CqlDatabase,
) -> Result<Arc<scylla::client::session::Session>, StartError> {
    let session = Arc::new(tollgate_schemas::store::connect(&db.connection()).await?);
    if db.create_schema {
        tollgate_schemas::store::apply_schema(&session, &db.keyspace, &db.replication).await?;
    }
    Ok(session)
}

/// The embedded default: one owner-only SQLite file holds the usage log, the ledgers (folded
/// here) and the tenancy records.
fn embedded_backends(config: &Config, budget_view: &Arc<BudgetView>) -> Result<Backends, StartError> {
    let db = open_embedded(config)?;
    let sink = Arc::new(metering::embedded::EmbeddedSink::start(
        db.clone(),
        budget_view.clone(),
        config.spool.queue_capacity,
        config.spool.when_full,
        config.spool.answer_after,
    )?);
    let store: Arc<dyn TenancyStore> = db.clone();
    let spend: Arc<dyn SpendSource> = db;
    Ok(Backends {
        sink,
        store: Some(store),
        spend: Some(spend),
        statements: None,
        control: None,
        lease_store: Arc::new(crate::limits::leases::LocalLeases::default()),
        change_log: None,
    })
}

/// The embedded database file (created owner-only), within its size limit.
pub(crate) fn open_embedded(config: &Config) -> Result<Arc<tollgate_ledger::embedded::EmbeddedDb>, StartError> {
    let embedded = config.embedded.as_ref().map_or_else(EmbeddedConfig::default, |e| EmbeddedConfig {
        path: e.path.clone(),
        max_size_bytes: e.max_size_bytes,
    });
    let path = embedded.path;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        metering::spool::private_dir(dir).map_err(StartError::Listener)?;
    }
    metering::spool::private_file(&path).map_err(StartError::Listener)?;
    let db = tollgate_ledger::embedded::EmbeddedDb::open(&path)?;
    if let Some(max) = embedded.max_size_bytes {
        db.limit_size(max).map_err(|e| StartError::EmbeddedSize(e.to_string()))?;
    }
    tracing::info!(path = %path.display(), "embedded mode: usage log, ledgers and tenancy in one local file");
    Ok(db)
}

/// The longest a shutdown waits for budget leases to go back to the store.
const LEASE_HAND_BACK: Duration = Duration::from_secs(3);

/// Serves on `listener` until `shutdown` is cancelled, then stops accepting, finishes in-flight
/// requests and flushes usage events before returning.
pub async fn run(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    let workers = state.workers;
    let state = web::Data::new(state);
    let app_state = state.clone();
    let admin_apart = state.admin.listen.is_some();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .configure(|cfg| routes::main_listener(cfg, admin_apart))
            .default_service(web::to(http::not_found))
    })
    .on_connect(http::on_connect)
    .workers(workers)
    // actix-web's defaults (5 s, as little as 4.5 s by its 500 ms clock) close idle connections
    // that pooling clients still reuse: a request sent as one closes gets no answer (docs/limits.md).
    .keep_alive(state.keep_alive)
    .client_request_timeout(state.client_request_timeout)
    .tcp_nodelay(true)
    .shutdown_timeout(state.shutdown_timeout.as_secs())
    // The caller's `shutdown` token stops the server, gracefully for SIGTERM and SIGINT alike
    // (actix's own handlers would force-close in-flight requests on SIGINT).
    .disable_signals()
    .listen(listener)?
    .run();
    // `/metrics` and the admin side on their own listeners: the admin side stops with the main
    // listener, `/metrics` after it (scraped through the drain).
    let side = http::listeners::SideListeners::start(&state)?;
    let admin_handle = side.admin_handle();
    let handle = state.metrics.clone();
    let metrics_upkeep =
        tokio::spawn(tollgate_schemas::telemetry::metrics_upkeep(move || handle.run_upkeep(), telemetry::UPKEEP_EVERY));
    let handle = server.handle();
    let stopping = shutdown.clone();
    // When the stop began: work finishing in the background gets what is left of
    // `shutdown_timeout` from then, not a second one.
    let stop_began = std::sync::Arc::new(std::sync::OnceLock::<std::time::Instant>::new());
    let began = stop_began.clone();
    let stopper = tokio::spawn(async move {
        stopping.cancelled().await;
        let _ = began.set(std::time::Instant::now());
        let admin = async {
            if let Some(admin) = admin_handle {
                admin.stop(true).await;
            }
        };
        futures::future::join(handle.stop(true), admin).await;
    });
    // Every admin change, made on any gateway, reaches this one through the change log too.
    let following = CancellationToken::new();
    let follower = state.changes.clone().map(|log| {
        tokio::spawn(tenancy::changes::follow(log, state.tenancy.clone(), state.control.clone(), following.clone()))
    });
    // The admin listing's index of keys: loaded now, then kept current (with a store).
    let indexing = CancellationToken::new();
    let indexer = tokio::spawn(state.tenancy.clone().maintain_key_index(indexing.clone()));
    // Idle leases go back to the store every second, so other gateways can use them.
    let sweeping = CancellationToken::new();
    let sweeper = state.leases.clone().map(|leases| tokio::spawn(sweep_leases(leases, sweeping.clone())));
    // Ended batches are billed in the background too (0 s: off).
    let polling = CancellationToken::new();
    let poller = tokio::spawn(batches::poller::run(state.clone(), polling.clone()));
    let served = server.await;
    stopper.abort();
    // Before the sink is flushed: a billing cut short here is done again later (its events'
    // ids are fixed, so what was published already counts once).
    polling.cancel();
    if tokio::time::timeout(Duration::from_secs(2), poller).await.is_err() {
        tracing::warn!("a batch billing was cut short by shutdown");
    }
    metrics_upkeep.abort();
    following.cancel();
    if let Some(f) = follower {
        let _ = f.await;
    }
    indexing.cancel();
    let _ = indexer.await;
    side.stopped().await;
    let began = stop_began.get().copied().unwrap_or_else(std::time::Instant::now);
    finish_shutdown(&state, began, sweeping, sweeper).await;
    served
}

/// Hands idle credit leases back to the store every second, so other gateways can use them,
/// until `stop`.
async fn sweep_leases(leases: Arc<crate::limits::leases::Leases>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        leases.sweep(chrono::Utc::now().timestamp_millis()).await;
    }
}

/// After the server stopped: background reads finish within what is left of
/// `shutdown_timeout` since the signal (`began`), leases go back within [`LEASE_HAND_BACK`],
/// usage events are flushed within `flush_timeout`.
async fn finish_shutdown(
    state: &web::Data<AppState>,
    began: std::time::Instant,
    sweeping: CancellationToken,
    sweeper: Option<tokio::task::JoinHandle<()>>,
) {
    // Answers read to their end for billing (policy `finish_upstream`) end within the same
    // bound as requests in flight: `shutdown_timeout` counted from the stop signal.
    state.background.close();
    let left = state.shutdown_timeout.saturating_sub(began.elapsed());
    if tokio::time::timeout(left, state.background.wait()).await.is_err() {
        tracing::warn!("provider answers still being read at shutdown; their requests are charged as cut");
    }
    // Let a sweep under way finish its hand-backs, then hand back the rest; both within one
    // bound, so an unreachable lease store cannot hold the shutdown (an unreturned slice is
    // only unusable until its window ends).
    sweeping.cancel();
    let hand_back = async {
        if let Some(s) = sweeper {
            let _ = s.await;
        }
        // Running batches' holds go back with the leases; the next start takes them again
        // (docs/design.md §2.13, "Budgets").
        let released = state.batches.release_holds();
        if released > 0 {
            tracing::info!(batches = released, "released the budget holds of running batches");
        }
        match &state.leases {
            Some(leases) => Some(leases.give_back_all(chrono::Utc::now().timestamp_millis()).await),
            None => None,
        }
    };
    match tokio::time::timeout(LEASE_HAND_BACK, hand_back).await {
        Ok(Some(n)) => tracing::info!(leases = n, "handed back budget leases"),
        Ok(None) => {}
        Err(_) => tracing::warn!("budget leases not all handed back in time"),
    }
    tracing::info!("draining usage events");
    // The sink's writer thread does the waiting; keep it off the runtime's threads.
    let sink = state.sink.clone();
    let flush_timeout = state.flush_timeout;
    match tokio::task::spawn_blocking(move || sink.flush(flush_timeout)).await {
        Ok(Ok(())) => {}
        Ok(Err(crate::metering::sink::SinkError::Undelivered(left))) => tracing::error!(
            durable = left.durable,
            lost = left.lost,
            "usage events undelivered at shutdown: the durable ones are delivered after the next start"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "usage events still undelivered at shutdown"),
        Err(e) => tracing::error!(error = %e, "usage event flush failed"),
    }
}
