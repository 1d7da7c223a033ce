//! Traces recorded without `tracing`: a gateway request's span ([`Root`]) and its children
//! ([`Child`]). The request's `tracing` span serves the logs alone; what is exported lives in a
//! record shared by the request's handles, filled by plain method calls: no registry look-up,
//! no layer callback, no enter and exit on each poll of the future the span covers (together
//! several times what the record itself costs).
//!
//! The root ends when its last handle is dropped (the request's, its metering's, its children's)
//! and its trace then goes to the export queues in one message, its children before it. While a
//! request is served, its root is the task's current one ([`scope`], [`current`]): the recorder
//! adds the warnings and errors logged by the task to it as events.

use super::super::batch::{count_dropped, BatchExport};
use super::super::span::{RecordedSpan, SpanKind, Text};
use super::MAX_SPANS_PER_TRACE;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

/// The export queues of every root: set once, by `telemetry::init`, when traces are on.
static EXPORTS: OnceLock<Exports> = OnceLock::new();

/// Where finished traces go.
pub(in crate::telemetry) type Exports = Arc<[Arc<BatchExport>]>;

/// Sends the traces of roots to `exports` from now on (the first call wins).
pub(in crate::telemetry) fn install(exports: Exports) {
    let _ = EXPORTS.set(exports);
}

/// A root span's record and its finished children.
struct Trace {
    span: RecordedSpan,
    finished: Vec<RecordedSpan>,
    exports: Exports,
}

impl Drop for Trace {
    fn drop(&mut self) {
        let mut span = std::mem::replace(&mut self.span, RecordedSpan::empty());
        span.end = SystemTime::now();
        let mut trace = std::mem::take(&mut self.finished);
        trace.push(span);
        BatchExport::send_all(self.exports.iter().map(|export| export.as_ref()), &trace);
    }
}

/// A sampled root span (a gateway request's), shared by the handles of the request: cloning is
/// cheap; the span ends when the last clone is dropped.
#[derive(Clone)]
pub struct Root(Arc<Mutex<Trace>>);

impl Root {
    /// A root span named `name`, of kind `kind`, starting now: the child of a remote parent
    /// (`(trace id, span id)` of a client's `traceparent`) when given, else the root of a new
    /// trace. None when traces are off.
    pub fn start(name: &'static str, kind: SpanKind, remote_parent: Option<([u8; 16], [u8; 8])>) -> Option<Root> {
        EXPORTS.get().map(|exports| Root::start_into(exports.clone(), name, kind, remote_parent))
    }

    /// [`Root::start`], its trace going to `exports`.
    pub(in crate::telemetry) fn start_into(
        exports: Exports,
        name: &'static str,
        kind: SpanKind,
        remote_parent: Option<([u8; 16], [u8; 8])>,
    ) -> Root {
        // Room for what a request's root records (`gateway/src/traces.rs`).
        let mut span = RecordedSpan::start(name, 20);
        span.kind = kind;
        span.sampled = true;
        match remote_parent {
            Some((trace_id, parent_id)) => {
                (span.trace_id, span.parent_id, span.parent_remote) = (trace_id, parent_id, true);
            }
            None => span.trace_id = fastrand::u128(1..).to_be_bytes(),
        }
        Root(Arc::new(Mutex::new(Trace { span, finished: Vec::with_capacity(8), exports })))
    }

    fn lock(&self) -> MutexGuard<'_, Trace> {
        // A panic while the lock was held leaves a record that is still whole: go on with it.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the root's record: attributes, name, status.
    pub fn record<R>(&self, f: impl FnOnce(&mut RecordedSpan) -> R) -> R {
        f(&mut self.lock().span)
    }

    /// Its trace id and span id.
    pub fn ids(&self) -> ([u8; 16], [u8; 8]) {
        let trace = self.lock();
        (trace.span.trace_id, trace.span.span_id)
    }

    /// Adds `span`, finished, to the trace; past [`MAX_SPANS_PER_TRACE`] it is dropped (and
    /// counted).
    fn join(&self, span: RecordedSpan) {
        let mut trace = self.lock();
        if trace.finished.len() + 1 < MAX_SPANS_PER_TRACE {
            trace.finished.push(span);
        } else {
            drop(trace);
            count_dropped(1);
        }
    }
}

tokio::task_local! {
    /// The root of the request the task serves, when it is traced.
    static CURRENT: Option<Root>;
}

/// Runs `task` with `root` as its current root (none: a request not traced).
pub fn scope<F: std::future::Future>(root: Option<Root>, task: F) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(root, task)
}

/// Whether the task serves a traced request.
pub fn is_current() -> bool {
    CURRENT.try_with(Option::is_some).unwrap_or(false)
}

/// Runs `f` on the task's current root, when there is one.
pub fn with_current<R>(f: impl FnOnce(&Root) -> R) -> Option<R> {
    CURRENT.try_with(|root| root.as_ref().map(f)).ok().flatten()
}

/// A span under a [`Root`] (a request's auth, admission, attempts, ...), recorded straight into
/// the root's trace. It starts when made and ends when dropped, then joins the trace; the root
/// does not end before it. Events logged while it is open belong to the root. Empty
/// ([`Child::none`]) when there is no root: then it costs nothing.
pub struct Child {
    open: Option<(Box<RecordedSpan>, Root)>,
}

impl Child {
    /// A child doing nothing.
    pub fn none() -> Child {
        Child { open: None }
    }

    /// A child named `name` of `root`, or of `parent` (itself under `root`) when that records.
    pub fn start(root: &Root, parent: Option<&Child>, name: &'static str) -> Child {
        let (trace_id, parent_id) = match parent.and_then(|p| p.open.as_ref()) {
            Some((p, _)) => (p.trace_id, p.span_id),
            None => root.ids(),
        };
        // Most children record no attribute: their list grows when one does.
        let mut span = RecordedSpan::start(name, 0);
        (span.trace_id, span.parent_id, span.sampled) = (trace_id, parent_id, true);
        Child { open: Some((Box::new(span), root.clone())) }
    }

    /// A child named `name` of the task's current root; empty when there is none.
    pub fn current(name: &'static str) -> Child {
        with_current(|root| Child::start(root, None, name)).unwrap_or_else(Child::none)
    }

    /// Whether it records (it has a root).
    pub fn is_recording(&self) -> bool {
        self.open.is_some()
    }

    /// Runs `f` on its record, when it records: attributes, kind, status.
    pub fn record<R>(&mut self, f: impl FnOnce(&mut RecordedSpan) -> R) -> Option<R> {
        self.open.as_mut().map(|(span, _)| f(span))
    }

    /// Its W3C `traceparent`, when it records.
    pub fn traceparent(&self) -> Option<String> {
        self.open.as_ref().map(|(span, _)| span.traceparent())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some((mut span, root)) = self.open.take() {
            span.end = SystemTime::now();
            root.join(*span);
        }
    }
}

/// Renames `span` to `operation model` (the GenAI conventions' span name).
pub fn rename(span: &mut RecordedSpan, operation: &str, model: &str) {
    span.name = Text::joined(operation, " ", model);
}

#[cfg(test)]
mod tests;
