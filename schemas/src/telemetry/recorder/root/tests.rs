use super::super::tests::{attr, attrs, recorded_into};
use super::*;
use crate::telemetry::span::{Status, Value};
use crate::telemetry::SamplerChoice;

#[test]
fn children_join_their_root_with_their_parents_and_the_root_leaves_last() {
    let spans = recorded_into(SamplerChoice::DEFAULT, |exports| {
        let root = Root::start_into(exports, "chat", SpanKind::Server, None);
        root.record(|s| rename(s, "chat", "gpt-4o-mini"));
        {
            let admission = Child::start(&root, None, "admission");
            let mut lease = Child::start(&root, Some(&admission), "lease_grant");
            lease.record(|s| s.set("tollgate.lease", Value::Bool(true)));
            assert!(lease.traceparent().is_some_and(|tp| tp.ends_with("-01")));
        }
        let mut attempt = Child::start(&root, None, "upstream_attempt");
        attempt.record(|s| {
            s.kind = SpanKind::Client;
            s.set_error("503");
        });
        drop(attempt);
    });
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["lease_grant", "admission", "upstream_attempt", "chat gpt-4o-mini"]);
    let [lease, admission, attempt, root] = [&spans[0], &spans[1], &spans[2], &spans[3]];
    assert!(root.trace_id != [0; 16] && root.parent_id == [0; 8] && !root.parent_remote);
    assert!(spans.iter().all(|s| s.trace_id == root.trace_id && s.sampled));
    assert_eq!((admission.parent_id, attempt.parent_id), (root.span_id, root.span_id));
    assert_eq!(lease.parent_id, admission.span_id);
    assert_eq!(attr(lease, "tollgate.lease").as_deref(), Some("Bool(true)"));
    assert!(attempt.kind == SpanKind::Client && attempt.status.is_error());
    assert!(root.kind == SpanKind::Server && matches!(root.status, Status::Unset));
    assert!(root.start <= admission.start && lease.end <= admission.end && attempt.end <= root.end);
}

#[test]
fn a_root_ends_with_its_last_handle_and_a_remote_parent_gives_its_ids() {
    let parent = ([0x4b; 16], [0x0f; 8]);
    let spans = recorded_into(SamplerChoice::DEFAULT, |exports| {
        let root = Root::start_into(exports, "chat", SpanKind::Server, Some(parent));
        assert_eq!(root.ids().0, parent.0);
        let metering = root.clone();
        let child = Child::start(&root, None, "upstream_attempt");
        assert!(child.traceparent().is_some_and(|tp| tp.starts_with(&format!("00-{}-", hex::encode(parent.0)))));
        // The request's own handle goes first; its child and its metering still hold the root.
        drop(root);
        drop(child);
        let late = Child::start(&metering, None, "metering");
        drop(late);
        drop(metering);
    });
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["upstream_attempt", "metering", "chat"]);
    let root = &spans[2];
    assert_eq!((root.trace_id, root.parent_id, root.parent_remote), (parent.0, parent.1, true));
    assert!(spans[..2].iter().all(|s| s.end <= root.end && s.parent_id == root.span_id));
}

#[test]
fn a_trace_holds_a_bounded_number_of_spans() {
    let spans = recorded_into(SamplerChoice::DEFAULT, |exports| {
        let root = Root::start_into(exports, "chat", SpanKind::Server, None);
        for _ in 0..MAX_SPANS_PER_TRACE + 10 {
            drop(Child::start(&root, None, "upstream_attempt"));
        }
    });
    assert_eq!(spans.len(), MAX_SPANS_PER_TRACE);
    assert_eq!(spans.last().map(|s| s.name.as_str()), Some("chat"));
}

#[test]
fn warnings_logged_while_a_root_is_current_are_its_events() {
    let spans = recorded_into(SamplerChoice::DEFAULT, |exports| {
        let root = Root::start_into(exports, "chat", SpanKind::Server, None);
        let serve = scope(Some(root.clone()), async {
            assert!(is_current());
            let _attempt = Child::current("upstream_attempt");
            tracing::warn!(target: "tollgate_gateway::routing", status = 503, "upstream attempt failed");
            tracing::error!(target: "tollgate_gateway::routing", "no deployment left");
        });
        futures::executor::block_on(serve);
        assert!(!is_current());
    });
    let root = spans.last().unwrap();
    let events: Vec<&str> = root.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["upstream attempt failed", "no deployment left"]);
    assert_eq!(attrs(&root.events[0].attributes), [("level", "WARN".to_owned()), ("status", "I64(503)".to_owned())]);
    assert!(root.status.is_error(), "an error fails the root");
    assert_eq!(spans.len(), 2, "the child joined: {spans:?}");
}

#[test]
fn without_a_root_a_child_records_nothing() {
    let mut child = Child::current("auth");
    assert!(!child.is_recording() && child.traceparent().is_none());
    assert_eq!(child.record(|_| ()), None);
    assert!(!is_current());
    futures::executor::block_on(scope(None, async {
        assert!(!is_current());
        assert!(!Child::current("auth").is_recording());
    }));
}

#[test]
fn a_joined_name_is_inline_when_short_and_whole_when_long() {
    let mut span = RecordedSpan::start("chat", 0);
    rename(&mut span, "chat", "gpt-4o-mini");
    assert!(matches!(span.name, Text::Inline { .. }));
    assert_eq!(span.name.as_str(), "chat gpt-4o-mini");
    let long = "m".repeat(100);
    rename(&mut span, "text_completion", &long);
    assert_eq!(span.name.as_str(), format!("text_completion {long}"));
}
