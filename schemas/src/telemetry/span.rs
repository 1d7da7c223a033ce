//! A span as `super::recorder` keeps it while it is open: ids, times, name, kind, status and
//! attributes in one compact struct (static keys, short strings inline), cheap to fill on the
//! request path. A finished trace's spans are encoded as OTLP protobuf where it ends
//! (`super::otlp`).

use std::time::{SystemTime, UNIX_EPOCH};

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

    /// `a`, `b` and `c` one after the other, written once.
    pub fn joined(a: &str, b: &str, c: &str) -> Text {
        let len = a.len() + b.len() + c.len();
        if len <= INLINE {
            let mut bytes = [0u8; INLINE];
            let mut at = 0;
            for part in [a, b, c] {
                bytes[at..at + part.len()].copy_from_slice(part.as_bytes());
                at += part.len();
            }
            Text::Inline { len: len as u8, bytes }
        } else {
            Text::Heap([a, b, c].concat().into())
        }
    }

    /// The bytes, unchecked (the encoder's view: `as_str` checks inline bytes are UTF-8 each
    /// time).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Static(s) => s.as_bytes(),
            Text::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Text::Heap(s) => s.as_bytes(),
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

/// A span's kind; the values are OTLP's `Span.SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// A span's status: OTLP's `Status` (code unset, ok, or error with its description).
#[derive(Clone, Debug)]
pub enum Status {
    Unset,
    Ok,
    Error(Text),
}

impl Status {
    pub fn is_error(&self) -> bool {
        matches!(self, Status::Error(_))
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
    /// Events beyond [`MAX_EVENTS`], not kept.
    pub dropped_events: u32,
}

impl RecordedSpan {
    /// A span starting now, with room for `capacity` attributes (more make the list grow; none
    /// allocates nothing, for the many spans that record no attribute).
    pub fn start(name: &'static str, capacity: usize) -> RecordedSpan {
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
            attributes: Vec::with_capacity(capacity.min(MAX_ATTRIBUTES)),
            dropped_attributes: 0,
            events: Vec::new(),
            dropped_events: 0,
        }
    }

    /// A span of no trace, with no attribute: what is left in place of a span moved out (no
    /// clock read, no id drawn, nothing allocated).
    pub fn empty() -> RecordedSpan {
        RecordedSpan {
            trace_id: [0; 16],
            span_id: [0; 8],
            parent_id: [0; 8],
            parent_remote: false,
            sampled: false,
            name: Text::Static(""),
            kind: SpanKind::Internal,
            status: Status::Unset,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes: 0,
            events: Vec::new(),
            dropped_events: 0,
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

    /// Adds an attribute whose key the span does not hold yet (one set where the span is made,
    /// or the only place that sets it): unlike [`RecordedSpan::set`], no search for one to
    /// replace (that search was most of what filling a record cost). Bounded as `set`.
    pub fn add(&mut self, key: &'static str, value: Value) {
        debug_assert!(self.attributes.iter().all(|(k, _)| *k != key), "attribute {key} added twice");
        if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push((key, value));
        } else {
            self.dropped_attributes += 1;
        }
    }

    /// Marks the span failed, with `description` (an error class).
    pub fn set_error(&mut self, description: &str) {
        self.status = Status::Error(Text::new(description));
    }

    /// The W3C `traceparent` of this span.
    pub fn traceparent(&self) -> String {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        write_hex(&mut out[3..35], &self.trace_id);
        out[35] = b'-';
        write_hex(&mut out[36..52], &self.span_id);
        out[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        ascii(out.to_vec())
    }
}

/// Lower-case hex of `bytes` (trace and span ids, once a request or more), written a byte at a
/// time into place: the `hex` crate's `encode`, and pushing `char`s to a `String`, are each
/// several times slower.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    write_hex(&mut out, bytes);
    ascii(out)
}

/// Writes the hex digits of `bytes` into `out` (twice as long).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Text of bytes that are ASCII (hex digits and dashes): they always are.
fn ascii(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_default()
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
    fn ids_are_lower_case_hex_and_a_traceparent_is_w3c() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), hex::encode([0x00, 0x0f, 0xa5, 0xff]));
        let mut span = RecordedSpan::start("request", 0);
        (span.trace_id, span.span_id) = ([0xab; 16], [0x01; 8]);
        assert_eq!(span.traceparent(), format!("00-{}-{}-01", "ab".repeat(16), "01".repeat(8)));
        span.sampled = false;
        assert!(span.traceparent().ends_with("-00"));
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
        // `add` is bounded the same way.
        span.add("late", Value::Bool(true));
        assert_eq!((span.attributes.len(), span.dropped_attributes), (MAX_ATTRIBUTES, 12));
    }

    #[test]
    fn added_attributes_keep_their_order() {
        let mut span = RecordedSpan::start("request", 2);
        span.add("a", Value::I64(1));
        span.add("b", Value::Str(Text::new("two")));
        span.set("a", Value::I64(3));
        let keys: Vec<&str> = span.attributes.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(matches!(span.attributes[0].1, Value::I64(3)));
    }
}
