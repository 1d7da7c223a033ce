//! `model_list:`, `virtual_keys:` and `prices:`.

use super::*;

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

/// Keys Tollgate does not read are set aside in `litellm_only` (see [`Config`]).
#[derive(Debug, Deserialize)]
pub struct LitellmParams {
    /// `provider/upstream-model`, e.g. `openai/gpt-4o-mini`; `*` in both this and `model_name`
    /// makes a wildcard deployment (`openai/*`).
    pub model: String,
    /// The provider when `model` has no `provider/` prefix (LiteLLM's `custom_llm_provider`);
    /// folded into `model` at load.
    pub custom_llm_provider: Option<String>,
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
    /// LiteLLM's other parameters: checked against `litellm::keys` and reported.
    #[serde(flatten)]
    pub litellm_only: BTreeMap<String, serde_yaml::Value>,
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
