//! The gateway's YAML configuration. `model_list` has the shape of LiteLLM's proxy config so
//! existing files carry over. Unknown fields are errors; errors name the field, file and line.
//! Secrets may be given as `os.environ/VAR` and are never printed (see [`Secret`]).

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("config file {path}: field `{field}`: {message}")]
    Invalid { path: String, field: String, message: String },
}

pub use tollgate_schemas::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub gateway: GatewaySettings,
    pub model_list: Vec<ModelEntry>,
    #[serde(default)]
    pub virtual_keys: Vec<VirtualKeyConfig>,
    /// Price overrides by `model_name`, in nano-USD per token.
    #[serde(default)]
    pub prices: HashMap<String, PriceConfig>,
    #[serde(default)]
    pub router_settings: RouterSettings,
    /// Kafka (with `database` for Cassandra/ScyllaDB): the production set-up. Without it the
    /// gateway runs on the embedded default (`embedded`).
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// The embedded default: usage log, ledgers and tenancy in one local SQLite file.
    #[serde(default)]
    pub embedded: Option<EmbeddedConfig>,
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Where keys, tenants and budgets live (Cassandra or ScyllaDB). Without it, only the
    /// `virtual_keys` of this file authenticate and the admin API answers 503.
    #[serde(default)]
    pub database: Option<DatabaseConfig>,
    #[serde(default)]
    pub budgets: BudgetSettings,
    /// What a request costs when its client hangs up before the answer ends.
    #[serde(default)]
    pub billing: BillingSettings,
    /// LiteLLM's `general_settings`: accepted so LiteLLM files load; see [`Config::unsupported`].
    #[serde(default)]
    pub general_settings: Option<GeneralSettings>,
    /// LiteLLM's `litellm_settings`: none of them changes Tollgate; each present key is reported.
    #[serde(default)]
    pub litellm_settings: Option<HashMap<String, serde_yaml::Value>>,
    /// LiteLLM's `environment_variables`: used to resolve `os.environ/VAR` before the process
    /// environment.
    #[serde(default)]
    pub environment_variables: HashMap<String, Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// The database file; one gateway process per file.
    #[serde(default = "default_embedded_path")]
    pub path: std::path::PathBuf,
    /// Largest size of the database file, in bytes; none: as large as the disk allows. When it
    /// (or the disk) is full, new requests are answered 503 `metering_unavailable` until space
    /// is free again; what was admitted waits in memory.
    #[serde(default)]
    pub max_size_bytes: Option<u64>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { path: default_embedded_path(), max_size_bytes: None }
    }
}

fn default_embedded_path() -> std::path::PathBuf {
    std::path::PathBuf::from("tollgate-data/tollgate.db")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub contact_points: Vec<String>,
    #[serde(default = "default_keyspace")]
    pub keyspace: String,
    /// Apply `schemas/cql` at start-up (idempotent).
    #[serde(default = "default_true")]
    pub create_schema: bool,
    /// For nodes that require authentication; with `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// May be `os.environ/VAR`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Client-to-node TLS: `ca_file`, and `cert_file` with `key_file` for a client certificate.
    #[serde(default)]
    pub tls: Option<tollgate_schemas::store::CqlTls>,
}

impl DatabaseConfig {
    /// How to connect.
    pub fn connection(&self) -> tollgate_schemas::store::CqlConnection {
        tollgate_schemas::store::CqlConnection {
            contact_points: self.contact_points.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            tls: self.tls.clone(),
        }
    }
}

fn default_keyspace() -> String {
    "tollgate".to_owned()
}
fn default_true() -> bool {
    true
}

/// `billing`: charging the edges of a request's life.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    #[serde(default)]
    pub on_client_disconnect: DisconnectPolicy,
}

/// What a request is charged when its client hangs up before the answer ends (providers bill
/// the prompt of a cancelled call, and often what they generated). Every such event is marked
/// `client_disconnected` with when it happened. docs/limits.md has the table.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectPolicy {
    /// The call to the provider is cancelled; the request is charged its prompt (counted by the
    /// provider when it said, else estimated) and what was streamed, and a whole answer the
    /// provider had already sent.
    #[default]
    ChargePrompt,
    /// The call to the provider is cancelled; the request is charged only what reached the
    /// client (the streamed part of a stream; nothing for an unanswered request).
    ChargeDelivered,
    /// The call to the provider goes on to its end in the background (bounded by its timeouts)
    /// and the request is charged everything the provider reports: what the provider bills.
    FinishUpstream,
}

/// What a gateway does when its view of budget state is too old to trust.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenStale {
    /// Refuse requests that a hard budget applies to (503 `budget_view_stale`).
    #[default]
    FailClosed,
    /// Keep serving on the last known state (and this gateway's own spend).
    FailOpen,
}

/// Budget enforcement (docs/design.md §5).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// The budget view is stale when the newest ledger-consumer heartbeat on the budget-state
    /// topic is older than this.
    #[serde(default = "default_max_staleness_secs")]
    pub max_staleness_secs: u64,
    #[serde(default)]
    pub when_stale: WhenStale,
    /// Hard budgets (`max_budget`) are spent through credit leases (docs/design.md §5.4): each
    /// request reserves its worst-case cost first, so all gateways together cannot overspend.
    /// `false` falls back to convergence through budget push-back alone.
    #[serde(default = "default_true")]
    pub leases: bool,
    /// Output tokens a request without `max_tokens` reserves (its worst case is unknown).
    #[serde(default = "default_reserve_output_tokens")]
    pub reserve_output_tokens: u64,
    /// A lease with no request for this long is handed back to the store.
    #[serde(default = "default_lease_idle_secs")]
    pub lease_idle_secs: u64,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            max_staleness_secs: default_max_staleness_secs(),
            when_stale: WhenStale::FailClosed,
            leases: true,
            reserve_output_tokens: default_reserve_output_tokens(),
            lease_idle_secs: default_lease_idle_secs(),
        }
    }
}

fn default_reserve_output_tokens() -> u64 {
    1024
}

fn default_lease_idle_secs() -> u64 {
    5
}

fn default_max_staleness_secs() -> u64 {
    30
}

/// A dollar amount in a config file (`max_budget: 12.5`), read exactly into nano-USD.
fn deserialize_usd<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<tollgate_schemas::NanoUsd>, D::Error> {
    let value = Option::<serde_yaml::Value>::deserialize(d)?;
    let text = match value {
        None | Some(serde_yaml::Value::Null) => return Ok(None),
        Some(serde_yaml::Value::Number(n)) => n.to_string(),
        Some(serde_yaml::Value::String(s)) => s,
        Some(_) => return Err(serde::de::Error::custom("expected an amount of USD")),
    };
    let amount = tollgate_schemas::NanoUsd::parse_usd(&text).map_err(serde::de::Error::custom)?;
    if amount.0 < 0 {
        return Err(serde::de::Error::custom("a budget cannot be negative"));
    }
    Ok(Some(amount))
}

/// What the gateway does when the usage backlog (spool queue) is full.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse new requests with 503 until the backlog drains; no accepted event is lost.
    #[default]
    Reject,
    /// Keep serving; events that do not fit are dropped and counted
    /// (`tollgate_usage_events_total{result="dropped"}`).
    Serve,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool; one gateway process per directory (it is locked).
    #[serde(default = "default_spool_dir")]
    pub dir: std::path::PathBuf,
    #[serde(default = "default_segment_bytes")]
    pub max_segment_bytes: u64,
    /// Events admitted and not yet spooled, at most; a request that finds it full is refused
    /// (policy `reject`) or served unmetered and counted (policy `serve`).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    #[serde(default)]
    pub when_full: WhenFull,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: default_spool_dir(),
            max_segment_bytes: default_segment_bytes(),
            queue_capacity: default_queue_capacity(),
            when_full: WhenFull::Reject,
        }
    }
}

fn default_spool_dir() -> std::path::PathBuf {
    std::path::PathBuf::from("tollgate-data/spool")
}
fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_queue_capacity() -> usize {
    50_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneralSettings {
    pub master_key: Option<Secret>,
    // LiteLLM settings Tollgate does not use; reported when present.
    pub database_url: Option<serde_yaml::Value>,
    pub database_connection_pool_limit: Option<serde_yaml::Value>,
    pub store_model_in_db: Option<serde_yaml::Value>,
    pub alerting: Option<serde_yaml::Value>,
    pub proxy_batch_write_at: Option<serde_yaml::Value>,
    pub disable_spend_logs: Option<serde_yaml::Value>,
    pub background_health_checks: Option<serde_yaml::Value>,
    pub health_check_interval: Option<serde_yaml::Value>,
    pub allow_requests_on_db_unavailable: Option<serde_yaml::Value>,
}

/// How requests are spread over a model's deployments (LiteLLM names).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum RoutingStrategy {
    /// Weighted random by `weight` (or `rpm`/`tpm` when no weights are given).
    #[default]
    #[serde(rename = "simple-shuffle")]
    SimpleShuffle,
    /// Fewest requests in flight.
    #[serde(rename = "least-busy")]
    LeastBusy,
    /// Lowest recent latency (exponentially weighted).
    #[serde(rename = "latency-based-routing")]
    LatencyBased,
    /// Lowest share of this minute's `rpm`/`tpm` used.
    #[serde(rename = "usage-based-routing", alias = "usage-based-routing-v2")]
    UsageBased,
    /// Cheapest price per token.
    #[serde(rename = "cost-based-routing")]
    CostBased,
}

/// A fallback list in LiteLLM's shape: `[{"model-a": ["model-b", "model-c"]}]`.
pub type FallbackList = Vec<HashMap<String, Vec<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    #[serde(default)]
    pub routing_strategy: RoutingStrategy,
    /// Retries on the same model group after the first attempt.
    #[serde(default = "default_num_retries")]
    pub num_retries: u32,
    /// Default upstream timeout in seconds (overrides `gateway.request_timeout_secs`).
    pub timeout: Option<f64>,
    /// Longest silence allowed between two chunks of a stream, in seconds.
    pub stream_timeout: Option<f64>,
    /// Longest a stream may last, in seconds (Tollgate's own; default 1800).
    pub stream_max_duration: Option<f64>,
    #[serde(default)]
    pub fallbacks: FallbackList,
    #[serde(default)]
    pub context_window_fallbacks: FallbackList,
    #[serde(default)]
    pub content_policy_fallbacks: FallbackList,
    /// Failures within a minute after which a deployment is cooled down.
    #[serde(default = "default_allowed_fails")]
    pub allowed_fails: u32,
    /// Cooldown length in seconds.
    #[serde(default = "default_cooldown_time")]
    pub cooldown_time: f64,
    /// Minimum wait before a retry, in seconds.
    #[serde(default)]
    pub retry_after: f64,
    // LiteLLM settings Tollgate does not use; reported when present.
    pub redis_host: Option<serde_yaml::Value>,
    pub redis_password: Option<serde_yaml::Value>,
    pub redis_port: Option<serde_yaml::Value>,
    pub enable_pre_call_checks: Option<serde_yaml::Value>,
    pub model_group_alias: Option<serde_yaml::Value>,
    pub default_litellm_params: Option<serde_yaml::Value>,
    pub cache_responses: Option<serde_yaml::Value>,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            routing_strategy: RoutingStrategy::default(),
            num_retries: default_num_retries(),
            timeout: None,
            stream_timeout: None,
            stream_max_duration: None,
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            content_policy_fallbacks: Vec::new(),
            allowed_fails: default_allowed_fails(),
            cooldown_time: default_cooldown_time(),
            retry_after: 0.0,
            redis_host: None,
            redis_password: None,
            redis_port: None,
            enable_pre_call_checks: None,
            model_group_alias: None,
            default_litellm_params: None,
            cache_responses: None,
        }
    }
}

fn default_num_retries() -> u32 {
    2
}
fn default_allowed_fails() -> u32 {
    3
}
fn default_cooldown_time() -> f64 {
    5.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Names this gateway in usage events; defaults to the host name and process id.
    pub id: Option<String>,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest non-streamed answer read from a provider; a larger one is a 502.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Upstream timeout when a model gives none, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub request_timeout_secs: f64,
    /// HTTP worker threads; defaults to the number of cores.
    pub workers: Option<usize>,
    /// Gateway replicas that share each rpm/tpm/parallel limit: each enforces its share
    /// (limit ÷ replicas, rounded up). See docs/limits.md.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Serve models that have no price at cost zero (counted in
    /// `tollgate_unpriced_requests_total`) instead of refusing to start.
    #[serde(default)]
    pub allow_unpriced_models: bool,
    /// Where and to whom `/metrics` is served.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// The server secret virtual keys are hashed with (HMAC-SHA-256), at least 32 bytes; may be
    /// `os.environ/VAR`. Every gateway sharing a database must use the same one. Required with
    /// `database` (or `key_hash_secret_file`, or the environment variable
    /// TOLLGATE_KEY_HASH_SECRET); the embedded default makes one beside its database.
    #[serde(default)]
    pub key_hash_secret: Option<Secret>,
    /// A file whose first line is that secret (a mounted Kubernetes secret, say).
    #[serde(default)]
    pub key_hash_secret_file: Option<std::path::PathBuf>,
    /// Customers (end users) with a record owned by no team or organization may be charged by
    /// any key, as in LiteLLM. Off by default: a key may name only customers without a record
    /// or customers of its own team or organization (docs/security.md).
    #[serde(default)]
    pub shared_customers: bool,
    /// On SIGTERM or SIGINT: how long requests in flight (streams included) may take to finish
    /// before their connections are closed. Then usage events are flushed
    /// (`flush_timeout_secs`). Together they stay below the usual 30 s grace period of
    /// orchestrators.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// At shutdown, how long queued usage events may take to reach Kafka (or the embedded
    /// ledger); what is left stays in the spool and is sent at the next start.
    #[serde(default = "default_flush_timeout_secs")]
    pub flush_timeout_secs: u64,
    /// How long a client connection may sit idle between two requests, in seconds. It must be
    /// longer than the idle expiry of clients' pools and of load balancers in front (httpx 5 s,
    /// AWS ALB 60 s), so that the client is the one that closes: a connection the gateway closes
    /// while a request is on its way fails that request without an answer. See docs/limits.md.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// How long a new connection may take to send its first request's headers, in milliseconds.
    /// Pooling clients open connections they leave unused for a while, so this is a keep-alive
    /// too and gets the same default.
    #[serde(default = "default_client_request_timeout_ms")]
    pub client_request_timeout_ms: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            id: None,
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            max_response_bytes: default_max_response_bytes(),
            request_timeout_secs: default_timeout_secs(),
            workers: None,
            replicas: default_replicas(),
            allow_unpriced_models: false,
            metrics: MetricsSettings::default(),
            key_hash_secret: None,
            key_hash_secret_file: None,
            shared_customers: false,
            shutdown_timeout_secs: default_shutdown_timeout_secs(),
            flush_timeout_secs: default_flush_timeout_secs(),
            keep_alive_secs: default_keep_alive_secs(),
            client_request_timeout_ms: default_client_request_timeout_ms(),
        }
    }
}

fn default_shutdown_timeout_secs() -> u64 {
    20
}
fn default_flush_timeout_secs() -> u64 {
    5
}

fn default_listen() -> String {
    "127.0.0.1:4000".to_owned()
}
fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_response_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_timeout_secs() -> f64 {
    600.0
}
fn default_keep_alive_secs() -> u64 {
    75
}
fn default_client_request_timeout_ms() -> u64 {
    75_000
}

/// `gateway.metrics`: Prometheus metrics can name models, teams' aliases and spend; keep them
/// off the public listener or behind a token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `/metrics` on this address only (e.g. `127.0.0.1:9464`), not on `gateway.listen`.
    pub listen: Option<String>,
    /// Require `Authorization: Bearer <token>` on `/metrics`; may be `os.environ/VAR`.
    pub token: Option<Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The name clients ask for.
    pub model_name: String,
    pub litellm_params: LitellmParams,
    /// Free-form model information served by `/model/info`; `input_cost_per_token` and
    /// `output_cost_per_token` (USD, as LiteLLM writes them) also set the price.
    #[serde(default)]
    pub model_info: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LitellmParams {
    /// `provider/upstream-model`, e.g. `openai/gpt-4o-mini`.
    pub model: String,
    pub api_base: Option<String>,
    pub api_key: Option<Secret>,
    /// Azure OpenAI `api-version`.
    pub api_version: Option<String>,
    /// Upstream timeout in seconds.
    pub timeout: Option<f64>,
    /// Longest silence between two chunks of a stream, in seconds.
    pub stream_timeout: Option<f64>,
    /// Longest a stream may last, in seconds (Tollgate's own; LiteLLM has no such setting).
    pub stream_max_duration: Option<f64>,
    /// Requests per minute this deployment accepts (routing weight and usage-based routing).
    pub rpm: Option<u64>,
    /// Tokens per minute this deployment accepts.
    pub tpm: Option<u64>,
    /// Relative share for simple-shuffle.
    pub weight: Option<f64>,
    /// USD per input token, as LiteLLM writes it; converted exactly to nano-USD.
    pub input_cost_per_token: Option<f64>,
    /// USD per output token.
    pub output_cost_per_token: Option<f64>,
    /// USD per cached input token.
    pub cache_read_input_token_cost: Option<f64>,
    // LiteLLM parameters Tollgate does not use; reported when present.
    pub max_retries: Option<serde_yaml::Value>,
    pub organization: Option<serde_yaml::Value>,
    pub custom_llm_provider: Option<serde_yaml::Value>,
    pub region_name: Option<serde_yaml::Value>,
    pub aws_access_key_id: Option<serde_yaml::Value>,
    pub aws_secret_access_key: Option<serde_yaml::Value>,
    pub aws_region_name: Option<serde_yaml::Value>,
    pub vertex_project: Option<serde_yaml::Value>,
    pub vertex_location: Option<serde_yaml::Value>,
    pub vertex_credentials: Option<serde_yaml::Value>,
    pub drop_params: Option<serde_yaml::Value>,
    pub tags: Option<serde_yaml::Value>,
    pub mock_response: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualKeyConfig {
    /// The raw key (or `os.environ/VAR`); hashed at load and then forgotten.
    pub key: Option<Secret>,
    /// SHA-256 hex of the key, for configs that should not hold the key itself.
    pub key_hash: Option<String>,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    /// Allowed `model_name`s; empty means all.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub blocked: bool,
    /// RFC 3339 expiry time.
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// Hard budget in USD (exact to the nano-dollar).
    #[serde(default, deserialize_with = "deserialize_usd")]
    pub max_budget: Option<tollgate_schemas::NanoUsd>,
    /// Soft budget in USD: crossing it only notifies.
    #[serde(default, deserialize_with = "deserialize_usd")]
    pub soft_budget: Option<tollgate_schemas::NanoUsd>,
    /// `30s`, `30m`, `30h`, `30d`, `1mo`; none: the budget never resets.
    pub budget_duration: Option<tollgate_schemas::tenancy::BudgetDuration>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u32>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input_nano_usd_per_token: i64,
    pub output_nano_usd_per_token: i64,
    /// Cached prompt tokens; defaults to the input price.
    pub cached_input_nano_usd_per_token: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    #[serde(default = "default_usage_topic")]
    pub usage_topic: String,
    /// Compacted topic the ledger consumers publish budget state to; read from the beginning.
    #[serde(default = "default_budget_state_topic")]
    pub budget_state_topic: String,
    /// Tenancy changes (admin API) for every gateway to drop cached records.
    #[serde(default = "default_control_topic")]
    pub control_topic: String,
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// Events librdkafka may hold in memory while Kafka is slow or down; beyond it the spool
    /// queue fills and `spool.when_full` applies.
    #[serde(default = "default_max_queued")]
    pub max_queued_messages: u32,
    /// Extra librdkafka producer properties. The metering guarantees (`enable.idempotence`,
    /// `acks`, `partitioner`) cannot be overridden here.
    #[serde(default)]
    pub producer_properties: HashMap<String, Secret>,
    /// librdkafka properties for every Kafka client of the gateway (the usage producer, the
    /// admin-change publisher, the budget-state and control readers): security settings such
    /// as `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password` (values may
    /// be `os.environ/VAR`), `ssl.ca.location`.
    #[serde(default)]
    pub client_properties: HashMap<String, Secret>,
    /// A usage producer with events in flight that has delivered nothing for this long while
    /// the broker answers is replaced (an idempotent producer can stay wedged after its broker
    /// was frozen).
    #[serde(default = "default_stall_rebuild_secs")]
    pub stall_rebuild_secs: u64,
}

impl KafkaConfig {
    /// The properties every client of the gateway starts from ([`KafkaConfig::client_properties`]
    /// and the bootstrap servers).
    pub fn client_config(&self) -> rdkafka::config::ClientConfig {
        let mut client = rdkafka::config::ClientConfig::new();
        for (k, v) in &self.client_properties {
            client.set(k, v.expose());
        }
        client.set("bootstrap.servers", &self.bootstrap_servers);
        client
    }
}

fn default_stall_rebuild_secs() -> u64 {
    60
}

fn default_usage_topic() -> String {
    tollgate_schemas::topics::USAGE.to_owned()
}
fn default_budget_state_topic() -> String {
    tollgate_schemas::topics::BUDGET_STATE.to_owned()
}
fn default_control_topic() -> String {
    tollgate_schemas::topics::CONTROL.to_owned()
}
fn default_replicas() -> u32 {
    1
}
fn default_linger_ms() -> u32 {
    5
}
fn default_max_queued() -> u32 {
    500_000
}

const TIMEOUT_RANGE: &str = "must be a number of seconds greater than 0 and at most 86400";

/// Timeouts become `Duration`s, which cannot hold NaN, infinities or negative values.
fn valid_timeout(secs: f64) -> bool {
    secs.is_finite() && secs > 0.0 && secs <= 86_400.0
}

/// Resolves `os.environ/VAR` from the config's `environment_variables`, then the process
/// environment.
fn resolve_secret(
    secret: &Secret,
    file_env: &HashMap<String, Secret>,
    path: &str,
    field: &str,
) -> Result<Secret, ConfigError> {
    secret.resolve(file_env).map_err(|message| ConfigError::Invalid {
        path: path.to_owned(),
        field: field.to_owned(),
        message,
    })
}

/// Names of the `Option` fields that are set, for "not supported" reports.
macro_rules! present {
    ($prefix:expr, $s:expr, [$($field:ident),* $(,)?]) => {{
        let mut out = Vec::new();
        $(if $s.$field.is_some() { out.push(format!("{}{}", $prefix, stringify!($field))); })*
        out
    }};
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: display.clone(), source })?;
        Config::parse(&text, &display)
    }

    /// Parses and validates; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = tollgate_schemas::yaml::from_str(text)
            .map_err(|source| ConfigError::Parse { path: origin.to_owned(), source })?;
        config.validate_and_resolve(origin)?;
        Ok(config)
    }

    fn validate_and_resolve(&mut self, origin: &str) -> Result<(), ConfigError> {
        self.check_sinks(origin)?;
        self.check_gateway(origin)?;
        self.check_keys_and_prices(origin)?;
        self.check_models(origin)?;
        self.check_router(origin)
    }

    /// The model list is not empty; the usage sink (Kafka and a database, or embedded) and its
    /// spool are well formed; event names are within bounds.
    fn check_sinks(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        if self.model_list.is_empty() {
            return Err(invalid("model_list".into(), "at least one model is required".into()));
        }
        if self.spool.queue_capacity < 10 {
            return Err(invalid("spool.queue_capacity".into(), "must be at least 10".into()));
        }
        if self.spool.max_segment_bytes < 4096 {
            return Err(invalid("spool.max_segment_bytes".into(), "must be at least 4096".into()));
        }
        match (&self.kafka, &self.embedded) {
            (Some(k), None) if k.max_queued_messages == 0 => {
                return Err(invalid("kafka.max_queued_messages".into(), "must be positive".into()));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "embedded".into(),
                    "use either `kafka` (with `database`) or `embedded`, not both".into(),
                ));
            }
            (None, _) if self.database.is_some() => {
                return Err(invalid(
                    "database".into(),
                    "`database` needs `kafka` (without both, Tollgate runs embedded)".into(),
                ));
            }
            _ => {}
        }
        if self.gateway.replicas == 0 {
            return Err(invalid("gateway.replicas".into(), "must be at least 1".into()));
        }
        self.check_event_names(origin)?;
        if let Some(db) = &mut self.database {
            if let Some(p) = &db.password {
                db.password = Some(resolve_secret(p, &self.environment_variables, origin, "database.password")?);
            }
            if let Err((field, message)) = db.connection().validate() {
                return Err(invalid(format!("database.{field}"), message));
            }
            if let Err(e) = tollgate_schemas::cql::validate_keyspace(&db.keyspace) {
                return Err(invalid("database.keyspace".into(), e.to_string()));
            }
        }
        Ok(())
    }

    /// `gateway.*`: timeouts and sizes within range, the metrics listener and token, the key
    /// hash secret.
    fn check_gateway(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        if !(1..=3_600).contains(&self.gateway.shutdown_timeout_secs) {
            return Err(invalid("gateway.shutdown_timeout_secs".into(), "must be 1 to 3600 seconds".into()));
        }
        if !(1..=3_600).contains(&self.gateway.flush_timeout_secs) {
            return Err(invalid("gateway.flush_timeout_secs".into(), "must be 1 to 3600 seconds".into()));
        }
        if self.gateway.max_body_bytes == 0 {
            return Err(invalid("gateway.max_body_bytes".into(), "must be positive".into()));
        }
        if self.gateway.max_response_bytes == 0 {
            return Err(invalid("gateway.max_response_bytes".into(), "must be positive".into()));
        }
        if !valid_timeout(self.gateway.request_timeout_secs) {
            return Err(invalid("gateway.request_timeout_secs".into(), TIMEOUT_RANGE.into()));
        }
        if !(1..=3_600).contains(&self.gateway.keep_alive_secs) {
            return Err(invalid("gateway.keep_alive_secs".into(), "must be between 1 and 3600 seconds".into()));
        }
        if !(1..=3_600_000).contains(&self.gateway.client_request_timeout_ms) {
            return Err(invalid(
                "gateway.client_request_timeout_ms".into(),
                "must be between 1 and 3600000 milliseconds".into(),
            ));
        }
        if let Some(token) = &self.gateway.metrics.token {
            let token = resolve_secret(token, &self.environment_variables, origin, "gateway.metrics.token")?;
            if token.expose().len() < 16 {
                return Err(invalid("gateway.metrics.token".into(), "must be at least 16 characters".into()));
            }
            self.gateway.metrics.token = Some(token);
        }
        if let Some(listen) = &self.gateway.metrics.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "gateway.metrics.listen".into(),
                    "must be an address such as 127.0.0.1:9464".into(),
                ));
            }
        }
        if let Some(secret) = &self.gateway.key_hash_secret {
            if self.gateway.key_hash_secret_file.is_some() {
                return Err(invalid(
                    "gateway.key_hash_secret_file".into(),
                    "give `key_hash_secret` or this, not both".into(),
                ));
            }
            let secret = resolve_secret(secret, &self.environment_variables, origin, "gateway.key_hash_secret")?;
            if secret.expose().len() < crate::auth::MIN_KEY_HASH_SECRET {
                return Err(invalid(
                    "gateway.key_hash_secret".into(),
                    format!("must be at least {} bytes", crate::auth::MIN_KEY_HASH_SECRET),
                ));
            }
            self.gateway.key_hash_secret = Some(secret);
        }
        Ok(())
    }

    /// Secrets of Kafka's properties and of the master key resolved; config-file virtual keys
    /// given one way; prices within bounds.
    fn check_keys_and_prices(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        if let Some(kafka) = &mut self.kafka {
            for (section, properties) in [
                ("client_properties", &mut kafka.client_properties),
                ("producer_properties", &mut kafka.producer_properties),
            ] {
                for (name, value) in properties.iter_mut() {
                    *value =
                        resolve_secret(value, &self.environment_variables, origin, &format!("kafka.{section}.{name}"))?;
                }
            }
        }
        if let Some(general) = &mut self.general_settings {
            if let Some(key) = &general.master_key {
                general.master_key =
                    Some(resolve_secret(key, &self.environment_variables, origin, "general_settings.master_key")?);
            }
        }
        for (i, k) in self.virtual_keys.iter_mut().enumerate() {
            match (&k.key, &k.key_hash) {
                (Some(key), None) => {
                    k.key = Some(resolve_secret(
                        key,
                        &self.environment_variables,
                        origin,
                        &format!("virtual_keys[{i}].key"),
                    )?);
                }
                (None, Some(hash)) if hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {}
                (None, Some(_)) => {
                    return Err(invalid(
                        format!("virtual_keys[{i}].key_hash"),
                        "must be 64 hex characters (SHA-256)".into(),
                    ))
                }
                _ => {
                    return Err(invalid(format!("virtual_keys[{i}]"), "give exactly one of `key` or `key_hash`".into()))
                }
            }
        }
        for (name, p) in &self.prices {
            let cached = p.cached_input_nano_usd_per_token.unwrap_or(0);
            if p.input_nano_usd_per_token < 0 || p.output_nano_usd_per_token < 0 || cached < 0 {
                return Err(invalid(format!("prices.{name}"), "prices must not be negative".into()));
            }
            let max = tollgate_schemas::limits::MAX_PRICE_PER_TOKEN.0;
            if p.input_nano_usd_per_token > max || p.output_nano_usd_per_token > max || cached > max {
                return Err(invalid(format!("prices.{name}"), format!("at most {max} nano-USD per token")));
            }
        }
        Ok(())
    }

    /// `model_list`: provider prefixes, timeouts, weights and limits; provider keys resolved.
    fn check_models(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        for (i, m) in self.model_list.iter_mut().enumerate() {
            let params = &mut m.litellm_params;
            if !params.model.contains('/') {
                return Err(invalid(
                    format!("model_list[{i}].litellm_params.model"),
                    format!("expected `provider/model`, got `{}`", params.model),
                ));
            }
            if let Some(t) = params.timeout {
                if !valid_timeout(t) {
                    return Err(invalid(format!("model_list[{i}].litellm_params.timeout"), TIMEOUT_RANGE.into()));
                }
            }
            if let Some(t) = params.stream_timeout {
                if !valid_timeout(t) {
                    return Err(invalid(
                        format!("model_list[{i}].litellm_params.stream_timeout"),
                        TIMEOUT_RANGE.into(),
                    ));
                }
            }
            if params.stream_max_duration.is_some_and(|t| !valid_timeout(t)) {
                return Err(invalid(
                    format!("model_list[{i}].litellm_params.stream_max_duration"),
                    TIMEOUT_RANGE.into(),
                ));
            }
            if params.weight.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
                return Err(invalid(format!("model_list[{i}].litellm_params.weight"), "must be positive".into()));
            }
            if params.rpm == Some(0) || params.tpm == Some(0) {
                return Err(invalid(
                    format!("model_list[{i}].litellm_params"),
                    "rpm and tpm must be positive when given".into(),
                ));
            }
            if let Some(key) = &params.api_key {
                params.api_key = Some(resolve_secret(
                    key,
                    &self.environment_variables,
                    origin,
                    &format!("model_list[{i}].litellm_params.api_key"),
                )?);
            }
        }
        Ok(())
    }

    /// `router_settings`: fallbacks name configured models; timeouts, cooldowns and retries
    /// within range.
    fn check_router(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        let names: std::collections::HashSet<&str> = self.model_list.iter().map(|m| m.model_name.as_str()).collect();
        let rs = &self.router_settings;
        for (field, list) in [
            ("fallbacks", &rs.fallbacks),
            ("context_window_fallbacks", &rs.context_window_fallbacks),
            ("content_policy_fallbacks", &rs.content_policy_fallbacks),
        ] {
            for (j, entry) in list.iter().enumerate() {
                for (from, to) in entry {
                    for name in std::iter::once(from).chain(to) {
                        if !names.contains(name.as_str()) && name != "*" {
                            return Err(invalid(
                                format!("router_settings.{field}[{j}]"),
                                format!("`{name}` is not a model_name of model_list"),
                            ));
                        }
                    }
                }
            }
        }
        for (field, t) in [
            ("router_settings.timeout", rs.timeout),
            ("router_settings.stream_timeout", rs.stream_timeout),
            ("router_settings.stream_max_duration", rs.stream_max_duration),
        ] {
            if t.is_some_and(|t| !valid_timeout(t)) {
                return Err(invalid(field.into(), TIMEOUT_RANGE.into()));
            }
        }
        if !(rs.cooldown_time.is_finite() && (0.0..=86_400.0).contains(&rs.cooldown_time)) {
            return Err(invalid("router_settings.cooldown_time".into(), "must be between 0 and 86400 seconds".into()));
        }
        if !(rs.retry_after.is_finite() && (0.0..=600.0).contains(&rs.retry_after)) {
            return Err(invalid("router_settings.retry_after".into(), "must be between 0 and 600 seconds".into()));
        }
        if rs.num_retries > 10 {
            return Err(invalid("router_settings.num_retries".into(), "at most 10".into()));
        }
        Ok(())
    }
}

impl Config {
    /// Names and ids of this file that go into every usage event (the gateway id, a key's alias,
    /// team, user and organization, model names and the deployment id made of
    /// `litellm_params.model`) within the bounds the ledger holds events to
    /// (`limits::check_event`): one outside them would have every event that carries it refused
    /// and its requests left unbilled.
    fn check_event_names(&self, origin: &str) -> Result<(), ConfigError> {
        use tollgate_schemas::limits::{check_id, check_name, BoundError, MAX_NAME_BYTES};
        let invalid = |e: BoundError| ConfigError::Invalid {
            path: origin.to_owned(),
            field: e.field().to_owned(),
            message: e.to_string().replace(&format!("`{}` ", e.field()), ""),
        };
        let name = |field: String, value: &str| check_name(&field, value, MAX_NAME_BYTES).map_err(invalid);
        let id = |field: String, value: &Option<String>| {
            value.as_deref().map_or(Ok(()), |v| check_id(&field, v).map_err(invalid))
        };
        if let Some(gateway_id) = &self.gateway.id {
            name("gateway.id".into(), gateway_id)?;
        }
        for (i, m) in self.model_list.iter().enumerate() {
            name(format!("model_list[{i}].model_name"), &m.model_name)?;
            name(format!("model_list[{i}].litellm_params.model"), &m.litellm_params.model)?;
        }
        for (i, k) in self.virtual_keys.iter().enumerate() {
            if let Some(alias) = &k.key_alias {
                name(format!("virtual_keys[{i}].key_alias"), alias)?;
            }
            id(format!("virtual_keys[{i}].team_id"), &k.team_id)?;
            id(format!("virtual_keys[{i}].user_id"), &k.user_id)?;
            id(format!("virtual_keys[{i}].organization_id"), &k.organization_id)?;
        }
        Ok(())
    }

    /// LiteLLM settings present in the file that Tollgate accepts but does not act on.
    pub fn unsupported(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, m) in self.model_list.iter().enumerate() {
            out.extend(present!(
                format!("model_list[{i}].litellm_params."),
                m.litellm_params,
                [
                    max_retries,
                    organization,
                    custom_llm_provider,
                    region_name,
                    aws_access_key_id,
                    aws_secret_access_key,
                    aws_region_name,
                    vertex_project,
                    vertex_location,
                    vertex_credentials,
                    drop_params,
                    tags,
                    mock_response,
                ]
            ));
        }
        out.extend(present!(
            "router_settings.",
            self.router_settings,
            [
                redis_host,
                redis_password,
                redis_port,
                enable_pre_call_checks,
                model_group_alias,
                default_litellm_params,
                cache_responses,
            ]
        ));
        if let Some(g) = &self.general_settings {
            out.extend(present!(
                "general_settings.",
                g,
                [
                    database_url,
                    database_connection_pool_limit,
                    store_model_in_db,
                    alerting,
                    proxy_batch_write_at,
                    disable_spend_logs,
                    background_health_checks,
                    health_check_interval,
                    allow_requests_on_db_unavailable,
                ]
            ));
        }
        if let Some(settings) = &self.litellm_settings {
            let mut keys: Vec<_> = settings.keys().map(|k| format!("litellm_settings.{k}")).collect();
            keys.sort();
            out.extend(keys);
        }
        out
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:9/v1
      api_key: sk-upstream
virtual_keys:
  - key: sk-tenant-1
    team_id: payments
kafka:
  bootstrap_servers: 127.0.0.1:9092
"#;

    /// Found by fuzzing: a key's alias, team, user or organization, the gateway id and model
    /// names were taken from the file as they were, and they go into every usage event. One the
    /// ledger refuses (a control character, a `/` in an id, over 256 bytes) had each of those
    /// events dead-lettered, its requests unbilled; an id with `/` could pose as another scope.
    #[test]
    fn names_and_ids_that_reach_usage_events_are_bounded() {
        let long = "x".repeat(300);
        for (from, to, field) in [
            ("    team_id: payments", "    team_id: a/model/b", "virtual_keys[0].team_id"),
            ("    team_id: payments", "    team_id: \"pay ments\"", "virtual_keys[0].team_id"),
            ("    team_id: payments", "    user_id: \"u\\0\"", "virtual_keys[0].user_id"),
            ("    team_id: payments", &format!("    organization_id: {long}"), "virtual_keys[0].organization_id"),
            ("    team_id: payments", "    key_alias: \"a\\tb\"", "virtual_keys[0].key_alias"),
            ("  - model_name: gpt-4o-mini", &format!("  - model_name: {long}"), "model_list[0].model_name"),
            (
                "      model: openai/gpt-4o-mini",
                &format!("      model: openai/{long}"),
                "model_list[0].litellm_params.model",
            ),
            ("kafka:", "gateway:\n  id: \"gw\\n1\"\nkafka:", "gateway.id"),
        ] {
            let text = MINIMAL.replace(from, to);
            assert_ne!(text, MINIMAL, "{from}");
            let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
            assert!(err.contains(&format!("field `{field}`")), "{to}: {err}");
        }
        let fine = MINIMAL.replace("    team_id: payments", "    team_id: payments\n    key_alias: checkout / eu");
        assert!(Config::parse(&fine, "test.yaml").is_ok());
    }

    #[test]
    fn parses_a_minimal_config() {
        let c = Config::parse(MINIMAL, "test.yaml").unwrap();
        assert_eq!(c.model_list[0].model_name, "gpt-4o-mini");
        assert_eq!(c.kafka.as_ref().map(|k| k.usage_topic.as_str()), Some("usage"));
        assert_eq!(c.gateway.listen, "127.0.0.1:4000");
    }

    #[test]
    fn unknown_fields_name_the_field_and_line() {
        let text = MINIMAL.replace("      api_key: sk-upstream", "      api_key: sk-upstream\n      api_bsae: x");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("api_bsae"), "{err}");
        assert!(err.contains("line"), "{err}");
        assert!(err.contains("test.yaml"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::parse(MINIMAL, "test.yaml").unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("sk-upstream") && !debug.contains("sk-tenant-1"), "{debug}");
    }

    #[test]
    fn missing_env_var_names_the_field() {
        let text = MINIMAL.replace("api_key: sk-upstream", "api_key: os.environ/TOLLGATE_TEST_SURELY_UNSET");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("model_list[0].litellm_params.api_key"), "{err}");
        assert!(err.contains("TOLLGATE_TEST_SURELY_UNSET"), "{err}");
    }

    #[test]
    fn timeouts_must_be_sane() {
        for bad in ["0", "-1", ".nan", ".inf", "1e12"] {
            let text = MINIMAL
                .replace("      api_key: sk-upstream", &format!("      api_key: sk-upstream\n      timeout: {bad}"));
            let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
            assert!(err.contains("model_list[0].litellm_params.timeout"), "{bad}: {err}");
        }
    }

    #[test]
    fn response_and_stream_bounds_are_validated() {
        let c = Config::parse(MINIMAL, "test.yaml").unwrap();
        assert_eq!(c.gateway.max_response_bytes, 64 * 1024 * 1024);
        let text = format!("gateway:\n  max_response_bytes: 0\n{MINIMAL}");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("gateway.max_response_bytes"), "{err}");
        for bad in ["0", ".nan", "1e12"] {
            let text = MINIMAL.replace(
                "      api_key: sk-upstream",
                &format!("      api_key: sk-upstream\n      stream_max_duration: {bad}"),
            );
            let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
            assert!(err.contains("model_list[0].litellm_params.stream_max_duration"), "{bad}: {err}");
        }
        let text = format!("{MINIMAL}router_settings:\n  stream_max_duration: -1\n");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("router_settings.stream_max_duration"), "{err}");
    }

    #[test]
    fn reads_litellm_router_settings_and_reports_unsupported_keys() {
        let text = format!(
            "{MINIMAL}router_settings:\n  routing_strategy: least-busy\n  num_retries: 3\n  redis_host: localhost\n  \
             fallbacks: [{{\"gpt-4o-mini\": [\"gpt-4o-mini\"]}}]\nlitellm_settings:\n  drop_params: true\n"
        );
        let c = Config::parse(&text, "test.yaml").unwrap();
        assert_eq!(c.router_settings.routing_strategy, RoutingStrategy::LeastBusy);
        assert_eq!(c.router_settings.num_retries, 3);
        assert_eq!(c.unsupported(), vec!["router_settings.redis_host", "litellm_settings.drop_params"]);
    }

    #[test]
    fn fallbacks_must_name_known_models() {
        let text = format!("{MINIMAL}router_settings:\n  fallbacks: [{{\"gpt-4o-mini\": [\"gpt-5\"]}}]\n");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("router_settings.fallbacks[0]") && err.contains("gpt-5"), "{err}");
    }

    /// Every shipped example config loads, resolves a price for every model and builds a router.
    #[test]
    fn shipped_examples_load() {
        for var in [
            "OPENAI_API_KEY",
            "AZURE_API_KEY_EASTUS",
            "ANTHROPIC_API_KEY",
            "GEMINI_API_KEY",
            "GROQ_API_KEY",
            "TOLLGATE_MASTER_KEY",
            "DATABASE_URL",
            "AZURE_KEY_EASTUS",
            "AZURE_KEY_WESTEUROPE",
            "AZURE_KEY_JAPANEAST",
            "TOLLGATE_KEY_SUPPORT_BOT",
        ] {
            std::env::set_var(var, "test-value");
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") && !path.to_string_lossy().contains("ledger-consumer") {
                let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                crate::check_config(&config, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
                loaded += 1;
            }
        }
        assert!(loaded >= 5, "only {loaded} example configs found");
        let migration = Config::load(&dir.join("litellm-migration.yaml")).unwrap();
        let unsupported = migration.unsupported();
        assert!(unsupported.contains(&"litellm_settings.drop_params".to_owned()), "{unsupported:?}");
        assert!(unsupported.contains(&"general_settings.database_url".to_owned()), "{unsupported:?}");
    }

    #[test]
    fn prices_are_bounded() {
        let text = format!(
            "{MINIMAL}prices:\n  gpt-4o-mini: {{input_nano_usd_per_token: 1000001, output_nano_usd_per_token: 1}}\n"
        );
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("prices.gpt-4o-mini") && err.contains("1000000"), "{err}");
        let text = MINIMAL
            .replace("      api_key: sk-upstream", "      api_key: sk-upstream\n      output_cost_per_token: 0.01");
        let config = Config::parse(&text, "test.yaml").unwrap();
        let err = crate::check_config(&config, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("model_list[0]") && err.contains("highest"), "{err}");
    }

    #[test]
    fn client_connection_timeouts_default_long_and_must_be_sane() {
        let c = Config::parse(MINIMAL, "test.yaml").unwrap();
        assert_eq!((c.gateway.keep_alive_secs, c.gateway.client_request_timeout_ms), (75, 75_000));
        let text = format!("gateway:\n  keep_alive_secs: 120\n  client_request_timeout_ms: 2500\n{MINIMAL}");
        let c = Config::parse(&text, "test.yaml").unwrap();
        assert_eq!((c.gateway.keep_alive_secs, c.gateway.client_request_timeout_ms), (120, 2_500));
        for (field, bad) in [
            ("keep_alive_secs", "0"),
            ("keep_alive_secs", "3601"),
            ("client_request_timeout_ms", "0"),
            ("client_request_timeout_ms", "3600001"),
        ] {
            let text = format!("gateway:\n  {field}: {bad}\n{MINIMAL}");
            let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
            assert!(err.contains(&format!("gateway.{field}")) && err.contains("test.yaml"), "{field}: {bad}: {err}");
        }
        let err = Config::parse(&format!("gateway:\n  keep_alive_secs: -1\n{MINIMAL}"), "test.yaml").unwrap_err();
        assert!(err.to_string().contains("keep_alive_secs"), "{err}");
    }

    #[test]
    fn a_key_needs_a_value() {
        let text = MINIMAL.replace("  - key: sk-tenant-1\n", "  - key_alias: nothing\n");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("virtual_keys[0]"), "{err}");
    }
}
