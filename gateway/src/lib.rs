//! Tollgate's gateway: an OpenAI-compatible front door that authenticates virtual keys from a
//! cached view, routes to providers, and publishes one usage event per request.
//!
//! `main.rs` only parses arguments; tests and benchmarks call [`build_state`] and [`run`].

pub mod admin;
pub mod admission;
pub mod anthropic;
pub mod auth;
pub mod budget;
pub mod config;
pub mod embedded;
pub mod error;
pub mod events;
pub mod gemini;
pub mod lease;
pub mod openai;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod spend;
pub mod spool;
pub mod sse;
pub mod stream;
pub mod telemetry;
pub mod tokens;
pub mod usage;

use actix_web::{web, App, HttpServer};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::auth::Tenancy;
use crate::budget::{BudgetView, ControlPublisher, ListenerConfig};
use crate::config::{BudgetSettings, Config, ConfigError, EmbeddedConfig};
use crate::events::{KafkaSink, UsageSink};
use crate::ratelimit::RateLimiter;
use crate::router::Router;
use tollgate_schemas::store::{CqlSpend, SpendSource, TenancyStore};

/// Everything a request handler needs; built once at start-up.
pub struct AppState {
    pub gateway_id: String,
    pub tenancy: Arc<Tenancy>,
    pub budget_view: Arc<BudgetView>,
    pub budget_settings: BudgetSettings,
    /// Credit leases of hard budgets; `None` when `budgets.leases` is off.
    pub leases: Option<Arc<crate::lease::Leases>>,
    pub limiter: RateLimiter,
    /// Admin API changes go out here (none in embedded mode: there is one gateway).
    pub control: Option<ControlPublisher>,
    /// Spend from the ledger, for the admin and spend APIs (with a database).
    pub spend: Option<Arc<dyn SpendSource>>,
    /// SHA-256 of `general_settings.master_key`.
    pub master_key_hash: Option<String>,
    pub router: Arc<Router>,
    pub sink: Arc<dyn UsageSink>,
    /// The one upstream HTTP client of the process.
    pub client: reqwest::Client,
    pub max_body_bytes: usize,
    pub metrics: PrometheusHandle,
    pub workers: usize,
    /// Idle time allowed on a client connection between requests (`gateway.keep_alive_secs`).
    pub keep_alive: Duration,
    /// Time a new connection has for its first request's headers
    /// (`gateway.client_request_timeout_ms`).
    pub client_request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start usage metering: {0}")]
    Sink(#[from] crate::events::SinkError),
    #[error("cannot create the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("database: {0}")]
    Database(#[from] tollgate_schemas::store::StoreError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Embedded(#[from] tollgate_ledger_consumer::embedded::EmbeddedError),
    #[error("budget leases: {0}")]
    Leases(String),
    #[error("cannot start the budget listener: {0}")]
    Listener(#[from] std::io::Error),
}

fn default_gateway_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "gateway".to_owned());
    format!("{host}-{}", std::process::id())
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
        tracing::warn!(%setting, "LiteLLM setting not supported by Tollgate; ignored");
    }
    let gateway_id = config.gateway.id.clone().unwrap_or_else(default_gateway_id);
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let budget_view = Arc::new(BudgetView::new());
    let mut lease_store: Arc<dyn crate::lease::LeaseStore> = Arc::new(crate::lease::LocalLeases::default());
    let (sink, store, spend, control): (Arc<dyn UsageSink>, _, _, _) = match &config.kafka {
        Some(kafka) => {
            let sink = Arc::new(KafkaSink::new(kafka, &config.spool, &gateway_id)?);
            let (store, spend) = match &config.database {
                Some(db) => {
                    let session = Arc::new(tollgate_schemas::store::connect(&db.contact_points).await?);
                    if db.create_schema {
                        tollgate_schemas::store::apply_schema(&session, &db.keyspace).await?;
                    }
                    let store: Arc<dyn TenancyStore> =
                        Arc::new(tollgate_schemas::store::CqlTenancy::new(session.clone(), &db.keyspace).await?);
                    lease_store = Arc::new(
                        crate::lease::CqlLeases::new(session.clone(), &db.keyspace)
                            .await
                            .map_err(|e| StartError::Leases(e.to_string()))?,
                    );
                    let spend: Arc<dyn SpendSource> = Arc::new(CqlSpend::new(session, &db.keyspace).await?);
                    (Some(store), Some(spend))
                }
                None => (None, None),
            };
            let control = ControlPublisher::new(&kafka.bootstrap_servers, &kafka.control_topic)?;
            (sink, store, spend, Some(control))
        }
        None => {
            let path = config.embedded.as_ref().map_or_else(|| EmbeddedConfig::default().path, |e| e.path.clone());
            let db = tollgate_ledger_consumer::embedded::EmbeddedDb::open(&path)?;
            tracing::info!(path = %path.display(), "embedded mode: usage log, ledgers and tenancy in one local file");
            let sink = Arc::new(embedded::EmbeddedSink::start(
                db.clone(),
                budget_view.clone(),
                config.spool.queue_capacity,
                config.spool.when_full,
            )?);
            let store: Arc<dyn TenancyStore> = db.clone();
            let spend: Arc<dyn SpendSource> = db;
            (sink, Some(store), Some(spend), None)
        }
    };
    let tenancy = Arc::new(Tenancy::new(store, &config.virtual_keys));
    if let Some(kafka) = &config.kafka {
        budget::listen(
            ListenerConfig {
                bootstrap_servers: kafka.bootstrap_servers.clone(),
                budget_state_topic: kafka.budget_state_topic.clone(),
                control_topic: kafka.control_topic.clone(),
            },
            budget_view.clone(),
            tenancy.clone(),
        )?;
    }
    let master_key_hash =
        config.general_settings.as_ref().and_then(|g| g.master_key.as_ref()).map(|k| auth::hash_key(k.expose()));
    let workers = config.gateway.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    Ok(AppState {
        gateway_id,
        tenancy,
        budget_view,
        budget_settings: config.budgets.clone(),
        leases: config.budgets.leases.then(|| {
            Arc::new(crate::lease::Leases::new(
                lease_store,
                config.gateway.replicas,
                Duration::from_secs(config.budgets.lease_idle_secs),
            ))
        }),
        limiter: RateLimiter::new(config.gateway.replicas),
        control,
        spend,
        master_key_hash,
        router,
        sink,
        client,
        max_body_bytes: config.gateway.max_body_bytes,
        metrics: telemetry::metrics_handle(),
        workers,
        keep_alive: Duration::from_secs(config.gateway.keep_alive_secs),
        client_request_timeout: Duration::from_millis(config.gateway.client_request_timeout_ms),
    })
}

/// Serves on `listener` until `shutdown` is cancelled, then stops accepting, finishes in-flight
/// requests and flushes usage events before returning.
pub async fn run(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    let workers = state.workers;
    let state = web::Data::new(state);
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .configure(server::routes)
            .configure(admin::routes)
            .configure(spend::routes)
            .default_service(web::to(server::not_found))
    })
    .on_connect(server::on_connect)
    .workers(workers)
    // actix-web's defaults (5 s, as little as 4.5 s by its 500 ms clock) close idle connections
    // that pooling clients still reuse: a request sent as one closes gets no answer (docs/limits.md).
    .keep_alive(state.keep_alive)
    .client_request_timeout(state.client_request_timeout)
    .tcp_nodelay(true)
    .shutdown_timeout(30)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let stopping = shutdown.clone();
    let stopper = tokio::spawn(async move {
        stopping.cancelled().await;
        handle.stop(true).await;
    });
    // Idle leases go back to the store every second, so other gateways can use them.
    let sweeping = CancellationToken::new();
    let sweeper = state.leases.clone().map(|leases| {
        let sweeping = sweeping.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = sweeping.cancelled() => return,
                }
                leases.sweep(chrono::Utc::now().timestamp_millis()).await;
            }
        })
    });
    let served = server.await;
    stopper.abort();
    // Let a sweep under way finish its hand-backs, then hand back the rest.
    sweeping.cancel();
    if let Some(s) = sweeper {
        let _ = s.await;
    }
    if let Some(leases) = &state.leases {
        let n = leases.give_back_all(chrono::Utc::now().timestamp_millis()).await;
        tracing::info!(leases = n, "handed back budget leases");
    }
    tracing::info!("draining usage events");
    if let Err(e) = state.sink.flush(Duration::from_secs(30)) {
        tracing::error!(error = %e, "usage events still queued at shutdown");
    }
    served
}
