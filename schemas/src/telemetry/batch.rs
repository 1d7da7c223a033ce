//! The span processor of an OTLP target: finished spans wait in a bounded queue and leave in
//! batches from a thread of their own. A request never waits for export: when the queue is full
//! the span is dropped and counted (`tollgate_trace_spans_dropped_total`).
//!
//! Tollgate's own rather than the SDK's `BatchSpanProcessor`, whose thread (0.31) can spin on
//! an empty queue: it counts queued spans in an atomic that a race can wrap below zero, and then
//! loops exporting empty batches, busy, until that many spans have passed. Here the thread only
//! blocks on the queue, with the schedule delay as its timeout.

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The metric of the spans dropped because the queue was full.
pub const DROPPED_METRIC: &str = "tollgate_trace_spans_dropped_total";

/// How spans are batched: `OTEL_BSP_SCHEDULE_DELAY` (ms) and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`,
/// bounded; the queue's size is Tollgate's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// The longest a span waits for its batch to fill.
    pub delay: Duration,
    /// Spans per export, at most.
    pub batch: usize,
    /// Spans waiting, at most; more are dropped.
    pub queue: usize,
}

impl BatchSettings {
    /// The environment's, within bounds: a delay of 1 ms to 60 s, batches of 1 to the queue.
    pub fn from_env(queue: usize) -> BatchSettings {
        let read = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok());
        let delay = read("OTEL_BSP_SCHEDULE_DELAY").unwrap_or(5_000).clamp(1, 60_000);
        let batch = read("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").unwrap_or(512).clamp(1, queue as u64);
        BatchSettings { delay: Duration::from_millis(delay), batch: batch as usize, queue }
    }
}

/// What the export thread is asked besides exporting.
#[derive(Debug)]
enum Control {
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
    Resource(Resource),
}

/// The processor: the queue's sending ends and the export thread.
#[derive(Debug)]
pub struct BatchExport {
    spans: SyncSender<SpanData>,
    control: SyncSender<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
    dropped: Arc<AtomicU64>,
}

impl BatchExport {
    /// Starts the export thread of `exporter`.
    pub fn start<E: SpanExporter + 'static>(exporter: E, settings: BatchSettings) -> std::io::Result<BatchExport> {
        let (spans, queue) = mpsc::sync_channel(settings.queue);
        let (control, orders) = mpsc::sync_channel(8);
        let thread = std::thread::Builder::new()
            .name("tollgate-traces".into())
            .spawn(move || export_loop(exporter, &queue, &orders, settings))?;
        Ok(BatchExport { spans, control, thread: Mutex::new(Some(thread)), dropped: Arc::default() })
    }

    /// The count of spans dropped so far (the metric counts them too).
    #[cfg(test)]
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Sends `order` to the thread and waits at most `timeout` for its answer.
    fn ask(&self, order: impl FnOnce(SyncSender<OTelSdkResult>) -> Control, timeout: Duration) -> OTelSdkResult {
        let (reply, answer) = mpsc::sync_channel(1);
        self.control.try_send(order(reply)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answer.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))?
    }
}

impl SpanProcessor for BatchExport {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.spans.try_send(span) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(DROPPED_METRIC).increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, Duration::from_secs(10))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.ask(Control::Shutdown, timeout);
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            if result.is_ok() {
                let _ = thread.join();
            }
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.control.try_send(Control::Resource(resource.clone()));
    }
}

/// The export thread: a batch leaves when it is full or its first span has waited the delay.
/// Control orders are read between waits, at least every 100 ms.
fn export_loop<E: SpanExporter>(
    mut exporter: E,
    queue: &Receiver<SpanData>,
    orders: &Receiver<Control>,
    settings: BatchSettings,
) {
    let _quiet = Context::enter_telemetry_suppressed_scope();
    let mut batch: Vec<SpanData> = Vec::with_capacity(settings.batch);
    let mut due = Instant::now() + settings.delay;
    loop {
        while let Ok(order) = orders.try_recv() {
            match order {
                Control::Resource(resource) => exporter.set_resource(&resource),
                Control::Flush(reply) => {
                    let _ = reply.send(drain(&exporter, queue, &mut batch, settings.batch));
                }
                Control::Shutdown(reply) => {
                    let result = drain(&exporter, queue, &mut batch, settings.batch);
                    let _ = exporter.shutdown();
                    let _ = reply.send(result);
                    return;
                }
            }
        }
        let wait = due.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        match queue.recv_timeout(wait) {
            Ok(span) => {
                if batch.is_empty() {
                    due = Instant::now() + settings.delay;
                }
                batch.push(span);
                batch.extend(queue.try_iter().take(settings.batch - batch.len()));
                if batch.len() >= settings.batch {
                    let _ = export(&exporter, &mut batch);
                }
            }
            Err(RecvTimeoutError::Timeout) if !batch.is_empty() && Instant::now() >= due => {
                let _ = export(&exporter, &mut batch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Exports what is batched and everything queued.
fn drain<E: SpanExporter>(
    exporter: &E,
    queue: &Receiver<SpanData>,
    batch: &mut Vec<SpanData>,
    size: usize,
) -> OTelSdkResult {
    let mut result = Ok(());
    loop {
        batch.extend(queue.try_iter().take(size.saturating_sub(batch.len())));
        if batch.is_empty() {
            return result;
        }
        if let Err(e) = export(exporter, batch) {
            result = Err(e);
        }
    }
}

fn export<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>) -> OTelSdkResult {
    let spans = std::mem::replace(batch, Vec::with_capacity(batch.capacity()));
    let result = futures::executor::block_on(exporter.export(spans));
    if let Err(e) = &result {
        tracing::warn!(error = %e, "traces: a batch of spans could not be exported");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// Records the batches it is given; each export first waits for `gate` to let it through.
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<Vec<String>>>>,
        gate: Arc<Mutex<()>>,
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let _open = self.gate.lock().map_err(|_| OTelSdkError::InternalFailure("gate".into()))?;
            let names = batch.iter().map(|s| s.name.to_string()).collect();
            self.batches.lock().map_err(|_| OTelSdkError::InternalFailure("batches".into()))?.push(names);
            Ok(())
        }
    }

    fn provider(exporter: &Recorder, settings: BatchSettings) -> (SdkTracerProvider, Arc<AtomicU64>) {
        let processor = BatchExport::start(exporter.clone(), settings).unwrap();
        let dropped = processor.dropped();
        (SdkTracerProvider::builder().with_span_processor(processor).build(), dropped)
    }

    fn emit(provider: &SdkTracerProvider, n: usize) {
        let tracer = provider.tracer("test");
        for i in 0..n {
            drop(tracer.start(format!("span-{i}")));
        }
    }

    #[test]
    fn spans_leave_in_batches_when_full_or_due() {
        let exporter = Recorder::default();
        let settings = BatchSettings { delay: Duration::from_millis(50), batch: 4, queue: 64 };
        let (provider, dropped) = provider(&exporter, settings);
        emit(&provider, 10);
        let deadline = Instant::now() + Duration::from_secs(5);
        while exporter.batches.lock().unwrap().iter().map(Vec::len).sum::<usize>() < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let batches = exporter.batches.lock().unwrap().clone();
        assert_eq!(batches.concat(), (0..10).map(|i| format!("span-{i}")).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        // The last two left on the delay, not on a full batch.
        assert_eq!(batches.last().map(Vec::len), Some(2));
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        provider.shutdown().unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_spans_without_blocking() {
        let exporter = Recorder::default();
        let settings = BatchSettings { delay: Duration::from_millis(1), batch: 2, queue: 3 };
        let (provider, dropped) = provider(&exporter, settings);
        // The exporter is stuck: at most one batch (2) is taken from the queue, 3 wait there.
        let gate = exporter.gate.lock().unwrap();
        emit(&provider, 1);
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        emit(&provider, 20);
        assert!(started.elapsed() < Duration::from_secs(1), "ending spans waited for the exporter");
        let lost = dropped.load(Ordering::Relaxed);
        assert!((15..=17).contains(&lost), "dropped {lost}");
        drop(gate);
        provider.shutdown().unwrap();
        let exported: usize = exporter.batches.lock().unwrap().iter().map(Vec::len).sum();
        assert_eq!(exported as u64 + lost, 21);
    }

    #[test]
    fn shutdown_exports_what_is_queued() {
        let exporter = Recorder::default();
        let settings = BatchSettings { delay: Duration::from_secs(60), batch: 512, queue: 1024 };
        let (provider, _) = provider(&exporter, settings);
        emit(&provider, 7);
        provider.shutdown().unwrap();
        assert_eq!(exporter.batches.lock().unwrap().concat().len(), 7);
    }

    #[test]
    fn settings_are_bounded() {
        let s = BatchSettings::from_env(8192);
        assert!(s.batch >= 1 && s.batch <= 8192 && s.delay >= Duration::from_millis(1));
        assert_eq!(s.queue, 8192);
    }
}
