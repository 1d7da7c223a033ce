//! Criterion micro-benchmarks of what guardrails add to a request: the pre-call hook (banned
//! words and regexes, PII masking) on a chat prompt of about 1 KiB holding an e-mail address and
//! a card number, the post-call restore on the whole answer, and a 64-chunk stream restored and
//! scanned. `cargo bench -p tollgate-gateway --bench guardrails`; the figures are in
//! docs/guardrails.md.

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use std::hint::black_box;
use tollgate_gateway::config::Config;
use tollgate_gateway::guardrails::{before_call, guard_stream};
use tollgate_gateway::http::wire::ProxyRequest;
use tollgate_gateway::providers::{ByteStream, Endpoint, StreamError};
use tollgate_gateway::tenancy::auth::{Principal, Tenancy};

const KEY: &str = "sk-bench-guardrails";

fn config(default_on: bool) -> Config {
    let yaml = format!(
        "model_list:
  - model_name: m
    litellm_params: {{model: openai/m, api_base: http://127.0.0.1:9/v1}}
kafka: {{bootstrap_servers: 127.0.0.1:9092}}
virtual_keys:
  - {{key: {KEY}, team_id: bench}}
guardrails:
  - guardrail_name: words
    litellm_params:
      guardrail: banned_words
      mode: [pre_call, post_call]
      default_on: {default_on}
      banned_words: [project nightingale, codename bluebird, internal only]
      patterns: ['sk-[a-z0-9]{{32}}', 'AKIA[0-9A-Z]{{16}}']
  - guardrail_name: pii
    litellm_params: {{guardrail: pii_masking, mode: pre_call, default_on: {default_on}}}
"
    );
    match Config::parse(&yaml, "guardrails bench") {
        Ok(c) => c,
        Err(e) => panic!("bench config does not parse: {e}"),
    }
}

fn prompt() -> String {
    let filler = "Please summarise the quarterly figures for the northern region and list the risks. ".repeat(11);
    format!("{filler} Reply to ann.smith@example.com; the card on file is 4111 1111 1111 1111.")
}

/// The config, the bench key's principal and a chat request of about 1 KiB.
fn fixture(default_on: bool) -> (Config, Principal, ProxyRequest) {
    let config = config(default_on);
    let tenancy = Tenancy::new(None, &config.virtual_keys, tollgate_gateway::tenancy::auth::KeyHasher::new(None), None);
    let principal = match futures::executor::block_on(tenancy.authenticate(KEY, Utc::now())) {
        Ok(p) => p,
        Err(e) => panic!("bench key does not authenticate: {e}"),
    };
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": prompt()}]}).to_string();
    let request = match ProxyRequest::parse(body.as_bytes(), Endpoint::ChatCompletions) {
        Ok(r) => r,
        Err(e) => panic!("bench request: {e}"),
    };
    (config, principal, request)
}

fn pre_call(c: &mut Criterion) {
    for (name, default_on) in
        [("guardrails/pre_call words + PII, 1 KiB prompt", true), ("guardrails/pre_call none selected", false)]
    {
        let (config, principal, request) = fixture(default_on);
        let client = reqwest::Client::new();
        let set = config.guardrail_set.clone();
        c.bench_function(name, |b| {
            b.iter(|| {
                let call = before_call(&set, &client, &principal, black_box(&request), "bench");
                futures::executor::block_on(call).map(|(r, _)| r.is_some())
            })
        });
    }
}

fn post_call(c: &mut Criterion) {
    let (config, principal, request) = fixture(true);
    let client = reqwest::Client::new();
    let applied =
        match futures::executor::block_on(before_call(&config.guardrail_set, &client, &principal, &request, "b")) {
            Ok((_, applied)) => applied,
            Err(e) => panic!("bench pre-call: {e}"),
        };
    let answer_text =
        format!("{} I wrote to <EMAIL_1> about <CARD_1>.", "The figures rose by four per cent. ".repeat(20));
    let answer = bytes::Bytes::from(
        serde_json::json!({"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer_text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 200, "total_tokens": 500}})
        .to_string(),
    );
    c.bench_function("guardrails/post_call restore + words, whole answer", |b| {
        b.iter(|| futures::executor::block_on(applied.after_call(&client, black_box(answer.clone()))).is_ok())
    });
    let mut chunks = Vec::new();
    for i in 0..64 {
        let piece = match i {
            10 => "<EMA",
            11 => "IL_1> ",
            _ => " tok",
        };
        chunks.push(bytes::Bytes::from(format!(
            "data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}},\"finish_reason\":null}}]}}\n\n"
        )));
    }
    chunks.push(bytes::Bytes::from_static(b"data: [DONE]\n\n"));
    c.bench_function("guardrails/stream restore + words, 64 chunks", |b| {
        b.iter(|| {
            let upstream: ByteStream =
                Box::pin(futures::stream::iter(chunks.clone().into_iter().map(Ok::<_, StreamError>)));
            let guarded = guard_stream(applied.clone(), &client, upstream);
            futures::executor::block_on(guarded.fold(0usize, |n, c| async move { n + c.map_or(0, |b| b.len()) }))
        })
    });
}

criterion_group!(guardrails, pre_call, post_call);
criterion_main!(guardrails);
