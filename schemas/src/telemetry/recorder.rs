//! Tollgate's span recorder: the `tracing` layer that records the spans to export. Each
//! span's ids, times and fields live in one compact [`RecordedSpan`] in the registry's extensions
//! (static keys, short strings inline, ids from a thread-local RNG, one clock read at start and
//! one at close); nothing is formatted, encoded or sent while the span is open. A finished span
//! joins its parent's; when the local root closes, its whole trace is encoded as OTLP and goes
//! to each target's `super::batch` queue in one message.
//!
//! Field names are attribute keys, except OpenTelemetry's special ones: `otel.name` (the span's
//! name), `otel.kind`, `otel.status_code` and `otel.status_description`. Warnings and errors
//! logged inside a span become its events (an error also marks the span failed).
//!
//! A gateway request is traced without this layer: its exported span is a [`Root`] and its
//! children [`Child`]ren, recorded by plain calls (`root`); its `tracing` span serves the logs.
//! Warnings and errors logged while such a request is served become events of its root.

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
use tracing_subscriber::registry::LookupSpan;

mod root;
pub(super) use root::{install, Exports};
pub use root::{is_current, rename, scope, with_current, Child, Root};

/// Spans of one trace held until its root closes, at most; more are dropped (and counted).
const MAX_SPANS_PER_TRACE: usize = 256;

/// An open span: its record and the finished spans under it, waiting for the root to close.
struct Open {
    span: RecordedSpan,
    finished: Vec<RecordedSpan>,
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

    fn send(&self, trace: &[RecordedSpan]) {
        BatchExport::send_all(self.exports.iter().map(|export| export.as_ref()), trace);
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(data) = ctx.span(id) else { return };
        let mut span = RecordedSpan::start(attrs.metadata().name(), attrs.metadata().fields().len() + 4);
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
        data.extensions_mut().insert(Open { span, finished: Vec::new() });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(data) = ctx.span(id) else { return };
        let mut extensions = data.extensions_mut();
        if let Some(open) = extensions.get_mut::<Open>().filter(|o| o.span.sampled) {
            values.record(&mut Fields(&mut open.span));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(data) = ctx.event_span(event) {
            let mut extensions = data.extensions_mut();
            if let Some(open) = extensions.get_mut::<Open>() {
                if open.span.sampled {
                    add_event(&mut open.span, event);
                }
                return;
            }
        }
        // Logged while a traced request is served: an event of the request's root.
        root::with_current(|root| root.record(|span| add_event(span, event)));
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
        self.send(&open.finished);
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

/// Adds `event` (a warning or an error) to `span`'s events, within [`MAX_EVENTS`]; an error
/// also fails the span.
fn add_event(span: &mut RecordedSpan, event: &Event<'_>) {
    if span.events.len() >= MAX_EVENTS {
        span.dropped_events = span.dropped_events.saturating_add(1);
        return;
    }
    let level = *event.metadata().level();
    let mut fields = EventFields { name: None, attributes: vec![("level", Value::Str(Text::Static(level.as_str())))] };
    event.record(&mut fields);
    let name = fields.name.unwrap_or(Text::Static("event"));
    if level == tracing::Level::ERROR && matches!(span.status, Status::Unset) {
        span.set_error(name.as_str());
    }
    span.events.push(SpanEvent { name, time: SystemTime::now(), attributes: fields.attributes });
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
