//! Traces over OTLP, against a real OpenTelemetry Collector (deploy/otelcol): the request span
//! with its GenAI attributes and Tollgate's, its children, the client's trace kept and passed on
//! to the provider, the trace id in the answer and the usage event, a hostile `traceparent`
//! ignored, the LiteLLM `langfuse` callback honoured, the ledger consumer's batch spans; and the
//! JSON logs of both services, free of ANSI escapes.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_tests::*;

const KEY: &str = "sk-otel-e2e-0123456789abcdef";
const ALIAS: &str = "checkout-eu";
const TEAM: &str = "team-otel";
const CUSTOMER: &str = "cust-otel-7";
const LANGFUSE_SECRET: &str = "sk-lf-e2e-secret-0123";
/// A client's trace: trace id and the client's own span id.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const FALLBACK_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const FILES_TRACE: &str = "7a3f651916cd43dd8448eb211c8031aa";

fn gateway_config(mock: &str, topic: &str, langfuse_host: &str) -> Result<GatewayConfig> {
    let models =
        [model_entry("gpt-4o-mini", &format!("{mock}/v1")), model_entry("broken", &format!("{mock}/status/503/v1"))];
    let mut config = GatewayConfig::new("gw-otel", &models, topic, &kafka_bootstrap());
    config.budgets = Some(Budgets::fail_open());
    config.with_yaml(&format!(
        "router_settings:\n  num_retries: 1\n  fallbacks: [{{\"broken\": [\"gpt-4o-mini\"]}}]\n\
         litellm_settings:\n  success_callback: [langfuse]\n  failure_callback: [langfuse]\n\
         environment_variables:\n  LANGFUSE_PUBLIC_KEY: pk-lf-e2e\n  LANGFUSE_SECRET_KEY: {LANGFUSE_SECRET}\n  \
         LANGFUSE_HOST: \"{langfuse_host}\"\n\
         virtual_keys:\n  - {{key: {KEY}, key_alias: {ALIAS}, team_id: {TEAM}, max_budget: 100}}\n"
    ))
}

async fn chat(
    client: &reqwest::Client,
    gw: &str,
    model: &str,
    request_id: &str,
    traceparent: &str,
) -> Result<reqwest::Response> {
    let resp = client
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-request-id", request_id)
        .header("x-tollgate-customer-id", CUSTOMER)
        .header("traceparent", traceparent)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hello traces"}], "max_tokens": 3}))
        .send()
        .await?;
    ensure!(resp.status() == 200, "{model}: status {}", resp.status());
    Ok(resp)
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// The spans of `trace` once its request span and `children` of it have arrived.
async fn trace_spans(file: &std::path::Path, trace: &str, children: usize) -> Result<Vec<ExportedSpan>> {
    eventually(&format!("trace {trace} to be exported"), Duration::from_secs(60), || async {
        let spans: Vec<ExportedSpan> = read_spans(file)?.into_iter().filter(|s| s.trace_id == trace).collect();
        let Some(request) =
            spans.iter().find(|s| s.attr("gen_ai.operation.name") == "chat" && s.name.starts_with("chat "))
        else {
            return Ok(None);
        };
        let complete = spans.iter().filter(|s| s.parent_span_id == request.span_id).count() >= children
            && spans.iter().any(|s| s.name == "metering");
        Ok(complete.then_some(spans))
    })
    .await
}

fn named<'a>(spans: &'a [ExportedSpan], name: &str) -> Vec<&'a ExportedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_traced_over_otlp_with_genai_attributes() -> Result<()> {
    let dir = scratch_dir("otel")?;
    let collector = Collector::start(&dir).await?;
    let topic = unique("usage-otel-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &[]).await?;
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "200")];
    let gateway =
        start_gateway_with_env(&dir, &gateway_config(mock.url()?, &topic, &collector.langfuse_host)?, &env).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::new();

    // 1. A client in a trace: the gateway's spans join it.
    let resp = chat(&client, &gw, "gpt-4o-mini", "req-otel-1", &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")).await?;
    ensure!(header(&resp, "x-tollgate-trace-id") == CLIENT_TRACE, "the answer names another trace");
    let cost: i64 = header(&resp, "x-tollgate-cost-nano-usd").parse().context("cost header")?;
    // 2. Retries and a fallback, each attempt a span.
    let resp = chat(&client, &gw, "broken", "req-otel-2", &format!("00-{FALLBACK_TRACE}-{CLIENT_SPAN}-01")).await?;
    ensure!(header(&resp, "x-tollgate-attempts") == "3", "1 try + 1 retry + the fallback");
    // 3. A hostile traceparent (upper-case, oversized): ignored, a new trace starts.
    let hostile = format!("00-{}-{CLIENT_SPAN}-01{}", CLIENT_TRACE.to_uppercase(), "-x".repeat(2000));
    let resp = chat(&client, &gw, "gpt-4o-mini", "req-otel-3", &hostile).await?;
    let fresh_trace = header(&resp, "x-tollgate-trace-id");
    ensure!(
        fresh_trace.len() == 32 && fresh_trace != CLIENT_TRACE && fresh_trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "trace id after a hostile traceparent: {fresh_trace:?}"
    );

    // The request span: GenAI attributes, Tollgate's, the client's span as its parent.
    let spans = trace_spans(&collector.spans_file, CLIENT_TRACE, 3).await?;
    let request = spans.iter().find(|s| s.name == "chat gpt-4o-mini").context("no request span")?;
    ensure!(request.service == "tollgate-gateway", "service.name {}", request.service);
    ensure!(request.parent_span_id == CLIENT_SPAN, "the request span's parent is not the client's span");
    ensure!(request.kind == 2, "the request span is not a server span");
    let a = |k: &str| request.attr(k).clone();
    ensure!(a("gen_ai.operation.name") == "chat" && a("gen_ai.provider.name") == "openai", "{:?}", request.attributes);
    ensure!(a("gen_ai.request.model") == "gpt-4o-mini", "{:?}", request.attributes);
    ensure!(a("gen_ai.response.model").as_str().is_some_and(|m| !m.is_empty()), "{:?}", request.attributes);
    ensure!(a("gen_ai.usage.input_tokens").as_i64() > Some(0), "{:?}", request.attributes);
    ensure!(a("gen_ai.usage.output_tokens") == 3, "{:?}", request.attributes);
    ensure!(
        a("tollgate.cost_nano_usd") == cost && cost > 0,
        "span cost vs answer cost {cost}: {:?}",
        request.attributes
    );
    ensure!(a("key_alias") == ALIAS && a("tollgate.team_id") == TEAM, "{:?}", request.attributes);
    ensure!(a("tollgate.customer_id") == CUSTOMER && a("request_id") == "req-otel-1", "{:?}", request.attributes);
    ensure!(a("http.response.status_code") == 200, "{:?}", request.attributes);
    // Its children, and the lease grant within admission.
    let child = |name: &str| spans.iter().find(|s| s.name == name && s.parent_span_id == request.span_id);
    for name in ["auth", "admission", "upstream_attempt", "metering"] {
        child(name).with_context(|| format!("no {name} span under the request span"))?;
    }
    let admission = child("admission").context("admission")?;
    let lease = named(&spans, "lease_grant");
    ensure!(lease.len() == 1 && lease[0].parent_span_id == admission.span_id, "no lease_grant under admission");
    let attempt = child("upstream_attempt").context("attempt")?;
    ensure!(attempt.kind == 3 && attempt.attr("http.response.status_code") == 200, "{:?}", attempt.attributes);

    // The provider was called in the client's trace, by the attempt span.
    let stats: Value = client.get(format!("{}/stats", mock.url()?)).send().await?.json().await?;
    let seen: Vec<&str> =
        stats["traceparents"].as_array().context("no traceparents")?.iter().filter_map(Value::as_str).collect();
    let expected = format!("00-{CLIENT_TRACE}-{}-01", attempt.span_id);
    ensure!(seen.contains(&expected.as_str()), "the provider did not get {expected}: {seen:?}");

    // Retries and the fallback: three attempt spans, the failures marked.
    let spans = trace_spans(&collector.spans_file, FALLBACK_TRACE, 3).await?;
    let mut attempts = named(&spans, "upstream_attempt");
    attempts.sort_by_key(|s| s.attr("tollgate.attempt").as_i64());
    let shape: Vec<(Value, Value, Value)> = attempts
        .iter()
        .map(|s| {
            (
                s.attr("tollgate.model_group").clone(),
                s.attr("tollgate.fallback").clone(),
                s.attr("http.response.status_code").clone(),
            )
        })
        .collect();
    ensure!(
        shape
            == [
                (json!("broken"), json!(false), json!(503)),
                (json!("broken"), json!(false), json!(503)),
                (json!("gpt-4o-mini"), json!(true), json!(200))
            ],
        "attempts: {shape:?}"
    );
    ensure!(attempts[0].status_code == 2 && attempts[0].attr("error.type") == "503", "{:?}", attempts[0].attributes);

    // The hostile traceparent started a root span.
    let spans = trace_spans(&collector.spans_file, &fresh_trace, 3).await?;
    let root = spans.iter().find(|s| s.name == "chat gpt-4o-mini").context("no request span")?;
    ensure!(root.parent_span_id.is_empty(), "a hostile traceparent became a parent");

    // The usage events carry the trace ids.
    let events = collect_events(&topic, 3, Duration::from_secs(60)).await?;
    let trace_of = |id: &str| events.get(id).and_then(|e| e.trace_id.clone());
    ensure!(trace_of("req-otel-1").as_deref() == Some(CLIENT_TRACE), "event 1: {:?}", trace_of("req-otel-1"));
    ensure!(trace_of("req-otel-2").as_deref() == Some(FALLBACK_TRACE), "event 2");
    ensure!(trace_of("req-otel-3") == Some(fresh_trace.clone()), "event 3");

    // The `langfuse` callback: the same spans reach Langfuse's OTLP path.
    trace_spans(&collector.langfuse_file, CLIENT_TRACE, 3).await?;

    // The ledger consumer traces its batches.
    let keyspace = unique("e2e_otel_");
    let consumer_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("TOLLGATE_LOG_FORMAT", "text"),
    ];
    let config = ConsumerConfig::new(&topic, &unique("ledger-otel-"), &keyspace, 500);
    let consumer = start_consumer_with_env(&dir, &config, &consumer_env).await?;
    let batches = eventually("the consumer's batch spans", Duration::from_secs(90), || async {
        let batches: Vec<ExportedSpan> = read_spans(&collector.spans_file)?
            .into_iter()
            .filter(|s| {
                s.service == "tollgate-ledger-consumer" && s.attr("messaging.destination.name") == topic.as_str()
            })
            .collect();
        let folded: i64 = batches.iter().filter_map(|s| s.attr("tollgate.events_folded").as_i64()).sum();
        Ok((folded >= 3).then_some(batches))
    })
    .await?;
    let batch = &batches[0];
    ensure!(batch.name == format!("process {topic}") && batch.kind == 5, "{batch:?}");
    ensure!(
        batch.attr("messaging.system") == "kafka" && batch.attr("messaging.batch.message_count").as_i64() > Some(0)
    );

    // A Files API request: its call to the provider is an `upstream_call` span under the
    // request span, and the provider receives that span's `traceparent`.
    let boundary = "otel-e2e-boundary";
    let line = json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}});
    let form = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\n\
         content-disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n{line}\r\n--{boundary}--\r\n"
    );
    let resp = client
        .post(format!("{gw}/v1/files"))
        .bearer_auth(KEY)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .header("traceparent", format!("00-{FILES_TRACE}-{CLIENT_SPAN}-01"))
        .body(form)
        .send()
        .await?;
    ensure!(resp.status() == 200, "upload: status {}", resp.status());
    let (request, call) = eventually("the upload's spans", Duration::from_secs(60), || async {
        let spans: Vec<ExportedSpan> =
            read_spans(&collector.spans_file)?.into_iter().filter(|s| s.trace_id == FILES_TRACE).collect();
        let request = spans.iter().find(|s| s.parent_span_id == CLIENT_SPAN).cloned();
        let call = spans.iter().find(|s| s.name == "upstream_call").cloned();
        Ok(request.zip(call))
    })
    .await?;
    ensure!(call.parent_span_id == request.span_id && call.kind == 3, "{call:?} under {request:?}");
    ensure!(
        call.attr("http.request.method") == "POST"
            && call.attr("tollgate.upstream_api") == "files"
            && call.attr("http.response.status_code") == 200
            && call.attr("gen_ai.provider.name") == "openai",
        "{:?}",
        call.attributes
    );
    let stats: Value = client.get(format!("{}/stats", mock.url()?)).send().await?.json().await?;
    let expected = format!("00-{FILES_TRACE}-{}-01", call.span_id);
    ensure!(
        stats["traceparents"].as_array().is_some_and(|t| t.iter().any(|v| v == expected.as_str())),
        "the provider did not get {expected}: {}",
        stats["traceparents"]
    );

    // No key, provider key or Langfuse secret in any exported span.
    let (gateway_log, consumer_log) = (gateway.log_path.clone(), consumer.log_path.clone());
    gateway.stop().await?;
    consumer.stop().await?;
    for file in [&collector.spans_file, &collector.langfuse_file] {
        let text = std::fs::read_to_string(file)?;
        for secret in [KEY, LANGFUSE_SECRET, &tollgate_tests::key_hash(KEY)] {
            ensure!(!text.contains(secret), "{} holds a secret", file.display());
        }
    }
    // Logs: JSON lines without ANSI escapes from the gateway (stderr is a file); text without
    // them from the consumer.
    let log = std::fs::read_to_string(&gateway_log)?;
    ensure!(!log.contains('\u{1b}'), "ANSI escapes in the gateway's log");
    let failed = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "upstream attempt failed")
        .context("no JSON log line for the failed attempt")?;
    ensure!(
        failed["request_id"] == "req-otel-2" && failed["trace_id"] == FALLBACK_TRACE && failed["key_alias"] == ALIAS,
        "{failed}"
    );
    ensure!(!log.contains(KEY), "the key is in the gateway's log");
    let consumer_log = std::fs::read_to_string(&consumer_log)?;
    ensure!(!consumer_log.is_empty() && !consumer_log.contains('\u{1b}'), "ANSI escapes in the consumer's log");
    drop(mock);
    Ok(())
}

/// A pass-through request opens the same request span as a model route: in the client's trace,
/// with its children, the provider called with the attempt span's `traceparent`, a retry on
/// the group's other deployment an attempt span of its own, the trace id in the answer and the
/// usage event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_requests_are_traced_like_model_routes() -> Result<()> {
    const PT_TRACE: &str = "5cf92f3577b34da6a3ce929d0e0e4737";
    let dir = scratch_dir("otel-passthrough")?;
    let collector = Collector::start(&dir).await?;
    let topic = unique("usage-otel-pt-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &[]).await?;
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "200")];
    let mut failing = model_entry("gpt-4o-mini", &format!("{}/status/503/v1", mock.url()?));
    failing.litellm_params.weight = Some(1000.0);
    let mut working = model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?));
    working.litellm_params.weight = Some(0.001);
    let mut config = GatewayConfig::new("gw-otel-pt", &[failing, working], &topic, &kafka_bootstrap());
    config.budgets = Some(Budgets::fail_open());
    let config =
        config.with_yaml(&format!("virtual_keys:\n  - {{key: {KEY}, key_alias: {ALIAS}, team_id: {TEAM}}}\n"))?;
    let gateway = start_gateway_with_env(&dir, &config, &env).await?;
    let client = reqwest::Client::new();

    let resp = client
        .post(format!("{}/openai/v1/chat/completions", gateway.url()?))
        .bearer_auth(KEY)
        .header("x-request-id", "req-otel-pt")
        .header("traceparent", format!("00-{PT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello traces"}], "max_tokens": 3}))
        .send()
        .await?;
    ensure!(resp.status() == 200, "status {}", resp.status());
    ensure!(header(&resp, "x-tollgate-trace-id") == PT_TRACE, "the answer names another trace");
    ensure!(header(&resp, "x-tollgate-attempts") == "2", "the 503 was not retried");

    let spans = trace_spans(&collector.spans_file, PT_TRACE, 4).await?;
    let request = spans.iter().find(|s| s.name == "chat gpt-4o-mini").context("no request span")?;
    ensure!(request.parent_span_id == CLIENT_SPAN && request.kind == 2, "{request:?}");
    let a = |k: &str| request.attr(k).clone();
    ensure!(a("gen_ai.usage.output_tokens") == 3 && a("key_alias") == ALIAS, "{:?}", request.attributes);
    ensure!(a("http.response.status_code") == 200 && a("request_id") == "req-otel-pt", "{:?}", request.attributes);
    for name in ["auth", "admission", "metering"] {
        ensure!(
            spans.iter().any(|s| s.name == name && s.parent_span_id == request.span_id),
            "no {name} span under the request span"
        );
    }
    let mut attempts = named(&spans, "upstream_attempt");
    attempts.sort_by_key(|s| s.attr("tollgate.attempt").as_i64());
    let statuses: Vec<Value> = attempts.iter().map(|s| s.attr("http.response.status_code").clone()).collect();
    ensure!(statuses == [json!(503), json!(200)], "attempts: {statuses:?}");
    let stats: Value = client.get(format!("{}/stats", mock.url()?)).send().await?.json().await?;
    let seen: Vec<&str> =
        stats["traceparents"].as_array().context("no traceparents")?.iter().filter_map(Value::as_str).collect();
    let expected = format!("00-{PT_TRACE}-{}-01", attempts[1].span_id);
    ensure!(seen.contains(&expected.as_str()), "the provider did not get {expected}: {seen:?}");

    let events = collect_events(&topic, 1, Duration::from_secs(60)).await?;
    let event = events.get("req-otel-pt").context("no event")?;
    ensure!(event.trace_id.as_deref() == Some(PT_TRACE), "event trace: {:?}", event.trace_id);
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
