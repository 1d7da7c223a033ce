//! Traces over OTLP/HTTP (protobuf): where they go, how many are kept, and the export queue of
//! each target. Off unless asked for (an endpoint in the environment, or the gateway's
//! `otel`/`langfuse` callbacks); when off, no exporter exists and spans go nowhere.
//!
//! Export never holds a request up: spans (`super::recorder`) wait in the bounded queue of
//! `super::batch` (full: the newest are dropped, and counted) and leave from its own thread.
//! [`super::Telemetry::shutdown`] flushes what is queued.

use super::batch::{BatchExport, BatchSettings};
use super::export::{env_headers, parse_list, HttpExporter};
use super::otlp::Preamble;
use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// OpenTelemetry's default OTLP/HTTP endpoint.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4318";
/// Langfuse Cloud, LiteLLM's default `LANGFUSE_HOST`.
pub const DEFAULT_LANGFUSE_HOST: &str = "https://cloud.langfuse.com";
/// Spans waiting for export, at most; more are dropped (and never block a request).
const MAX_QUEUED_SPANS: usize = 8192;
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A setting of the environment that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct TraceConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn error(variable: &'static str, message: impl Into<String>) -> TraceConfigError {
    TraceConfigError { variable, message: message.into() }
}

/// One OTLP/HTTP destination: the full URL of its traces endpoint and the headers it needs.
#[derive(Clone, PartialEq)]
pub struct OtlpTarget {
    pub url: String,
    pub headers: HashMap<String, String>,
}

impl std::fmt::Debug for OtlpTarget {
    // Headers hold credentials (Langfuse's Basic auth): only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&String> = self.headers.keys().collect();
        f.debug_struct("OtlpTarget").field("url", &self.url).field("headers", &names).finish()
    }
}

impl OtlpTarget {
    /// The collector of the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is,
    /// else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`; `None` when neither is set.
    pub fn from_env() -> Option<OtlpTarget> {
        let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(url) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return Some(OtlpTarget { url, headers: HashMap::new() });
        }
        set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| OtlpTarget::collector(&base))
    }

    /// A collector at `base` (`http://host:4318`).
    pub fn collector(base: &str) -> OtlpTarget {
        OtlpTarget { url: format!("{}/v1/traces", base.trim_end_matches('/')), headers: HashMap::new() }
    }

    /// Langfuse's OTLP endpoint (`<host>/api/public/otel/v1/traces`), authenticated with the
    /// project's public and secret keys (HTTP Basic).
    pub fn langfuse(host: &str, public_key: &str, secret_key: &str) -> OtlpTarget {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{public_key}:{secret_key}"));
        OtlpTarget {
            url: format!("{}/api/public/otel/v1/traces", host.trim_end_matches('/')),
            headers: HashMap::from([("Authorization".to_owned(), format!("Basic {credentials}"))]),
        }
    }
}

/// Where traces go and which are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSettings {
    /// `service.name` of the spans: `OTEL_SERVICE_NAME`, else the binary's name.
    pub service_name: String,
    pub sampler: SamplerChoice,
    pub targets: Vec<OtlpTarget>,
}

/// The sampler, as `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name it. The default
/// is `parentbased_always_on`: a client's sampling decision (its `traceparent`) is followed,
/// and requests without one are all kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerChoice {
    pub parent_based: bool,
    /// The share of new traces kept, 0 to 1.
    pub ratio: f64,
}

impl SamplerChoice {
    /// Every trace kept, whatever a parent decided.
    pub const ALWAYS_ON: SamplerChoice = SamplerChoice { parent_based: false, ratio: 1.0 };
    /// `parentbased_always_on`, the default.
    pub const DEFAULT: SamplerChoice = SamplerChoice { parent_based: true, ratio: 1.0 };

    /// Whether a trace is kept, as OpenTelemetry's sampler of the same name decides for a root span:
    /// the parent's decision (`parent_sampled`, from a `traceparent`) when parent-based and
    /// there is a parent, else `draw` (uniform in [0, 1)) below the ratio.
    pub fn keeps(self, parent_sampled: Option<bool>, draw: f64) -> bool {
        match parent_sampled {
            Some(sampled) if self.parent_based => sampled,
            _ => draw < self.ratio,
        }
    }

    pub fn from_env() -> Result<SamplerChoice, TraceConfigError> {
        let name = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_else(|_| "parentbased_always_on".to_owned());
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
        SamplerChoice::parse(&name, arg.as_deref())
    }

    pub fn parse(name: &str, arg: Option<&str>) -> Result<SamplerChoice, TraceConfigError> {
        let ratio = || -> Result<f64, TraceConfigError> {
            let Some(arg) = arg else { return Ok(1.0) };
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(error("OTEL_TRACES_SAMPLER_ARG", format!("{arg:?} is not a ratio between 0 and 1"))),
            }
        };
        let (parent_based, ratio) = match name.trim() {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, ratio()?),
            "parentbased_always_on" => (true, 1.0),
            "parentbased_always_off" => (true, 0.0),
            "parentbased_traceidratio" => (true, ratio()?),
            other => {
                return Err(error(
                    "OTEL_TRACES_SAMPLER",
                    format!(
                        "{other:?} is not one of always_on, always_off, traceidratio, parentbased_always_on, \
                         parentbased_always_off, parentbased_traceidratio"
                    ),
                ))
            }
        };
        Ok(SamplerChoice { parent_based, ratio })
    }
}

impl TraceSettings {
    /// Traces to `targets`, named and sampled as the environment says.
    pub fn new(default_service: &str, targets: Vec<OtlpTarget>) -> Result<TraceSettings, TraceConfigError> {
        let service_name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| default_service.to_owned());
        Ok(TraceSettings { service_name, sampler: SamplerChoice::from_env()?, targets })
    }

    /// Traces as the standard variables alone ask (the ledger consumer): `None` when no
    /// endpoint is set or `OTEL_SDK_DISABLED=true`.
    pub fn from_env(default_service: &str) -> Result<Option<TraceSettings>, TraceConfigError> {
        if sdk_disabled() {
            return Ok(None);
        }
        match OtlpTarget::from_env() {
            Some(target) => TraceSettings::new(default_service, vec![target]).map(Some),
            None => Ok(None),
        }
    }
}

/// `OTEL_SDK_DISABLED=true` turns tracing off whatever else is set.
pub fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The resource's attributes: those of `OTEL_RESOURCE_ATTRIBUTES`, then the SDK's
/// (`telemetry.sdk.*`, here Tollgate's own) and `service.name`, which win.
pub fn resource_attributes(service_name: &str) -> Vec<(String, String)> {
    let mut attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").map(|v| parse_list(&v)).unwrap_or_default();
    attributes.extend(
        [
            ("telemetry.sdk.name", "tollgate"),
            ("telemetry.sdk.language", "rust"),
            ("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
            ("service.name", service_name),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    attributes
}

/// Spans are sent uncompressed: a compression asked for (`gzip`, `zstd`) stops start-up rather
/// than being ignored.
fn check_compression() -> Result<(), TraceConfigError> {
    for variable in ["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"] {
        match std::env::var(variable) {
            Ok(v) if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("none") => {
                return Err(error(variable, format!("{v:?}: Tollgate sends traces uncompressed; use none")))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The export queue of each target, its thread started.
pub(super) fn exports(settings: &TraceSettings) -> Result<Vec<Arc<BatchExport>>, TraceConfigError> {
    check_compression()?;
    let preamble = Preamble::new(&resource_attributes(&settings.service_name), "tollgate");
    let headers = env_headers();
    let mut exports = Vec::with_capacity(settings.targets.len());
    for target in &settings.targets {
        let (target, headers, preamble) = (target.clone(), headers.clone(), preamble.clone());
        let build = move || HttpExporter::new(&target, &headers, preamble, EXPORT_TIMEOUT);
        let export = BatchExport::start(build, BatchSettings::from_env(MAX_QUEUED_SPANS))
            .map_err(|e| error("OTEL_EXPORTER_OTLP_ENDPOINT", e))?;
        exports.push(Arc::new(export));
    }
    Ok(exports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_are_read_as_opentelemetry_names_them() {
        assert_eq!(
            SamplerChoice::parse("parentbased_always_on", None).unwrap(),
            SamplerChoice { parent_based: true, ratio: 1.0 }
        );
        assert_eq!(
            SamplerChoice::parse("parentbased_traceidratio", Some("0.25")).unwrap(),
            SamplerChoice { parent_based: true, ratio: 0.25 }
        );
        assert_eq!(SamplerChoice::parse("always_off", None).unwrap().ratio, 0.0);
        let bad = SamplerChoice::parse("traceidratio", Some("1.5")).unwrap_err();
        assert_eq!(bad.variable, "OTEL_TRACES_SAMPLER_ARG");
        let bad = SamplerChoice::parse("sometimes", None).unwrap_err();
        assert_eq!(bad.variable, "OTEL_TRACES_SAMPLER");
    }

    #[test]
    fn a_sampler_follows_the_parent_or_draws_against_its_ratio() {
        let tenth = SamplerChoice::parse("parentbased_traceidratio", Some("0.1")).unwrap();
        assert!(tenth.keeps(Some(true), 0.99) && !tenth.keeps(Some(false), 0.0));
        assert!(tenth.keeps(None, 0.05) && !tenth.keeps(None, 0.1) && !tenth.keeps(None, 0.5));
        let plain = SamplerChoice::parse("traceidratio", Some("0.1")).unwrap();
        assert!(!plain.keeps(Some(true), 0.5) && plain.keeps(Some(false), 0.05));
        for draw in [0.0, 0.5, 0.999_999] {
            assert!(SamplerChoice::DEFAULT.keeps(None, draw) && SamplerChoice::ALWAYS_ON.keeps(Some(false), draw));
            assert!(!SamplerChoice::parse("always_off", None).unwrap().keeps(Some(true), draw));
        }
        assert!(!SamplerChoice::DEFAULT.keeps(Some(false), 0.0));
        assert_eq!(SamplerChoice::parse("parentbased_always_on", None).unwrap(), SamplerChoice::DEFAULT);
    }

    #[test]
    fn langfuse_is_reached_with_basic_auth_on_its_otlp_path() {
        let t = OtlpTarget::langfuse("https://lf.example/", "pk-lf-1", "sk-lf-2");
        assert_eq!(t.url, "https://lf.example/api/public/otel/v1/traces");
        // base64("pk-lf-1:sk-lf-2")
        assert_eq!(t.headers["Authorization"], "Basic cGstbGYtMTpzay1sZi0y");
        // The secret never shows in debug output.
        assert!(!format!("{t:?}").contains("cGst"));
    }

    #[test]
    fn a_collector_base_gets_the_traces_path() {
        assert_eq!(OtlpTarget::collector("http://127.0.0.1:4318/").url, "http://127.0.0.1:4318/v1/traces");
    }
}
