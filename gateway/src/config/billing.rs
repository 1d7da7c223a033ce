//! `gateway:`, `billing:` and `budgets:`: the server, what a request is charged, how budgets hold.

use super::*;

/// `billing`: charging the edges of a request's life.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    #[serde(default)]
    pub on_client_disconnect: DisconnectPolicy,
    /// What to do with a model that has no price; `serve` when not given (but see the
    /// deprecated `gateway.allow_unpriced_models`).
    #[serde(default)]
    pub unpriced_models: Option<UnpricedModels>,
}

/// A model without a price (none in the catalogue, the deployment or `prices:`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnpricedModels {
    /// Serve it at cost zero: warned about at start-up, each usage event marked `unpriced` and
    /// counted in `tollgate_unpriced_requests_total` (self-hosted models often have no price).
    #[default]
    Serve,
    /// Refuse to start: every request must be charged.
    Refuse,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Names this gateway in usage events; defaults to the host name and process id.
    pub id: Option<String>,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest multipart body of an upload (`/v1/audio/transcriptions`: the audio file and its
    /// fields); OpenAI takes files of up to 25 MiB.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: usize,
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
    /// Deprecated: `billing.unpriced_models` says what to do with a model without a price, and
    /// wins. `true` is `serve`, `false` `refuse`.
    #[serde(default)]
    pub allow_unpriced_models: Option<bool>,
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
    /// The web console under `/ui` (docs/console.md).
    #[serde(default)]
    pub console: super::ConsoleSettings,
    /// The admin API, spend API and console on a listener of their own (`gateway.admin`).
    #[serde(default)]
    pub admin: super::AdminSettings,
    /// OpenAI's Files and Batch API (`/v1/files`, `/v1/batches`; docs/design.md §2.13).
    #[serde(default)]
    pub batches: BatchSettings,
}

/// The bounds of batch input files and how often open batches are polled for billing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// Largest batch input file (its JSONL), held in memory while it is checked and sent on.
    #[serde(default = "default_max_batch_file_bytes")]
    pub max_file_bytes: usize,
    /// Most request lines a batch input file may hold.
    #[serde(default = "default_max_batch_lines")]
    pub max_lines: usize,
    /// Seconds between two polls of the batches this gateway created and has not billed yet;
    /// 0 leaves billing to clients retrieving their batches.
    #[serde(default = "default_batch_poll_secs")]
    pub poll_interval_secs: u64,
    /// The secret file and batch ids are authenticated with (HMAC-SHA-256), at least 32 bytes;
    /// may be `os.environ/VAR`. Every gateway of a deployment must have the same one, else ids
    /// made by one are 404 at another. Default: the environment variable
    /// TOLLGATE_BATCH_ID_SECRET, else one derived from the key hash secret (docs/design.md
    /// §2.13, "Ids").
    #[serde(default)]
    pub id_secret: Option<Secret>,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_file_bytes: default_max_batch_file_bytes(),
            max_lines: default_max_batch_lines(),
            poll_interval_secs: default_batch_poll_secs(),
            id_secret: None,
        }
    }
}

fn default_max_batch_file_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_max_batch_lines() -> usize {
    10_000
}
fn default_batch_poll_secs() -> u64 {
    60
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            id: None,
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            max_upload_bytes: default_max_upload_bytes(),
            max_response_bytes: default_max_response_bytes(),
            request_timeout_secs: default_timeout_secs(),
            workers: None,
            replicas: default_replicas(),
            allow_unpriced_models: None,
            metrics: MetricsSettings::default(),
            key_hash_secret: None,
            key_hash_secret_file: None,
            shared_customers: false,
            shutdown_timeout_secs: default_shutdown_timeout_secs(),
            flush_timeout_secs: default_flush_timeout_secs(),
            keep_alive_secs: default_keep_alive_secs(),
            client_request_timeout_ms: default_client_request_timeout_ms(),
            console: super::ConsoleSettings::default(),
            admin: super::AdminSettings::default(),
            batches: BatchSettings::default(),
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
fn default_max_upload_bytes() -> usize {
    25 * 1024 * 1024 + 64 * 1024
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
    /// Which tenant labels the spend and token metrics carry, and how many values of each.
    #[serde(default)]
    pub labels: MetricLabels,
    /// Also export LiteLLM's metric names (docs/observability.md); turned on by
    /// `litellm_settings.callbacks` or `success_callback` naming `prometheus`.
    #[serde(default)]
    pub litellm_compatible: bool,
}

/// `gateway.metrics.labels`: the team label is always on; key alias and customer labels are
/// opt-in. Each label keeps at most `cap` values; later values are counted under `other`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricLabels {
    pub key_alias: bool,
    pub customer: bool,
    pub cap: usize,
}

/// Most values one tenant label may keep (`gateway.metrics.labels.cap`).
pub const MAX_LABEL_CAP: usize = 10_000;

impl Default for MetricLabels {
    fn default() -> Self {
        MetricLabels { key_alias: false, customer: false, cap: 100 }
    }
}

impl Config {
    /// `billing.unpriced_models`, else what the deprecated `gateway.allow_unpriced_models` says,
    /// else `serve`.
    pub fn unpriced_models(&self) -> UnpricedModels {
        self.billing.unpriced_models.unwrap_or(match self.gateway.allow_unpriced_models {
            Some(false) => UnpricedModels::Refuse,
            Some(true) | None => UnpricedModels::Serve,
        })
    }
}
