//! Criterion micro-benchmarks of the gateway's per-request hot path, each a pure or in-memory
//! step that every metered chat request takes: the key lookup on a warm cache, the admission
//! checks, the cost calculation, the encoding of the usage event for Kafka and the metrics it
//! records; and per streamed answer, the metering of an OpenAI stream and the translation of a
//! Gemini one.
//!
//! `cargo bench -p tollgate-gateway --bench hot_path`. The load runs in `benches/` measure the
//! whole request; these say which step to look at when that figure moves.

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use std::sync::Arc;
use tollgate_gateway::config::{BudgetSettings, Config, WhenStale};
use tollgate_gateway::limits::admission::admit;
use tollgate_gateway::limits::budget_view::BudgetView;
use tollgate_gateway::limits::pricing::{cost, Price, Tokens};
use tollgate_gateway::limits::ratelimit::RateLimiter;
use tollgate_gateway::routing::router::Router;
use tollgate_gateway::tenancy::auth::Tenancy;
use tollgate_schemas::tenancy::BudgetState;
use tollgate_schemas::{NanoUsd, UsageEvent, USAGE_EVENT_VERSION};

const KEY: &str = "sk-bench-hot-path";

/// The bench configuration: one priced model and one key among 10 000 (a realistic cache size).
fn config() -> Config {
    let mut yaml = String::from(
        "model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:9/v1
kafka:
  bootstrap_servers: 127.0.0.1:9092
virtual_keys:
  - key: sk-bench-hot-path
    key_alias: bench
    team_id: bench
    models: [gpt-4o-mini]
    max_budget: 1000
    budget_duration: 30d
    rpm_limit: 100000000
    tpm_limit: 100000000000
",
    );
    for i in 0..10_000 {
        yaml.push_str(&format!("  - key: sk-other-{i}\n    team_id: team-{}\n", i % 100));
    }
    match Config::parse(&yaml, "hot_path bench") {
        Ok(config) => config,
        Err(e) => panic!("bench config does not parse: {e}"),
    }
}

fn event() -> UsageEvent {
    UsageEvent {
        version: USAGE_EVENT_VERSION,
        event_id: uuid::Uuid::now_v7(),
        occurred_at: Utc::now(),
        gateway_id: "bench-gw".into(),
        request_id: "req_019ab0c45e3a7cc29d1e4f6a2b3c4d5e".into(),
        key_id: tollgate_gateway::tenancy::auth::hash_key(KEY),
        key_alias: Some("bench".into()),
        team_id: Some("bench".into()),
        user_id: Some("user-42".into()),
        organization_id: Some("org".into()),
        requested_model: "gpt-4o-mini".into(),
        served_model: Some("gpt-4o-mini-2024-07-18".into()),
        provider: Some("openai".into()),
        deployment: Some("openai/gpt-4o-mini".into()),
        prompt_tokens: 12,
        completion_tokens: 16,
        cost_nano_usd: NanoUsd(11_400),
        latency_ms: 3,
        status: 200,
        ..UsageEvent::default()
    }
}

fn key_lookup(c: &mut Criterion) {
    let config = config();
    let tenancy = Tenancy::new(None, &config.virtual_keys, tollgate_gateway::tenancy::auth::KeyHasher::new(None), None);
    // A hit never awaits: the moka future completes on its first poll, so no runtime is needed.
    if let Err(e) = futures::executor::block_on(tenancy.authenticate(KEY, Utc::now())) {
        panic!("bench key does not authenticate: {e}");
    }
    c.bench_function("auth/authenticate (SHA-256 + key lookup + tenants)", |b| {
        b.iter(|| futures::executor::block_on(tenancy.authenticate(black_box(KEY), Utc::now())))
    });
}

/// Admission of a key with a 30-day budget and rpm/tpm limits: model allow-list, budget view
/// lookup, rate-limit windows (and freeing the reservation).
fn admission(c: &mut Criterion) {
    let config = config();
    let router = match Router::from_config(&config, "hot_path bench") {
        Ok(r) => r,
        Err(e) => panic!("bench router: {e}"),
    };
    let tenancy = Tenancy::new(None, &config.virtual_keys, tollgate_gateway::tenancy::auth::KeyHasher::new(None), None);
    let principal = match futures::executor::block_on(tenancy.authenticate(KEY, Utc::now())) {
        Ok(p) => p,
        Err(e) => panic!("bench key does not authenticate: {e}"),
    };
    let view = Arc::new(BudgetView::new());
    view.apply(&BudgetState::Heartbeat { consumer: "bench".into(), at_ms: i64::MAX / 2, lag: None });
    view.set_caught_up();
    let limiter = RateLimiter::new(1);
    let settings = BudgetSettings { when_stale: WhenStale::FailClosed, ..BudgetSettings::default() };
    c.bench_function("admission/model + budget + rpm/tpm", |b| {
        b.iter(|| {
            let now: DateTime<Utc> = Utc::now();
            let model = black_box("gpt-4o-mini");
            let allowed = router.knows(model) && principal.check_model(model, &|m| router.groups_of(m)).is_ok();
            allowed && admit(&principal, model, &view, &limiter, &settings, now).is_ok()
        })
    });
}

/// A credit-lease reservation and its settlement while the lease covers it (no store call):
/// what a hard budget adds to each request.
fn lease(c: &mut Criterion) {
    use tollgate_gateway::limits::leases::{Leases, LocalLeases, Slot};
    let leases = Leases::new(Arc::new(LocalLeases::default()), 1, std::time::Duration::from_secs(5));
    let slot = Slot { scope: "key/bench", window: "all", max: NanoUsd(i64::MAX / 2), seen_spent: NanoUsd::ZERO };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => panic!("bench runtime: {e}"),
    };
    c.bench_function("lease/reserve + settle (lease covers it)", |b| {
        b.iter(|| {
            rt.block_on(async {
                if let Ok(hold) = leases.reserve(&slot, black_box(NanoUsd(27_000)), 0).await {
                    hold.settle(NanoUsd(12_450), 0);
                }
            })
        })
    });
}

fn pricing(c: &mut Criterion) {
    let price = Price::from_nanos(150, 75, 600);
    let tokens = Tokens { prompt: 1_200, completion: 350, cached: 1_024, reasoning: 200, ..Tokens::default() };
    c.bench_function("pricing/cost", |b| b.iter(|| cost(black_box(&price), black_box(tokens))));
}

fn event_encoding(c: &mut Criterion) {
    let event = event();
    c.bench_function("events/encode UsageEvent to JSON", |b| b.iter(|| black_box(&event).encode()));
    // The gateway builds the event per request too: cloning one is a fair stand-in for that.
    c.bench_function("events/build + encode", |b| {
        b.iter_batched(|| event.clone(), |e| e.encode(), BatchSize::SmallInput)
    });
}

/// The metrics one request records when its event is published (GenAI, spend and tokens by team
/// and model), into a real Prometheus recorder; and with LiteLLM's names as well.
fn usage_metrics(c: &mut Criterion) {
    use tollgate_gateway::config::MetricsSettings;
    use tollgate_gateway::observability::{buckets, usage, Policy};
    let event = event();
    let timing = usage::Request {
        operation: "chat",
        model: "gpt-4o-mini",
        first_token: Some(std::time::Duration::from_millis(1)),
    };
    for (name, litellm) in [("metrics/record a request (GenAI + tenant)", false), ("metrics/... + LiteLLM names", true)]
    {
        let policy = Policy::new(&MetricsSettings { litellm_compatible: litellm, ..MetricsSettings::default() });
        let recorder = buckets::configured().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            c.bench_function(name, |b| b.iter(|| usage::record_with(&policy, black_box(&event), timing)));
        });
    }
}

/// A sink that drops every event: the stream benches measure the stream, not the spool.
struct NullSink;

impl tollgate_gateway::metering::sink::UsageSink for NullSink {
    fn admit(&self) -> Result<tollgate_gateway::metering::sink::Permit, tollgate_gateway::metering::sink::SinkError> {
        Ok(tollgate_gateway::metering::sink::Permit::unbacked())
    }
    fn publish(
        &self,
        _: tollgate_gateway::metering::sink::Permit,
        _: UsageEvent,
    ) -> tollgate_gateway::metering::sink::Written {
        tollgate_gateway::metering::sink::Written::now()
    }
    fn flush(&self, _: std::time::Duration) -> Result<(), tollgate_gateway::metering::sink::SinkError> {
        Ok(())
    }
}

/// An OpenAI chat stream as a provider sends it: `tokens` content chunks, the usage chunk and
/// `[DONE]`, one event per read.
fn openai_stream(tokens: usize) -> Vec<bytes::Bytes> {
    let mut events = Vec::with_capacity(tokens + 3);
    let head = r#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":"#;
    events.push(format!("data: {head}[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}]}}\n\n"));
    for _ in 0..tokens {
        events.push(format!(
            "data: {head}[{{\"index\":0,\"delta\":{{\"content\":\" tok\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    events.push(format!(
        "data: {head}[],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":{tokens},\"total_tokens\":{}}}}}\n\n",
        tokens + 12
    ));
    events.push("data: [DONE]\n\n".to_owned());
    events.into_iter().map(bytes::Bytes::from).collect()
}

/// The pieces a `MeteredStream` needs, built once: the router (and a deployment lease), a key's
/// admission, the parsed request.
struct StreamFixture {
    router: Arc<Router>,
    principal: tollgate_gateway::tenancy::auth::Principal,
    view: Arc<BudgetView>,
    limiter: RateLimiter,
    settings: BudgetSettings,
    request: Arc<tollgate_gateway::http::wire::ProxyRequest>,
}

impl StreamFixture {
    fn new() -> StreamFixture {
        let config = config();
        let router = match Router::from_config(&config, "hot_path bench") {
            Ok(r) => Arc::new(r),
            Err(e) => panic!("bench router: {e}"),
        };
        let tenancy =
            Tenancy::new(None, &config.virtual_keys, tollgate_gateway::tenancy::auth::KeyHasher::new(None), None);
        let principal = match futures::executor::block_on(tenancy.authenticate(KEY, Utc::now())) {
            Ok(p) => p,
            Err(e) => panic!("bench key does not authenticate: {e}"),
        };
        let view = Arc::new(BudgetView::new());
        view.apply(&BudgetState::Heartbeat { consumer: "bench".into(), at_ms: i64::MAX / 2, lag: None });
        view.set_caught_up();
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let request = match tollgate_gateway::http::wire::ProxyRequest::parse(
            body,
            tollgate_gateway::providers::Endpoint::ChatCompletions,
        ) {
            Ok(r) => Arc::new(r),
            Err(e) => panic!("bench request: {e}"),
        };
        StreamFixture {
            router,
            principal,
            view,
            limiter: RateLimiter::new(1),
            settings: BudgetSettings::default(),
            request,
        }
    }

    /// A metered stream over `chunks`, as the server builds one for a streamed chat request.
    fn metered(&self, chunks: Vec<bytes::Bytes>) -> tollgate_gateway::metering::stream::MeteredStream {
        let now = Utc::now();
        let admitted = match admit(&self.principal, "gpt-4o-mini", &self.view, &self.limiter, &self.settings, now) {
            Ok(a) => a,
            Err(e) => panic!("bench admission: {e}"),
        };
        let recorder = tollgate_gateway::metering::recorder::UsageRecorder::start(
            Arc::new(NullSink),
            tollgate_gateway::metering::sink::Permit::unbacked(),
            "bench-gw",
            "req-bench",
            &self.principal,
            admitted,
            "gpt-4o-mini",
            true,
            std::time::Instant::now(),
            now,
        );
        let Some((_, lease)) = self.router.pick("gpt-4o-mini", &[]) else { panic!("bench router has no deployment") };
        let upstream: tollgate_gateway::providers::ByteStream =
            Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
        tollgate_gateway::metering::stream::MeteredStream::new(
            upstream,
            recorder,
            self.router.clone(),
            lease,
            true,
            self.request.clone(),
            std::time::Instant::now(),
            "gpt-4o-mini".to_owned(),
        )
    }
}

/// Bytes a stream yields, read to its end.
async fn drain<S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin, E>(mut stream: S) -> usize {
    use futures::StreamExt;
    let mut n = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        n += chunk.len();
    }
    n
}

/// Metering an OpenAI stream: per event, the framing scan, the first-token check and the read
/// of the usage chunk (which the client did not ask for, so it is hidden).
fn streams(c: &mut Criterion) {
    let fixture = StreamFixture::new();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => panic!("bench runtime: {e}"),
    };
    // A stream arms its timers when it is built: inside the runtime.
    let _runtime = rt.enter();
    let events = openai_stream(64);
    c.bench_function("stream/metered OpenAI stream (64 tokens, one event per read)", |b| {
        b.iter_batched(|| fixture.metered(events.clone()), |s| rt.block_on(drain(s)), BatchSize::SmallInput)
    });
    // One 256 KiB event arriving in 1 KiB reads: the framing must not rescan what it has seen.
    let mut long = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"".to_vec();
    long.resize(256 * 1024, b'a');
    long.extend_from_slice(b"\"}}]}\n\n");
    let mut long_event: Vec<bytes::Bytes> = long.chunks(1024).map(bytes::Bytes::copy_from_slice).collect();
    long_event.extend(openai_stream(0).into_iter().skip(1));
    let mut group = c.benchmark_group("stream");
    group.sample_size(20);
    group.bench_function("metered 256 KiB event in 1 KiB reads", |b| {
        b.iter_batched(|| fixture.metered(long_event.clone()), |s| rt.block_on(drain(s)), BatchSize::SmallInput)
    });
    group.finish();
}

/// A Gemini stream (64 events) translated into OpenAI chunks, arriving in 1 KiB reads that cut
/// events anywhere.
fn translation(c: &mut Criterion) {
    use tollgate_gateway::providers::gemini::GenerateToChatStream;
    use tollgate_gateway::sse::TranslatedStream;
    let mut wire = String::new();
    for i in 0..64 {
        wire.push_str(&format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\" tok\"}}],\"role\":\"model\"}},\"index\":0}}],\
             \"usageMetadata\":{{\"promptTokenCount\":12,\"candidatesTokenCount\":{i},\"totalTokenCount\":{}}},\
             \"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"bench\"}}\r\n\r\n",
            i + 12
        ));
    }
    let chunks: Vec<bytes::Bytes> = wire.as_bytes().chunks(1024).map(bytes::Bytes::copy_from_slice).collect();
    c.bench_function("sse/translate Gemini stream (64 events in 1 KiB reads)", |b| {
        b.iter(|| {
            let upstream = futures::stream::iter(chunks.iter().cloned().map(Ok::<_, BenchStreamError>));
            futures::executor::block_on(drain(TranslatedStream::new(upstream, GenerateToChatStream::new("fast"))))
        })
    });
}

type BenchStreamError = tollgate_gateway::providers::StreamError;

criterion_group!(hot_path, key_lookup, admission, lease, pricing, event_encoding, usage_metrics, streams, translation);
criterion_main!(hot_path);
