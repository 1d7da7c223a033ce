//! A span as `super::recorder` keeps it while it is open: ids, times, name, kind, status and
//! attributes in one compact struct (static keys, short strings inline), cheap to fill on the
//! request path. The export thread turns it into the SDK's `SpanData` ([`RecordedSpan::into_data`]).

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents};
use std::borrow::Cow;
use std::time::SystemTime;

/// Attributes kept per span, at most; more are counted as dropped.
pub const MAX_ATTRIBUTES: usize = 64;
/// Events (warnings and errors logged inside the span) kept per span, at most.
pub const MAX_EVENTS: usize = 16;
/// Bytes of a string kept inline (no allocation).
const INLINE: usize = 46;

/// A string value: a static one, a short one inline, a long one on the heap.
#[derive(Clone, Debug)]
pub enum Text {
    Static(&'static str),
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Text {
    pub fn new(s: &str) -> Text {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text::Inline { len: s.len() as u8, bytes }
        } else {
            Text::Heap(s.into())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Text::Static(s) => s,
            // Only ever filled from a `&str` by `new`: the bytes are UTF-8.
            Text::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default(),
            Text::Heap(s) => s,
        }
    }

    fn into_cow(self) -> Cow<'static, str> {
        match self {
            Text::Static(s) => Cow::Borrowed(s),
            other => Cow::Owned(other.as_str().to_owned()),
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::new(s)
    }
}

/// An attribute's value, as OpenTelemetry types them.
#[derive(Clone, Debug)]
pub enum Value {
    Str(Text),
    I64(i64),
    F64(f64),
    Bool(bool),
}

impl From<Value> for opentelemetry::Value {
    fn from(v: Value) -> opentelemetry::Value {
        match v {
            Value::Str(t) => opentelemetry::Value::String(t.into_cow().into()),
            Value::I64(n) => opentelemetry::Value::I64(n),
            Value::F64(n) => opentelemetry::Value::F64(n),
            Value::Bool(b) => opentelemetry::Value::Bool(b),
        }
    }
}

/// A warning or error logged inside a span.
#[derive(Clone, Debug)]
pub struct SpanEvent {
    pub name: Text,
    pub time: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
}

/// One span, open or finished.
#[derive(Clone, Debug)]
pub struct RecordedSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent's span id, all zeros for a root without a remote parent.
    pub parent_id: [u8; 8],
    pub parent_remote: bool,
    /// Whether the trace is kept: an unsampled span records nothing and is never exported.
    pub sampled: bool,
    pub name: Text,
    pub kind: SpanKind,
    pub status: Status,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    pub dropped_attributes: u32,
    pub events: Vec<SpanEvent>,
}

impl RecordedSpan {
    /// A span starting now, with room for `fields` attributes and a few more.
    pub fn start(name: &'static str, fields: usize) -> RecordedSpan {
        let start = SystemTime::now();
        RecordedSpan {
            trace_id: [0; 16],
            span_id: fastrand::u64(1..).to_be_bytes(),
            parent_id: [0; 8],
            parent_remote: false,
            sampled: true,
            name: Text::Static(name),
            kind: SpanKind::Internal,
            status: Status::Unset,
            start,
            end: start,
            attributes: Vec::with_capacity((fields + 4).min(MAX_ATTRIBUTES)),
            dropped_attributes: 0,
            events: Vec::new(),
        }
    }

    /// Sets an attribute, replacing one of the same key.
    pub fn set(&mut self, key: &'static str, value: Value) {
        if let Some(slot) = self.attributes.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push((key, value));
        } else {
            self.dropped_attributes += 1;
        }
    }

    /// Marks the span failed, with `description` (an error class).
    pub fn set_error(&mut self, description: &str) {
        self.status = Status::error(description.to_owned());
    }

    /// The W3C `traceparent` of this span.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.span_id), u8::from(self.sampled))
    }

    /// The SDK's form of the span, for the exporter (on the export thread).
    pub fn into_data(self, scope: &InstrumentationScope) -> SpanData {
        let flags = if self.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let context = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            false,
            TraceState::default(),
        );
        let mut events = SpanEvents::default();
        events.events = self
            .events
            .into_iter()
            .map(|e| {
                let attributes = e.attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
                opentelemetry::trace::Event::new(e.name.into_cow(), e.time, attributes, 0)
            })
            .collect();
        SpanData {
            span_context: context,
            parent_span_id: SpanId::from_bytes(self.parent_id),
            parent_span_is_remote: self.parent_remote,
            span_kind: self.kind,
            name: self.name.into_cow(),
            start_time: self.start,
            end_time: self.end,
            attributes: self.attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
            dropped_attributes_count: self.dropped_attributes,
            events,
            links: Default::default(),
            status: self.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// OpenTelemetry's span kind of an `otel.kind` value.
pub fn kind(name: &str) -> Option<SpanKind> {
    Some(match name.to_ascii_lowercase().as_str() {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_stay_inline_and_long_ones_go_to_the_heap() {
        let short = Text::new("chat gpt-4o-mini");
        assert!(matches!(short, Text::Inline { .. }) && short.as_str() == "chat gpt-4o-mini");
        let edge = "é".repeat(INLINE / 2);
        assert!(matches!(Text::new(&edge), Text::Inline { .. }) && Text::new(&edge).as_str() == edge);
        let long = "x".repeat(INLINE + 1);
        assert!(matches!(Text::new(&long), Text::Heap(_)) && Text::new(&long).as_str() == long);
    }

    #[test]
    fn attributes_are_replaced_by_key_and_bounded() {
        let mut span = RecordedSpan::start("request", 2);
        span.set("a", Value::I64(1));
        span.set("a", Value::I64(2));
        assert_eq!(span.attributes.len(), 1);
        assert!(matches!(span.attributes[0].1, Value::I64(2)));
        for i in 0..MAX_ATTRIBUTES + 10 {
            // Distinct static keys (leaked: a test).
            let key: &'static str = Box::leak(format!("k{i}").into_boxed_str());
            span.set(key, Value::Bool(true));
        }
        assert_eq!(span.attributes.len(), MAX_ATTRIBUTES);
        assert_eq!(span.dropped_attributes, 11);
    }

    #[test]
    fn a_span_becomes_sdk_span_data_with_its_ids_and_values() {
        let mut span = RecordedSpan::start("upstream_attempt", 1);
        span.trace_id = [7; 16];
        span.parent_id = [9; 8];
        span.kind = SpanKind::Client;
        span.set("gen_ai.request.model", Value::Str(Text::new("gpt-4o-mini")));
        span.set_error("503");
        assert_eq!(span.traceparent(), format!("00-{}-{}-01", "07".repeat(16), hex::encode(span.span_id)));
        let data = span.clone().into_data(&InstrumentationScope::builder("tollgate").build());
        assert_eq!(data.span_context.trace_id(), TraceId::from_bytes([7; 16]));
        assert_eq!(data.span_context.span_id(), SpanId::from_bytes(span.span_id));
        assert!(data.span_context.is_sampled());
        assert_eq!(data.parent_span_id, SpanId::from_bytes([9; 8]));
        assert_eq!(data.name, "upstream_attempt");
        assert_eq!(data.span_kind, SpanKind::Client);
        assert_eq!(data.status, Status::error("503"));
        assert_eq!(data.attributes, vec![KeyValue::new("gen_ai.request.model", "gpt-4o-mini")]);
    }
}
