use super::super::request::RequestFields;
use super::*;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::ErrorKind::Other)?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `log` writes through the JSON layer, as text and as the one line it must be; with
/// `filter`, the log layer's filter applies.
fn json_line(filter: Option<EnvFilter>, log: impl FnOnce()) -> (String, Value) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .fmt_fields(SpanJson)
        .event_format(FlatJson)
        .with_writer(move || writer.clone())
        .with_filter(filter);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let line = serde_json::from_str(text.trim()).unwrap();
    (text, line)
}

/// What `log` writes through the text layer, without colours.
fn text_line(log: impl FnOnce()) -> String {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let layer =
        tracing_subscriber::fmt::layer().with_ansi(false).event_format(TextLine).with_writer(move || writer.clone());
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    text
}

/// Runs `log` while a request with these fields is served.
fn in_request(fields: &RequestFields, log: impl FnOnce()) {
    futures::executor::block_on(super::super::request::scope(fields.clone(), async { log() }));
}

/// A request's fields as a gateway request has them once read.
fn read_request() -> RequestFields {
    let fields = RequestFields::new("req-7", "chat", Some("4bf92f3577b34da6a3ce929d0e0e4736".into()));
    fields.set_principal(Some("checkout"), Some("team-a"), None);
    fields.set_model("gpt-4o-mini");
    fields
}

#[test]
fn json_lines_logged_while_a_request_is_served_carry_its_fields() {
    let fields = read_request();
    let (_, line) = json_line(Some(filter()), || in_request(&fields, || tracing::warn!(status = 503u16, "failed")));
    assert_eq!(line["request_id"], "req-7");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["key_alias"], "checkout");
    assert_eq!(line["gen_ai.operation.name"], "chat");
    assert_eq!(line["gen_ai.request.model"], "gpt-4o-mini");
    assert_eq!(line["tollgate.team_id"], "team-a");
    assert_eq!(line.get("tollgate.customer_id"), None, "a field never set is left out");
    assert_eq!(line["span"], "request");
    assert_eq!(line["status"], 503);
    assert_eq!(line["message"], "failed");

    // A span opened inside the request: its fields join the request's, and it names the line.
    let (_, line) = json_line(None, || {
        in_request(&fields, || {
            let span = tracing::info_span!("replay", entry = 3u8);
            let _entered = span.enter();
            tracing::warn!("inside");
        })
    });
    assert_eq!(line["request_id"], "req-7");
    assert_eq!(line["entry"], 3);
    assert_eq!(line["span"], "replay");

    // Outside a request, none of them.
    let (_, line) = json_line(None, || tracing::warn!("outside"));
    let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["level", "message", "target", "timestamp"]);
}

#[test]
fn text_lines_logged_while_a_request_is_served_carry_its_fields() {
    let fields = read_request();
    // A value with a quote and a line break stays on its line, quoted.
    fields.set_principal(None, None, Some("cust \"9\"\nnext"));
    let text = text_line(|| in_request(&fields, || tracing::warn!(status = 503u16, "upstream attempt failed")));
    let expected = concat!(
        " WARN request{request_id=\"req-7\" trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\" key_alias=\"checkout\" ",
        "gen_ai.operation.name=\"chat\" gen_ai.request.model=\"gpt-4o-mini\" tollgate.team_id=\"team-a\" ",
        "tollgate.customer_id=\"cust \\\"9\\\"\\nnext\"}: ",
        "tollgate_schemas::telemetry::logs::tests: upstream attempt failed status=503\n"
    );
    assert!(text.ends_with(expected), "{text}");
    assert_eq!(text.lines().count(), 1);
    assert!(!text.contains('\u{1b}'));

    // Outside a request, and in a span of its own: as the default format writes them.
    let text = text_line(|| tracing::info!("outside"));
    assert!(text.ends_with(" INFO tollgate_schemas::telemetry::logs::tests: outside\n"), "{text}");
    let text = text_line(|| {
        let span = tracing::info_span!("batch", rows = 2u8);
        let _entered = span.enter();
        tracing::error!("inside");
    });
    assert!(text.ends_with("ERROR batch{rows=2}: tollgate_schemas::telemetry::logs::tests: inside\n"), "{text}");
}

#[test]
fn json_lines_are_flat_and_carry_the_request_fields() {
    let (text, line) = json_line(None, || {
        let span = tracing::info_span!(
            "request",
            request_id = "req-1",
            trace_id = tracing::field::Empty,
            key_alias = tracing::field::Empty
        );
        span.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
        span.record("key_alias", "checkout");
        let _entered = span.enter();
        let inner = tracing::info_span!("upstream_attempt", attempt = 2u32);
        let _inner = inner.enter();
        tracing::warn!(status = 503u16, "upstream attempt failed");
    });
    assert_eq!(line["message"], "upstream attempt failed");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["request_id"], "req-1");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["key_alias"], "checkout");
    assert_eq!(line["attempt"], 2);
    assert_eq!(line["status"], 503);
    assert_eq!(line["span"], "upstream_attempt");
    assert!(!text.contains('\u{1b}'));
}

#[test]
fn spans_only_traces_need_are_left_out_of_the_log_lines() {
    let (_, line) = json_line(Some(filter()), || {
        let span = tracing::info_span!("request", request_id = "req-2");
        let _entered = span.enter();
        let inner = tracing::info_span!(target: "tollgate_traces", "upstream_attempt", tollgate.attempt = 2u32);
        assert_eq!(super::super::TRACE_TARGET, "tollgate_traces");
        let _inner = inner.enter();
        tracing::warn!(status = 503u16, "upstream attempt failed");
    });
    assert_eq!(line["message"], "upstream attempt failed");
    assert_eq!(line["request_id"], "req-2");
    assert_eq!(line["span"], "request");
    assert_eq!(line.get("tollgate.attempt"), None);
}

#[test]
fn span_fields_recorded_late_are_appended_as_json() {
    let (_, line) = json_line(None, || {
        let span = tracing::info_span!(
            "request",
            key_alias = tracing::field::Empty,
            model = tracing::field::Empty,
            ratio = tracing::field::Empty,
            detail = tracing::field::Empty,
        );
        // Recorded after the span opened, one by one; one of them twice.
        span.record("key_alias", "quote\" \\ and \n newline </script>");
        span.record("model", "first");
        span.record("model", "second");
        span.record("ratio", f64::NAN);
        span.record("detail", tracing::field::debug(vec![1, 2]));
        let _entered = span.enter();
        tracing::warn!("inside");
    });
    assert_eq!(line["key_alias"], "quote\" \\ and \n newline </script>");
    assert_eq!(line["model"], "second");
    assert_eq!(line["ratio"], Value::Null);
    assert_eq!(line["detail"], "[1, 2]");
    assert_eq!(line["message"], "inside");
}

#[test]
fn a_span_without_fields_adds_nothing_but_its_name() {
    let (_, line) = json_line(None, || {
        let span = tracing::info_span!("quiet");
        let _entered = span.enter();
        tracing::warn!(n = 1u8, "inside");
    });
    assert_eq!(line["span"], "quiet");
    assert_eq!(line["n"], 1);
}
