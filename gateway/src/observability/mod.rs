//! Metrics that describe requests as tenants and SREs see them: the OpenTelemetry GenAI metrics,
//! spend and tokens by team and model, budget utilisation and refusals, deployment state, and
//! LiteLLM's metric names when `gateway.metrics.litellm_compatible` is on (docs/observability.md).
//!
//! Labels are of bounded cardinality: every tenant or provider-supplied value goes through a
//! [`labels::CappedLabel`], and key and customer labels are off unless configured. Never a key,
//! a key hash or a request id.

pub mod buckets;
pub mod handles;
pub mod labels;
pub mod litellm;
pub mod scrape;
pub mod usage;

use crate::config::MetricsSettings;
use labels::CappedLabel;
use std::sync::OnceLock;

static POLICY: OnceLock<Policy> = OnceLock::new();

/// Which labels the metrics carry, and the values each has kept so far.
pub struct Policy {
    /// Also export LiteLLM's metric names.
    pub litellm: bool,
    pub team: CappedLabel,
    /// `None` unless `gateway.metrics.labels.key_alias`.
    pub key_alias: Option<CappedLabel>,
    /// `None` unless `gateway.metrics.labels.customer`.
    pub customer: Option<CappedLabel>,
    /// Requested and served model names (a provider names the served model: it is capped too).
    pub models: CappedLabel,
    /// Provider names.
    pub providers: CappedLabel,
    /// Deployment ids.
    pub deployments: CappedLabel,
    /// Handles of the per-request series, kept by labels.
    pub handles: handles::Handles,
}

impl Policy {
    pub fn new(settings: &MetricsSettings) -> Policy {
        let cap = settings.labels.cap;
        Policy {
            litellm: settings.litellm_compatible,
            team: CappedLabel::new(cap),
            key_alias: settings.labels.key_alias.then(|| CappedLabel::new(cap)),
            customer: settings.labels.customer.then(|| CappedLabel::new(cap)),
            models: CappedLabel::new(cap),
            providers: CappedLabel::new(cap),
            deployments: CappedLabel::new(cap),
            handles: handles::Handles::default(),
        }
    }
}

/// Sets the process's label policy from config; the first call wins (one gateway a process).
pub fn install(settings: &MetricsSettings) {
    if POLICY.set(Policy::new(settings)).is_err() {
        tracing::debug!("metric label policy already installed; keeping the first");
    }
}

/// The process's label policy (the defaults when none was installed).
pub fn policy() -> &'static Policy {
    POLICY.get_or_init(|| Policy::new(&MetricsSettings::default()))
}
