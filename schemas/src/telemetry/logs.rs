//! The log layer both binaries install: its level from `TOLLGATE_LOG`, its format from
//! `TOLLGATE_LOG_FORMAT`, and colours only on a terminal. It never writes secrets: what it
//! prints is what the code logs, and request logs carry the key's alias, never the key.

use std::io::IsTerminal;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// `text` (human-readable) or `json` (one object per line, with the fields of the spans the
/// line was logged in: `request_id`, `trace_id`, `key_alias` on request logs).
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
/// `info,tollgate_gateway=debug`), else `RUST_LOG`, else `info`.
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("TOLLGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The log layer, writing to stderr. ANSI colours only in text written to a terminal.
pub(super) fn layer() -> Box<dyn Layer<Registry> + Send + Sync> {
    let terminal = std::io::stderr().is_terminal();
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_span_events(FmtSpan::NONE);
    match LogFormat::from_env(terminal) {
        LogFormat::Json => base
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .with_filter(filter())
            .boxed(),
        LogFormat::Text => base.with_ansi(terminal).with_filter(filter()).boxed(),
    }
}
