//! Which requests are traced. The gateway samples its requests itself, before it opens their
//! span: a request that is not kept costs what it costs with traces off (its span is one the
//! exporter never sees, no child span is opened, no attribute built). The SDK's sampler then
//! keeps every span the gateway hands it.

use super::{exporting, TraceParent};
use std::sync::OnceLock;
use tollgate_schemas::telemetry::{SamplerChoice, TraceSettings};

/// The sampler of `OTEL_TRACES_SAMPLER`, set once at start-up by [`sample_in_gateway`].
static SAMPLER: OnceLock<SamplerChoice> = OnceLock::new();

/// Takes the sampling of `settings` into the gateway's hands (see the module) and returns the
/// settings to install, whose SDK sampler keeps every span. Call it once, before
/// `telemetry::init`.
pub fn sample_in_gateway(settings: TraceSettings) -> TraceSettings {
    let _ = SAMPLER.set(settings.sampler);
    TraceSettings { sampler: SamplerChoice::ALWAYS_ON, ..settings }
}

/// Whether a request, with its client's `traceparent` if valid, is traced: never with traces
/// off; otherwise as the configured sampler decides (the default, `parentbased_always_on`, when
/// [`sample_in_gateway`] was not called).
pub(super) fn keeps(client: Option<&TraceParent>) -> bool {
    exporting() && SAMPLER.get().unwrap_or(&SamplerChoice::DEFAULT).keeps(client.map(|p| p.sampled), fastrand::f64())
}

/// A new trace id, 32 lower-case hex digits, never all zeros: for a request not traced.
pub(super) fn new_trace_id() -> String {
    tollgate_schemas::telemetry::span::hex(&fastrand::u128(1..).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_trace_id_is_32_hex_digits_and_not_zero() {
        for _ in 0..1000 {
            let id = new_trace_id();
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
            assert_ne!(id, "0".repeat(32));
        }
        assert_ne!(new_trace_id(), new_trace_id());
    }

    #[test]
    fn the_sdk_keeps_what_the_gateway_sampled() {
        let settings = TraceSettings {
            service_name: "tollgate-gateway".into(),
            sampler: SamplerChoice::parse("parentbased_traceidratio", Some("0.1")).unwrap(),
            targets: vec![],
        };
        let installed = sample_in_gateway(settings);
        assert_eq!(installed.sampler, SamplerChoice::ALWAYS_ON);
        assert_eq!(SAMPLER.get().map(|s| s.ratio), Some(0.1));
    }

    #[test]
    fn with_traces_off_nothing_is_kept() {
        let sampled = TraceParent { trace_id: [1; 16], parent_id: [2; 8], sampled: true };
        assert!(!keeps(Some(&sampled)));
        assert!(!keeps(None));
    }
}
