use super::*;
use crate::telemetry::batch::BatchSettings;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::sync::Mutex;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

/// Keeps every span exported to it.
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Capture {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// Runs `f` under a subscriber with the recorder, then returns what it exported.
fn recorded(sampler: SamplerChoice, f: impl FnOnce()) -> Vec<SpanData> {
    let capture = Capture::default();
    let settings = BatchSettings { delay: Duration::from_secs(60), batch: 512, queue: 1024 };
    let resource = opentelemetry_sdk::Resource::builder_empty().build();
    let export = Arc::new(BatchExport::start(capture.clone(), settings, &resource).unwrap());
    let subscriber = tracing_subscriber::registry().with(Recorder::new(vec![export.clone()], sampler));
    tracing::subscriber::with_default(subscriber, f);
    export.flush().unwrap();
    let spans = capture.0.lock().unwrap().clone();
    spans
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a opentelemetry::Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
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
        record(&root, |s| s.name = Text::new("chat gpt-4o-mini"));
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
        assert!(traceparent(&attempt).is_some_and(|tp| tp.starts_with("00-") && tp.ends_with("-01")));
    });
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    // A closed span joins its parent ahead of its own descendants; the root comes last.
    assert_eq!(names, ["upstream_attempt", "read_body", "chat gpt-4o-mini"]);
    let [attempt, body, root] = [&spans[0], &spans[1], &spans[2]];
    let trace = root.span_context.trace_id();
    assert!(trace != TraceId::INVALID && spans.iter().all(|s| s.span_context.trace_id() == trace));
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    assert_eq!(attempt.parent_span_id, root.span_context.span_id());
    assert_eq!(body.parent_span_id, attempt.span_context.span_id());
    assert_eq!((root.span_kind.clone(), attempt.span_kind.clone()), (SpanKind::Server, SpanKind::Client));
    assert_eq!(
        root.attributes,
        vec![KeyValue::new("request_id", "req-1"), KeyValue::new("gen_ai.request.model", "gpt-4o-mini")]
    );
    assert_eq!(attr(attempt, "tollgate.attempt"), Some(&opentelemetry::Value::I64(1)));
    assert_eq!(attr(attempt, "tollgate.fallback"), Some(&opentelemetry::Value::Bool(false)));
    assert!(matches!(attempt.status, Status::Error { .. }) && root.status == Status::Unset);
    // The warning is an event of the span it was logged in, named by its message.
    assert_eq!(attempt.events.len(), 1);
    let warning = &attempt.events[0];
    assert_eq!(warning.name, "upstream attempt failed");
    assert!(warning.attributes.contains(&KeyValue::new("level", "WARN")));
    assert!(warning.attributes.contains(&KeyValue::new("status", 503_i64)));
    assert!(root.start_time <= attempt.start_time && attempt.end_time <= root.end_time);
}

#[test]
fn a_remote_parent_gives_the_trace_id_and_its_decision_when_parent_based() {
    let parent = ([0x4b; 16], [0x0f; 8]);
    let spans = recorded(SamplerChoice::DEFAULT, || {
        let kept = tracing::info_span!("request");
        set_remote_parent(&kept, parent.0, parent.1, true);
        assert_eq!(trace_id(&kept), Some(parent.0));
        let tp = traceparent(&kept).unwrap();
        assert!(tp.starts_with(&format!("00-{}-", hex::encode(parent.0))) && tp.ends_with("-01"), "{tp}");
        // The client did not sample this one: nothing of it is kept.
        let refused = tracing::info_span!("refused");
        set_remote_parent(&refused, [1; 16], [2; 8], false);
        let _child = tracing::info_span!(parent: &refused, "child").entered();
        assert_eq!(traceparent(&refused), None);
        assert_eq!(record(&refused, |_| ()), None);
    });
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].span_context.trace_id(), TraceId::from_bytes(parent.0));
    assert_eq!(spans[0].parent_span_id, SpanId::from_bytes(parent.1));
    assert!(spans[0].parent_span_is_remote);
}

#[test]
fn an_unsampled_trace_records_and_exports_nothing() {
    let off = SamplerChoice::parse("always_off", None).unwrap();
    let spans = recorded(off, || {
        let root = tracing::info_span!("request", request_id = "req-2");
        let _in = root.enter();
        let _child = tracing::info_span!("auth").entered();
        tracing::error!("failed");
        assert!(trace_id(&root).is_some());
        assert_eq!(traceparent(&root), None);
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
    assert_eq!(spans.last().map(|s| s.name.as_ref()), Some("request"));
}

#[test]
fn without_the_recorder_a_span_has_no_record() {
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request");
        assert_eq!(trace_id(&span), None);
        assert_eq!(record(&span, |_| ()), None);
    });
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
    assert_eq!(spans[0].events.len(), MAX_EVENTS);
    assert_eq!(spans[0].status, Status::Unset, "warnings do not fail a span");
}
