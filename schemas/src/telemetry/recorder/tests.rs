use super::*;
use crate::telemetry::batch::{BatchSettings, ExportError, Exporter};
use crate::telemetry::span::SpanKind;
use std::sync::Mutex;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

/// Keeps every span exported to it.
#[derive(Debug, Clone, Default)]
pub(super) struct Capture(pub(super) Arc<Mutex<Vec<RecordedSpan>>>);

impl Exporter for Capture {
    fn export(&mut self, batch: &[RecordedSpan]) -> Result<(), ExportError> {
        self.0.lock().unwrap().extend_from_slice(batch);
        Ok(())
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
