//! LiteLLM's `callbacks`, `success_callback` and `failure_callback` (`litellm_settings`), as
//! Tollgate honours them: `otel` and `langfuse` turn on the OTLP span exporter (docs/observability.md, "Traces"),
//! `prometheus` adds LiteLLM's metric names to `/metrics` (which is always served). Other names
//! are reported at start-up.
//!
//! Both lists turn on the same exporter: every sampled request is exported, and a failure is a
//! span with an error status, so one list naming a destination is enough.

use super::{Config, ConfigError};
use tollgate_schemas::telemetry::traces::{sdk_disabled, DEFAULT_LANGFUSE_HOST, DEFAULT_OTLP_ENDPOINT};
use tollgate_schemas::telemetry::{OtlpTarget, TraceSettings};

/// A callback list as LiteLLM reads it: a list of names, or one name alone.
pub(super) fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match <Option<OneOrMany> as serde::Deserialize>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(name)) => vec![name],
        Some(OneOrMany::Many(names)) => names,
    })
}

/// The callback names Tollgate acts on.
const HONOURED: &[&str] = &["otel", "langfuse", "prometheus"];

impl Config {
    /// Every callback the three lists name, once each, with the list that first names it.
    fn callbacks(&self) -> Vec<(&'static str, &str)> {
        let s = &self.litellm_settings;
        let mut seen: Vec<(&'static str, &str)> = Vec::new();
        let lists = [
            ("callbacks", &s.callbacks),
            ("success_callback", &s.success_callback),
            ("failure_callback", &s.failure_callback),
        ];
        for (list, name) in lists.into_iter().flat_map(|(list, names)| names.iter().map(move |n| (list, n.as_str()))) {
            if !seen.iter().any(|(_, n)| *n == name) {
                seen.push((list, name));
            }
        }
        seen
    }

    /// Callback names Tollgate does not act on, as `litellm_settings.<list>: <name>`.
    pub fn ignored_callbacks(&self) -> Vec<String> {
        self.callbacks()
            .into_iter()
            .filter(|(_, name)| !HONOURED.contains(name))
            .map(|(list, name)| format!("litellm_settings.{list}: `{name}`"))
            .collect()
    }

    /// Where the gateway's spans go: the collector of the standard variables
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`), or `http://localhost:4318` for the `otel` callback
    /// without one; Langfuse's OTLP endpoint for `langfuse`. `None`: traces are off.
    pub fn trace_settings(&self, path: &str) -> Result<Option<TraceSettings>, ConfigError> {
        if sdk_disabled() {
            return Ok(None);
        }
        let callbacks = self.callbacks();
        let named = |n: &str| callbacks.iter().find(|(_, name)| *name == n).map(|(list, _)| *list);
        let mut targets: Vec<OtlpTarget> = OtlpTarget::from_env().into_iter().collect();
        if targets.is_empty() && named("otel").is_some() {
            targets.push(OtlpTarget::collector(DEFAULT_OTLP_ENDPOINT));
        }
        if let Some(list) = named("langfuse") {
            targets.push(self.langfuse(path, list)?);
        }
        if targets.is_empty() {
            return Ok(None);
        }
        TraceSettings::new("tollgate-gateway", targets).map(Some).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            field: e.variable.to_owned(),
            message: e.message,
        })
    }

    /// Langfuse's OTLP endpoint, with the project keys LiteLLM reads: `LANGFUSE_PUBLIC_KEY`,
    /// `LANGFUSE_SECRET_KEY` and `LANGFUSE_HOST`, from `environment_variables` or the process
    /// environment.
    fn langfuse(&self, path: &str, list: &str) -> Result<OtlpTarget, ConfigError> {
        let var = |name: &str| {
            self.environment_variables
                .get(name)
                .map(|s| s.expose().to_owned())
                .or_else(|| std::env::var(name).ok())
                .filter(|v| !v.trim().is_empty())
        };
        let (Some(public), Some(secret)) = (var("LANGFUSE_PUBLIC_KEY"), var("LANGFUSE_SECRET_KEY")) else {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: format!("litellm_settings.{list}"),
                message: "`langfuse` needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (in environment_variables \
                          or the environment)"
                    .to_owned(),
            });
        };
        let host = var("LANGFUSE_HOST").unwrap_or_else(|| DEFAULT_LANGFUSE_HOST.to_owned());
        Ok(OtlpTarget::langfuse(&host, &public, &secret))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn config(litellm_settings: &str) -> Config {
        let yaml = format!(
            "model_list: [{{model_name: m, litellm_params: {{model: openai/m, api_key: k}}}}]\n\
             environment_variables: {{LANGFUSE_PUBLIC_KEY: pk-lf-test, LANGFUSE_SECRET_KEY: sk-lf-test, \
             LANGFUSE_HOST: 'https://langfuse.example'}}\n\
             litellm_settings: {litellm_settings}\n"
        );
        serde_yaml::from_str(&yaml).unwrap()
    }

    #[test]
    fn langfuse_maps_to_its_otlp_endpoint_with_the_project_keys() {
        let c = config("{success_callback: [langfuse], failure_callback: [langfuse, sentry]}");
        let settings = c.trace_settings("c.yaml").unwrap().unwrap();
        let langfuse = settings.targets.last().unwrap();
        assert_eq!(langfuse.url, "https://langfuse.example/api/public/otel/v1/traces");
        assert!(langfuse.headers["Authorization"].starts_with("Basic "));
        assert_eq!(c.ignored_callbacks(), ["litellm_settings.failure_callback: `sentry`"]);
    }

    #[test]
    fn no_callback_and_no_endpoint_means_no_traces() {
        // (The standard OTLP variables are not set in unit tests.)
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            assert!(config("{success_callback: [prometheus]}").trace_settings("c.yaml").unwrap().is_none());
            let otel = config("{failure_callback: [otel]}").trace_settings("c.yaml").unwrap().unwrap();
            assert_eq!(otel.targets[0].url, "http://localhost:4318/v1/traces");
        }
    }

    #[test]
    fn langfuse_without_keys_names_the_field() {
        let yaml = "model_list: []\nlitellm_settings: {success_callback: [langfuse]}\n";
        let c: Config = serde_yaml::from_str(yaml).unwrap();
        if std::env::var_os("LANGFUSE_PUBLIC_KEY").is_none() {
            let e = c.trace_settings("c.yaml").unwrap_err().to_string();
            assert!(e.contains("litellm_settings.success_callback") && e.contains("LANGFUSE_PUBLIC_KEY"), "{e}");
        }
    }
}
