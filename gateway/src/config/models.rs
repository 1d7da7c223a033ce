//! `model_list:`, `virtual_keys:` and `prices:`.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The name clients ask for.
    pub model_name: String,
    pub litellm_params: LitellmParams,
    /// Free-form model information served by `/model/info`; LiteLLM's price fields in it
    /// (`input_cost_per_token`, ... in USD) and `max_input_tokens` override the model catalogue.
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
    /// AWS credentials of a `bedrock/` deployment (requests are signed with SigV4); each may
    /// be `os.environ/VAR`.
    pub aws_access_key_id: Option<Secret>,
    pub aws_secret_access_key: Option<Secret>,
    pub aws_session_token: Option<Secret>,
    /// The AWS region of a `bedrock/` deployment (`us-east-1`): the endpoint's and the
    /// signature's.
    pub aws_region_name: Option<String>,
    /// A `bedrock/` deployment's runtime endpoint, when not the region's public one (a VPC
    /// endpoint); `api_base` has the same effect.
    pub aws_bedrock_runtime_endpoint: Option<String>,
    /// Vertex AI: the Google Cloud project (default: the service account's `project_id`).
    pub vertex_project: Option<String>,
    /// Vertex AI: the region (default `us-central1`).
    pub vertex_location: Option<String>,
    /// Vertex AI: the service account's JSON key, as a file path or the JSON itself.
    pub vertex_credentials: Option<Secret>,
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
    /// LiteLLM's price fields, over those of `model_info` and of the model catalogue.
    #[serde(flatten)]
    pub costs: CostOverrides,
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

/// A deployment's prices in USD, under LiteLLM's field names; each overrides the same field of
/// `model_info` and of the model catalogue (docs/design.md, "Prices"). Converted exactly to
/// atto-USD.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
pub struct CostOverrides {
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub cache_read_input_token_cost: Option<f64>,
    pub cache_creation_input_token_cost: Option<f64>,
    pub output_cost_per_reasoning_token: Option<f64>,
    pub input_cost_per_audio_token: Option<f64>,
    pub output_cost_per_audio_token: Option<f64>,
    pub input_cost_per_image_token: Option<f64>,
    pub output_cost_per_image_token: Option<f64>,
    pub input_cost_per_request: Option<f64>,
    pub input_cost_per_token_above_128k_tokens: Option<f64>,
    pub output_cost_per_token_above_128k_tokens: Option<f64>,
    pub input_cost_per_token_above_200k_tokens: Option<f64>,
    pub output_cost_per_token_above_200k_tokens: Option<f64>,
    pub cache_read_input_token_cost_above_200k_tokens: Option<f64>,
}

impl CostOverrides {
    /// The fields that are set, by name.
    pub fn fields(&self) -> impl Iterator<Item = (String, f64)> {
        let set = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        set.into_iter().filter_map(|(k, v)| Some((k, v.as_f64()?)))
    }
}
