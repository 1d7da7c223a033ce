//! The log layer both binaries install: its level from `TOLLGATE_LOG`, its format from
//! `TOLLGATE_LOG_FORMAT`, and colours only on a terminal. It never writes secrets: what it
//! prints is what the code logs, and request logs carry the key's alias, never the key.

use serde_json::{Map, Value};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FmtSpan, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// `text` (human-readable) or `json` (one flat object per line: `timestamp`, `level`, `target`,
/// `message`, the fields of the spans the line was logged in — `request_id`, `trace_id`,
/// `key_alias` on request logs — and the line's own fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `TOLLGATE_LOG_FORMAT` when it says `json` or `text`; otherwise JSON, unless stderr is a
    /// terminal (someone reading, not a log collector).
    pub fn from_env(stderr_is_terminal: bool) -> LogFormat {
        match std::env::var("TOLLGATE_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            Ok("text") => LogFormat::Text,
            _ if stderr_is_terminal => LogFormat::Text,
            _ => LogFormat::Json,
        }
    }
}

/// The filter of the log layer: `TOLLGATE_LOG` (an `EnvFilter` directive such as `warn` or
/// `info,tollgate_gateway=debug`), else `RUST_LOG`, else `info`; never the spans only traces
/// need (`super::TRACE_TARGET`: their fields would be formatted for nothing).
fn filter() -> EnvFilter {
    let filter = EnvFilter::try_from_env("TOLLGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    match format!("{}=off", super::TRACE_TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// The log layer, writing to stderr. ANSI colours only in text written to a terminal.
pub(super) fn layer() -> Box<dyn Layer<Registry> + Send + Sync> {
    let terminal = std::io::stderr().is_terminal();
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_span_events(FmtSpan::NONE);
    match LogFormat::from_env(terminal) {
        LogFormat::Json => {
            base.with_ansi(false).fmt_fields(SpanJson).event_format(FlatJson).with_filter(filter()).boxed()
        }
        LogFormat::Text => base.with_ansi(terminal).with_filter(filter()).boxed(),
    }
}

/// A span's fields, kept as one JSON object for the lines logged in it. A field recorded after
/// the span opened (`Span::record`: a request's key alias, team, model, trace id) is appended
/// to the object's text, never parsed and written again (`JsonFields` of `tracing-subscriber`
/// does that on every record); a field recorded twice appears twice, and the last one is read.
struct SpanJson;

impl<'writer> FormatFields<'writer> for SpanJson {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> std::fmt::Result {
        let mut pairs = JsonPairs::default();
        fields.record(&mut pairs);
        write!(writer, "{{{}}}", pairs.text())
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &Record<'_>) -> std::fmt::Result {
        let mut pairs = JsonPairs::default();
        fields.record(&mut pairs);
        if pairs.0.is_empty() {
            return Ok(());
        }
        let object = &mut current.fields;
        if object.len() < 2 || !object.ends_with('}') {
            *object = format!("{{{}}}", pairs.text());
        } else {
            object.pop();
            if object.len() > 1 {
                object.push(',');
            }
            object.push_str(pairs.text());
            object.push('}');
        }
        Ok(())
    }
}

/// Fields as `"name":value` pairs of a JSON object, comma-separated.
#[derive(Default)]
struct JsonPairs(Vec<u8>);

impl JsonPairs {
    fn text(&self) -> &str {
        // serde_json writes UTF-8 only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    fn pair(&mut self, field: &Field, value: impl serde::Serialize) {
        let mark = self.0.len();
        if mark > 0 {
            self.0.push(b',');
        }
        let written = serde_json::to_writer(&mut self.0, field.name()).and_then(|()| {
            self.0.push(b':');
            serde_json::to_writer(&mut self.0, &value)
        });
        if written.is_err() {
            self.0.truncate(mark);
        }
    }
}

impl Visit for JsonPairs {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Not a number and the infinities are not JSON: `null`, as serde_json writes them.
        self.pair(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.pair(field, format!("{value:?}"));
    }
}

/// One JSON object per line, flat: the fields of every enclosing span (outermost first, inner
/// ones overriding), then the event's own. Span fields are kept as JSON by [`SpanJson`].
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.insert("timestamp".into(), now.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
            let extensions = span.extensions();
            let fields = extensions.get::<FormattedFields<N>>().map(|f| f.fields.as_str()).unwrap_or_default();
            if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                line.extend(fields);
            }
            line.insert("span".into(), span.name().into());
        }
        event.record(&mut EventFields(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields into the line.
struct EventFields<'a>(&'a mut Map<String, Value>);

impl Visit for EventFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
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
}
