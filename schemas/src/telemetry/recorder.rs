//! Tollgate's span recorder: the `tracing` layer that records the spans to export. Each
//! span's ids, times and fields live in one compact [`RecordedSpan`] in the registry's extensions
//! (static keys, short strings inline, ids from a thread-local RNG, one clock read at start and
//! one at close); nothing is formatted, encoded or sent while the span is open. A finished span
//! joins its parent's; when the local root closes, its whole trace goes to each target's
//! `super::batch` queue in one message, and the export thread encodes it as OTLP.
//!
//! Field names are attribute keys, except OpenTelemetry's special ones: `otel.name` (the span's
//! name), `otel.kind`, `otel.status_code` and `otel.status_description`. Warnings and errors
//! logged inside a span become its events (an error also marks the span failed). Code that has
//! the `tracing::Span` reaches its record through [`record`], [`set_remote_parent`] and
//! [`traceparent`].

use super::batch::BatchExport;
use super::span::{kind, RecordedSpan, SpanEvent, Status, Text, Value, MAX_EVENTS};
use super::traces::SamplerChoice;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Spans of one trace held until its root closes, at most; more are dropped (and counted).
const MAX_SPANS_PER_TRACE: usize = 256;

/// An open span: its record, the finished spans under it, waiting for the root to close, and
/// the sampler that decides again when a remote parent is set.
struct Open {
    span: RecordedSpan,
    finished: Vec<RecordedSpan>,
    sampler: SamplerChoice,
}

/// The layer: records spans and hands finished traces to the targets' export queues.
pub struct Recorder {
    exports: Vec<Arc<BatchExport>>,
    sampler: SamplerChoice,
}

impl Recorder {
    /// Records into `exports`, sampling new traces with `sampler`.
    pub fn new(exports: Vec<Arc<BatchExport>>, sampler: SamplerChoice) -> Recorder {
        Recorder { exports, sampler }
    }

    fn send(&self, trace: Vec<RecordedSpan>) {
        if let Some((last, others)) = self.exports.split_last() {
            for export in others {
                export.send(trace.clone());
            }
            last.send(trace);
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(data) = ctx.span(id) else { return };
        let mut span = RecordedSpan::start(attrs.metadata().name(), attrs.metadata().fields().len());
        match data.parent().and_then(|parent| parent_ids(&parent)) {
            Some((trace_id, parent_id, sampled)) => {
                (span.trace_id, span.parent_id, span.sampled) = (trace_id, parent_id, sampled);
            }
            None => {
                span.trace_id = fastrand::u128(1..).to_be_bytes();
                span.sampled = self.sampler.keeps(None, fastrand::f64());
            }
        }
        if span.sampled {
            attrs.record(&mut Fields(&mut span));
        }
        data.extensions_mut().insert(Open { span, finished: Vec::new(), sampler: self.sampler });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(data) = ctx.span(id) else { return };
        let mut extensions = data.extensions_mut();
        if let Some(open) = extensions.get_mut::<Open>().filter(|o| o.span.sampled) {
            values.record(&mut Fields(&mut open.span));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(data) = ctx.event_span(event) else { return };
        let mut extensions = data.extensions_mut();
        let Some(open) = extensions.get_mut::<Open>().filter(|o| o.span.sampled) else { return };
        if open.span.events.len() >= MAX_EVENTS {
            open.span.dropped_events = open.span.dropped_events.saturating_add(1);
            return;
        }
        let level = *event.metadata().level();
        let mut fields =
            EventFields { name: None, attributes: vec![("level", Value::Str(Text::Static(level.as_str())))] };
        event.record(&mut fields);
        let name = fields.name.unwrap_or(Text::Static("event"));
        if level == tracing::Level::ERROR && matches!(open.span.status, Status::Unset) {
            open.span.set_error(name.as_str());
        }
        open.span.events.push(SpanEvent { name, time: SystemTime::now(), attributes: fields.attributes });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(data) = ctx.span(&id) else { return };
        let Some(mut open) = data.extensions_mut().remove::<Open>() else { return };
        if !open.span.sampled {
            return;
        }
        open.span.end = SystemTime::now();
        if let Some(parent) = data.parent() {
            if let Some(up) = parent.extensions_mut().get_mut::<Open>() {
                if up.finished.len() + open.finished.len() + 1 < MAX_SPANS_PER_TRACE {
                    up.finished.push(open.span);
                    up.finished.append(&mut open.finished);
                } else {
                    super::batch::count_dropped(open.finished.len() + 1);
                }
                return;
            }
        }
        open.finished.push(open.span);
        self.send(open.finished);
    }
}

/// The trace id, span id and sampling decision of a recorded span, for its children.
fn parent_ids<S: for<'a> LookupSpan<'a>>(
    parent: &tracing_subscriber::registry::SpanRef<'_, S>,
) -> Option<([u8; 16], [u8; 8], bool)> {
    let extensions = parent.extensions();
    let open = extensions.get::<Open>()?;
    Some((open.span.trace_id, open.span.span_id, open.span.sampled))
}

/// Runs `f` on the record of `span` when it is recorded and sampled: to set attributes no
/// field declares, rename it, mark it failed.
pub fn record<R>(span: &tracing::Span, f: impl FnOnce(&mut RecordedSpan) -> R) -> Option<R> {
    with_open(span, |open| open.span.sampled.then(|| f(&mut open.span))).flatten()
}

/// Makes `span` (a root just opened, before any child) the child of a remote parent, a client's
/// `traceparent`; whether it is kept is decided again, the parent's decision in hand.
pub fn set_remote_parent(span: &tracing::Span, trace_id: [u8; 16], parent_id: [u8; 8], parent_sampled: bool) {
    with_open(span, |open| {
        let sampled = open.sampler.keeps(Some(parent_sampled), fastrand::f64());
        let span = &mut open.span;
        (span.trace_id, span.parent_id, span.parent_remote, span.sampled) = (trace_id, parent_id, true, sampled);
    });
}

/// The trace id of `span`, when it is recorded (sampled or not).
pub fn trace_id(span: &tracing::Span) -> Option<[u8; 16]> {
    with_open(span, |open| open.span.trace_id)
}

/// The W3C `traceparent` of `span`, when it is recorded and sampled.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    record(span, |s| s.traceparent())
}

fn with_open<R>(span: &tracing::Span, f: impl FnOnce(&mut Open) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let data = registry.span(id)?;
        let mut extensions = data.extensions_mut();
        extensions.get_mut::<Open>().map(f)
    })
    .flatten()
}

/// A span that only traces need (a request's auth, admission, attempts, ...), recorded straight
/// into its root's record, without `tracing`: no registry slot, no layer callbacks, no enter and
/// exit on each poll of the future it covers (together about four times what the record itself
/// costs). It starts when made and ends when dropped, then joins the root's finished spans, so it
/// is exported with the root's trace; dropped after the root closed, it is lost. Events logged
/// while it is open belong to the root's span (it is not `tracing`'s current span). Empty
/// ([`Child::none`]) when the root is not recorded or not sampled: then it costs nothing.
pub struct Child {
    record: Option<Box<RecordedSpan>>,
    root: tracing::Span,
}

impl Child {
    /// A child doing nothing.
    pub fn none() -> Child {
        Child { record: None, root: tracing::Span::none() }
    }

    /// A child named `name` of `root` (a recorded span, the request's), or of `parent`, itself a
    /// child of `root`, when given.
    pub fn start(root: &tracing::Span, parent: Option<&Child>, name: &'static str) -> Child {
        let ids = match parent {
            Some(p) => p.record.as_ref().map(|r| (r.trace_id, r.span_id)),
            None => record(root, |r| (r.trace_id, r.span_id)),
        };
        let Some((trace_id, parent_id)) = ids else { return Child::none() };
        let mut span = RecordedSpan::start(name, 12);
        (span.trace_id, span.parent_id) = (trace_id, parent_id);
        Child { record: Some(Box::new(span)), root: root.clone() }
    }

    /// Whether it records (its root is sampled).
    pub fn is_recording(&self) -> bool {
        self.record.is_some()
    }

    /// Runs `f` on its record, when it records: attributes, kind, status.
    pub fn record<R>(&mut self, f: impl FnOnce(&mut RecordedSpan) -> R) -> Option<R> {
        self.record.as_deref_mut().map(f)
    }

    /// Its W3C `traceparent`, when it records.
    pub fn traceparent(&self) -> Option<String> {
        self.record.as_ref().map(|r| r.traceparent())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(mut span) = self.record.take() else { return };
        span.end = SystemTime::now();
        let joined = with_open(&self.root, |open| {
            if open.finished.len() + 1 < MAX_SPANS_PER_TRACE {
                open.finished.push(*span);
            } else {
                super::batch::count_dropped(1);
            }
        });
        if joined.is_none() {
            super::batch::count_dropped(1);
        }
    }
}

/// Fills a span's record from its fields.
struct Fields<'a>(&'a mut RecordedSpan);

impl Fields<'_> {
    fn string(&mut self, field: &Field, value: &str) {
        let span = &mut *self.0;
        match field.name() {
            "otel.name" => span.name = Text::new(value),
            "otel.kind" => {
                if let Some(kind) = kind(value) {
                    span.kind = kind;
                }
            }
            "otel.status_code" if value.eq_ignore_ascii_case("error") => {
                if !span.status.is_error() {
                    span.status = Status::Error(Text::Static(""));
                }
            }
            "otel.status_code" if value.eq_ignore_ascii_case("ok") => span.status = Status::Ok,
            "otel.status_description" | "otel.status_message" => span.set_error(value),
            name if name.starts_with("otel.") => {}
            name => span.set(name, Value::Str(Text::new(value))),
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.string(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.set(field.name(), Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(n) => self.0.set(field.name(), Value::I64(n)),
            Err(_) => self.0.set(field.name(), Value::Str(Text::new(&value.to_string()))),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.set(field.name(), Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.set(field.name(), Value::Bool(value));
    }
}

/// Reads an event: its message is the event's name, its other fields attributes.
struct EventFields {
    name: Option<Text>,
    attributes: Vec<(&'static str, Value)>,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.attributes.push((field.name(), Value::Str(Text::new(value))));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let text = Text::new(&format!("{value:?}"));
        if field.name() == "message" {
            self.name = Some(text);
        } else {
            self.attributes.push((field.name(), Value::Str(text)));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push((field.name(), Value::I64(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attributes.push((field.name(), Value::Bool(value)));
    }
}

#[cfg(test)]
mod tests;
