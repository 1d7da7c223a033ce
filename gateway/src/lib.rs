//! Tollgate's gateway: an OpenAI-compatible front door that authenticates virtual keys from a
//! cached view, routes to providers, and publishes one usage event per request.
//!
//! `main.rs` only parses arguments; tests and benchmarks call [`build_state`] and [`run`].

pub mod anthropic;
pub mod auth;
pub mod config;
pub mod error;
pub mod events;
pub mod gemini;
pub mod openai;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod router;
pub mod server;
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

use crate::auth::{ConfigKeys, KeyCache};
use crate::config::{Config, ConfigError};
use crate::events::{KafkaSink, UsageSink};
use crate::router::Router;

/// Everything a request handler needs; built once at start-up.
pub struct AppState {
    pub gateway_id: String,
    pub keys: KeyCache,
    pub router: Arc<Router>,
    pub sink: Arc<dyn UsageSink>,
    /// The one upstream HTTP client of the process.
    pub client: reqwest::Client,
    pub max_body_bytes: usize,
    pub metrics: PrometheusHandle,
    pub workers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start usage metering: {0}")]
    Sink(#[from] crate::events::SinkError),
    #[error("cannot create the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
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

/// Builds the shared state: price table, router, key cache, Kafka producer, HTTP client.
pub fn build_state(config: &Config, origin: &str) -> Result<AppState, StartError> {
    let router = Arc::new(Router::from_config(config, origin)?);
    tokens::warm_up();
    for setting in config.unsupported() {
        tracing::warn!(%setting, "LiteLLM setting not supported by Tollgate; ignored");
    }
    let gateway_id = config.gateway.id.clone().unwrap_or_else(default_gateway_id);
    let sink: Arc<dyn UsageSink> = Arc::new(KafkaSink::new(&config.kafka, &config.spool, &gateway_id)?);
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let keys = KeyCache::new(
        Arc::new(ConfigKeys::new(&config.virtual_keys)),
        Duration::from_secs(300),
        Duration::from_secs(5),
    );
    let workers = config.gateway.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    Ok(AppState {
        gateway_id,
        keys,
        router,
        sink,
        client,
        max_body_bytes: config.gateway.max_body_bytes,
        metrics: telemetry::metrics_handle(),
        workers,
    })
}

/// Serves on `listener` until `shutdown` is cancelled, then stops accepting, finishes in-flight
/// requests and flushes usage events before returning.
pub async fn run(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    let workers = state.workers;
    let state = web::Data::new(state);
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new().app_data(app_state.clone()).configure(server::routes).default_service(web::to(server::not_found))
    })
    .on_connect(server::on_connect)
    .workers(workers)
    .tcp_nodelay(true)
    .shutdown_timeout(30)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let stopper = tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.stop(true).await;
    });
    let served = server.await;
    stopper.abort();
    tracing::info!("draining usage events");
    if let Err(e) = state.sink.flush(Duration::from_secs(30)) {
        tracing::error!(error = %e, "usage events still queued at shutdown");
    }
    served
}
