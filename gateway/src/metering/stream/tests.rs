use super::*;
use crate::metering::sink::{Permit, SinkError, UsageSink, Written};
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tollgate_schemas::UsageEvent;

#[test]
fn reads_the_data_line() {
    assert_eq!(event_data(b"event: x\ndata: {\"a\":1}\n\n"), Some(&b"{\"a\":1}"[..]));
    assert_eq!(event_data(b": comment\n\n"), None);
}

#[test]
fn recognises_the_usage_only_chunk() {
    assert!(is_usage_only_chunk(br#"{"choices":[],"usage":{"prompt_tokens":1}}"#));
    assert!(!is_usage_only_chunk(br#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#));
}

/// Keeps the events it is given.
#[derive(Default)]
pub(crate) struct Recorded(pub(crate) Mutex<Vec<UsageEvent>>);

impl UsageSink for Recorded {
    fn admit(&self) -> Result<Permit, SinkError> {
        Ok(Permit::unbacked())
    }
    fn publish(&self, _: Permit, event: UsageEvent) -> Written {
        self.0.lock().unwrap().push(event);
        Written::now()
    }
    fn flush(&self, _: Duration) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A deployment with a 2 s idle timeout and a 5 s deadline.
const CONFIG: &str = r#"
model_list:
  - model_name: m
    litellm_params: {model: openai/m, api_base: "http://127.0.0.1:9/v1", stream_timeout: 2, stream_max_duration: 5}
prices:
  m: {input_nano_usd_per_token: 1, output_nano_usd_per_token: 1}
virtual_keys:
  - key: sk-stream-test
"#;

/// What metering a request needs besides the request itself: a router, an authenticated key,
/// budgets and limits, as the server has them.
pub(crate) struct Harness {
    router: Arc<Router>,
    principal: crate::tenancy::auth::Principal,
    view: Arc<crate::limits::budget_view::BudgetView>,
    limiter: crate::limits::ratelimit::RateLimiter,
    settings: crate::config::BudgetSettings,
}

/// The chat request the metered streams answer.
pub(super) const REQUEST: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

impl Harness {
    pub(crate) async fn new() -> Harness {
        let config = crate::config::Config::parse(CONFIG, "stream test").unwrap();
        let router = Arc::new(Router::from_config(&config, "stream test").unwrap());
        let tenancy = crate::tenancy::auth::Tenancy::new(
            None,
            &config.virtual_keys,
            crate::tenancy::auth::KeyHasher::new(None),
            None,
        );
        let principal = tenancy.authenticate("sk-stream-test", chrono::Utc::now()).await.unwrap();
        let view = Arc::new(crate::limits::budget_view::BudgetView::new());
        view.set_caught_up();
        let limiter = crate::limits::ratelimit::RateLimiter::new(1);
        Harness { router, principal, view, limiter, settings: crate::config::BudgetSettings::default() }
    }

    /// The router requests are picked from.
    pub(crate) fn router(&self) -> Arc<Router> {
        self.router.clone()
    }

    /// A request admitted for model `m`, its recorder publishing to `sink`, and the deployment
    /// picked to send it to.
    pub(crate) fn start(&self, sink: Arc<Recorded>) -> (UsageRecorder, PickedDeployment) {
        let now = chrono::Utc::now();
        let admitted =
            crate::limits::admission::admit(&self.principal, "m", &self.view, &self.limiter, &self.settings, now)
                .unwrap();
        let recorder = UsageRecorder::start(
            sink,
            Permit::unbacked(),
            "gw",
            "req",
            &self.principal,
            admitted,
            "m",
            true,
            Instant::now(),
            now,
        );
        let (_, picked) = self.router.pick("m", &[]).unwrap();
        (recorder, picked)
    }

    /// Meters `upstream` as the server does a streamed chat request of `body`; returns what the
    /// client received and the usage events published.
    pub(super) async fn meter(
        &self,
        upstream: Upstream,
        hide_usage_chunk: bool,
        body: &[u8],
    ) -> (Vec<u8>, Vec<UsageEvent>) {
        let (out, events) = self.writes(upstream, hide_usage_chunk, body).await;
        (out.concat(), events)
    }

    /// [`Harness::meter`], with the client's writes one by one.
    pub(super) async fn writes(
        &self,
        upstream: Upstream,
        hide_usage_chunk: bool,
        body: &[u8],
    ) -> (Vec<Bytes>, Vec<UsageEvent>) {
        let sink = Arc::new(Recorded::default());
        let (recorder, picked) = self.start(sink.clone());
        let request = Arc::new(
            crate::http::wire::ProxyRequest::parse(body, crate::providers::Endpoint::ChatCompletions).unwrap(),
        );
        let stream = MeteredStream::new(
            upstream,
            recorder,
            self.router.clone(),
            picked,
            hide_usage_chunk,
            request,
            Instant::now(),
            "m".into(),
        );
        let out: Vec<Bytes> = stream.map(Result::unwrap).collect().await;
        let events = std::mem::take(&mut *sink.0.lock().unwrap());
        (out, events)
    }
}

/// Meters `upstream` as the server does a streamed chat request; returns what the client
/// received and the request's one usage event.
async fn meter(upstream: Upstream) -> (String, UsageEvent) {
    let (out, mut events) = Harness::new().await.meter(upstream, true, REQUEST).await;
    assert_eq!(events.len(), 1, "one usage event per request");
    (String::from_utf8_lossy(&out).into_owned(), events.remove(0))
}

const CONTENT_EVENT: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n";

/// The error event a client gets, parsed.
fn error_of(text: &str) -> serde_json::Value {
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap()
}

/// A provider that never ends its event is cut off at [`MAX_EVENT_BYTES`]: the reads stop
/// there, the client gets what came before and an error event, and the request is billed
/// (partial) for what was sent.
#[tokio::test]
async fn an_oversized_event_ends_the_stream_as_an_upstream_error() {
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = reads.clone();
    let mib = Bytes::from(vec![b'a'; 1024 * 1024]);
    let chunks =
        std::iter::once(Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: "))
            .chain(std::iter::repeat_n(mib, 64));
    let upstream = futures::stream::iter(chunks).inspect(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let (text, event) = meter(Box::pin(upstream.map(Ok))).await;
    assert!(text.starts_with("data: {\"choices\""), "{}", &text[..100.min(text.len())]);
    assert!(text.len() < 1024, "the oversized event reached the client");
    assert_eq!(error_of(&text)["error"]["code"], "upstream_error");
    // The first read, then 1 MiB reads until the event held passes the limit; none after.
    assert_eq!(reads.load(Ordering::Relaxed), 1 + MAX_EVENT_BYTES / (1024 * 1024));
    assert!(event.partial && event.estimated, "{event:?}");
    assert_eq!(event.error_type.as_deref(), Some("upstream_event_too_large"));
    assert!(event.completion_tokens > 0 && event.completion_tokens < 10, "{event:?}");
}

/// A translated stream reports an oversized event as an error; it ends the stream the same way.
#[tokio::test]
async fn an_oversized_translated_event_ends_the_stream_as_an_upstream_error() {
    let upstream = futures::stream::iter([
        Ok(Bytes::from_static(CONTENT_EVENT)),
        Err(StreamError::EventTooLarge(EventTooLarge { limit: 7 })),
        Ok(Bytes::from_static(CONTENT_EVENT)),
    ]);
    let (text, event) = meter(Box::pin(upstream)).await;
    assert_eq!(text.matches("Hello").count(), 1);
    assert_eq!(error_of(&text)["error"]["code"], "upstream_error");
    assert!(event.partial, "{event:?}");
    assert_eq!(event.error_type.as_deref(), Some("upstream_event_too_large"));
}

/// A provider that keeps sending, never idle for long, is cut at the deadline (5 s here, one
/// chunk a second): the client gets what came before and a timeout error event, and the request
/// is billed (partial) for what was sent. The clock is tokio's, paused: no real waiting.
#[tokio::test(start_paused = true)]
async fn a_stream_ends_at_its_deadline() {
    let trickle = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((Ok(Bytes::from_static(CONTENT_EVENT)), ()))
    });
    let (text, event) = meter(Box::pin(trickle)).await;
    assert_eq!(text.matches("Hello").count(), 4, "{text}");
    let error = error_of(&text);
    assert_eq!(error["error"]["code"], "upstream_timeout");
    assert!(error["error"]["message"].as_str().unwrap().contains("5 s"), "{error}");
    assert!(event.partial && event.estimated, "{event:?}");
    assert_eq!(event.error_type.as_deref(), Some("stream_duration_exceeded"));
}

/// The idle timeout still applies before the deadline.
#[tokio::test(start_paused = true)]
async fn a_silent_stream_ends_at_the_idle_timeout() {
    let silent =
        futures::stream::once(async { Ok(Bytes::from_static(CONTENT_EVENT)) }).chain(futures::stream::pending());
    let (text, event) = meter(Box::pin(silent)).await;
    assert!(error_of(&text)["error"]["message"].as_str().unwrap().contains("2000 ms"), "{text}");
    assert_eq!(event.error_type.as_deref(), Some("stream_idle_timeout"));
}

/// `[DONE]` ends the stream: what follows it is not read.
#[tokio::test]
async fn done_ends_the_stream() {
    let upstream = futures::stream::iter([
        Ok(Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n")),
        Ok(Bytes::from_static(b"data: [DONE]\n\ndata: after\n\n")),
    ])
    .chain(futures::stream::pending());
    let (text, event) = meter(Box::pin(upstream)).await;
    assert_eq!(text, "data: [DONE]\n\n");
    assert!(!event.partial && !event.estimated, "{event:?}");
    assert_eq!((event.prompt_tokens, event.completion_tokens), (3, 4));
}

/// Found by fuzzing: the model a provider names in its chunks became the event's
/// `served_model` as it was. A name the ledger refuses (over 256 bytes, such as a long model
/// path some servers report, or with control characters) had the event dead-lettered and the
/// request left unbilled. The deployment's model name stands in for it now.
#[tokio::test]
async fn a_served_model_the_ledger_would_refuse_is_replaced_by_the_deployments() {
    for model in ["x".repeat(300), "gpt\n4o".to_owned()] {
        let chunk =
            serde_json::json!({"model": model, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        let upstream = futures::stream::iter([Ok(Bytes::from(format!("data: {chunk}\n\ndata: [DONE]\n\n")))])
            .chain(futures::stream::pending());
        let (_, event) = meter(Box::pin(upstream)).await;
        assert_eq!(event.served_model.as_deref(), Some("m"));
        assert_eq!(tollgate_schemas::limits::check_event(&event), Ok(()));
        assert_eq!((event.prompt_tokens, event.completion_tokens), (3, 4));
    }
    let chunk = r#"{"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
    let upstream = futures::stream::iter([Ok(Bytes::from(format!("data: {chunk}\n\ndata: [DONE]\n\n")))]);
    assert_eq!(meter(Box::pin(upstream)).await.1.served_model.as_deref(), Some("gpt-4o-2024-08-06"));
}

/// The detail counts of a stream's usage chunk reach the event, and are charged as parts of
/// their totals, not on top: at 1 nano-USD per token of every kind, 10 + 20 tokens cost 30.
#[tokio::test]
async fn a_streams_token_details_reach_the_event() {
    let usage = br#"data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":2,"audio_tokens":3},"completion_tokens_details":{"reasoning_tokens":5,"audio_tokens":6},"cache_creation_input_tokens":4}}

data: [DONE]

"#;
    let upstream = futures::stream::iter([Ok(Bytes::from_static(usage))]).chain(futures::stream::pending());
    let (_, event) = meter(Box::pin(upstream)).await;
    assert_eq!((event.prompt_tokens, event.completion_tokens, event.cached_tokens), (10, 20, 2));
    assert_eq!((event.cache_write_tokens, event.audio_input_tokens), (4, 3));
    assert_eq!((event.reasoning_tokens, event.audio_output_tokens), (5, 6));
    assert_eq!(event.cost_nano_usd, tollgate_schemas::NanoUsd(30));
    assert!(!event.unpriced);
}

/// Meters `upstream` and returns the writes the client got, one item each, and the event.
async fn writes(upstream: Upstream) -> (Vec<Bytes>, UsageEvent) {
    let (out, mut events) = Harness::new().await.writes(upstream, true, REQUEST).await;
    assert_eq!(events.len(), 1, "one usage event per request");
    (out, events.remove(0))
}

const USAGE_AND_DONE: &[u8] =
    b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":16}}\n\ndata: [DONE]\n\n";

/// Events a provider sent together reach the client as one write, not one per read, and all
/// of them: the usage chunk the gateway asked for is left out, the rest is byte for byte.
/// `[DONE]` follows in a write of its own, once the output before it was written (a client
/// that hung up is noticed there, and billed as one that did).
#[tokio::test]
async fn reads_ready_together_leave_as_one_write() {
    let reads = std::iter::repeat_n(Bytes::from_static(CONTENT_EVENT), 16).chain([Bytes::from_static(USAGE_AND_DONE)]);
    let (out, event) = writes(Box::pin(futures::stream::iter(reads.map(Ok)))).await;
    assert_eq!(out, vec![Bytes::from(CONTENT_EVENT.repeat(16)), Bytes::from_static(b"data: [DONE]\n\n")]);
    assert!(!event.partial && !event.estimated, "{event:?}");
    assert_eq!((event.prompt_tokens, event.completion_tokens), (3, 16));
}

/// Events that arrive apart in time are each passed on as they come (after one turn of the
/// runtime), not held for the next; and a provider that keeps sending within the idle timeout
/// (2 s) is not cut by it, however long ago the stream started.
#[tokio::test(start_paused = true)]
async fn reads_apart_in_time_are_passed_on_as_they_come() {
    let trickle = futures::stream::unfold(0, |i| async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        match i {
            0..3 => Some((Ok(Bytes::from_static(CONTENT_EVENT)), i + 1)),
            3 => Some((Ok(Bytes::from_static(USAGE_AND_DONE)), i + 1)),
            _ => None,
        }
    });
    let (out, event) = writes(Box::pin(trickle)).await;
    assert_eq!(out.len(), 4, "{out:?}");
    assert!(out[..3].iter().all(|w| w == CONTENT_EVENT), "{out:?}");
    assert!(!event.partial, "{event:?}");
    assert_eq!(event.error_type, None);
}

/// However many events are ready together, what is held back for one write stays within
/// [`COALESCE_BYTES`] and one read: 100 reads of 1 KiB leave in writes of at most 17 KiB.
#[tokio::test]
async fn output_held_back_is_bounded() {
    let mut event = b"data: {\"choices\":[{\"delta\":{\"content\":\"".to_vec();
    event.resize(1024 - 8, b'x');
    event.extend_from_slice(b"\"}}]}\n\n");
    let reads = std::iter::repeat_n(Bytes::from(event.clone()), 100).chain([Bytes::from_static(USAGE_AND_DONE)]);
    let (out, event_out) = writes(Box::pin(futures::stream::iter(reads.map(Ok)))).await;
    assert!(out.len() >= 100 * 1024 / (COALESCE_BYTES + 1024), "{} writes", out.len());
    assert!(
        out.iter().all(|w| w.len() <= COALESCE_BYTES + 1024),
        "{:?}",
        out.iter().map(Bytes::len).collect::<Vec<_>>()
    );
    assert_eq!(out.concat().len(), 100 * event.len() + b"data: [DONE]\n\n".len());
    assert!(!event_out.partial, "{event_out:?}");
}

/// Meters `upstream` with the response cache capturing it; returns whether the answer was kept
/// and, if so, its body.
async fn kept(upstream: Vec<&'static [u8]>, read_all: bool) -> Option<Bytes> {
    let h = Harness::new().await;
    let cache = Arc::new(crate::cache::ResponseCache::new(crate::config::CacheParams::default()).unwrap());
    let request = crate::http::wire::ProxyRequest::parse(REQUEST, crate::providers::Endpoint::ChatCompletions).unwrap();
    let (request, plan) = crate::cache::key::prepare(Some(&cache), &h.principal, request).unwrap();
    let plan = plan.unwrap();
    let (recorder, picked) = h.start(Arc::new(Recorded::default()));
    let upstream = futures::stream::iter(upstream.into_iter().map(|b| Ok(Bytes::from_static(b))));
    let stream = MeteredStream::new(
        Box::pin(upstream),
        recorder,
        h.router.clone(),
        picked,
        true,
        Arc::new(request),
        Instant::now(),
        "m".into(),
    )
    .cached_by(crate::cache::assemble::Capture::new(cache.clone(), &plan));
    if read_all {
        let _: Vec<_> = stream.collect().await;
    } else {
        // The client reads the first write and hangs up.
        let mut stream = Box::pin(stream);
        let _ = stream.next().await;
    }
    cache.lookup(&plan, "m").await.map(|e| e.body.clone())
}

const USAGE_EVENT: &[u8] =
    b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n";
const STOP_EVENT: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";

/// A stream that ended cleanly is kept as the whole completion; one cut short, without the
/// provider's usage, or whose client hung up is not.
#[tokio::test]
async fn only_a_clean_stream_is_kept_in_the_response_cache() {
    let body = kept(vec![CONTENT_EVENT, STOP_EVENT, USAGE_EVENT, b"data: [DONE]\n\n"], true).await.expect("kept");
    let whole: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(whole["choices"][0]["message"]["content"], "Hello");
    assert_eq!(whole["usage"]["total_tokens"], 5);
    assert!(kept(vec![CONTENT_EVENT, STOP_EVENT, b"data: [DONE]\n\n"], true).await.is_none(), "no usage");
    assert!(kept(vec![CONTENT_EVENT], true).await.is_none(), "cut short");
    let slow = vec![CONTENT_EVENT, CONTENT_EVENT, STOP_EVENT, USAGE_EVENT, b"data: [DONE]\n\n"];
    assert!(kept(slow, false).await.is_none(), "the client hung up");
}

/// Meters `upstream` as the server does, its body read by a drain task; returns the stream.
fn drained(
    h: &Harness,
    upstream: Upstream,
    sink: Arc<Recorded>,
    tracker: &tokio_util::task::TaskTracker,
) -> MeteredStream {
    let (recorder, picked) = h.start(sink);
    let request =
        Arc::new(crate::http::wire::ProxyRequest::parse(REQUEST, crate::providers::Endpoint::ChatCompletions).unwrap());
    MeteredStream::new(upstream, recorder, h.router.clone(), picked, true, request, Instant::now(), "m".into())
        .drained_on(tracker)
}

/// Read by a drain task, events a provider sent together still reach the client as one write,
/// byte for byte, the usage chunk asked for left out, and `[DONE]` in a write of its own once
/// the output before it was written.
#[tokio::test]
async fn a_drained_stream_passes_reads_ready_together_as_one_write() {
    let h = Harness::new().await;
    let sink = Arc::new(Recorded::default());
    let tracker = tokio_util::task::TaskTracker::new();
    let reads = std::iter::repeat_n(Bytes::from_static(CONTENT_EVENT), 8).chain([Bytes::from_static(USAGE_AND_DONE)]);
    let stream = drained(&h, Box::pin(futures::stream::iter(reads.map(Ok))), sink.clone(), &tracker);
    let out: Vec<Bytes> = stream.map(Result::unwrap).collect().await;
    assert_eq!(out, vec![Bytes::from(CONTENT_EVENT.repeat(8)), Bytes::from_static(b"data: [DONE]\n\n")]);
    let events = std::mem::take(&mut *sink.0.lock().unwrap());
    assert_eq!(events.len(), 1, "one usage event per request");
    assert!(!events[0].partial && !events[0].estimated, "{:?}", events[0]);
    assert_eq!((events[0].prompt_tokens, events[0].completion_tokens), (3, 16));
}

/// A drained stream whose client hangs up is billed as one that was not drained (partial,
/// `client_disconnected`), and the provider's body is dropped, its connection released, though
/// the provider still has not sent anything more.
#[tokio::test]
async fn a_drained_stream_whose_client_hangs_up_releases_the_provider() {
    let h = Harness::new().await;
    let sink = Arc::new(Recorded::default());
    let tracker = tokio_util::task::TaskTracker::new();
    let held = Arc::new(());
    let body = held.clone();
    let upstream = futures::stream::iter([Ok::<_, crate::providers::StreamError>(Bytes::from_static(CONTENT_EVENT))])
        .chain(futures::stream::pending())
        .map(move |read| {
            let _ = &body;
            read
        });
    let mut stream = Box::pin(drained(&h, Box::pin(upstream), sink.clone(), &tracker));
    assert_eq!(stream.next().await.unwrap().unwrap(), CONTENT_EVENT);
    assert_eq!(Arc::strong_count(&held), 2, "the provider's body is still read");
    drop(stream);
    tracker.close();
    tracker.wait().await;
    assert_eq!(Arc::strong_count(&held), 1, "the provider's body was dropped");
    let events = std::mem::take(&mut *sink.0.lock().unwrap());
    assert_eq!(events.len(), 1, "one usage event per request");
    assert!(events[0].partial, "{:?}", events[0]);
    assert_eq!(events[0].error_type.as_deref(), Some("client_disconnected"));
}
