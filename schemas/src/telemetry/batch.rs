//! The export queue of an OTLP target: finished traces (from `super::recorder`), encoded as
//! OTLP protobuf where they finish ([`EncodedTrace`]: the records are freed on the thread that
//! made them, while in its cache, and the queue holds one buffer a trace), wait in a queue
//! bounded in spans and leave in batches from a thread of their own, whose [`Exporter`] sends
//! them (`super::export`: OTLP over HTTP). A request never waits for export: when the queue is
//! full the trace's spans are dropped, not encoded, and counted
//! (`tollgate_trace_spans_dropped_total`).
//!
//! Senders never wake the thread: it wakes every [`TICK`] (or on a flush or shutdown order),
//! takes what is queued, exports every full batch and a partial one whose first span has waited
//! the schedule delay.

use super::otlp::EncodedTrace;
use super::span::RecordedSpan;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The metric of the spans dropped because the queue was full.
pub const DROPPED_METRIC: &str = "tollgate_trace_spans_dropped_total";

/// Why spans were not exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Failed(String),
    #[error("the export thread has stopped")]
    Stopped,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Sends a batch of traces somewhere, from the export thread.
pub trait Exporter {
    fn export(&mut self, traces: &[EncodedTrace]) -> Result<(), ExportError>;
}

/// How often the export thread takes what is queued, at most (the delay when shorter).
const TICK: Duration = Duration::from_millis(50);

/// How spans are batched: `OTEL_BSP_SCHEDULE_DELAY` (ms) and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`,
/// bounded; the queue's size is Tollgate's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// The longest a span waits for its batch to fill.
    pub delay: Duration,
    /// Spans per export, at most (a trace is never split: one holding more leaves alone).
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

/// Counts `n` spans lost (the queue was full, or a trace held too many).
pub(super) fn count_dropped(n: usize) {
    metrics::counter!(DROPPED_METRIC).increment(n as u64);
}

/// What the export thread is asked besides exporting.
#[derive(Debug)]
enum Control {
    Flush(SyncSender<Result<(), ExportError>>),
    Shutdown(SyncSender<Result<(), ExportError>>),
}

/// The queue's sending end, its count of spans waiting, and the export thread.
#[derive(Debug)]
pub struct BatchExport {
    traces: Sender<EncodedTrace>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    control: SyncSender<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
    dropped: AtomicU64,
}

impl BatchExport {
    /// Starts the export thread, which first builds its exporter with `build` (there: a
    /// blocking HTTP client must not be built or dropped inside the async runtime) and
    /// reports how that went.
    pub fn start<E: Exporter + 'static>(
        build: impl FnOnce() -> Result<E, String> + Send + 'static,
        settings: BatchSettings,
    ) -> Result<BatchExport, String> {
        let (traces, queue) = mpsc::channel();
        let (control, orders) = mpsc::sync_channel(8);
        let (ready, built) = mpsc::sync_channel(1);
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = Queue { traces: queue, queued: queued.clone() };
        let thread = std::thread::Builder::new()
            .name("tollgate-traces".into())
            .spawn(move || match build() {
                Ok(exporter) => {
                    let _ = ready.send(Ok(()));
                    export_loop(exporter, &taken, &orders, settings);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        built.recv().map_err(|_| "the export thread stopped while starting".to_owned())??;
        Ok(BatchExport {
            traces,
            queued,
            capacity: settings.queue,
            control,
            thread: Mutex::new(Some(thread)),
            dropped: AtomicU64::new(0),
        })
    }

    /// Takes room for `n` spans in the queue, or counts them dropped when it is full.
    fn reserve(&self, n: usize) -> bool {
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
            count_dropped(n);
            false
        } else {
            true
        }
    }

    /// Queues `trace`, for which room was reserved.
    fn queue(&self, trace: EncodedTrace) {
        let n = trace.spans();
        if self.traces.send(trace).is_err() {
            // Shut down: nothing exports any more.
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Queues a finished trace, encoded, or drops it (and counts its spans) when the queue is
    /// full.
    pub fn send(&self, trace: &[RecordedSpan]) {
        BatchExport::send_all([self], trace);
    }

    /// [`BatchExport::send`] into each of `exports`: the trace is encoded once, and not at
    /// all when no queue has room.
    pub fn send_all<'a>(exports: impl IntoIterator<Item = &'a BatchExport>, trace: &[RecordedSpan]) {
        let mut encoded: Option<EncodedTrace> = None;
        let mut waiting: Option<&BatchExport> = None;
        for export in exports {
            if export.reserve(trace.len()) {
                let bytes = encoded.get_or_insert_with(|| EncodedTrace::new(trace));
                if let Some(earlier) = waiting.replace(export) {
                    earlier.queue(bytes.clone());
                }
            }
        }
        if let (Some(export), Some(encoded)) = (waiting, encoded) {
            export.queue(encoded);
        }
    }

    /// The count of spans dropped so far (the metric counts them too).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Exports everything queued.
    pub fn flush(&self) -> Result<(), ExportError> {
        self.ask(Control::Flush, Duration::from_secs(10))
    }

    /// Exports everything queued and stops the thread.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), ExportError> {
        let result = self.ask(Control::Shutdown, timeout);
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            if result.is_ok() {
                let _ = thread.join();
            }
        }
        result
    }

    /// Sends `order` to the thread and waits at most `timeout` for its answer.
    fn ask(
        &self,
        order: impl FnOnce(SyncSender<Result<(), ExportError>>) -> Control,
        timeout: Duration,
    ) -> Result<(), ExportError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.control.try_send(order(reply)).map_err(|_| ExportError::Stopped)?;
        answer.recv_timeout(timeout).map_err(|_| ExportError::Timeout(timeout))?
    }
}

/// The thread's end of the queue.
struct Queue {
    traces: Receiver<EncodedTrace>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// Moves what is queued to `batch`.
    fn take(&self, batch: &mut Batch) {
        for trace in self.traces.try_iter() {
            self.queued.fetch_sub(trace.spans(), Ordering::Relaxed);
            batch.spans += trace.spans();
            batch.traces.push(trace);
        }
    }
}

/// The traces taken from the queue and not exported yet, and their count of spans.
#[derive(Default)]
struct Batch {
    traces: Vec<EncodedTrace>,
    spans: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// How many of the first traces make the next export of at most `size` spans (at least
    /// one trace), and how many spans they hold.
    fn next_export(&self, size: usize) -> (usize, usize) {
        let (mut traces, mut spans) = (0, 0);
        for trace in &self.traces {
            if traces > 0 && spans + trace.spans() > size {
                break;
            }
            traces += 1;
            spans += trace.spans();
        }
        (traces, spans)
    }

    /// Exports the first traces, up to `size` spans (see [`Batch::next_export`]).
    fn export_next<E: Exporter>(&mut self, exporter: &mut E, size: usize) -> Result<(), ExportError> {
        let (traces, spans) = self.next_export(size);
        let result = export(exporter, &self.traces[..traces]);
        self.traces.drain(..traces);
        self.spans -= spans;
        result
    }
}

/// The export thread: see the module.
fn export_loop<E: Exporter>(mut exporter: E, queue: &Queue, orders: &Receiver<Control>, settings: BatchSettings) {
    let mut batch = Batch::default();
    let mut due = Instant::now() + settings.delay;
    loop {
        let order = orders.recv_timeout(settings.delay.min(TICK));
        let was_empty = batch.is_empty();
        queue.take(&mut batch);
        if was_empty && !batch.is_empty() {
            due = Instant::now() + settings.delay;
        }
        match order {
            Ok(Control::Flush(reply)) => {
                let _ = reply.send(export_all(&mut exporter, &mut batch, settings.batch));
            }
            Ok(Control::Shutdown(reply)) => {
                let _ = reply.send(export_all(&mut exporter, &mut batch, settings.batch));
                return;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = export_all(&mut exporter, &mut batch, settings.batch);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                while batch.spans >= settings.batch {
                    let _ = batch.export_next(&mut exporter, settings.batch);
                }
                if !batch.is_empty() && Instant::now() >= due {
                    let _ = export_all(&mut exporter, &mut batch, settings.batch);
                }
            }
        }
    }
}

/// Exports all of `batch`, in batches of at most `size` spans, and empties it.
fn export_all<E: Exporter>(exporter: &mut E, batch: &mut Batch, size: usize) -> Result<(), ExportError> {
    let mut result = Ok(());
    while !batch.is_empty() {
        if let Err(e) = batch.export_next(exporter, size) {
            result = Err(e);
        }
    }
    result
}

fn export<E: Exporter>(exporter: &mut E, traces: &[EncodedTrace]) -> Result<(), ExportError> {
    let result = exporter.export(traces);
    if let Err(e) = &result {
        tracing::warn!(error = %e, "traces: a batch of spans could not be exported");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
    use prost::Message;

    /// The spans of an encoded trace.
    fn decode(trace: &EncodedTrace) -> ScopeSpans {
        ScopeSpans::decode(trace.as_bytes()).unwrap()
    }

    /// Records the batches it is given; each export first counts itself in `started`, then
    /// waits for `gate` to let it through.
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<Vec<String>>>>,
        gate: Arc<Mutex<()>>,
        started: Arc<AtomicUsize>,
    }

    impl Exporter for Recorder {
        fn export(&mut self, batch: &[EncodedTrace]) -> Result<(), ExportError> {
            self.started.fetch_add(1, Ordering::Relaxed);
            let _open = self.gate.lock().map_err(|_| ExportError::Failed("gate".into()))?;
            let names = batch.iter().flat_map(|t| decode(t).spans).map(|s| s.name).collect();
            self.batches.lock().map_err(|_| ExportError::Failed("batches".into()))?.push(names);
            Ok(())
        }
    }

    fn start(exporter: &Recorder, settings: BatchSettings) -> BatchExport {
        let exporter = exporter.clone();
        BatchExport::start(move || Ok(exporter), settings).unwrap()
    }

    /// Sends `n` traces of one span each, named `span-<i>`.
    fn emit(export: &BatchExport, from: usize, n: usize) {
        for i in from..from + n {
            let mut span = RecordedSpan::start("span", 0);
            span.name = format!("span-{i}").as_str().into();
            export.send(&[span]);
        }
    }

    fn exported(exporter: &Recorder) -> usize {
        exporter.batches.lock().unwrap().iter().map(Vec::len).sum()
    }

    /// Waits (at most 5 s) until `done` holds.
    fn eventually(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(done(), "not within 5 s");
    }

    #[test]
    fn spans_leave_in_batches_when_full_or_due() {
        let exporter = Recorder::default();
        let settings = BatchSettings { delay: Duration::from_millis(50), batch: 4, queue: 64 };
        let export = start(&exporter, settings);
        emit(&export, 0, 10);
        eventually(|| exported(&exporter) == 10);
        let batches = exporter.batches.lock().unwrap().clone();
        assert_eq!(batches.concat(), (0..10).map(|i| format!("span-{i}")).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        // The last two left on the delay, not on a full batch.
        assert_eq!(batches.last().map(Vec::len), Some(2));
        assert_eq!(export.dropped(), 0);
        export.shutdown(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_spans_without_blocking() {
        let exporter = Recorder::default();
        let settings = BatchSettings { delay: Duration::from_millis(1), batch: 2, queue: 3 };
        let export = start(&exporter, settings);
        // The exporter is stuck on the first span: 3 more fit in the queue.
        let gate = exporter.gate.lock().unwrap();
        emit(&export, 0, 1);
        eventually(|| exporter.started.load(Ordering::Relaxed) == 1);
        let started = Instant::now();
        emit(&export, 1, 20);
        assert!(started.elapsed() < Duration::from_secs(1), "sending waited for the exporter");
        assert_eq!(export.dropped(), 17);
        drop(gate);
        export.flush().unwrap();
        // A trace that cannot fit is dropped whole, even into an empty queue.
        export.send(&["a", "b", "c", "d"].map(|name| RecordedSpan::start(name, 0)));
        assert_eq!(export.dropped(), 21);
        export.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(exported(&exporter), 4);
    }

    /// A trace of `n` spans named `<name>-<i>`.
    fn trace(name: &str, n: usize) -> Vec<RecordedSpan> {
        (0..n)
            .map(|i| {
                let mut span = RecordedSpan::start("span", 0);
                span.name = format!("{name}-{i}").as_str().into();
                span
            })
            .collect()
    }

    #[test]
    fn a_trace_is_never_split_and_one_larger_than_a_batch_leaves_alone() {
        let exporter = Recorder::default();
        let settings = BatchSettings { delay: Duration::from_secs(60), batch: 4, queue: 64 };
        let export = start(&exporter, settings);
        for (name, n) in [("a", 3), ("b", 1), ("c", 3), ("d", 6), ("e", 2)] {
            export.send(&trace(name, n));
        }
        export.flush().unwrap();
        let batches = exporter.batches.lock().unwrap().clone();
        let firsts: Vec<Vec<&str>> =
            batches.iter().map(|b| b.iter().filter(|s| s.ends_with("-0")).map(String::as_str).collect()).collect();
        assert_eq!(firsts, [vec!["a-0", "b-0"], vec!["c-0"], vec!["d-0"], vec!["e-0"]]);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [4, 3, 6, 2]);
        export.shutdown(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_trace_goes_to_every_export_with_room() {
        let (roomy, cramped) = (Recorder::default(), Recorder::default());
        let exports = [
            start(&roomy, BatchSettings { delay: Duration::from_secs(60), batch: 8, queue: 8 }),
            start(&cramped, BatchSettings { delay: Duration::from_secs(60), batch: 2, queue: 2 }),
        ];
        BatchExport::send_all(&exports, &trace("t", 3));
        BatchExport::send_all(&exports, &trace("u", 2));
        for export in &exports {
            export.flush().unwrap();
        }
        assert_eq!(roomy.batches.lock().unwrap().concat(), ["t-0", "t-1", "t-2", "u-0", "u-1"]);
        assert_eq!(cramped.batches.lock().unwrap().concat(), ["u-0", "u-1"]);
        assert_eq!((exports[0].dropped(), exports[1].dropped()), (0, 3));
    }

    #[test]
    fn shutdown_exports_what_is_queued() {
        let exporter = Recorder::default();
        let settings = BatchSettings { delay: Duration::from_secs(60), batch: 512, queue: 1024 };
        let export = start(&exporter, settings);
        emit(&export, 0, 7);
        export.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(exporter.batches.lock().unwrap().concat().len(), 7);
        // After shutdown, nothing is queued or counted as dropped.
        emit(&export, 7, 3);
        assert_eq!(export.dropped(), 0);
    }

    #[test]
    fn settings_are_bounded() {
        let s = BatchSettings::from_env(8192);
        assert!(s.batch >= 1 && s.batch <= 8192 && s.delay >= Duration::from_millis(1));
        assert_eq!(s.queue, 8192);
    }

    #[test]
    fn an_exporter_that_cannot_be_built_stops_the_start() {
        let settings = BatchSettings { delay: Duration::from_millis(50), batch: 4, queue: 64 };
        let err = BatchExport::start(|| Err::<Recorder, _>("no TLS".to_owned()), settings).unwrap_err();
        assert_eq!(err, "no TLS");
    }
}
