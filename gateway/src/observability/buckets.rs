//! Histogram buckets: Tollgate's latencies, and the boundaries the OpenTelemetry GenAI
//! conventions specify for their metrics (a histogram without buckets would be rendered as a
//! summary, which `histogram_quantile` cannot read).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

const LATENCY: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// `gen_ai.client.token.usage`: powers of 4 from 1 to 4^13.
const TOKENS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// `gen_ai.client.operation.duration`.
const OPERATION: &[f64] = &[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

/// `gen_ai.server.time_to_first_token`.
const FIRST_TOKEN: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// `gen_ai.server.time_per_output_token`.
const PER_OUTPUT_TOKEN: &[f64] = &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];

/// LiteLLM's latency histograms (seconds, without a unit suffix).
const LITELLM_LATENCY: &[f64] =
    &[0.005, 0.0125, 0.025, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0];

/// A builder with every histogram's buckets set (full names win over the `_seconds` suffix).
pub fn configured() -> PrometheusBuilder {
    let overrides: [(Matcher, &[f64]); 6] = [
        (Matcher::Suffix("_seconds".to_owned()), LATENCY),
        (Matcher::Full(crate::observability::usage::TOKEN_USAGE.to_owned()), TOKENS),
        (Matcher::Full(crate::observability::usage::OPERATION_DURATION.to_owned()), OPERATION),
        (Matcher::Full(crate::observability::usage::TIME_TO_FIRST_TOKEN.to_owned()), FIRST_TOKEN),
        (Matcher::Full(crate::observability::usage::TIME_PER_OUTPUT_TOKEN.to_owned()), PER_OUTPUT_TOKEN),
        (Matcher::Prefix("litellm_".to_owned()), LITELLM_LATENCY),
    ];
    let mut builder = PrometheusBuilder::new();
    for (matcher, buckets) in overrides {
        // Only an empty bucket list is refused, and none of these is empty.
        builder = match builder.set_buckets_for_metric(matcher, buckets) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
    }
    builder
}
