use super::*;
use crate::telemetry::batch::{BatchSettings, ExportError, Exporter};
use crate::telemetry::otlp::EncodedTrace;
use crate::telemetry::span::SpanKind;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{self as proto, ScopeSpans};
use prost::Message;
use std::sync::Mutex;
use std::time::Duration;
use std::time::UNIX_EPOCH;
use tracing_subscriber::layer::SubscriberExt;

/// Keeps every span exported to it, decoded from the OTLP it was given.
#[derive(Debug, Clone, Default)]
pub(super) struct Capture(pub(super) Arc<Mutex<Vec<RecordedSpan>>>);

impl Exporter for Capture {
    fn export(&mut self, batch: &[EncodedTrace]) -> Result<(), ExportError> {
        let mut spans = self.0.lock().unwrap();
        for trace in batch {
            let decoded = ScopeSpans::decode(trace.as_bytes()).unwrap().spans;
            assert_eq!(decoded.len(), trace.spans());
            spans.extend(decoded.into_iter().map(record_of));
        }
        Ok(())
    }
}

/// The record an OTLP span was encoded from (its attribute keys leaked: a test).
fn record_of(span: proto::Span) -> RecordedSpan {
    let id = |bytes: Vec<u8>| <[u8; 8]>::try_from(bytes).unwrap_or_default();
    let time = |nanos: u64| UNIX_EPOCH + Duration::from_nanos(nanos);
    let attributes = |list: Vec<KeyValue>| -> Vec<(&'static str, Value)> {
        list.into_iter()
            .map(|kv| {
                let value = match kv.value.and_then(|v| v.value) {
                    Some(Any::StringValue(s)) => Value::Str(Text::new(&s)),
                    Some(Any::BoolValue(b)) => Value::Bool(b),
                    Some(Any::IntValue(n)) => Value::I64(n),
                    Some(Any::DoubleValue(x)) => Value::F64(x),
                    other => panic!("an attribute of a type never written: {other:?}"),
                };
                (&*Box::leak(kv.key.into_boxed_str()), value)
            })
            .collect()
    };
    let status = match span.status {
        Some(s) if s.code == proto::status::StatusCode::Error as i32 => Status::Error(Text::new(&s.message)),
        Some(s) if s.code == proto::status::StatusCode::Ok as i32 => Status::Ok,
        _ => Status::Unset,
    };
    let kind = [SpanKind::Internal, SpanKind::Server, SpanKind::Client, SpanKind::Producer, SpanKind::Consumer]
        .into_iter()
        .find(|k| *k as i32 == span.kind)
        .unwrap();
    RecordedSpan {
        trace_id: <[u8; 16]>::try_from(span.trace_id).unwrap(),
        span_id: id(span.span_id),
        parent_id: id(span.parent_span_id),
        parent_remote: span.flags & 0x200 != 0,
        sampled: span.flags & 0x01 != 0,
        name: Text::new(&span.name),
        kind,
        status,
        start: time(span.start_time_unix_nano),
        end: time(span.end_time_unix_nano),
        attributes: attributes(span.attributes),
        dropped_attributes: span.dropped_attributes_count,
        events: span
            .events
            .into_iter()
            .map(|e| SpanEvent {
                name: Text::new(&e.name),
                time: time(e.time_unix_nano),
                attributes: attributes(e.attributes),
            })
            .collect(),
        dropped_events: span.dropped_events_count,
    }
}

/// Runs `f` under a subscriber with the recorder, then returns what it exported.
fn recorded(sampler: SamplerChoice, f: impl FnOnce()) -> Vec<RecordedSpan> {
    recorded_into(sampler, |_| f())
}

/// Runs `f` under a subscriber with the recorder, `f` given the recorder's export queues (for
/// roots recorded without `tracing`), then returns what was exported.
pub(super) fn recorded_into(sampler: SamplerChoice, f: impl FnOnce(Exports)) -> Vec<RecordedSpan> {
    let capture = Capture::default();
    let settings = BatchSettings { delay: Duration::from_secs(60), batch: 512, queue: 1024 };
    let exporter = capture.clone();
    let export = Arc::new(BatchExport::start(move || Ok(exporter), settings).unwrap());
    let subscriber = tracing_subscriber::registry().with(Recorder::new(vec![export.clone()], sampler));
    let exports = Exports::from(vec![export.clone()]);
    tracing::subscriber::with_default(subscriber, || f(exports));
    export.flush().unwrap();
    let spans = capture.0.lock().unwrap().clone();
    spans
}

/// The attributes of `span`, as text (`Debug` of the value for the others).
pub(super) fn attrs(attributes: &[(&'static str, Value)]) -> Vec<(&'static str, String)> {
    attributes
        .iter()
        .map(|(k, v)| match v {
            Value::Str(t) => (*k, t.as_str().to_owned()),
            other => (*k, format!("{other:?}")),
        })
        .collect()
}

pub(super) fn attr(span: &RecordedSpan, key: &str) -> Option<String> {
    attrs(&span.attributes).into_iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[test]
fn a_trace_leaves_whole_when_its_root_closes_with_names_kinds_and_typed_attributes() {
    let spans = recorded(SamplerChoice::DEFAULT, || {
        let root = tracing::info_span!(
            "request",
            otel.name = "chat",
            otel.kind = "server",
            request_id = "req-1",
            gen_ai.request.model = tracing::field::Empty,
        );
        root.record("gen_ai.request.model", "gpt-4o-mini");
        root.record("otel.name", "chat gpt-4o-mini");
        let _in_root = root.enter();
        let attempt = tracing::info_span!(
            "upstream_attempt",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            tollgate.attempt = 1u32,
            tollgate.fallback = false,
        );
        attempt.in_scope(|| {
            tracing::warn!(status = 503, "upstream attempt failed");
            let _inner = tracing::info_span!("read_body").entered();
        });
        attempt.record("otel.status_code", "ERROR");
    });
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    // A closed span joins its parent ahead of its own descendants; the root comes last.
    assert_eq!(names, ["upstream_attempt", "read_body", "chat gpt-4o-mini"]);
    let [attempt, body, root] = [&spans[0], &spans[1], &spans[2]];
    let trace = root.trace_id;
    assert!(trace != [0; 16] && spans.iter().all(|s| s.trace_id == trace && s.sampled));
    assert_eq!(root.parent_id, [0; 8]);
    assert_eq!(attempt.parent_id, root.span_id);
    assert_eq!(body.parent_id, attempt.span_id);
    assert_eq!((root.kind, attempt.kind), (SpanKind::Server, SpanKind::Client));
    assert_eq!(
        attrs(&root.attributes),
        [("request_id", "req-1".to_owned()), ("gen_ai.request.model", "gpt-4o-mini".to_owned())]
    );
    assert_eq!(attr(attempt, "tollgate.attempt").as_deref(), Some("I64(1)"));
    assert_eq!(attr(attempt, "tollgate.fallback").as_deref(), Some("Bool(false)"));
    assert!(attempt.status.is_error() && matches!(root.status, Status::Unset));
    // The warning is an event of the span it was logged in, named by its message.
    assert_eq!(attempt.events.len(), 1);
    let warning = &attempt.events[0];
    assert_eq!(warning.name.as_str(), "upstream attempt failed");
    assert_eq!(attrs(&warning.attributes), [("level", "WARN".to_owned()), ("status", "I64(503)".to_owned())]);
    assert!(root.start <= attempt.start && attempt.end <= root.end);
}

#[test]
fn an_unsampled_trace_records_and_exports_nothing() {
    let off = SamplerChoice::parse("always_off", None).unwrap();
    let spans = recorded(off, || {
        let root = tracing::info_span!("request", request_id = "req-2");
        let _in = root.enter();
        let _child = tracing::info_span!("auth").entered();
        tracing::error!("failed");
    });
    assert!(spans.is_empty(), "{spans:?}");
}

#[test]
fn a_trace_holds_a_bounded_number_of_spans() {
    let spans = recorded(SamplerChoice::DEFAULT, || {
        let root = tracing::info_span!("request");
        let _in = root.enter();
        for _ in 0..MAX_SPANS_PER_TRACE + 10 {
            drop(tracing::info_span!("attempt"));
        }
    });
    assert_eq!(spans.len(), MAX_SPANS_PER_TRACE);
    assert_eq!(spans.last().map(|s| s.name.as_str()), Some("request"));
}

#[test]
fn a_span_keeps_a_bounded_number_of_events() {
    let spans = recorded(SamplerChoice::DEFAULT, || {
        let _root = tracing::info_span!("ledger.batch").entered();
        for attempt in 0..MAX_EVENTS + 5 {
            tracing::warn!(attempt, "ledger write failed; retrying");
        }
    });
    assert_eq!(spans.len(), 1);
    assert_eq!((spans[0].events.len(), spans[0].dropped_events), (MAX_EVENTS, 5));
    assert!(matches!(spans[0].status, Status::Unset), "warnings do not fail a span");
}
