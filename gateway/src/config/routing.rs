//! `general_settings:` and `router_settings:` (LiteLLM's): routing, retries, fallbacks.

use super::*;

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
