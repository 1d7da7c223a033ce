//! The export queue of an OTLP target: finished traces (from `super::recorder`) wait in a queue
//! bounded in spans and leave in batches from a thread of their own, whose [`Exporter`] sends
//! them (`super::export`: OTLP protobuf over HTTP). A request
//! never waits for export: when the queue is full the trace's spans are dropped and counted
//! (`tollgate_trace_spans_dropped_total`).
//!
//! Senders never wake the thread: it wakes every [`TICK`] (or on a flush or shutdown order),
//! takes what is queued, exports every full batch and a partial one whose first span has waited
//! the schedule delay.

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

/// Sends a batch of spans somewhere, from the export thread.
pub trait Exporter {
    fn export(&mut self, spans: &[RecordedSpan]) -> Result<(), ExportError>;
}

/// How often the export thread takes what is queued, at most (the delay when shorter).
const TICK: Duration = Duration::from_millis(50);

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
    traces: Sender<Vec<RecordedSpan>>,
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

    /// Queues a finished trace, or drops it (and counts its spans) when the queue is full.
    pub fn send(&self, trace: Vec<RecordedSpan>) {
        let n = trace.len();
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
            count_dropped(n);
        } else if self.traces.send(trace).is_err() {
            // Shut down: nothing exports any more.
            self.queued.fetch_sub(n, Ordering::Relaxed);
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
    traces: Receiver<Vec<RecordedSpan>>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// Moves what is queued to `batch`.
    fn take(&self, batch: &mut Vec<RecordedSpan>) {
        for mut trace in self.traces.try_iter() {
            self.queued.fetch_sub(trace.len(), Ordering::Relaxed);
            batch.append(&mut trace);
        }
    }
}

/// The export thread: see the module.
fn export_loop<E: Exporter>(mut exporter: E, queue: &Queue, orders: &Receiver<Control>, settings: BatchSettings) {
    let mut batch: Vec<RecordedSpan> = Vec::with_capacity(settings.batch);
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
                let full = batch.len() / settings.batch * settings.batch;
                for chunk in batch[..full].chunks(settings.batch) {
                    let _ = export(&mut exporter, chunk);
                }
                batch.drain(..full);
                if !batch.is_empty() && Instant::now() >= due {
                    let _ = export_all(&mut exporter, &mut batch, settings.batch);
                }
            }
        }
    }
}

/// Exports all of `batch`, in batches of `size`, and empties it.
fn export_all<E: Exporter>(exporter: &mut E, batch: &mut Vec<RecordedSpan>, size: usize) -> Result<(), ExportError> {
    let mut result = Ok(());
    for chunk in batch.chunks(size) {
        if let Err(e) = export(exporter, chunk) {
            result = Err(e);
        }
    }
    batch.clear();
    result
}

fn export<E: Exporter>(exporter: &mut E, spans: &[RecordedSpan]) -> Result<(), ExportError> {
    let result = exporter.export(spans);
    if let Err(e) = &result {
        tracing::warn!(error = %e, "traces: a batch of spans could not be exported");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the batches it is given; each export first counts itself in `started`, then
    /// waits for `gate` to let it through.
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<Vec<String>>>>,
        gate: Arc<Mutex<()>>,
        started: Arc<AtomicUsize>,
    }

    impl Exporter for Recorder {
        fn export(&mut self, batch: &[RecordedSpan]) -> Result<(), ExportError> {
            self.started.fetch_add(1, Ordering::Relaxed);
            let _open = self.gate.lock().map_err(|_| ExportError::Failed("gate".into()))?;
            let names = batch.iter().map(|s| s.name.as_str().to_owned()).collect();
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
            export.send(vec![span]);
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
        export.send(["a", "b", "c", "d"].map(|name| RecordedSpan::start(name, 0)).to_vec());
        assert_eq!(export.dropped(), 21);
        export.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(exported(&exporter), 4);
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
