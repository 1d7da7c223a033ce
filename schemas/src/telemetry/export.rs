//! The OTLP/HTTP exporter of one target: encodes a batch (`super::otlp`) and posts it with one
//! blocking HTTP client, built once on the export thread and reused (its connections kept
//! alive). Headers are the target's, then those of `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (else
//! `OTEL_EXPORTER_OTLP_HEADERS`), which win over the target's of the same name. Requests are
//! not compressed.

use super::batch::{ExportError, Exporter};
use super::otlp::{encode_request, EncodedTrace, Preamble};
use super::traces::OtlpTarget;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use std::io::Read;
use std::time::Duration;

/// Bytes of an answer read (then dropped) so its connection can be reused, at most.
const MAX_ANSWER: u64 = 64 * 1024;

/// Posts batches of spans to one target.
pub struct HttpExporter {
    client: reqwest::blocking::Client,
    url: String,
    preamble: Preamble,
}

impl HttpExporter {
    /// An exporter to `target`, with `extra` headers (from the environment, see the module)
    /// and a `timeout` for each request. Call it on the thread that exports.
    pub fn new(
        target: &OtlpTarget,
        extra: &[(String, String)],
        preamble: Preamble,
        timeout: Duration,
    ) -> Result<HttpExporter, String> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))));
        for (name, value) in target.headers.iter().chain(extra.iter().map(|(k, v)| (k, v))) {
            // As OpenTelemetry's exporters do, a header that is not valid HTTP is left out; its
            // value is never shown (it may be a credential).
            if let (Ok(name), Ok(mut value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value)) {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        let client = reqwest::blocking::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .build()
            .map_err(|e| format!("{}: cannot build the HTTP client: {e}", target.url))?;
        Ok(HttpExporter { client, url: target.url.clone(), preamble })
    }
}

impl Exporter for HttpExporter {
    fn export(&mut self, traces: &[EncodedTrace]) -> Result<(), ExportError> {
        let body = encode_request(&self.preamble, traces);
        let failed = |e: reqwest::Error| ExportError::Failed(format!("{}: {}", self.url, e.without_url()));
        let mut answer = self.client.post(&self.url).body(body).send().map_err(failed)?;
        let status = answer.status();
        let _ = std::io::copy(&mut (&mut answer).take(MAX_ANSWER), &mut std::io::sink());
        if status.is_success() {
            Ok(())
        } else {
            Err(ExportError::Failed(format!("{}: answered {status}", self.url)))
        }
    }
}

/// The headers of `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else of `OTEL_EXPORTER_OTLP_HEADERS`.
pub fn env_headers() -> Vec<(String, String)> {
    std::env::var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_HEADERS"))
        .map(|list| parse_list(&list))
        .unwrap_or_default()
}

/// A list of `key=value` pairs separated by commas, values percent-decoded, as the
/// OpenTelemetry variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_RESOURCE_ATTRIBUTES`) hold them:
/// pairs without a key or a value are left out.
pub fn parse_list(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), percent_decode(v.trim())))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect()
}

/// `%XX` sequences decoded; the text as it is when they do not make valid UTF-8.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests;
