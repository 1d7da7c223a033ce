//! Property and fuzz tests of every Anthropic translation that reads outside input: `/v1/messages`
//! request bodies (`messages_to_chat_request`), OpenAI requests sent to Anthropic
//! (`chat_request_to_messages`), Anthropic's answers (`message_to_chat_response`), OpenAI answers
//! for Anthropic clients (`chat_response_to_message`), error bodies (`error_to_openai`,
//! `error_to_anthropic`) and both stream translators, fed raw and structure-aware input.

use super::*;
use crate::http::wire::fuzz as openai;
use crate::sse::fuzz::{feed, frames, openai_chunks_hold, translate, Frame};
use crate::sse::MAX_EVENT_BYTES;
use proptest::prelude::*;
use tollgate_fuzzing::chunks::chunking;
use tollgate_fuzzing::{json as gen, run, sse};

/// Words of Anthropic's Messages API: requests, answers, stream events, errors.
pub(crate) const WORDS: &[&str] = &[
    "type",
    "message",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
    "index",
    "content_block",
    "content",
    "text",
    "tool_use",
    "tool_result",
    "tool_use_id",
    "is_error",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_20250305",
    "custom",
    "id",
    "name",
    "input",
    "delta",
    "text_delta",
    "input_json_delta",
    "thinking_delta",
    "signature_delta",
    "partial_json",
    "stop_reason",
    "stop_sequence",
    "end_turn",
    "max_tokens",
    "refusal",
    "usage",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "model",
    "role",
    "user",
    "assistant",
    "system",
    "messages",
    "image",
    "source",
    "base64",
    "url",
    "media_type",
    "data",
    "tools",
    "input_schema",
    "tool_choice",
    "auto",
    "any",
    "none",
    "tool",
    "disable_parallel_tool_use",
    "stop_sequences",
    "metadata",
    "user_id",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "cache_control",
    "ephemeral",
    "overloaded_error",
    "rate_limit_error",
    "authentication_error",
    "invalid_request_error",
    "prompt is too long: 300000 tokens > 200000 maximum",
    "claude-sonnet-4-5",
    "msg_01XFDUDYJgAACzvnptvVoYEL",
    "toolu_01",
];

/// Names Anthropic gives its stream events.
const EVENT_NAMES: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
];

/// Known-good `/v1/messages` requests: system blocks, images, tool use and results (with
/// images), thinking, tools and tool choice, streams.
fn messages_requests() -> Vec<Value> {
    vec![
        json!({"model": "m", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello"}]}),
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this, and the weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": [
                        {"type": "text", "text": "sunny"},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/sun.png"}}
                    ]},
                    {"type": "text", "text": "And tomorrow?"}
                ]}
            ],
            "tools": [{"name": "get_weather", "description": "Weather by city",
                       "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "metadata": {"user_id": "customer-7"},
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "stream": true
        }),
    ]
}

/// Known-good Anthropic answers and error bodies.
fn messages_answers() -> Vec<Value> {
    vec![
        json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
               "content": [{"type": "thinking", "thinking": "…"}, {"type": "text", "text": "Hi"},
                           {"type": "tool_use", "id": "toolu_01", "name": "f", "input": {"a": 1}}],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3,
                         "cache_creation_input_tokens": 2}}),
        json!({"id": "m".repeat(300), "type": "message", "content": [{"type": "text", "text": "x"}],
               "usage": {"input_tokens": u64::MAX, "output_tokens": u64::MAX, "cache_read_input_tokens": u64::MAX}}),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        json!({"type": "error", "error": {"type": "invalid_request_error",
               "message": "prompt is too long: 300000 tokens > 200000 maximum"}}),
        json!({"error": "plain"}),
    ]
}

/// A known-good Anthropic stream, in order: text, a tool call, thinking, the end.
pub(crate) fn stream_seeds() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5", "content": [], "stop_reason": null,
               "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 3}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1,
               "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1,
               "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"Par"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"output_tokens": 15}}),
        json!({"type": "message_stop"}),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        // Absurd counts.
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
               "usage": {"input_tokens": u64::MAX, "output_tokens": u64::MAX,
                         "cache_read_input_tokens": u64::MAX, "cache_creation_input_tokens": u64::MAX}}),
    ]
}

/// Anthropic streams: the known-good one with events mutated, and events in any order.
pub(crate) fn streams() -> BoxedStrategy<Vec<sse::Event>> {
    sse::streams(stream_seeds(), WORDS, EVENT_NAMES, true)
}

/// OpenAI chunk streams, as `ChatToMessagesStream` reads them.
fn chunk_streams() -> BoxedStrategy<Vec<sse::Event>> {
    sse::streams(openai::answers(), openai::WORDS, &["message"], false)
}

/// Written size of a value, for the bounds below.
fn size(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

/// The output of a translation stays within a multiple of its input.
fn bounded(out: &Value, input: usize) -> Result<(), TestCaseError> {
    prop_assert!(size(out) <= 16 * input + 4096, "{} bytes from {} bytes", size(out), input);
    Ok(())
}

fn messages_to_chat_holds(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else { return Ok(()) };
    let chat = match messages_to_chat_request(&body) {
        Ok(chat) => chat,
        Err(GatewayError::InvalidRequest { .. }) => return Ok(()),
        Err(other) => return Err(TestCaseError::fail(format!("not a 400: {other:?}"))),
    };
    prop_assert_eq!(&chat["model"], &body["model"]);
    prop_assert!(chat["max_tokens"].as_u64().is_some_and(|n| n > 0));
    let messages = chat["messages"].as_array().cloned().unwrap_or_default();
    for m in &messages {
        let role = m["role"].as_str().unwrap_or_default();
        prop_assert!(["system", "user", "assistant", "tool"].contains(&role), "{}", m);
    }
    bounded(&chat, bytes.len())?;
    // What the gateway does next with it, as the `/v1/messages` handler does.
    let written = serde_json::to_vec(&chat).map_err(|e| TestCaseError::fail(e.to_string()))?;
    openai::parse_holds(&written, crate::providers::Endpoint::ChatCompletions)
}

fn chat_to_messages_holds(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else { return Ok(()) };
    let out = match chat_request_to_messages(&body, "claude-upstream") {
        Ok(out) => out,
        Err(GatewayError::InvalidRequest { .. }) => return Ok(()),
        Err(other) => return Err(TestCaseError::fail(format!("not a 400: {other:?}"))),
    };
    prop_assert_eq!(&out["model"], "claude-upstream");
    prop_assert!(out["max_tokens"].is_u64());
    for m in out["messages"].as_array().cloned().unwrap_or_default() {
        prop_assert!(m["role"] == "user" || m["role"] == "assistant", "{}", m);
        prop_assert!(m["content"].is_string() || m["content"].is_array(), "{}", m);
    }
    bounded(&out, bytes.len())
}

/// Usage counts of an answer, where they are unsigned integers.
fn count(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

fn message_to_chat_holds(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(message) = serde_json::from_slice::<Value>(bytes) else { return Ok(()) };
    let chat = message_to_chat_response(&message);
    prop_assert_eq!(&chat["choices"][0]["message"]["role"], "assistant");
    prop_assert!(chat["choices"][0]["finish_reason"].is_string());
    bounded(&chat, bytes.len())?;
    // Metering reads the translated answer, and the counts it bills are never below what
    // Anthropic reported.
    let read = serde_json::from_value::<crate::http::wire::ResponseUsage>(chat.clone());
    prop_assert!(read.is_ok(), "metering cannot read the translated answer: {:?}", read.err());
    if let Some(u) = read.ok().and_then(|r| r.usage) {
        for key in ["input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"] {
            if let Some(n) = count(&message, &format!("/usage/{key}")) {
                prop_assert!(u.prompt_tokens >= n, "prompt {} below {} {}", u.prompt_tokens, key, n);
            }
        }
        prop_assert_eq!(Some(u.completion_tokens), count(&message, "/usage/output_tokens").or(Some(0)));
    }
    Ok(())
}

fn chat_to_message_holds(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(chat) = serde_json::from_slice::<Value>(bytes) else { return Ok(()) };
    let message = chat_response_to_message(&chat, "claude-requested");
    prop_assert_eq!(&message["type"], "message");
    prop_assert_eq!(&message["model"], "claude-requested");
    prop_assert!(message["content"].is_array() && message["stop_reason"].is_string());
    bounded(&message, bytes.len())?;
    // Anthropic's input and cache reads add up to OpenAI's prompt.
    if let Some(prompt) = count(&chat, "/usage/prompt_tokens") {
        let input = count(&message, "/usage/input_tokens").unwrap_or(0);
        let cached = count(&message, "/usage/cache_read_input_tokens").unwrap_or(0);
        prop_assert_eq!(input.checked_add(cached), Some(prompt));
    }
    Ok(())
}

fn errors_hold(bytes: &[u8], status: u16) -> Result<(), TestCaseError> {
    let openai = error_to_openai(bytes);
    let error = &openai["error"];
    prop_assert!(error["message"].is_string() && error["type"].is_string(), "{}", openai);
    prop_assert!(error.get("param").is_some() && error.get("code").is_some(), "{}", openai);
    prop_assert!(size(&openai) <= 8 * bytes.len() + 1024);
    let anthropic = error_to_anthropic(status, bytes);
    prop_assert_eq!(&anthropic["type"], "error");
    prop_assert!(anthropic["error"]["type"].as_str().is_some_and(|t| t.ends_with("_error")), "{}", anthropic);
    prop_assert!(anthropic["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", anthropic);
    prop_assert!(size(&anthropic) <= 8 * bytes.len() + 1024);
    Ok(())
}

/// Checks output in Anthropic's event format: every event named for its `type`; one
/// `message_start` first (or an `error`); content blocks opened, filled and closed one at a time
/// with indexes 0, 1, 2, ...; `message_delta` and `message_stop`, or an `error`, last. `ended`:
/// the input was read to its end, so the output must be complete.
fn anthropic_events_hold(frames: &[Frame], ended: bool) -> Result<(), TestCaseError> {
    let (mut started, mut open, mut next, mut stopped, mut delta_sent) = (false, None, 0u64, false, false);
    for frame in frames {
        prop_assert!(!stopped, "an event after message_stop or error: {:?}", frame);
        let json = frame.json.as_ref().ok_or_else(|| TestCaseError::fail("[DONE] in an Anthropic stream"))?;
        let name = frame.name.as_deref().unwrap_or_default();
        prop_assert_eq!(json["type"].as_str(), Some(name), "{}", json);
        match name {
            "message_start" => {
                prop_assert!(!started, "a second message_start");
                started = true;
            }
            "ping" => {}
            "content_block_start" => {
                prop_assert!(started && open.is_none() && !delta_sent, "{}", json);
                prop_assert_eq!(json["index"].as_u64(), Some(next));
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => prop_assert_eq!(json["index"].as_u64(), open),
            "content_block_stop" => {
                prop_assert_eq!(json["index"].as_u64(), open);
                open = None;
            }
            "message_delta" => {
                prop_assert!(started && open.is_none() && !delta_sent, "{}", json);
                prop_assert!(json["usage"]["output_tokens"].is_u64(), "{}", json);
                delta_sent = true;
            }
            "message_stop" => {
                prop_assert!(delta_sent, "message_stop without message_delta");
                stopped = true;
            }
            "error" => {
                prop_assert!(json["error"]["message"].is_string(), "{}", json);
                stopped = true;
            }
            other => prop_assert!(false, "an unknown event {}", other),
        }
    }
    prop_assert!(!ended || stopped, "the stream ended without message_stop or error");
    Ok(())
}

proptest! {
    #![proptest_config(run::config(1_000))]

    #[test]
    fn messages_requests_are_refused_or_translated_within_bounds(bytes in gen::bytes(messages_requests(), WORDS)) {
        run::watchdog(move || messages_to_chat_holds(&bytes))?;
    }

    #[test]
    fn openai_requests_are_refused_or_translated_for_anthropic(bytes in gen::bytes(openai::chat_requests(), openai::WORDS)) {
        run::watchdog(move || chat_to_messages_holds(&bytes))?;
    }

    #[test]
    fn anthropic_answers_translate_and_keep_their_counts(bytes in gen::bytes(messages_answers(), WORDS)) {
        run::watchdog(move || message_to_chat_holds(&bytes))?;
    }

    #[test]
    fn openai_answers_translate_for_anthropic_clients(bytes in gen::bytes(openai::answers(), openai::WORDS)) {
        run::watchdog(move || chat_to_message_holds(&bytes))?;
    }

    #[test]
    fn error_bodies_become_envelopes(
        bytes in prop_oneof![gen::bytes(messages_answers(), WORDS), gen::bytes(openai::answers(), openai::WORDS)],
        status in prop_oneof![Just(400u16), Just(401), Just(429), Just(500), Just(529), any::<u16>()],
    ) {
        run::watchdog(move || errors_hold(&bytes, status))?;
    }

}

proptest! {
    // A case is a whole stream of up to 32 events: fewer cases.
    #![proptest_config(run::config(256))]

    /// Anthropic events, one at a time: each event's output is bounded by its own size, and
    /// the whole is OpenAI chunks, `[DONE]` last.
    #[test]
    fn anthropic_streams_become_bounded_openai_chunks(events in streams()) {
        run::watchdog(move || {
            let out = feed(&mut MessagesToChatStream::new(), &events)?;
            let frames = frames(&out).map_err(TestCaseError::fail)?;
            openai_chunks_hold(&frames, true)
        })?;
    }

    /// OpenAI chunks, one at a time: each event's output is bounded, and the whole is a
    /// complete Anthropic stream.
    #[test]
    fn openai_chunks_become_a_complete_anthropic_stream(events in chunk_streams()) {
        run::watchdog(move || {
            let out = feed(&mut ChatToMessagesStream::new("claude-requested"), &events)?;
            let frames = frames(&out).map_err(TestCaseError::fail)?;
            anthropic_events_hold(&frames, true)
        })?;
    }

    /// The same as bytes in arbitrary reads (framed every way SSE allows, or framing soup),
    /// through `TranslatedStream`, with the event limit at times small enough to be hit.
    #[test]
    fn translated_byte_streams_stay_well_formed(
        anthropic in prop_oneof![sse::framed(streams()), sse::soup()],
        chunks in prop_oneof![sse::framed(chunk_streams()), sse::soup()],
        how in chunking(),
        limit in prop_oneof![3 => Just(MAX_EVENT_BYTES), 1 => 16usize..512],
    ) {
        run::watchdog(move || {
            let done = translate(how.split(&anthropic), MessagesToChatStream::new(), limit)?;
            openai_chunks_hold(&frames(&done.out).map_err(TestCaseError::fail)?, true)?;
            let done = translate(how.split(&chunks), ChatToMessagesStream::new("claude-requested"), limit)?;
            anthropic_events_hold(&frames(&done.out).map_err(TestCaseError::fail)?, done.error.is_none())
        })?;
    }
}
