//! Prometheus metrics set-up (logging is `tollgate_schemas::telemetry`, shared with the ledger
//! consumer). Metric names follow `tollgate_<noun>_<unit>`; labels are bounded (model, provider,
//! status), never a key or a request id.

use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global metrics recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = crate::observability::buckets::configured().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}
