//! The OpenTelemetry Collector of `deploy/otelcol` (built by `deploy/local/prereqs`), started on
//! loopback with OTLP/HTTP receivers and file exporters, and the spans it wrote, read back.
//!
//! Two receivers: `otlp` on the standard path (`/v1/traces`), and `otlp/langfuse` on Langfuse's
//! (`/api/public/otel/v1/traces`), each to a file of its own.

use crate::services::free_port;
use crate::unique;
use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The collector binary: `TOLLGATE_OTELCOL`, else where `deploy/local/prereqs` builds it.
pub fn otelcol_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TOLLGATE_OTELCOL") {
        return Ok(PathBuf::from(path));
    }
    let cache = std::env::var_os("TOLLGATE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tollgate")))
        .context("neither TOLLGATE_CACHE nor HOME is set")?;
    let path = cache.join("otelcol/tollgate-otelcol");
    if !path.exists() {
        bail!("{} is missing: run deploy/local/prereqs", path.display());
    }
    Ok(path)
}

/// A running collector; killed when dropped.
pub struct Collector {
    _child: Child,
    /// `http://127.0.0.1:<port>`: the base of `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// The same receiver's twin serving Langfuse's OTLP path: a `LANGFUSE_HOST`.
    pub langfuse_host: String,
    pub spans_file: PathBuf,
    pub langfuse_file: PathBuf,
    pub log_path: PathBuf,
}

impl Collector {
    pub async fn start(dir: &Path) -> Result<Collector> {
        let (port, langfuse_port) = (free_port()?, free_port()?);
        let spans_file = dir.join(unique("spans-") + ".json");
        let langfuse_file = dir.join(unique("langfuse-spans-") + ".json");
        let config = format!(
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n  \
             otlp/langfuse:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{langfuse_port}\n        \
             traces_url_path: /api/public/otel/v1/traces\n\
             exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n  \
             file/langfuse:\n    path: {}\n    flush_interval: 100ms\n\
             service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    \
             traces:\n      receivers: [otlp]\n      exporters: [file]\n    \
             traces/langfuse:\n      receivers: [otlp/langfuse]\n      exporters: [file/langfuse]\n",
            spans_file.display(),
            langfuse_file.display()
        );
        let config_path = dir.join(unique("otelcol-") + ".yaml");
        std::fs::write(&config_path, config)?;
        let log_path = dir.join(unique("otelcol-") + ".log");
        let child = Command::new(otelcol_binary()?)
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log_path)?))
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the collector")?;
        let collector = Collector {
            _child: child,
            endpoint: format!("http://127.0.0.1:{port}"),
            langfuse_host: format!("http://127.0.0.1:{langfuse_port}"),
            spans_file,
            langfuse_file,
            log_path,
        };
        let ready = crate::eventually("the collector to listen", Duration::from_secs(30), || async {
            let up = |p| async move { tokio::net::TcpStream::connect(("127.0.0.1", p)).await.is_ok() };
            Ok((up(port).await && up(langfuse_port).await).then_some(()))
        })
        .await;
        if let Err(e) = ready {
            bail!("{e}; its log:\n{}", std::fs::read_to_string(&collector.log_path).unwrap_or_default());
        }
        Ok(collector)
    }
}

/// One exported span, its attributes flattened to JSON values (OTLP/JSON writes 64-bit
/// integers as strings: they are numbers here).
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: i64,
    pub status_code: i64,
    pub attributes: Map<String, Value>,
}

impl ExportedSpan {
    pub fn attr(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }
}

fn flatten(value: &Value) -> Value {
    let Some((kind, v)) = value.as_object().and_then(|o| o.iter().next()) else { return Value::Null };
    match kind.as_str() {
        "intValue" => v.as_str().and_then(|s| s.parse::<i64>().ok()).map_or_else(|| v.clone(), Value::from),
        _ => v.clone(),
    }
}

fn attributes(list: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for kv in list.as_array().into_iter().flatten() {
        if let Some(key) = kv["key"].as_str() {
            out.insert(key.to_owned(), flatten(&kv["value"]));
        }
    }
    out
}

/// The spans in a file the file exporter wrote (one OTLP/JSON export request per line).
pub fn read_spans(file: &Path) -> Result<Vec<ExportedSpan>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut spans = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(request) = serde_json::from_str::<Value>(line) else { continue }; // a line being written
        for rs in request["resourceSpans"].as_array().into_iter().flatten() {
            let resource = attributes(&rs["resource"]["attributes"]);
            let service = resource.get("service.name").and_then(Value::as_str).unwrap_or_default().to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                    spans.push(ExportedSpan {
                        service: service.clone(),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent_span_id: text("parentSpanId"),
                        name: text("name"),
                        kind: s["kind"].as_i64().unwrap_or_default(),
                        status_code: s["status"]["code"].as_i64().unwrap_or_default(),
                        attributes: attributes(&s["attributes"]),
                    });
                }
            }
        }
    }
    Ok(spans)
}
