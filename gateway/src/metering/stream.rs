//! Streams a provider's server-sent events to the client byte for byte, looking inside each
//! event only as far as metering needs: the usage of the final chunk, the first token's time,
//! and the amount of text (to estimate tokens when a provider reports none).
//!
//! The usage event is published exactly once: when the stream ends, when it fails, when it
//! stalls past the idle timeout, when it reaches its deadline (`stream_max_duration`), when the
//! provider sends an event larger than [`MAX_EVENT_BYTES`], or — through `Drop` — when the
//! client goes away mid-stream. A stream that did not finish is billed for what was sent and
//! marked `partial`. Nothing here grows with the stream's length: one event is buffered at a
//! time, and the text kept for counting tokens is bounded ([`crate::metering::tokens::TextTally`]).

use crate::config::DisconnectPolicy;
use crate::http::wire::{ResponseUsage, Usage};
use crate::limits::pricing::Tokens;
use crate::metering::recorder::{Outcome, UsageRecorder};
use crate::metering::tokens::TextTally;
use crate::providers::StreamError;
use crate::routing::router::{PickedDeployment, Router};
use crate::sse::{EventBuffer, EventTooLarge, Fed, MAX_EVENT_BYTES};
use bytes::{Bytes, BytesMut};
use futures::Stream;
use memchr::memmem::Finder;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type Upstream = crate::providers::ByteStream;

pub struct MeteredStream {
    upstream: Upstream,
    recorder: Option<UsageRecorder>,
    router: Arc<Router>,
    picked: Option<PickedDeployment>,
    events: EventBuffer,
    hide_usage_chunk: bool,
    usage: Option<Usage>,
    served_model: Option<String>,
    /// Generated text seen so far (bounded), for counting tokens if the provider never reports
    /// usage.
    streamed_text: TextTally,
    request: Arc<crate::http::wire::ProxyRequest>,
    saw_done: bool,
    idle: Duration,
    /// Fires at the idle timeout or at the deadline, whichever comes first. It is set when the
    /// stream starts and moved only when it fires early (`last_read` moved on meanwhile):
    /// resetting a timer on every read costs more than the read.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// When the provider last sent something.
    last_read: tokio::time::Instant,
    /// Output read but not yet handed to the client: reads that are ready together go out as
    /// one write ([`MeteredStream::poll_next`]).
    pending: BytesMut,
    /// The stream let the runtime run once with output pending, for more reads to arrive.
    deferred: bool,
    /// Output was handed to the client already: the first is never held back (time to first
    /// token).
    handed_on: bool,
    /// The provider's body is read by a task of its own ([`drain`]): the reads ready together are
    /// all in its queue when the stream is polled, so output is never held back for more.
    drained: bool,
    /// Events that end the metering (usage, `[DONE]`) wait in `events` until the output read
    /// before them was written: a client that hung up is noticed by that write, and billed as
    /// one that hung up, by the policy, rather than as one that received the whole stream.
    ending_kept: bool,
    /// When the stream ends however steadily the provider sends (`stream_max_duration` after it
    /// started).
    deadline: tokio::time::Instant,
    max_duration: Duration,
    sent_at: Instant,
    first_token_seen: bool,
    model_label: String,
    finished: bool,
    /// The end of a finished stream waits for its usage event to be durable as
    /// `spool.answer_after` asks (docs/design.md §3.6): the last output is held until then.
    written: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Where the rest of a stream whose client hung up is read to its end, under policy
    /// `finish_upstream` (`billing.on_client_disconnect`).
    background: Option<tokio_util::task::TaskTracker>,
    /// The answer assembled for the response cache, kept only if the stream ends cleanly.
    capture: Option<crate::cache::assemble::Capture>,
}

static CONTENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\""));
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));

impl MeteredStream {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        upstream: Upstream,
        recorder: UsageRecorder,
        router: Arc<Router>,
        picked: PickedDeployment,
        hide_usage_chunk: bool,
        request: Arc<crate::http::wire::ProxyRequest>,
        sent_at: Instant,
        model_label: String,
    ) -> MeteredStream {
        let idle = picked.deployment.stream_idle_timeout;
        let max_duration = picked.deployment.stream_max_duration;
        let now = tokio::time::Instant::now();
        // Durations are validated at start-up (at most a day); the fallback is never taken.
        let deadline = now.checked_add(max_duration).unwrap_or(now);
        MeteredStream {
            upstream,
            recorder: Some(recorder),
            router,
            picked: Some(picked),
            events: EventBuffer::new(MAX_EVENT_BYTES),
            hide_usage_chunk,
            usage: None,
            served_model: None,
            streamed_text: TextTally::default(),
            request,
            saw_done: false,
            idle,
            timer: Box::pin(tokio::time::sleep_until(now.checked_add(idle).unwrap_or(now).min(deadline))),
            last_read: now,
            pending: BytesMut::new(),
            deferred: false,
            handed_on: false,
            drained: false,
            ending_kept: false,
            deadline,
            max_duration,
            sent_at,
            first_token_seen: false,
            model_label,
            finished: false,
            written: None,
            background: None,
            capture: None,
        }
    }

    /// Keeps the answer in the response cache once the stream ends cleanly.
    pub fn cached_by(mut self, capture: Option<crate::cache::assemble::Capture>) -> MeteredStream {
        self.capture = capture;
        self
    }

    /// Under policy `finish_upstream`, the rest of a stream whose client hung up is read to its
    /// end on `tracker` (shutdown waits for it), so the provider's usage is charged.
    pub fn finish_in(mut self, tracker: tokio_util::task::TaskTracker) -> MeteredStream {
        self.background = Some(tracker);
        self
    }

    /// Reads the provider's body on a task of its own on `tracker` ([`drain`]), so the reads
    /// that are ready together cost the client's connection one poll, not one each.
    pub fn drained_on(mut self, tracker: &tokio_util::task::TaskTracker) -> MeteredStream {
        let upstream = std::mem::replace(&mut self.upstream, Box::pin(futures::stream::empty()));
        self.upstream = drain::spawn(upstream, tracker);
        self.drained = true;
        self
    }

    /// Moves what is left of the stream into a new one (this one is then spent): to be read to
    /// its end in the background.
    fn detach(&mut self) -> MeteredStream {
        let now = tokio::time::Instant::now();
        let rest = MeteredStream {
            upstream: std::mem::replace(&mut self.upstream, Box::pin(futures::stream::empty())),
            recorder: self.recorder.take(),
            router: self.router.clone(),
            picked: self.picked.take(),
            events: std::mem::replace(&mut self.events, EventBuffer::new(MAX_EVENT_BYTES)),
            hide_usage_chunk: self.hide_usage_chunk,
            usage: self.usage.take(),
            served_model: self.served_model.take(),
            streamed_text: std::mem::take(&mut self.streamed_text),
            request: self.request.clone(),
            saw_done: self.saw_done,
            idle: self.idle,
            timer: Box::pin(tokio::time::sleep_until(now.checked_add(self.idle).unwrap_or(now).min(self.deadline))),
            last_read: now,
            pending: BytesMut::new(),
            deferred: false,
            handed_on: false,
            drained: self.drained,
            ending_kept: self.ending_kept,
            deadline: self.deadline,
            max_duration: self.max_duration,
            sent_at: self.sent_at,
            first_token_seen: self.first_token_seen,
            model_label: self.model_label.clone(),
            finished: false,
            written: None,
            background: None,
            // The client hung up: what it did not receive is not kept.
            capture: None,
        };
        self.finished = true;
        rest
    }

    /// Takes one read of the provider's stream: inspects each complete event, up to `[DONE]`,
    /// and adds those that go to the client to `pending`. Returns the oversized event that
    /// stopped it, if one did.
    fn take_read(&mut self, chunk: &[u8]) -> Option<EventTooLarge> {
        let mut events = std::mem::replace(&mut self.events, EventBuffer::new(MAX_EVENT_BYTES));
        let mut out = std::mem::take(&mut self.pending);
        let fed = events.feed(chunk, |event| {
            // Each event is looked into once: its data line found, and `"usage"` looked for.
            let data = event_data(event);
            let mentions_usage = data.is_some_and(|d| USAGE.find(d).is_some());
            if !out.is_empty() && (mentions_usage || data == Some(b"[DONE]".as_slice())) {
                // It ends the metering (`[DONE]`, or a chunk that may carry usage).
                self.ending_kept = true;
                return Fed::Keep;
            }
            if self.inspect(data, mentions_usage) {
                out.extend_from_slice(event);
            }
            if self.saw_done {
                Fed::Stop
            } else {
                Fed::Next
            }
        });
        self.events = events;
        self.pending = out;
        fed.err()
    }

    /// Reads one event (its data line, and whether that names `"usage"`); returns whether it
    /// goes to the client.
    fn inspect(&mut self, data: Option<&[u8]>, mentions_usage: bool) -> bool {
        let Some(data) = data else { return true };
        if data == b"[DONE]" {
            self.saw_done = true;
            return true;
        }
        if let Some(capture) = self.capture.as_mut() {
            capture.feed(data);
        }
        if !self.first_token_seen && CONTENT.find(data).is_some() {
            self.first_token_seen = true;
            let after = self.sent_at.elapsed();
            metrics::histogram!("tollgate_time_to_first_token_seconds", "model" => self.model_label.clone())
                .record(after.as_secs_f64());
            if let Some(r) = self.recorder.as_mut() {
                r.first_token(after);
            }
        }
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
            crate::metering::tokens::collect_generated_text(data, &mut self.streamed_text);
        }
        true
    }

    fn finish(&mut self, partial: bool, error_type: Option<&str>) {
        if self.finished {
            return;
        }
        self.finished = true;
        // A client that hung up under `charge_delivered` pays for what it received only.
        let delivered_only = partial
            && self.recorder.as_ref().is_some_and(|r| r.disconnect_policy() == DisconnectPolicy::ChargeDelivered)
            && error_type == Some("client_disconnected");
        let (tokens, estimated) = match self.usage {
            Some(u) => (u.tokens(), false),
            None => (
                Tokens {
                    prompt: if delivered_only { 0 } else { self.request.prompt_tokens_estimate() },
                    completion: self.streamed_text.tokens(),
                    ..Tokens::default()
                },
                true,
            ),
        };
        let picked = self.picked.take();
        if let Some(picked) = &picked {
            if !partial {
                self.router.record_success(picked, self.sent_at.elapsed(), tokens.prompt + tokens.completion);
            }
        }
        // Only a stream that ended cleanly, with the provider's usage, is kept.
        let capture = self.capture.take().filter(|_| !partial && error_type.is_none() && !estimated);
        let served_model = self.served_model.take();
        if let Some(recorder) = self.recorder.take() {
            let (charged, written) = recorder.finish_answer(Outcome {
                status: 200,
                error_type,
                tokens,
                served_model: served_model.clone(),
                partial,
                estimated,
                deployment: picked.as_ref().map(|l| l.deployment.as_ref()),
            });
            let written = written.into_wait();
            // The end of the stream also waits for the entry to be kept (bounded by the
            // cache's own timeout), so the same request asked next is a hit.
            self.written = match capture.and_then(|c| c.store(charged, tokens, served_model)) {
                Some(store) => Some(Box::pin(async move {
                    if let Some(written) = written {
                        written.await;
                    }
                    store.await;
                })),
                None => written,
            };
        }
    }

    /// Ends a stream that reached its deadline: bills what was sent, tells the client.
    fn expire(&mut self) -> Bytes {
        self.finish(true, Some("stream_duration_exceeded"));
        let message = format!(
            "the upstream provider's stream exceeded the longest allowed duration ({} s)",
            self.max_duration.as_secs_f64()
        );
        error_event(&message, "upstream_timeout")
    }
}

/// Most output held back while waiting for more reads to arrive together.
const COALESCE_BYTES: usize = 16 * 1024;

impl MeteredStream {
    /// Ends the stream with `last` (an error event) after the output pending.
    fn end_with(&mut self, last: &[u8]) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        self.pending.extend_from_slice(last);
        self.flush()
    }

    /// Hands the pending output to the client; the end of the stream if there is none and the
    /// stream is finished.
    fn flush(&mut self) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        self.deferred = false;
        if self.pending.is_empty() {
            return if self.finished { Poll::Ready(None) } else { Poll::Pending };
        }
        self.handed_on = true;
        Poll::Ready(Some(Ok(self.pending.split().freeze())))
    }

    /// Takes one read (or, when it is empty, the events kept); returns what to answer when the
    /// stream cannot read on: it ended, output must go first, or enough is held.
    fn take(&mut self, chunk: &[u8]) -> Option<Poll<Option<Result<Bytes, actix_web::Error>>>> {
        self.deferred = false;
        let too_large = self.take_read(chunk);
        if self.saw_done {
            // `[DONE]` is the last event: end the client's stream now rather than wait for the
            // provider to close its body.
            self.finish(false, None);
            return Some(self.flush());
        }
        if let Some(e) = too_large {
            tracing::warn!(limit = e.limit, "upstream event too large; stream cut");
            self.finish(true, Some("upstream_event_too_large"));
            return Some(self.end_with(&error_event(&e.to_string(), "upstream_error")));
        }
        if self.ending_kept || self.pending.len() >= COALESCE_BYTES {
            return Some(self.flush());
        }
        None
    }

    /// Lets the runtime run the tasks that are ready now (the client's write, the provider's
    /// connection); the stream is polled again after them.
    fn defer(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        self.deferred = true;
        let mut turn = std::pin::pin!(tokio::task::yield_now());
        let _ = turn.as_mut().poll(cx);
        Poll::Pending
    }

    /// Whether the idle timeout or the deadline was reached. A timer that fires while reads
    /// came in since it was set is moved to the idle timeout after the last read.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = tokio::time::Instant::now();
            let wake = self.last_read.checked_add(self.idle).unwrap_or(now).min(self.deadline);
            if wake <= now {
                return true;
            }
            self.timer.as_mut().reset(wake);
        }
        false
    }
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, actix_web::Error>;

    /// Reads that are ready one after the other leave as one write: with output pending and
    /// nothing more to read, the stream lets the runtime run its other tasks once (the
    /// provider's connection among them) before it hands the output on, so a provider that sent
    /// many events at once costs one write to the client, not one per event. A provider that
    /// sends events apart in time gets each passed on after that one turn of the runtime; the
    /// first output goes at once, and at most [`COALESCE_BYTES`] are held. A drained stream
    /// ([`MeteredStream::drained_on`]) takes every read queued and hands the output on without
    /// that turn: its drain ran before it, so what was ready is queued already.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.as_mut().get_mut();
        let out = this.poll_output(cx);
        let Some(written) = this.written.as_mut() else { return out };
        if written.as_mut().poll(cx).is_ready() {
            this.written = None;
            return out;
        }
        // The stream is finished and its event not yet durable: hold the last output.
        match out {
            Poll::Ready(Some(Ok(last))) => this.pending.extend_from_slice(&last),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(None) | Poll::Pending => {}
        }
        Poll::Pending
    }
}

impl MeteredStream {
    /// The stream's next output, whether or not its event is durable yet.
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        let this = self;
        if this.finished {
            return this.flush();
        }
        if this.ending_kept {
            if !this.deferred {
                return this.defer(cx);
            }
            // The output before the kept events was written, and the client is still there.
            this.ending_kept = false;
            if let Some(end) = this.take(&[]) {
                return end;
            }
        }
        loop {
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let now = tokio::time::Instant::now();
                    if now >= this.deadline {
                        let last = this.expire();
                        return this.end_with(&last);
                    }
                    this.last_read = now;
                    if let Some(end) = this.take(&chunk) {
                        return end;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let (error_type, message) = match &e {
                        StreamError::EventTooLarge(too_large) => {
                            tracing::warn!(limit = too_large.limit, "upstream event too large; stream cut");
                            ("upstream_event_too_large", e.to_string())
                        }
                        StreamError::Transport(t) => {
                            tracing::warn!(error = %crate::providers::classify(t), "upstream stream failed");
                            ("upstream_stream_error", "the upstream provider's stream failed".to_owned())
                        }
                        StreamError::GuardrailBlocked(_) => ("guardrail_blocked", e.to_string()),
                    };
                    this.finish(true, Some(error_type));
                    let code = if error_type == "guardrail_blocked" { error_type } else { "upstream_error" };
                    return this.end_with(&error_event(&message, code));
                }
                Poll::Ready(None) => {
                    let rest = this.events.take_rest();
                    let complete = this.saw_done || this.usage.is_some();
                    this.finish(!complete, (!complete).then_some("upstream_stream_incomplete"));
                    return this.end_with(&rest);
                }
                Poll::Pending => {
                    if this.timed_out(cx) {
                        if tokio::time::Instant::now() >= this.deadline {
                            let last = this.expire();
                            return this.end_with(&last);
                        }
                        this.finish(true, Some("stream_idle_timeout"));
                        let message = format!("the upstream provider sent nothing for {} ms", this.idle.as_millis());
                        return this.end_with(&error_event(&message, "upstream_timeout"));
                    }
                    if this.pending.is_empty() || this.deferred || !this.handed_on || this.drained {
                        return this.flush();
                    }
                    return this.defer(cx);
                }
            }
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The client went away mid-stream.
        if let Some(r) = self.recorder.as_mut() {
            r.mark_disconnected("during_stream");
        }
        let policy = self.recorder.as_ref().map(UsageRecorder::disconnect_policy);
        if let (Some(DisconnectPolicy::FinishUpstream), Some(tracker)) = (policy, self.background.clone()) {
            // Read the rest to its end, discarding it, so the provider's own usage is charged.
            let mut rest = self.detach();
            tracker.spawn(crate::traces::carried(async move {
                use futures::StreamExt;
                while rest.next().await.is_some() {}
            }));
            return;
        }
        // Bill what was sent (and the prompt, unless `charge_delivered`), marked partial.
        self.finish(true, Some("client_disconnected"));
    }
}

/// An SSE event carrying an OpenAI error envelope (SDKs raise it as an API error).
fn error_event(message: &str, code: &str) -> Bytes {
    let body = serde_json::json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}});
    Bytes::from(format!("data: {body}\n\n"))
}

/// The payload of the event's `data:` line (single-line data, as LLM providers send). Lines
/// are found with `memchr`: this runs on every event of every stream.
fn event_data(event: &[u8]) -> Option<&[u8]> {
    let mut rest = event;
    loop {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(data) = line.strip_prefix(b"data:") {
            return Some(data.trim_ascii());
        }
        rest = next?;
    }
}

/// An oversized event inside a translated stream ends the client's stream too.
impl From<EventTooLarge> for actix_web::Error {
    fn from(e: EventTooLarge) -> actix_web::Error {
        actix_web::error::ErrorBadGateway(e)
    }
}

/// A chat chunk that only carries usage (`"choices": []`), as `include_usage` produces.
pub(crate) fn is_usage_only_chunk(data: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Chunk {
        choices: Option<Vec<serde::de::IgnoredAny>>,
    }
    serde_json::from_slice::<Chunk>(data).is_ok_and(|c| c.choices.is_some_and(|ch| ch.is_empty()))
}

pub(crate) mod drain;
#[cfg(test)]
pub(crate) mod fuzz;
#[cfg(test)]
pub(crate) mod tests;
