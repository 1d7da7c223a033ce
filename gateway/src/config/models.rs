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
