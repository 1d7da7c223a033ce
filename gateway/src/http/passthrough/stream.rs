//! A streamed pass-through answer: its bytes passed on as they come, its server-sent events
//! read on the way for the usage they report, and the request metered once when the stream
//! ends, fails, goes silent past the deployment's `stream_idle_timeout`, or is dropped because
//! the client left (then `partial`). The usage chunk the gateway asked an OpenAI stream for,
//! when the client did not, is kept from the client (`UsageFilter`): then whole events are
//! passed on, not reads.

use super::{usage, Family};
use crate::limits::pricing::Tokens;
use crate::metering::recorder::{Outcome, UsageRecorder};
use crate::metering::stream::drain;
use crate::providers::ByteStream;
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

/// The provider's body, metered as it passes: read by a drain task on `tracker` (shutdown waits
/// for it; it stops as soon as the client's response is dropped), the request metered once,
/// when the body ends, fails, goes silent past the deployment's `stream_idle_timeout`, or when
/// the response is dropped (`partial`).
pub fn metered(
    body: ByteStream,
    recorder: UsageRecorder,
    metered: Metered,
    tracker: &tokio_util::task::TaskTracker,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    let upstream = drain::spawn(body, tracker);
    let Metered { family, picked, router, strip_usage } = metered;
    let idle = picked.deployment.stream_idle_timeout;
    let filter = strip_usage.then(UsageFilter::new);
    let started = std::time::Instant::now();
    let meter = Meter { recorder: Some(recorder), picked, router, started, scan: Scan::new(family), filter };
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
    use crate::metering::stream::tests::{Harness, Recorded};
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    const CHUNK: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
    const USAGE: &[u8] = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n";

    /// A provider that sends content chunks without end, counts the reads taken from it and
    /// notes when it is dropped.
    struct Endless {
        taken: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    impl Stream for Endless {
        type Item = Result<Bytes, crate::providers::StreamError>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.taken.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Bytes::from_static(CHUNK))))
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    fn metered_by(
        h: &Harness,
        body: ByteStream,
        sink: Arc<Recorded>,
        tracker: &tokio_util::task::TaskTracker,
    ) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
        let (recorder, picked) = h.start(sink);
        let meta = Metered { family: Family::OpenAi, picked, router: h.router(), strip_usage: false };
        metered(body, recorder, meta, tracker)
    }

    /// Lets the drain task run until it waits.
    async fn settle() {
        for _ in 0..64 {
            tokio::task::yield_now().await;
        }
    }

    /// The provider's reads reach the client byte for byte, in order, and the request is
    /// metered once, by the usage the stream reported.
    #[tokio::test]
    async fn a_pass_through_stream_is_passed_on_whole_and_metered_once() {
        let h = Harness::new().await;
        let sink = Arc::new(Recorded::default());
        let tracker = tokio_util::task::TaskTracker::new();
        let reads = std::iter::repeat_n(Bytes::from_static(CHUNK), 20)
            .chain([Bytes::from_static(USAGE), Bytes::from_static(b"data: [DONE]\n\n")]);
        let body: ByteStream = Box::pin(futures::stream::iter(reads.map(Ok)));
        let out: Vec<Bytes> = metered_by(&h, body, sink.clone(), &tracker).map(Result::unwrap).collect().await;
        let mut want = CHUNK.repeat(20);
        want.extend_from_slice(USAGE);
        want.extend_from_slice(b"data: [DONE]\n\n");
        assert_eq!(out.concat(), want);
        let events = std::mem::take(&mut *sink.0.lock().unwrap());
        assert_eq!(events.len(), 1, "one usage event per request");
        assert!(!events[0].partial && !events[0].estimated, "{:?}", events[0]);
        assert_eq!((events[0].prompt_tokens, events[0].completion_tokens), (2, 3));
    }

    /// The provider's body is read on the tracker's drain task, no further ahead of a client
    /// that does not read than the drain's bound; when the client hangs up, the request is
    /// metered once as `partial` and the provider's body is dropped.
    #[tokio::test]
    async fn the_body_is_read_ahead_within_the_drain_bound_and_released_on_hang_up() {
        let h = Harness::new().await;
        let sink = Arc::new(Recorded::default());
        let tracker = tokio_util::task::TaskTracker::new();
        let (taken, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let body: ByteStream = Box::pin(Endless { taken: taken.clone(), dropped: dropped.clone() });
        let mut stream = Box::pin(metered_by(&h, body, sink.clone(), &tracker));
        assert_eq!(stream.next().await.unwrap().unwrap(), CHUNK);
        settle().await;
        assert_eq!(tracker.len(), 1, "the body is read by a task on the tracker");
        assert_eq!(taken.load(Ordering::SeqCst), drain::QUEUE_CHUNKS + 1, "one read taken, the queue full");
        assert!(sink.0.lock().unwrap().is_empty(), "not metered while the stream runs");
        drop(stream);
        tracker.close();
        tracker.wait().await;
        assert!(dropped.load(Ordering::SeqCst), "the provider's body was dropped");
        let events = std::mem::take(&mut *sink.0.lock().unwrap());
        assert_eq!(events.len(), 1, "one usage event per request");
        assert!(events[0].partial, "{:?}", events[0]);
    }

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
