use super::*;

fn assemble(chunks: &[&str], limit: u64) -> Option<Value> {
    let mut a = Assembler::new(limit);
    for c in chunks {
        a.feed(c.as_bytes());
    }
    a.finish().map(|b| serde_json::from_slice(&b).unwrap())
}

const STREAM: [&str; 5] = [
    r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"hel"},"finish_reason":null}]}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
];

#[test]
fn chunks_make_the_whole_completion() {
    let whole = assemble(&STREAM, 1 << 20).unwrap();
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(
        (whole["id"].as_str(), whole["created"].as_i64(), whole["model"].as_str()),
        (Some("c1"), Some(7), Some("m"))
    );
    assert_eq!(whole["choices"][0]["message"], json!({"role": "assistant", "content": "hello"}));
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert_eq!(whole["usage"]["total_tokens"], 5);
    let body = serde_json::to_vec(&whole).unwrap();
    assert!(super::super::replay::chunks(&body, true).is_some(), "what is kept replays as a stream");
}

#[test]
fn tool_calls_are_joined_by_index() {
    let chunks = [
        r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"finish_reason":null}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls"}]}"#,
    ];
    let whole = assemble(&chunks, 1 << 20).unwrap();
    let call = &whole["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_1");
    assert_eq!(call["function"]["name"], "get");
    assert_eq!(call["function"]["arguments"], r#"{"a":1}"#);
    assert_eq!(whole["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn nothing_is_kept_past_the_bound_or_from_garbage() {
    let total: usize = STREAM.iter().map(|c| c.len()).sum();
    assert!(assemble(&STREAM, total as u64).is_some());
    assert!(assemble(&STREAM, total as u64 - 1).is_none(), "one byte over max_entry_bytes");
    let mut garbage = STREAM.to_vec();
    garbage.insert(2, "not json");
    assert!(assemble(&garbage, 1 << 20).is_none());
    assert!(assemble(&STREAM[..3], 1 << 20).is_none(), "a choice without finish_reason");
    assert!(assemble(&[], 1 << 20).is_none());
    let many: Vec<String> = (0..=MAX_CHOICES)
        .map(|i| format!(r#"{{"choices":[{{"index":{i},"delta":{{"content":"x"}},"finish_reason":"stop"}}]}}"#))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(assemble(&many, 1 << 20).is_none(), "more than MAX_CHOICES choices");
    assert!(assemble(&many[..MAX_CHOICES], 1 << 20).is_some());
}

/// A guarded stream is kept as the provider sent it: the client gets the masked address
/// restored, the cache (moka here) holds the placeholder, never the address.
#[tokio::test]
async fn a_tapped_capture_keeps_the_provider_stream_before_the_guardrails() {
    use crate::tenancy::auth::Principal;
    use tollgate_schemas::tenancy::KeyRecord;
    let yaml = "- {guardrail_name: pii, litellm_params: {guardrail: pii_masking, mode: pre_call, default_on: true}}\n";
    let list: Vec<crate::guardrails::config::GuardrailConfig> = serde_yaml::from_str(yaml).unwrap();
    let set = crate::guardrails::config::build(&list, &std::collections::HashMap::new(), "test").unwrap();
    let who = Principal::of_key(KeyRecord { key_id: "k1".into(), team_id: Some("t".into()), ..KeyRecord::default() });
    let body = r#"{"model":"m","messages":[{"role":"user","content":"mail ann@example.com"}]}"#;
    let request =
        crate::http::wire::ProxyRequest::parse(body.as_bytes(), crate::providers::Endpoint::ChatCompletions).unwrap();
    let cache = Arc::new(ResponseCache::new(crate::config::CacheParams::default()).unwrap());
    let (request, plan) = crate::cache::key::prepare(Some(&cache), &who, request).unwrap();
    let client = reqwest::Client::new();
    let (rebuilt, applied) = crate::guardrails::before_call(&set, &client, &who, &request, "r1").await.unwrap();
    let plan = crate::cache::key::after_guardrails(plan.unwrap(), &cache, &who, &rebuilt.unwrap(), &applied);

    let provider = [
        r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":"echo: mail <EMA"},"finish_reason":null}]}"#,
        r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"IL_1>"},"finish_reason":null}]}"#,
        r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        "[DONE]",
    ];
    let input: Vec<Result<Bytes, crate::providers::StreamError>> =
        provider.iter().map(|d| Ok(Bytes::from(format!("data: {d}\n\n")))).collect();
    let mut capture = Capture::new(cache.clone(), &plan).unwrap();
    let tapped = capture.tap(Box::pin(futures::stream::iter(input)));
    let out: Vec<u8> = crate::guardrails::guard_stream(applied, &client, tapped)
        .map(|r| r.unwrap().to_vec())
        .collect::<Vec<_>>()
        .await
        .concat();
    assert!(String::from_utf8_lossy(&out).contains("ann@example.com"), "restored for the client");
    // The metered stream's own chunks (restored) are not what the capture keeps.
    capture.feed(br#"{"id":"c1","choices":[{"index":0,"delta":{"content":"ann@example.com"}}]}"#);
    let tokens = Tokens { prompt: 3, completion: 4, ..Tokens::default() };
    capture.store(NanoUsd(10), tokens, None).unwrap().await;
    let entry = cache.lookup(&plan, "m").await.expect("kept");
    let stored = String::from_utf8_lossy(&entry.body);
    assert!(stored.contains("echo: mail <EMAIL_1>") && !stored.contains("ann@"), "{stored}");
}
