//! The log layer both binaries install: its level from `TOLLGATE_LOG`, its format from
//! `TOLLGATE_LOG_FORMAT`, and colours only on a terminal. It never writes secrets: what it
//! prints is what the code logs, and request logs carry the key's alias, never the key.
//!
//! A line written while a gateway request is served carries the request's fields
//! (`super::request`), as if logged in a span named `request`, outermost; they are read only
//! when a line is written.

use serde_json::{Map, Value};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Level, Subscriber};
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
        LogFormat::Text => base.with_ansi(terminal).event_format(TextLine).with_filter(filter()).boxed(),
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
        super::request::with_current(|fields| {
            fields.for_each(|name, value| {
                line.insert(name.into(), value.into());
            });
            line.insert("span".into(), "request".into());
        });
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

/// Text lines as `tracing-subscriber`'s default format writes them (`timestamp LEVEL
/// span{fields}: target: message fields`), the request's fields first, as a span named `request`.
struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let ansi = writer.has_ansi_escapes();
        let style = |code: &'static str| if ansi { code } else { "" };
        let (dim, bold, reset) = (style("\x1b[2m"), style("\x1b[1m"), style("\x1b[0m"));
        let meta = event.metadata();
        let colour = match *meta.level() {
            Level::ERROR => "\x1b[31m",
            Level::WARN => "\x1b[33m",
            Level::INFO => "\x1b[32m",
            Level::DEBUG => "\x1b[34m",
            Level::TRACE => "\x1b[35m",
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        write!(writer, "{dim}{now}{reset} {}{:>5}{reset} ", style(colour), meta.level().as_str())?;
        let mut in_span = false;
        super::request::with_current(|fields| {
            in_span = true;
            let mut result = write!(writer, "{bold}request{{{reset}");
            let mut separator = "";
            fields.for_each(|name, value| {
                result = result.and_then(|()| write!(writer, "{separator}{name}={value:?}"));
                separator = " ";
            });
            result.and_then(|()| write!(writer, "{bold}}}{reset}:"))
        })
        .transpose()?;
        for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
            in_span = true;
            write!(writer, "{bold}{}{reset}", span.name())?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>().filter(|f| !f.fields.is_empty()) {
                write!(writer, "{bold}{{{reset}{}{bold}}}{reset}", fields.fields)?;
            }
            write!(writer, ":")?;
        }
        if in_span {
            write!(writer, " ")?;
        }
        write!(writer, "{dim}{}:{reset} ", meta.target())?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
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
mod tests;
