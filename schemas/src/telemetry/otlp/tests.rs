//! The encoder's bytes, decoded with OpenTelemetry's own protobuf types and compared field by
//! field.

use super::*;
use crate::telemetry::span::{SpanKind, Text};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{span, status, Span};
use prost::Message;
use std::time::Duration;

/// `spans` encoded as traces of up to three spans, in one request, decoded; the request's bytes
/// are also those protobuf's own encoder writes for what was decoded (every length exact).
fn decode(preamble: &Preamble, spans: &[RecordedSpan]) -> ExportTraceServiceRequest {
    let traces: Vec<EncodedTrace> = spans.chunks(3).map(EncodedTrace::new).collect();
    assert_eq!(traces.iter().map(EncodedTrace::spans).sum::<usize>(), spans.len());
    let out = encode_request(preamble, &traces);
    // Its exact size, known before writing.
    assert_eq!(out.capacity(), out.len());
    let request = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
    assert!(request.encode_to_vec() == out, "not protobuf's own bytes");
    request
}

fn value(attributes: &[KeyValue], key: &str) -> Option<Any> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(secs * 1_000_000_000 + 123)
}

/// A server span under a remote parent, failed, with every type of attribute and an event.
fn server_span() -> RecordedSpan {
    let mut s = RecordedSpan::start("request", 4);
    (s.trace_id, s.span_id, s.parent_id, s.parent_remote) = ([7; 16], [8; 8], [9; 8], true);
    (s.kind, s.start, s.end) = (SpanKind::Server, at(1_700_000_000), at(1_700_000_001));
    s.name = Text::new("chat gpt-4o-mini");
    s.set("gen_ai.request.model", Value::Str(Text::new("gpt-4o-mini")));
    s.set("tollgate.attempt", Value::I64(-3));
    s.set("tollgate.fallback", Value::Bool(true));
    s.set("tollgate.ratio", Value::F64(0.25));
    s.set("empty", Value::Str(Text::Static("")));
    s.set("long", Value::Str(Text::new(&"x".repeat(300))));
    s.dropped_attributes = 2;
    s.events.push(SpanEvent {
        name: Text::new("upstream attempt failed"),
        time: at(1_700_000_000),
        attributes: vec![("level", Value::Str(Text::Static("WARN"))), ("status", Value::I64(503))],
    });
    s.dropped_events = 1;
    s.set_error("503");
    s
}

#[test]
fn a_request_holds_the_resource_the_scope_and_every_field_of_a_span() {
    let attributes = [("service.name", "old"), ("deployment.environment", "eu"), ("service.name", "tollgate-gateway")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let preamble = Preamble::new(&attributes, "tollgate");
    let request = decode(&preamble, &[server_span()]);
    assert_eq!(request.resource_spans.len(), 1);
    let resource_spans = &request.resource_spans[0];
    let resource = resource_spans.resource.as_ref().unwrap();
    // A later attribute of the same key wins; each key once.
    assert_eq!(resource.attributes.len(), 2);
    assert_eq!(value(&resource.attributes, "service.name"), Some(Any::StringValue("tollgate-gateway".into())));
    assert_eq!(value(&resource.attributes, "deployment.environment"), Some(Any::StringValue("eu".into())));
    let scope_spans = &resource_spans.scope_spans[0];
    assert_eq!(scope_spans.scope.as_ref().map(|s| s.name.as_str()), Some("tollgate"));
    let [span]: &[Span; 1] = scope_spans.spans.as_slice().try_into().unwrap();
    assert_eq!((span.trace_id.as_slice(), span.span_id.as_slice()), ([7; 16].as_slice(), [8; 8].as_slice()));
    assert_eq!(span.parent_span_id, [9; 8]);
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert_eq!(span.kind, span::SpanKind::Server as i32);
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_123);
    assert_eq!(span.end_time_unix_nano, 1_700_000_001_000_000_123);
    assert_eq!(span.flags, 0x301, "sampled, with a remote parent");
    assert_eq!(span.trace_state, "");
    let attrs = &span.attributes;
    assert_eq!(attrs.len(), 6);
    assert_eq!(value(attrs, "gen_ai.request.model"), Some(Any::StringValue("gpt-4o-mini".into())));
    assert_eq!(value(attrs, "tollgate.attempt"), Some(Any::IntValue(-3)));
    assert_eq!(value(attrs, "tollgate.fallback"), Some(Any::BoolValue(true)));
    assert_eq!(value(attrs, "tollgate.ratio"), Some(Any::DoubleValue(0.25)));
    assert_eq!(value(attrs, "empty"), Some(Any::StringValue(String::new())));
    assert_eq!(value(attrs, "long"), Some(Any::StringValue("x".repeat(300))));
    assert_eq!(span.dropped_attributes_count, 2);
    assert_eq!(span.events.len(), 1);
    let event = &span.events[0];
    assert_eq!((event.name.as_str(), event.time_unix_nano), ("upstream attempt failed", 1_700_000_000_000_000_123));
    assert_eq!(value(&event.attributes, "level"), Some(Any::StringValue("WARN".into())));
    assert_eq!(value(&event.attributes, "status"), Some(Any::IntValue(503)));
    assert_eq!(span.dropped_events_count, 1);
    let status = span.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (status::StatusCode::Error as i32, "503"));
}

#[test]
fn a_local_root_has_no_parent_and_an_unset_status() {
    let mut root = RecordedSpan::start("ledger.batch", 0);
    root.trace_id = [1; 16];
    let mut ok = RecordedSpan::start("ok", 0);
    (ok.status, ok.kind) = (Status::Ok, SpanKind::Consumer);
    let request = decode(&Preamble::new(&[], "tollgate"), &[root.clone(), ok]);
    let spans = &request.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 2);
    assert!(spans[0].parent_span_id.is_empty());
    assert_eq!(spans[0].flags, 0x101, "sampled, parent not remote");
    assert_eq!(spans[0].kind, span::SpanKind::Internal as i32);
    assert_eq!(spans[0].status.as_ref().map(|s| s.code), Some(status::StatusCode::Unset as i32));
    assert_eq!((spans[0].dropped_attributes_count, spans[0].dropped_events_count), (0, 0));
    assert_eq!(spans[1].status.as_ref().map(|s| s.code), Some(status::StatusCode::Ok as i32));
    assert_eq!(spans[1].kind, span::SpanKind::Consumer as i32);
    assert_eq!(spans[0].span_id, root.span_id);
}

#[test]
fn a_large_batch_round_trips_through_multi_byte_lengths() {
    let spans: Vec<RecordedSpan> = (0..600).map(|_| server_span()).collect();
    let preamble = Preamble::new(&[("service.name".to_owned(), "s".repeat(200))], "tollgate");
    let request = decode(&preamble, &spans);
    let decoded = &request.resource_spans[0].scope_spans[0].spans;
    assert_eq!(decoded.len(), 600);
    assert!(decoded.iter().all(|s| s.name == "chat gpt-4o-mini" && s.attributes.len() == 6));
    let resource = request.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(value(&resource.attributes, "service.name"), Some(Any::StringValue("s".repeat(200))));
}

#[test]
fn varints_match_protobuf() {
    for n in [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
        let mut ours = Vec::new();
        varint(&mut ours, n);
        let mut theirs = Vec::new();
        prost::encoding::encode_varint(n, &mut theirs);
        assert_eq!(ours, theirs, "{n}");
    }
}

#[test]
fn spans_of_every_size_keep_a_minimal_length_prefix() {
    // Under 128 bytes (one length byte), 128 bytes to 16 KiB (two) and beyond (three).
    let small = RecordedSpan::start("a", 0);
    let medium = server_span();
    let mut large = server_span();
    large.set("tollgate.big", Value::Str("x".repeat(20_000).as_str().into()));
    for span in [small, medium, large] {
        let mut body = Vec::new();
        encode_span(&mut body, &span);
        let mut theirs = vec![0xff, 0x12];
        prost::encoding::encode_varint(body.len() as u64, &mut theirs);
        theirs.extend_from_slice(&body);
        // Whatever room was left for the length: less, as much, or more than it takes.
        for room in [1, 2, 3] {
            let mut ours = vec![0xff];
            sized_message(&mut ours, 2, room, |b| encode_span(b, &span));
            assert_eq!(ours, theirs, "a span of {} bytes, room for {room}", body.len());
        }
    }
}

#[test]
fn attributes_written_in_runs_are_the_bytes_of_the_general_encoder() {
    // Around every boundary of the short form: lengths of 127 and 128 bytes, varints of one to
    // ten bytes, an empty key and value, events' field 3 as well as spans' field 9.
    let keys = ["k", "gen_ai.usage.input_tokens", "", &"k".repeat(60), &"k".repeat(130)];
    let mut values = vec![Value::Bool(false), Value::Bool(true), Value::F64(-0.5), Value::Str(Text::Static(""))];
    values.extend([0, 1, 127, 128, 16_384, -1, i64::MIN, i64::MAX].map(Value::I64));
    values.extend([10, 46, 47, 60, 61, 62, 100, 126, 127, 128, 300].map(|n| Value::Str(Text::new(&"v".repeat(n)))));
    for key in keys {
        for value in &values {
            for field in [3, 9] {
                let mut ours = vec![0xff];
                attribute(&mut ours, field, key, value);
                let mut general = vec![0xff];
                message(&mut general, field, |b| key_value(b, key, value));
                assert_eq!(ours, general, "{key:?} = {value:?}");
            }
        }
    }
}

#[test]
fn every_status_decodes() {
    let mut spans = [Status::Unset, Status::Ok, Status::Error(Text::Static("")), Status::Error(Text::new("timeout"))]
        .map(|status| {
            let mut s = RecordedSpan::start("s", 0);
            s.status = status;
            s
        })
        .to_vec();
    spans[0].sampled = false;
    let request = decode(&Preamble::new(&[], "tollgate"), &spans);
    let decoded = &request.resource_spans[0].scope_spans[0].spans;
    let statuses: Vec<(i32, &str)> =
        decoded.iter().map(|s| s.status.as_ref().map_or((-1, ""), |st| (st.code, st.message.as_str()))).collect();
    assert_eq!(statuses, [(0, ""), (1, ""), (2, ""), (2, "timeout")]);
    assert_eq!(decoded[0].flags, 0x100, "not sampled");
}
