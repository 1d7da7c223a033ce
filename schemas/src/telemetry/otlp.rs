//! OTLP's protobuf, written by hand straight from the recorded spans: each finished trace's
//! spans with their attributes, events and status ([`EncodedTrace`], where the trace ends),
//! then on the export thread an `ExportTraceServiceRequest` (one resource, one scope, the
//! batch's encoded traces copied in). Field numbers are those of
//! `opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto`.
//!
//! A nested message is written in place behind room for its length (one byte, two for a span
//! with attributes), moved in place in the rare case its length takes another number of bytes:
//! nothing is measured twice or copied to a temporary.

use super::span::{RecordedSpan, SpanEvent, Status, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// `SpanFlags`: the sampled bit of the W3C trace flags, and whether the parent is remote.
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// The part of every request that never changes: the resource (its attributes) and the
/// instrumentation scope, encoded once.
#[derive(Clone, Debug)]
pub struct Preamble {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Preamble {
    /// A resource with `attributes` (later ones win over earlier ones of the same key) and
    /// the scope named `scope`.
    pub fn new(attributes: &[(String, String)], scope: &str) -> Preamble {
        let mut resource = Vec::new();
        for (i, (key, value)) in attributes.iter().enumerate() {
            if attributes[i + 1..].iter().all(|(later, _)| later != key) {
                message(&mut resource, 1, |b| key_value(b, key, &Value::Str(value.as_str().into())));
            }
        }
        let mut scope_bytes = Vec::new();
        string(&mut scope_bytes, 1, scope);
        Preamble { resource, scope: scope_bytes }
    }
}

/// A finished trace, encoded where it finished (on the request's thread, while its records
/// are in cache, freed where they were made): its spans as the `ScopeSpans.spans` fields of
/// the request that will carry it, so that the export thread only copies them into place.
#[derive(Clone, Debug, Default)]
pub struct EncodedTrace {
    bytes: Vec<u8>,
    spans: usize,
}

impl EncodedTrace {
    /// `spans`, encoded.
    pub fn new(spans: &[RecordedSpan]) -> EncodedTrace {
        // About what a gateway request's spans take; a longer trace grows it once or twice.
        let mut bytes = Vec::with_capacity(256 * spans.len());
        for span in spans {
            // One without attributes or events (most children) is nearly always under 128 bytes.
            let room = if span.attributes.is_empty() && span.events.is_empty() { 1 } else { 2 };
            sized_message(&mut bytes, 2, room, |b| encode_span(b, span));
        }
        EncodedTrace { bytes, spans: spans.len() }
    }

    /// How many spans it holds.
    pub fn spans(&self) -> usize {
        self.spans
    }

    /// Its bytes: a sequence of `ScopeSpans.spans` fields (decodable as a `ScopeSpans`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The `ExportTraceServiceRequest` of `traces`. Every length is known before writing: the
/// request is written front to back into a buffer of its exact size, each trace's bytes copied
/// once.
pub fn encode_request(preamble: &Preamble, traces: &[EncodedTrace]) -> Vec<u8> {
    let field = |len: usize| 1 + varint_len(len as u64) + len;
    let scope = field(preamble.scope.len());
    let scope_spans = scope + traces.iter().map(|t| t.bytes.len()).sum::<usize>();
    let resource_spans = field(preamble.resource.len()) + field(scope_spans);
    let mut out = Vec::with_capacity(field(resource_spans));
    // ExportTraceServiceRequest.resource_spans
    length_of(&mut out, 1, resource_spans);
    // ResourceSpans.resource
    length_of(&mut out, 1, preamble.resource.len());
    out.extend_from_slice(&preamble.resource);
    // ResourceSpans.scope_spans: its scope, then the spans
    length_of(&mut out, 2, scope_spans);
    length_of(&mut out, 1, preamble.scope.len());
    out.extend_from_slice(&preamble.scope);
    for trace in traces {
        out.extend_from_slice(&trace.bytes);
    }
    out
}

/// The tag and length of field `field`, a message or bytes of `len` bytes that follow.
fn length_of(b: &mut Vec<u8>, field: u32, len: usize) {
    key_of(b, field, LEN);
    varint(b, len as u64);
}

fn encode_span(b: &mut Vec<u8>, span: &RecordedSpan) {
    // The fixed fields are written as few constant-length runs (each one copy, its length
    // known at compile time): trace id and span id, the parent, kind and times, flags.
    let mut ids = [0u8; 28];
    ids[..2].copy_from_slice(&[tag(1, LEN), 16]);
    ids[2..18].copy_from_slice(&span.trace_id);
    ids[18..20].copy_from_slice(&[tag(2, LEN), 8]);
    ids[20..].copy_from_slice(&span.span_id);
    b.extend_from_slice(&ids);
    if span.parent_id != [0; 8] {
        let mut parent = [tag(4, LEN), 8, 0, 0, 0, 0, 0, 0, 0, 0];
        parent[2..].copy_from_slice(&span.parent_id);
        b.extend_from_slice(&parent);
    }
    bytes_unless_empty(b, 5, span.name.as_bytes());
    let mut times = [0u8; 20];
    times[..2].copy_from_slice(&[tag(6, VARINT), span.kind as u8]);
    times[2] = tag(7, FIXED64);
    times[3..11].copy_from_slice(&nanos(span.start).to_le_bytes());
    times[11] = tag(8, FIXED64);
    times[12..].copy_from_slice(&nanos(span.end).to_le_bytes());
    b.extend_from_slice(&times);
    for (k, v) in &span.attributes {
        attribute(b, 9, k, v);
    }
    uint(b, 10, u64::from(span.dropped_attributes));
    for event in &span.events {
        message(b, 11, |b| encode_event(b, event));
    }
    uint(b, 12, u64::from(span.dropped_events));
    match &span.status {
        Status::Unset => b.extend_from_slice(&[tag(15, LEN), 0]),
        Status::Ok => b.extend_from_slice(&[tag(15, LEN), 2, tag(3, VARINT), 1]),
        Status::Error(description) => message(b, 15, |b| {
            bytes_unless_empty(b, 2, description.as_bytes());
            uint(b, 3, 2);
        }),
    }
    let sampled = if span.sampled { FLAG_SAMPLED } else { 0 };
    let remote = if span.parent_remote { FLAG_IS_REMOTE } else { 0 };
    let mut flags = [0u8; 6];
    // Field 16: its tag takes two bytes.
    const FLAGS_TAG: u32 = 16 << 3 | FIXED32 as u32;
    flags[..2].copy_from_slice(&[(FLAGS_TAG as u8) | 0x80, (FLAGS_TAG >> 7) as u8]);
    flags[2..].copy_from_slice(&(sampled | FLAG_HAS_IS_REMOTE | remote).to_le_bytes());
    b.extend_from_slice(&flags);
}

fn encode_event(b: &mut Vec<u8>, event: &SpanEvent) {
    fixed64(b, 1, nanos(event.time));
    bytes_unless_empty(b, 2, event.name.as_bytes());
    for (k, v) in &event.attributes {
        attribute(b, 3, k, v);
    }
}

/// Field `field` holding the `KeyValue` of an attribute. Most are short (under 128 bytes in
/// all, a non-empty key): every length is then one byte, known before writing, so the message
/// is written in four runs, its lengths with their tags, and not measured afterwards.
fn attribute(b: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let any = match value {
        Value::Str(s) => 2 + s.as_bytes().len(),
        Value::Bool(_) => 2,
        Value::I64(n) => 1 + varint_len(*n as u64),
        Value::F64(_) => 9,
    };
    let (k, kv) = (key.as_bytes(), 4 + key.len() + any);
    if k.is_empty() || kv >= 0x80 || field >= 16 {
        message(b, field, |b| key_value(b, key, value));
        return;
    }
    b.reserve(kv + 2);
    b.extend_from_slice(&[tag(field, LEN), kv as u8, tag(1, LEN), k.len() as u8]);
    b.extend_from_slice(k);
    match value {
        Value::Str(s) => {
            let s = s.as_bytes();
            b.extend_from_slice(&[tag(2, LEN), any as u8, tag(1, LEN), s.len() as u8]);
            b.extend_from_slice(s);
        }
        Value::Bool(v) => b.extend_from_slice(&[tag(2, LEN), 2, tag(2, VARINT), u8::from(*v)]),
        Value::I64(n) => {
            b.extend_from_slice(&[tag(2, LEN), any as u8, tag(3, VARINT)]);
            varint(b, *n as u64);
        }
        Value::F64(x) => {
            let mut double = [0u8; 11];
            double[..3].copy_from_slice(&[tag(2, LEN), 9, tag(4, FIXED64)]);
            double[3..].copy_from_slice(&x.to_le_bytes());
            b.extend_from_slice(&double);
        }
    }
}

/// The one-byte tag of a field numbered under 16.
const fn tag(field: u32, wire: u8) -> u8 {
    (field as u8) << 3 | wire
}

/// Bytes of `n` as a varint.
fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// A `KeyValue`: the key, then the `AnyValue` of its type.
fn key_value(b: &mut Vec<u8>, key: &str, value: &Value) {
    string(b, 1, key);
    message(b, 2, |b| match value {
        Value::Str(s) => {
            // Even empty: an AnyValue without a field would be no value at all.
            key_of(b, 1, LEN);
            let s = s.as_bytes();
            varint(b, s.len() as u64);
            b.extend_from_slice(s);
        }
        Value::Bool(v) => {
            key_of(b, 2, VARINT);
            varint(b, u64::from(*v));
        }
        Value::I64(n) => {
            key_of(b, 3, VARINT);
            varint(b, *n as u64);
        }
        Value::F64(x) => {
            key_of(b, 4, FIXED64);
            b.extend_from_slice(&x.to_le_bytes());
        }
    });
}

/// Nanoseconds since the Unix epoch; 0 for a clock set before it.
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Field `field` holding the message `write` appends.
fn message(b: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    sized_message(b, field, 1, write);
}

/// Field `field` holding the message `write` appends, behind `room` bytes left for its length:
/// when the length takes another number of bytes, the message is moved in place (no
/// allocation) to make it fit.
fn sized_message(b: &mut Vec<u8>, field: u32, room: usize, write: impl FnOnce(&mut Vec<u8>)) {
    key_of(b, field, LEN);
    let at = b.len();
    b.resize(at + room, 0);
    let start = b.len();
    write(b);
    let len = b.len() - start;
    let mut prefix = [0u8; 10];
    let width = varint_into(&mut prefix, len as u64);
    if width > room {
        b.resize(b.len() + width - room, 0);
        b.copy_within(start..start + len, at + width);
    } else if width < room {
        b.copy_within(start..start + len, at + width);
        b.truncate(at + width + len);
    }
    b[at..at + width].copy_from_slice(&prefix[..width]);
}

/// Writes `n` as a varint at the start of `out`; returns its length.
fn varint_into(out: &mut [u8; 10], mut n: u64) -> usize {
    let mut i = 0;
    while n >= 0x80 {
        out[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    out[i] = n as u8;
    i + 1
}

fn key_of(b: &mut Vec<u8>, field: u32, wire: u8) {
    varint(b, u64::from(field) << 3 | u64::from(wire));
}

/// Appends `n` as a varint, a byte at a time: this is inlined where it is called (written
/// through [`varint_into`] it was not, and cost more).
fn varint(b: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        b.push((n as u8) | 0x80);
        n >>= 7;
    }
    b.push(n as u8);
}

/// A non-zero integer field (proto3 leaves zeros out).
fn uint(b: &mut Vec<u8>, field: u32, n: u64) {
    if n != 0 {
        key_of(b, field, VARINT);
        varint(b, n);
    }
}

fn fixed64(b: &mut Vec<u8>, field: u32, n: u64) {
    key_of(b, field, FIXED64);
    b.extend_from_slice(&n.to_le_bytes());
}

fn bytes(b: &mut Vec<u8>, field: u32, data: &[u8]) {
    length_of(b, field, data.len());
    b.extend_from_slice(data);
}

/// A non-empty string field.
fn string(b: &mut Vec<u8>, field: u32, s: &str) {
    bytes_unless_empty(b, field, s.as_bytes());
}

/// A string field as its UTF-8 bytes; an empty one is left out, as protobuf's default.
fn bytes_unless_empty(b: &mut Vec<u8>, field: u32, s: &[u8]) {
    if !s.is_empty() {
        bytes(b, field, s);
    }
}

#[cfg(test)]
mod tests;
