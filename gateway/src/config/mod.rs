//! The gateway's YAML configuration. It reads LiteLLM's proxy config as it is, so existing
//! files carry over: every key LiteLLM documents is acted on or accepted and reported
//! ([`litellm`]). Unknown fields are errors; errors name the field, file and line. Secrets may be
//! given as `os.environ/VAR` and are never printed (see [`Secret`]).

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("config file {path}: field `{field}`: {message}")]
    Invalid { path: String, field: String, message: String },
    /// A key neither Tollgate nor LiteLLM has; `location` is `, line L column C` when found.
    #[error("config file {path}{location}: unknown field `{field}`: {hint}")]
    UnknownField { path: String, location: String, field: String, hint: String },
}

pub use tollgate_schemas::secret::Secret;

/// Keys of LiteLLM's that are not fields here are set aside in `litellm_only` and checked
/// against [`litellm`]'s tables, which keeps unknown keys errors.
#[derive(Debug, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub gateway: GatewaySettings,
    pub model_list: Vec<ModelEntry>,
    #[serde(default)]
    pub virtual_keys: Vec<VirtualKeyConfig>,
    /// Price overrides by `model_name`, in nano-USD per token.
    #[serde(default)]
    pub prices: HashMap<String, PriceConfig>,
    #[serde(default, deserialize_with = "null_as_default")]
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
    pub database: Option<tollgate_schemas::store::CqlDatabase>,
    #[serde(default)]
    pub budgets: BudgetSettings,
    /// What a request costs when its client hangs up before the answer ends.
    #[serde(default)]
    pub billing: BillingSettings,
    /// LiteLLM's `general_settings`: `master_key`; the others are reported
    /// ([`Config::unsupported`]).
    #[serde(default)]
    pub general_settings: Option<GeneralSettings>,
    /// LiteLLM's `litellm_settings`: the router settings it may hold apply where
    /// `router_settings` sets none; the others are reported.
    #[serde(default, deserialize_with = "null_as_default")]
    pub litellm_settings: LitellmSettings,
    /// LiteLLM's `environment_variables`: used to resolve `os.environ/VAR` before the process
    /// environment.
    #[serde(default, deserialize_with = "null_as_default")]
    pub environment_variables: HashMap<String, Secret>,
    /// LiteLLM's `guardrails:` (`crate::guardrails`), compiled into `guardrail_set` at load.
    #[serde(default, deserialize_with = "null_as_default")]
    pub guardrails: Vec<crate::guardrails::config::GuardrailConfig>,
    #[serde(skip)]
    pub guardrail_set: std::sync::Arc<crate::guardrails::Guardrails>,
    /// LiteLLM's other top-level sections (`guardrails`, `credential_list`, ...): reported.
    #[serde(flatten)]
    pub litellm_only: BTreeMap<String, serde_yaml::Value>,
}

// Defaults and readers more than one section uses.

fn default_true() -> bool {
    true
}

fn default_replicas() -> u32 {
    1
}

/// A section left empty (`litellm_settings:` with nothing under it), as LiteLLM allows.
fn null_as_default<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
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

mod admin;
mod billing;
mod cache;
pub mod cache_tls;
mod callbacks;
mod console;
pub mod litellm;
mod models;
mod routing;
mod sinks;
mod validate;
pub use admin::{AdminPriority, AdminSettings};
pub use billing::*;
pub use cache::*;
pub use console::ConsoleSettings;
pub use models::*;
pub use routing::*;
pub use sinks::*;

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests;
