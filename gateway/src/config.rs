//! The gateway's YAML configuration. `model_list` has the shape of LiteLLM's proxy config so
//! existing files carry over. Unknown fields are errors; errors name the field, file and line.
//! Secrets may be given as `os.environ/VAR` and are never printed (see [`Secret`]).

use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
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

/// A secret string: debug and display print `***`, never the value.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

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
    pub kafka: KafkaConfig,
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
    /// Upstream timeout when a model gives none, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub request_timeout_secs: f64,
    /// HTTP worker threads; defaults to the number of cores.
    pub workers: Option<usize>,
    /// Serve models that have no price at cost zero (counted in
    /// `tollgate_unpriced_requests_total`) instead of refusing to start.
    #[serde(default)]
    pub allow_unpriced_models: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            id: None,
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            request_timeout_secs: default_timeout_secs(),
            workers: None,
            allow_unpriced_models: false,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:4000".to_owned()
}
fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_timeout_secs() -> f64 {
    600.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The name clients ask for.
    pub model_name: String,
    pub litellm_params: LitellmParams,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LitellmParams {
    /// `provider/upstream-model`, e.g. `openai/gpt-4o-mini`.
    pub model: String,
    pub api_base: Option<String>,
    pub api_key: Option<Secret>,
    /// Upstream timeout in seconds.
    pub timeout: Option<f64>,
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
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// Extra librdkafka producer properties. The metering guarantees (`enable.idempotence`,
    /// `acks`, `partitioner`) cannot be overridden here.
    #[serde(default)]
    pub producer_properties: HashMap<String, String>,
}

fn default_usage_topic() -> String {
    tollgate_schemas::topics::USAGE.to_owned()
}
fn default_linger_ms() -> u32 {
    5
}

const TIMEOUT_RANGE: &str = "must be a number of seconds greater than 0 and at most 86400";

/// Timeouts become `Duration`s, which cannot hold NaN, infinities or negative values.
fn valid_timeout(secs: f64) -> bool {
    secs.is_finite() && secs > 0.0 && secs <= 86_400.0
}

/// Resolves `os.environ/VAR` to the variable's value.
fn resolve_secret(secret: &Secret, path: &str, field: &str) -> Result<Secret, ConfigError> {
    match secret.expose().strip_prefix("os.environ/") {
        Some(var) => std::env::var(var).map(Secret).map_err(|_| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            message: format!("environment variable {var} is not set"),
        }),
        None => Ok(secret.clone()),
    }
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
        let mut config: Config =
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse { path: origin.to_owned(), source })?;
        config.validate_and_resolve(origin)?;
        Ok(config)
    }

    fn validate_and_resolve(&mut self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
        if self.model_list.is_empty() {
            return Err(invalid("model_list".into(), "at least one model is required".into()));
        }
        if self.gateway.max_body_bytes == 0 {
            return Err(invalid("gateway.max_body_bytes".into(), "must be positive".into()));
        }
        if !valid_timeout(self.gateway.request_timeout_secs) {
            return Err(invalid("gateway.request_timeout_secs".into(), TIMEOUT_RANGE.into()));
        }
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
            if let Some(key) = &params.api_key {
                params.api_key = Some(resolve_secret(key, origin, &format!("model_list[{i}].litellm_params.api_key"))?);
            }
        }
        for (i, k) in self.virtual_keys.iter_mut().enumerate() {
            match (&k.key, &k.key_hash) {
                (Some(key), None) => {
                    k.key = Some(resolve_secret(key, origin, &format!("virtual_keys[{i}].key"))?);
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
        }
        Ok(())
    }
}

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

    #[test]
    fn parses_a_minimal_config() {
        let c = Config::parse(MINIMAL, "test.yaml").unwrap();
        assert_eq!(c.model_list[0].model_name, "gpt-4o-mini");
        assert_eq!(c.kafka.usage_topic, "usage");
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
    fn a_key_needs_a_value() {
        let text = MINIMAL.replace("  - key: sk-tenant-1\n", "  - key_alias: nothing\n");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("virtual_keys[0]"), "{err}");
    }
}
