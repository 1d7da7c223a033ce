//! Process set-up for both binaries, the gateway and the ledger consumer (feature `telemetry`):
//! logs and traces, so they read the same variables and write the same format, and the stop
//! signal. Never called by a library: a binary's `main` calls [`init`] once, before anything
//! logs, and [`Telemetry::shutdown`] once it is done.

mod batch;
mod export;
mod logs;
mod otlp;
pub mod recorder;
pub mod request;
pub mod span;
pub mod traces;

pub use batch::{ExportError, DROPPED_METRIC};
pub use logs::LogFormat;
pub use traces::{OtlpTarget, SamplerChoice, TraceConfigError, TraceSettings};

use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The target of spans that only traces need (a gateway request's children): exported, never
/// formatted by the log layer.
pub const TRACE_TARGET: &str = "tollgate_traces";

/// Whether [`init`] installed a span exporter: code that only feeds traces (child spans,
/// attributes no log shows) skips its work when not.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported by this process.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The longest [`Telemetry::shutdown`] waits for each target's last export.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// What [`init`] set up, to be shut down when the process ends: the export queue of each
/// target, whose queued spans are flushed.
#[must_use = "call shutdown() at exit, or queued spans are lost"]
pub struct Telemetry {
    exports: Vec<Arc<batch::BatchExport>>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        !self.exports.is_empty()
    }

    /// Exports the spans still queued (bounded by the exporter's timeout) and stops exporting.
    pub fn shutdown(self) {
        for export in self.exports {
            if let Err(e) = export.shutdown(SHUTDOWN_TIMEOUT) {
                tracing::warn!(error = %e, "traces: the last spans could not be exported");
            }
        }
    }
}

/// Installs the logs (stderr; see `logs`) and, with `traces`, the span recorder and its OTLP
/// exporters. Spans of Tollgate's crates (`tollgate_*` targets) at `info` and above are exported
/// whatever the log level, with the warnings and errors logged inside them as span events. Call
/// it before the async runtime starts.
pub fn init(traces: Option<&TraceSettings>) -> Result<Telemetry, TraceConfigError> {
    let exports = match traces {
        Some(settings) => traces::exports(settings)?,
        None => Vec::new(),
    };
    let recorder = traces.map(|settings| recording(exports.clone(), settings.sampler));
    let exporting = recorder.is_some();
    // Already initialised (tests): the first subscriber stays.
    if tracing_subscriber::registry().with(logs::layer()).with(recorder).try_init().is_ok() {
        if exporting {
            recorder::install(recorder::Exports::from(exports.clone()));
        }
        EXPORTING.store(exporting, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Telemetry { exports })
}

/// The span recorder, filtered ([`Recorded`]).
fn recording<S>(exports: Vec<Arc<batch::BatchExport>>, sampler: SamplerChoice) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    recorder::Recorder::new(exports, sampler).with_filter(Recorded)
}

/// What the span recorder is given: spans of Tollgate's crates at `info` and above, and their
/// warnings and errors.
///
/// Its maximum level is `info`, so with traces on, `debug!`, `trace!` and `log` records below
/// the log level are still stopped where they are written. And it decides at each span or
/// event, never once per call site: a call site both filters want for good would be opened
/// without asking them, and tracing-subscriber (0.3.23) would then read whatever an earlier,
/// unrelated question left in its per-thread filter state. The ledger consumer's batch spans
/// were created that way without reaching the recorder (the `otel_traces` e2e test).
struct Recorded;

impl Recorded {
    fn wants(meta: &tracing::Metadata<'_>) -> bool {
        meta.target().starts_with("tollgate")
            && (meta.is_span() && *meta.level() <= tracing::Level::INFO || *meta.level() <= tracing::Level::WARN)
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for Recorded {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        Recorded::wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if Recorded::wants(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
}

/// Logs alone, no traces.
pub fn init_logging() {
    let _ = init(None);
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C): both mean a graceful stop.
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Folds recorded histogram samples into their buckets (`fold`: the Prometheus handle's
/// `run_upkeep`) every `every`, for the life of the task. The recorder keeps each sample
/// (8 bytes) until a fold, and a scrape of `/metrics` is the only other one: without this, a
/// process nobody scrapes grows by every request's samples, and one scraped every 30 s holds
/// 30 s of them. With it, at most `every`'s worth is held. Both binaries run it.
pub async fn metrics_upkeep(fold: impl Fn(), every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        fold();
    }
}
