//! LiteLLM's `router_settings:`, `litellm_settings:` and `general_settings:`: routing, retries,
//! fallbacks, timeouts, the master key. Their other LiteLLM keys are set aside and reported
//! (see `litellm`).

use super::*;

/// Keys Tollgate does not read are set aside in `litellm_only` (see [`Config`]).
#[derive(Debug, Default, Deserialize)]
pub struct GeneralSettings {
    pub master_key: Option<Secret>,
    /// Requests may not tag their own spend (`metadata.tags`, `x-litellm-tags`): such a request
    /// is refused with a 400 naming the field, as LiteLLM does; the key's and team's tags still
    /// apply (docs/design.md §4.2, "Tags").
    #[serde(default)]
    pub reject_clientside_metadata_tags: bool,
    #[serde(flatten)]
    pub litellm_only: BTreeMap<String, serde_yaml::Value>,
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

/// A `model_group_alias` entry: `alias: group`, or `alias: {model: group, hidden: true}` for
/// an alias that `/v1/models` does not list.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum AliasTarget {
    Group(String),
    Detailed(DetailedAlias),
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetailedAlias {
    pub model: String,
    #[serde(default)]
    pub hidden: bool,
}

impl AliasTarget {
    /// The model group the alias stands for.
    pub fn group(&self) -> &str {
        match self {
            AliasTarget::Group(group) => group,
            AliasTarget::Detailed(d) => &d.model,
        }
    }

    pub fn hidden(&self) -> bool {
        matches!(self, AliasTarget::Detailed(DetailedAlias { hidden: true, .. }))
    }
}

/// Keys Tollgate does not read are set aside in `litellm_only` (see [`Config`]). Settings
/// `litellm_settings` may also give are `Option`s: the file's `litellm_settings` fills those
/// left unset when it is loaded.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RouterSettings {
    pub routing_strategy: RoutingStrategy,
    /// Retries on the same model group after the first attempt ([`RouterSettings::num_retries`]).
    pub num_retries: Option<u32>,
    /// Default upstream timeout in seconds (overrides `gateway.request_timeout_secs`).
    pub timeout: Option<f64>,
    /// LiteLLM's other name for the default timeout; `timeout` wins.
    pub request_timeout: Option<f64>,
    /// Longest silence allowed between two chunks of a stream, in seconds.
    pub stream_timeout: Option<f64>,
    /// Longest a stream may last, in seconds (Tollgate's own; default 1800).
    pub stream_max_duration: Option<f64>,
    pub fallbacks: FallbackList,
    pub context_window_fallbacks: FallbackList,
    pub content_policy_fallbacks: FallbackList,
    /// Fallbacks of every model group without fallbacks of its own (as `"*"` in `fallbacks`).
    pub default_fallbacks: Vec<String>,
    /// The most fallback model groups one request tries; all of them when unset.
    pub max_fallbacks: Option<u32>,
    /// Failures within a minute after which a deployment is cooled down
    /// ([`RouterSettings::allowed_fails`]).
    pub allowed_fails: Option<u32>,
    /// Cooldown length in seconds.
    pub cooldown_time: f64,
    /// No deployment is ever cooled down.
    pub disable_cooldowns: bool,
    /// Check a prompt against each deployment's context window before calling it (also on for
    /// every model group with `context_window_fallbacks`).
    #[serde(alias = "enable_pre_call_check")]
    pub enable_pre_call_checks: bool,
    /// Minimum wait before a retry, in seconds.
    pub retry_after: f64,
    /// Names clients may ask for that a model group serves.
    pub model_group_alias: BTreeMap<String, AliasTarget>,
    #[serde(flatten)]
    pub litellm_only: BTreeMap<String, serde_yaml::Value>,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            routing_strategy: RoutingStrategy::default(),
            num_retries: None,
            timeout: None,
            request_timeout: None,
            stream_timeout: None,
            stream_max_duration: None,
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            content_policy_fallbacks: Vec::new(),
            default_fallbacks: Vec::new(),
            max_fallbacks: None,
            allowed_fails: None,
            cooldown_time: 5.0,
            disable_cooldowns: false,
            enable_pre_call_checks: false,
            retry_after: 0.0,
            model_group_alias: BTreeMap::new(),
            litellm_only: BTreeMap::new(),
        }
    }
}

impl RouterSettings {
    pub fn num_retries(&self) -> u32 {
        self.num_retries.unwrap_or(2)
    }

    pub fn allowed_fails(&self) -> u32 {
        self.allowed_fails.unwrap_or(3)
    }

    /// The fallback lists by their key.
    pub fn fallbacks_by_kind(&self) -> [(&'static str, &FallbackList); 3] {
        [
            ("fallbacks", &self.fallbacks),
            ("context_window_fallbacks", &self.context_window_fallbacks),
            ("content_policy_fallbacks", &self.content_policy_fallbacks),
        ]
    }
}

/// LiteLLM's `litellm_settings`: the router settings it may hold, used where `router_settings`
/// sets none. Keys Tollgate does not read are set aside in `litellm_only` (see [`Config`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LitellmSettings {
    /// The default upstream timeout in seconds.
    pub request_timeout: Option<f64>,
    pub num_retries: Option<u32>,
    pub allowed_fails: Option<u32>,
    pub fallbacks: FallbackList,
    pub default_fallbacks: Vec<String>,
    pub context_window_fallbacks: FallbackList,
    pub content_policy_fallbacks: FallbackList,
    /// Callback names (`otel`, `langfuse`, `prometheus`, ...): see `config::callbacks`. Each is
    /// a list, or one name (LiteLLM accepts a custom callback's module path alone).
    #[serde(deserialize_with = "super::callbacks::one_or_many")]
    pub callbacks: Vec<String>,
    #[serde(deserialize_with = "super::callbacks::one_or_many")]
    pub success_callback: Vec<String>,
    #[serde(deserialize_with = "super::callbacks::one_or_many")]
    pub failure_callback: Vec<String>,
    /// Turns on the response cache (`gateway/src/cache`), set up by `cache_params`.
    pub cache: bool,
    #[serde(deserialize_with = "super::null_as_default")]
    pub cache_params: Option<super::CacheParams>,
    #[serde(flatten)]
    pub litellm_only: BTreeMap<String, serde_yaml::Value>,
}

impl LitellmSettings {
    /// The response cache's settings, when `cache: true` turns it on.
    pub fn response_cache(&self) -> Option<super::CacheParams> {
        self.cache.then(|| self.cache_params.clone().unwrap_or_default())
    }

    /// Whether `callbacks` or `success_callback` name `prometheus`.
    pub fn wants_prometheus(&self) -> bool {
        [&self.callbacks, &self.success_callback].iter().any(|list| list.iter().any(|c| c == "prometheus"))
    }

    /// The fallback lists by their key.
    pub fn fallbacks_by_kind(&self) -> [(&'static str, &FallbackList); 3] {
        [
            ("fallbacks", &self.fallbacks),
            ("context_window_fallbacks", &self.context_window_fallbacks),
            ("content_policy_fallbacks", &self.content_policy_fallbacks),
        ]
    }
}
