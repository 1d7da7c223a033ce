//! A streamed pass-through answer: its bytes passed on as they come, its server-sent events
//! read on the way for the usage they report, and the request metered once when the stream
//! ends, fails, goes silent past the deployment's `stream_idle_timeout`, or is dropped because
//! the client left (then `partial`). The usage chunk the gateway asked an OpenAI stream for,
//! when the client did not, is kept from the client (`UsageFilter`): then whole events are
//! passed on, not reads.

use super::{usage, Family};
use crate::limits::pricing::Tokens;
use crate::metering::recorder::{Outcome, UsageRecorder};
use crate::routing::router::{PickedDeployment, Router};
use crate::sse::{EventBuffer, EventTooLarge, Fed};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::sync::Arc;
use tollgate_schemas::limits::MAX_TOKENS_PER_REQUEST;

/// The longest event line read for usage; longer lines pass on unread.
const MAX_LINE_BYTES: usize = 1 << 20;

/// The usage a stream's events reported so far.
struct Scan {
    family: Family,
    /// The unfinished last line of what has passed.
    line: Vec<u8>,
    /// A line beyond `MAX_LINE_BYTES` is being skipped to its end.
    skipping: bool,
    tokens: Option<Tokens>,
}

impl Scan {
    fn new(family: Family) -> Scan {
        Scan { family, line: Vec::new(), skipping: false, tokens: None }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.push(&rest[..end]);
            if !std::mem::take(&mut self.skipping) {
                let line = std::mem::take(&mut self.line);
                if let Some(data) = line.strip_prefix(b"data:") {
                    usage::streamed(self.family, data.trim_ascii(), &mut self.tokens);
                }
            }
            self.line.clear();
            rest = &rest[end + 1..];
        }
        self.push(rest);
    }

    fn push(&mut self, part: &[u8]) {
        if self.skipping || self.line.len() + part.len() > MAX_LINE_BYTES {
            self.skipping = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(part);
        }
    }
}

/// Keeps usage-only chunks (`"choices": []`) from the client, passing every other event on
/// whole, in order.
struct UsageFilter {
    events: EventBuffer,
}

impl UsageFilter {
    fn new() -> UsageFilter {
        UsageFilter { events: EventBuffer::new(crate::sse::MAX_EVENT_BYTES) }
    }

    /// The complete events of what has come so far, without usage-only chunks.
    fn pass(&mut self, bytes: &[u8]) -> Result<Bytes, EventTooLarge> {
        let mut out = BytesMut::with_capacity(bytes.len());
        self.events.feed(bytes, |event| {
            // Only an event naming usage is parsed.
            let usage_only = memchr::memmem::find(event, b"\"usage\"").is_some()
                && crate::metering::stream::is_usage_only_chunk(&crate::sse::parse_event(event).data);
            if !usage_only {
                out.extend_from_slice(event);
            }
            Fed::Next
        })?;
        Ok(out.freeze())
    }

    /// What is left when the provider's body ends: an event without its blank line.
    fn rest(&mut self) -> Bytes {
        self.events.take_rest().freeze()
    }
}

/// What a stream is metered with, besides its recorder.
pub struct Metered {
    pub family: Family,
    /// The deployment that answered: in flight until the stream ends, then its latency and
    /// tokens recorded for routing.
    pub picked: PickedDeployment,
    pub router: Arc<Router>,
    /// The gateway asked for the usage chunk; the client did not.
    pub strip_usage: bool,
}

/// The recorder a stream finishes, with what it reported.
struct Meter {
    recorder: Option<UsageRecorder>,
    picked: PickedDeployment,
    router: Arc<Router>,
    started: std::time::Instant,
    scan: Scan,
    filter: Option<UsageFilter>,
}

impl Meter {
    fn finish(&mut self, partial: bool) {
        let Some(recorder) = self.recorder.take() else { return };
        let tokens = self.scan.tokens.filter(|t| t.largest() <= MAX_TOKENS_PER_REQUEST);
        if !partial {
            let counted = tokens.map_or(0, |t| t.prompt.saturating_add(t.completion));
            self.router.record_success(&self.picked, self.started.elapsed(), counted);
        }
        let deployment = &self.picked.deployment;
        recorder.finish(Outcome {
            status: 200,
            estimated: tokens.is_none(),
            tokens: tokens.unwrap_or_default(),
            served_model: Some(deployment.upstream_model.clone()),
            partial,
            deployment: Some(deployment),
            ..Outcome::default()
        });
    }

    /// What of `bytes` goes to the client.
    fn pass(&mut self, bytes: Bytes) -> Result<Bytes, EventTooLarge> {
        self.scan.feed(&bytes);
        match self.filter.as_mut() {
            Some(filter) => filter.pass(&bytes),
            None => Ok(bytes),
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(true);
    }
}

/// The provider's stream, metered as it passes.
pub fn metered(
    response: reqwest::Response,
    recorder: UsageRecorder,
    metered: Metered,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    let Metered { family, picked, router, strip_usage } = metered;
    let idle = picked.deployment.stream_idle_timeout;
    let filter = strip_usage.then(UsageFilter::new);
    let started = std::time::Instant::now();
    let meter = Meter { recorder: Some(recorder), picked, router, started, scan: Scan::new(family), filter };
    let upstream = Box::pin(response.bytes_stream());
    let cut = || actix_web::error::ErrorBadGateway("the provider's stream was cut");
    futures::stream::unfold(Some((upstream, meter)), move |state| async move {
        let (mut upstream, mut meter) = state?;
        match tokio::time::timeout(idle, upstream.next()).await {
            Ok(Some(Ok(bytes))) => match meter.pass(bytes) {
                Ok(out) => Some((Ok(out), Some((upstream, meter)))),
                Err(_) => {
                    meter.finish(true);
                    Some((Err(cut()), None))
                }
            },
            Ok(Some(Err(_))) | Err(_) => {
                meter.finish(true);
                Some((Err(cut()), None))
            }
            Ok(None) => {
                meter.finish(false);
                let rest = meter.filter.as_mut().map(UsageFilter::rest).filter(|r| !r.is_empty());
                rest.map(|r| (Ok(r), None))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_across_chunk_boundaries() {
        let mut m = Scan::new(Family::OpenAi);
        m.feed(b"data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"usa");
        m.feed(b"ge\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n");
        assert_eq!(m.tokens.map(|t| (t.prompt, t.completion)), Some((2, 3)));
    }

    #[test]
    fn the_usage_chunk_asked_for_is_kept_from_the_client_and_still_metered() {
        let mut f = UsageFilter::new();
        let mut out = f.pass(b"data: {\"choices\":[{\"delta\":{}}]}\n\ndata: {\"choices\":[],\"usa").unwrap().to_vec();
        out.extend_from_slice(&f.pass(b"ge\":{\"prompt_tokens\":2}}\n\ndata: [DONE]\n\n").unwrap());
        out.extend_from_slice(&f.rest());
        assert_eq!(out, b"data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n");
        // A content chunk that names usage, and an unfinished last event, are kept.
        let mut f = UsageFilter::new();
        let kept = b"data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n";
        assert_eq!(f.pass(kept).unwrap().as_ref(), kept);
        assert!(f.pass(b"data: {\"choices\":[]").unwrap().is_empty());
        assert_eq!(f.rest().as_ref(), b"data: {\"choices\":[]");
    }

    #[test]
    fn an_overlong_line_is_skipped_not_kept() {
        let mut m = Scan::new(Family::Gemini);
        m.feed(b"data: {\"usageMetadata\":{\"promptTokenCount\":1,\"x\":\"");
        m.feed(&vec![b'a'; MAX_LINE_BYTES]);
        assert!(m.line.is_empty() && m.skipping);
        m.feed(b"\"}}\ndata: {\"usageMetadata\":{\"promptTokenCount\":7}}\n");
        assert_eq!(m.tokens.map(|t| t.prompt), Some(7));
    }
}
