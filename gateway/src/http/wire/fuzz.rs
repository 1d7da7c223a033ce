//! Property and fuzz tests of the OpenAI request decoder (`ProxyRequest::parse`, for chat,
//! completions, embeddings and responses), of what it builds from a request it accepts
//! (`upstream_body`, `to_value`, `prompt_tokens_estimate`), and of the usage reader of answers
//! and stream chunks (`ResponseUsage`). Also the OpenAI vocabulary and known-good documents the
//! other modules' fuzz tests build on.

use super::*;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use tollgate_fuzzing::{json as gen, run};

/// Words of OpenAI's request, response and stream formats.
pub(crate) const WORDS: &[&str] = &[
    "model",
    "messages",
    "role",
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
    "content",
    "text",
    "image_url",
    "url",
    "detail",
    "input_audio",
    "format",
    "file",
    "file_data",
    "refusal",
    "tool_calls",
    "tool_call_id",
    "function_call",
    "name",
    "arguments",
    "n",
    "best_of",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "stop",
    "stream",
    "stream_options",
    "include_usage",
    "tools",
    "parameters",
    "description",
    "tool_choice",
    "auto",
    "required",
    "none",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "seed",
    "response_format",
    "json_object",
    "json_schema",
    "schema",
    "metadata",
    "prompt",
    "input",
    "instructions",
    "choices",
    "delta",
    "message",
    "finish_reason",
    "length",
    "content_filter",
    "logprobs",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_tokens_details",
    "input_tokens_details",
    "cached_tokens",
    "object",
    "chat.completion",
    "chat.completion.chunk",
    "response",
    "response.completed",
    "created",
    "reasoning_content",
    "gpt-4o-mini",
    "m",
];

/// Known-good chat requests: text, parts, images, audio, tool calls and results, tools,
/// structured output, limits and streams.
pub(crate) fn chat_requests() -> Vec<Value> {
    vec![
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "in French"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
                {"role": "assistant", "content": "It is 21°C.", "refusal": ""},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object",
                "properties": {"t": {"type": ["number", "null"]}}}}},
            "max_completion_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
            "n": 1,
            "stop": ["\n\n"],
            "user": "cust-7",
            "metadata": {"purpose": "fuzz"},
            "stream": true,
            "stream_options": {"include_usage": false}
        }),
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000000000,
               "stream": true, "stream_options": null, "n": 128}),
        // What every provider serves: no audio, one choice.
        json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                "properties": {"a": {"type": "integer"}}}}}],
            "tool_choice": "auto",
            "max_tokens": 64,
            "stop": "END",
            "user": "c-1"
        }),
    ]
}

/// Known-good requests of the other endpoints.
fn other_requests() -> Vec<Value> {
    vec![
        json!({"model": "m", "prompt": "Say this is a test", "max_tokens": 7, "best_of": 2, "stream": true}),
        json!({"model": "m", "prompt": ["a", "b"], "n": 3}),
        json!({"model": "m", "input": "The food was delicious", "encoding_format": "float"}),
        json!({"model": "m", "input": ["a", [1, 2, 3]]}),
        json!({"model": "m", "input": "Tell me a story", "instructions": "brief", "max_output_tokens": 50,
               "stream": true, "metadata": {}}),
        json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}),
    ]
}

/// Known-good answers and stream chunks: content, tool calls, usage of every shape.
pub(crate) fn answers() -> Vec<Value> {
    vec![
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                   "finish_reason": "tool_calls"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                         "prompt_tokens_details": {"cached_tokens": 1}}}),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]}),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": "f", "arguments": "{\"a\""}}]}, "finish_reason": null}]}),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"refusal": "no"}, "finish_reason": "stop"}]}),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
               "choices": [], "usage": {"prompt_tokens": 18446744073709551615u64, "completion_tokens": 4}}),
        json!({"type": "response.completed", "response": {"model": "gpt-4o-mini",
               "usage": {"input_tokens": 5, "output_tokens": 6, "input_tokens_details": {"cached_tokens": 2}}}}),
        json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}}),
    ]
}

fn endpoint() -> BoxedStrategy<Endpoint> {
    prop::sample::select(Endpoint::ALL.to_vec()).boxed()
}

fn requests() -> Vec<Value> {
    chat_requests().into_iter().chain(other_requests()).collect()
}

/// What parsing a body may lead to: a 400, or a request within every bound whose upstream
/// body carries the client's fields byte for byte, whose value form holds the same fields, and
/// whose prompt estimate is at most its body's bytes.
pub(crate) fn parse_holds(body: &[u8], endpoint: Endpoint) -> Result<(), TestCaseError> {
    let req = match ProxyRequest::parse(body, endpoint) {
        Ok(req) => req,
        Err(GatewayError::InvalidRequest { .. } | GatewayError::InvalidField { .. }) => return Ok(()),
        Err(other) => return Err(TestCaseError::fail(format!("not a 400: {other:?}"))),
    };
    prop_assert!(limits::check_name("model", &req.model, limits::MAX_NAME_BYTES).is_ok());
    prop_assert!(req.user.as_deref().is_none_or(|u| limits::check_id("user", u).is_ok()));
    prop_assert!(req.max_tokens.is_none_or(|m| m <= limits::MAX_TOKENS_PER_REQUEST));
    prop_assert!((1..=128).contains(&req.choices));
    prop_assert_eq!(req.body_len, body.len());
    prop_assert!(!req.stream || endpoint.generates());

    let upstream = req.upstream_body("upstream-model").map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let sent: HashMap<String, Box<RawValue>> = serde_json::from_slice(&upstream)
        .map_err(|e| TestCaseError::fail(format!("the upstream body is not a JSON object: {e}")))?;
    let injected = req.injects_usage() && !req.client_wants_usage;
    prop_assert_eq!(sent.get("model").map(|m| m.get()), Some("\"upstream-model\""));
    for (name, raw) in req.fields.iter() {
        if name == "model" || (injected && name == "stream_options") {
            continue;
        }
        prop_assert_eq!(sent.get(name).map(|r| r.get()), Some(raw), "`{}` was not passed through", name);
    }
    let expected = req.fields.count() + usize::from(!req.fields.contains("model"));
    let expected = expected + usize::from(injected && !req.fields.contains("stream_options"));
    prop_assert_eq!(sent.len(), expected, "fields were added or lost");
    if injected {
        let options: Value =
            sent.get("stream_options").and_then(|raw| serde_json::from_str(raw.get()).ok()).unwrap_or(Value::Null);
        prop_assert_eq!(&options["include_usage"], &json!(true));
        if let Some(Ok(Value::Object(theirs))) = req.fields.get("stream_options").map(serde_json::from_str) {
            for (k, v) in theirs.iter().filter(|(k, _)| *k != "include_usage") {
                prop_assert_eq!(options.get(k), Some(v), "stream_options.{} was lost", k);
            }
        }
    }

    match req.to_value() {
        Ok(Value::Object(fields)) => prop_assert_eq!(fields.len(), req.fields.count()),
        Ok(other) => prop_assert!(false, "not an object: {}", other),
        Err(GatewayError::InvalidField { field, .. }) => prop_assert!(req.fields.contains(&field)),
        Err(other) => prop_assert!(false, "not a 400 naming a field: {:?}", other),
    }
    prop_assert!(req.prompt_tokens_estimate() <= body.len() as u64);
    Ok(())
}

/// Reading usage from any answer or chunk: never a panic, and never a count beyond the bound.
fn usage_holds(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(parsed) = serde_json::from_slice::<ResponseUsage>(bytes) {
        if let Some(u) = parsed.usage() {
            let max = limits::MAX_TOKENS_PER_REQUEST;
            prop_assert!(u.prompt_tokens <= max && u.completion_tokens <= max);
            prop_assert!(u.tokens().cached <= max);
        }
        let _ = parsed.model();
    }
    Ok(())
}

proptest! {
    #![proptest_config(run::config(1_000))]

    /// Arbitrary bytes, JSON token soup, edited requests, deep nesting and mutated requests,
    /// at every endpoint.
    #[test]
    fn request_bytes_are_refused_or_parsed_within_bounds(
        body in gen::bytes(requests(), WORDS),
        endpoint in endpoint(),
    ) {
        run::watchdog(move || parse_holds(&body, endpoint))?;
    }

    /// Known-good requests with fields removed, re-typed, added, nested or multiplied.
    #[test]
    fn mutated_requests_are_refused_or_parsed_within_bounds(
        doc in gen::mutated(requests(), WORDS),
        endpoint in endpoint(),
    ) {
        run::watchdog(move || parse_holds(&serde_json::to_vec(&doc).unwrap_or_default(), endpoint))?;
    }

    #[test]
    fn usage_is_read_from_any_answer_within_bounds(bytes in gen::bytes(answers(), WORDS)) {
        run::watchdog(move || usage_holds(&bytes))?;
    }
}
