//! Streams a provider's server-sent events to the client byte for byte, looking inside each
//! event only as far as metering needs: the usage of the final chunk, the first token's time,
//! and the amount of text (to estimate tokens when a provider reports none).
//!
//! The usage event is published exactly once: when the stream ends, when it fails, when it
//! stalls past the idle timeout, or — through `Drop` — when the client goes away mid-stream.
//! A stream that did not finish is billed for what was sent and marked `partial`.

use crate::openai::{ResponseUsage, Usage};
use crate::pricing::Tokens;
use crate::router::{Lease, Router};
use crate::usage::{Outcome, UsageRecorder};
use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type Upstream = crate::providers::ByteStream;

pub struct MeteredStream {
    upstream: Upstream,
    recorder: Option<UsageRecorder>,
    router: Arc<Router>,
    lease: Option<Lease>,
    buffer: BytesMut,
    hide_usage_chunk: bool,
    usage: Option<Usage>,
    served_model: Option<String>,
    /// Generated text seen so far, for counting tokens if the provider never reports usage.
    streamed_text: String,
    request: Arc<crate::openai::ProxyRequest>,
    saw_done: bool,
    idle: Duration,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    sent_at: Instant,
    first_token_seen: bool,
    model_label: String,
    finished: bool,
}

impl MeteredStream {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        upstream: Upstream,
        recorder: UsageRecorder,
        router: Arc<Router>,
        lease: Lease,
        hide_usage_chunk: bool,
        request: Arc<crate::openai::ProxyRequest>,
        sent_at: Instant,
        model_label: String,
    ) -> MeteredStream {
        let idle = lease.deployment.stream_idle_timeout;
        MeteredStream {
            upstream,
            recorder: Some(recorder),
            router,
            lease: Some(lease),
            buffer: BytesMut::new(),
            hide_usage_chunk,
            usage: None,
            served_model: None,
            streamed_text: String::new(),
            request,
            saw_done: false,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            sent_at,
            first_token_seen: false,
            model_label,
            finished: false,
        }
    }

    /// Moves every complete event out of the buffer, inspecting each; returns the bytes to send.
    fn drain_events(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        while let Some(end) = find_event_end(&self.buffer) {
            let event = self.buffer.split_to(end);
            if self.inspect(&event) {
                out.extend_from_slice(&event);
            }
        }
        out.freeze()
    }

    /// Reads one event; returns whether it goes to the client.
    fn inspect(&mut self, event: &[u8]) -> bool {
        let Some(data) = event_data(event) else { return true };
        if data == b"[DONE]" {
            self.saw_done = true;
            return true;
        }
        if !self.first_token_seen && contains(data, b"\"content\"") {
            self.first_token_seen = true;
            metrics::histogram!("tollgate_time_to_first_token_seconds", "model" => self.model_label.clone())
                .record(self.sent_at.elapsed().as_secs_f64());
        }
        let mentions_usage = contains(data, b"\"usage\"");
        if mentions_usage || self.served_model.is_none() {
            if let Ok(parsed) = serde_json::from_slice::<ResponseUsage>(data) {
                if self.served_model.is_none() {
                    self.served_model = parsed.model().map(str::to_owned);
                }
                if let Some(u) = parsed.usage() {
                    self.usage = Some(u);
                    if self.hide_usage_chunk && is_usage_only_chunk(data) {
                        return false;
                    }
                }
            }
        }
        if self.usage.is_none() {
            crate::tokens::collect_generated_text(data, &mut self.streamed_text);
        }
        true
    }

    fn finish(&mut self, partial: bool, error_type: Option<&str>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let (tokens, estimated) = match self.usage {
            Some(u) => (u.tokens(), false),
            None => (
                Tokens {
                    prompt: self.request.prompt_tokens_estimate(),
                    completion: crate::tokens::count(&self.streamed_text),
                    cached: 0,
                },
                true,
            ),
        };
        let lease = self.lease.take();
        if let Some(lease) = &lease {
            if !partial {
                self.router.record_success(lease, self.sent_at.elapsed(), tokens.prompt + tokens.completion);
            }
        }
        if let Some(recorder) = self.recorder.take() {
            recorder.finish(Outcome {
                status: 200,
                error_type,
                tokens,
                served_model: self.served_model.take(),
                partial,
                estimated,
                deployment: lease.as_ref().map(|l| l.deployment.as_ref()),
            });
        }
    }
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.as_mut().get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let deadline = tokio::time::Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(deadline);
                    this.buffer.extend_from_slice(&chunk);
                    let out = this.drain_events();
                    if this.saw_done {
                        // `[DONE]` is the last event: end the client's stream now rather than wait
                        // for the provider to close its body.
                        this.finish(false, None);
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                    if this.finished {
                        return Poll::Ready(None);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %crate::providers::classify(&e), "upstream stream failed");
                    this.finish(true, Some("upstream_stream_error"));
                    return Poll::Ready(Some(Ok(error_event(
                        "the upstream provider's stream failed",
                        "upstream_error",
                    ))));
                }
                Poll::Ready(None) => {
                    let rest = this.buffer.split().freeze();
                    let complete = this.saw_done || this.usage.is_some();
                    this.finish(!complete, (!complete).then_some("upstream_stream_incomplete"));
                    return if rest.is_empty() { Poll::Ready(None) } else { Poll::Ready(Some(Ok(rest))) };
                }
                Poll::Pending => {
                    if this.idle_timer.as_mut().poll(cx).is_ready() {
                        this.finish(true, Some("stream_idle_timeout"));
                        let message = format!("the upstream provider sent nothing for {} ms", this.idle.as_millis());
                        return Poll::Ready(Some(Ok(error_event(&message, "upstream_timeout"))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        // The client went away mid-stream: bill what was sent, mark it partial.
        self.finish(true, Some("client_disconnected"));
    }
}

/// An SSE event carrying an OpenAI error envelope (SDKs raise it as an API error).
fn error_event(message: &str, code: &str) -> Bytes {
    let body = serde_json::json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}});
    Bytes::from(format!("data: {body}\n\n"))
}

/// End (exclusive) of the first complete event: after a blank line (`\n\n` or `\r\n\r\n`).
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The payload of the event's `data:` line (single-line data, as LLM providers send).
fn event_data(event: &[u8]) -> Option<&[u8]> {
    event.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.strip_prefix(b"data:").map(|d| d.trim_ascii())
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A chat chunk that only carries usage (`"choices": []`), as `include_usage` produces.
fn is_usage_only_chunk(data: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Chunk {
        choices: Option<Vec<serde::de::IgnoredAny>>,
    }
    serde_json::from_slice::<Chunk>(data).is_ok_and(|c| c.choices.is_some_and(|ch| ch.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_on_blank_lines() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(find_event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(find_event_end(b"data: a\n"), None);
        assert_eq!(event_data(b"event: x\ndata: {\"a\":1}\n\n"), Some(&b"{\"a\":1}"[..]));
        assert_eq!(event_data(b": comment\n\n"), None);
    }

    #[test]
    fn recognises_the_usage_only_chunk() {
        assert!(is_usage_only_chunk(br#"{"choices":[],"usage":{"prompt_tokens":1}}"#));
        assert!(!is_usage_only_chunk(br#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#));
    }
}
