//! Prometheus metrics set-up (logging is `tollgate_schemas::telemetry`, shared with the ledger
//! consumer). Metric names follow `tollgate_<noun>_<unit>`; labels are bounded (model, provider,
//! status), never a key or a request id.

use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::OnceLock;
use std::time::Duration;

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

/// How often recorded histogram samples are folded into their buckets
/// (`tollgate_schemas::telemetry::metrics_upkeep`).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn folds_samples_at_every_interval() {
        let counted = Arc::new(AtomicU32::new(0));
        let folds = counted.clone();
        let fold = move || {
            folds.fetch_add(1, Ordering::Relaxed);
        };
        let task = tokio::spawn(tollgate_schemas::telemetry::metrics_upkeep(fold, Duration::from_secs(1)));
        // The first fold runs at once, then one a second.
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert_eq!(counted.load(Ordering::Relaxed), 4);
        task.abort();
    }

    #[test]
    fn folding_keeps_every_sample() {
        // Samples folded into buckets, twice over, are each counted once: none lost, none twice.
        let recorder = crate::observability::buckets::configured().build_recorder();
        let handle = recorder.handle();
        let histogram = metrics::Recorder::register_histogram(
            &recorder,
            &metrics::Key::from_name("tollgate_request_duration_seconds"),
            &metrics::Metadata::new("test", metrics::Level::INFO, None),
        );
        for _ in 0..1_000 {
            histogram.record(0.002);
        }
        handle.run_upkeep();
        handle.run_upkeep();
        let rendered = handle.render();
        assert!(rendered.contains("tollgate_request_duration_seconds_count 1000"), "{rendered}");
    }
}
