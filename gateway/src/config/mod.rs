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

// Defaults and readers more than one section uses.

fn default_true() -> bool {
    true
}

fn default_replicas() -> u32 {
    1
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

mod billing;
mod models;
mod routing;
mod sinks;
mod validate;
pub use billing::*;
pub use models::*;
pub use routing::*;
pub use sinks::*;

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests;
