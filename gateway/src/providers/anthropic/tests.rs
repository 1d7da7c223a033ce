use super::outbound::{MAX_MESSAGE_BLOCKS, MAX_OPEN_BLOCKS};
use super::*;
use crate::sse::parse_event;

fn param_of(result: Result<Value, GatewayError>) -> Option<&'static str> {
    match result {
        Err(GatewayError::InvalidRequest { param, .. }) => param,
        other => panic!("expected a 400, got {other:?}"),
    }
}

/// Runs a translator over `(event name, data)` pairs and returns the output as pairs.
fn translate(t: &mut impl SseTranslator, input: &[(Option<&str>, String)]) -> Vec<(Option<String>, String)> {
    let mut frames: Vec<Bytes> = Vec::new();
    for (name, data) in input {
        frames.extend(t.event(*name, data.as_bytes()));
    }
    frames.extend(t.end());
    frames
        .iter()
        .map(|f| {
            let e = parse_event(f);
            (e.name.map(str::to_owned), String::from_utf8(e.data).unwrap())
        })
        .collect()
}

fn names(events: &[(Option<String>, String)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect()
}

fn json_of(events: &[(Option<String>, String)]) -> Vec<Value> {
    events.iter().filter(|(_, d)| d != "[DONE]").map(|(_, d)| serde_json::from_str(d).unwrap()).collect()
}

fn openai_chunks(chunks: &[Value]) -> Vec<(Option<&'static str>, String)> {
    chunks.iter().map(|c| (None, c.to_string())).chain([(None, "[DONE]".to_owned())]).collect()
}

fn anthropic_events(events: &[Value]) -> Vec<(Option<String>, String)> {
    events.iter().map(|e| (e["type"].as_str().map(str::to_owned), e.to_string())).collect()
}

fn borrow(events: &[(Option<String>, String)]) -> Vec<(Option<&str>, String)> {
    events.iter().map(|(n, d)| (n.as_deref(), d.clone())).collect()
}

fn chunk(delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn usage_chunk(prompt: u64, completion: u64, cached: u64) -> Value {
    json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [],
               "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                         "prompt_tokens_details": {"cached_tokens": cached}}})
}

/// A realistic OpenAI conversation touching every translated feature.
fn openai_request() -> Value {
    json!({
        "model": "claude-fast",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "rainy"},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": "{\"day\":\"tomorrow\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_3", "content": "cloudy"},
            {"role": "assistant", "content": "Cloudy tomorrow."}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                   "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 300,
        "stop": ["END"],
        "user": "customer-7"
    })
}

/// Found by fuzzing: `message_start`'s `model` (any JSON value) and `id` (any length) were
/// copied into every later chunk, so one large first event made every small event after it as
/// large, and a `model` that is not a string made the usage chunk unreadable to metering
/// (the provider's counts were then replaced by an estimate).
#[test]
fn stream_model_and_id_from_the_provider_are_bounded() {
    let huge = "x".repeat(100_000);
    let size = |out: Vec<Bytes>| out.iter().map(Bytes::len).sum::<usize>();
    for model in [json!({"a": huge}), json!(huge), json!("bad\nname"), json!(7)] {
        let mut t = MessagesToChatStream::new();
        let start =
            json!({"type": "message_start", "message": {"id": huge, "model": model, "usage": {"input_tokens": 5}}});
        assert!(size(t.event(None, start.to_string().as_bytes())) < 1024);
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}});
        assert!(size(t.event(None, delta.to_string().as_bytes())) < 1024);
        let end = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}});
        t.event(None, end.to_string().as_bytes());
        let usage_chunk = t.event(None, br#"{"type":"message_stop"}"#).remove(0);
        let data = parse_event(&usage_chunk).data;
        let read: crate::http::wire::ResponseUsage = serde_json::from_slice(&data).expect("metering reads it");
        assert_eq!(read.usage().map(|u| (u.prompt_tokens, u.completion_tokens)), Some((5, 2)));
    }
    let answer = message_to_chat_response(
        &json!({"id": huge, "model": {"a": 1}, "usage": {"input_tokens": 3, "output_tokens": 4}}),
    );
    assert!(answer.to_string().len() < 1024 && answer["model"].is_null());
    let read: crate::http::wire::ResponseUsage = serde_json::from_value(answer).expect("metering reads it");
    assert_eq!(read.usage().map(|u| (u.prompt_tokens, u.completion_tokens)), Some((3, 4)));
}

// --- Outbound requests ---

#[test]
fn outbound_request_translates_every_feature() {
    let out = chat_request_to_messages(&openai_request(), "claude-sonnet-4-5").unwrap();
    assert_eq!(out["model"], "claude-sonnet-4-5");
    assert_eq!(out["max_tokens"], 300);
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in English."}])
    );
    assert_eq!(out["temperature"], 0.5);
    assert_eq!(out["top_p"], 0.9);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["metadata"], json!({"user_id": "customer-7"}));
    assert_eq!(
        out["tools"],
        json!([{"name": "get_weather", "description": "Weather by city",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}])
    );
    assert_eq!(out["tool_choice"], json!({"type": "tool", "name": "get_weather"}));
    assert!(out.get("stream").is_none());
    let m = out["messages"].as_array().unwrap();
    assert_eq!(m.len(), 6, "{m:#?}");
    assert_eq!(
        m[0]["content"][1],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}})
    );
    assert_eq!(
        m[0]["content"][2],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );
    assert_eq!(m[1]["role"], "assistant");
    assert_eq!(m[1]["content"][0], json!({"type": "text", "text": "Let me check."}));
    assert_eq!(
        m[1]["content"][1],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}})
    );
    // Both results and the user's next words share one user message, results first.
    assert_eq!(
        m[2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "rainy"},
            {"type": "text", "text": "And tomorrow?"}
        ]})
    );
    assert_eq!(
        m[3]["content"],
        json!([{"type": "tool_use", "id": "call_3", "name": "get_weather", "input": {"day": "tomorrow"}}])
    );
    assert_eq!(m[4]["content"], json!([{"type": "tool_result", "tool_use_id": "call_3", "content": "cloudy"}]));
    assert_eq!(m[5], json!({"role": "assistant", "content": "Cloudy tomorrow."}));
}

#[test]
fn outbound_request_defaults_and_options() {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
                          "stream_options": {"include_usage": true}, "stop": "X", "n": 1});
    let out = chat_request_to_messages(&body, "claude").unwrap();
    assert_eq!(out["max_tokens"], 4096);
    assert_eq!(out["stream"], true);
    assert!(out.get("stream_options").is_none() && out.get("system").is_none() && out.get("n").is_none());
    assert_eq!(out["stop_sequences"], json!(["X"]));
    assert_eq!(out["messages"], json!([{"role": "user", "content": "hi"}]));
    let body = json!({"model": "m", "messages": [{"role": "developer", "content": "sys"}], "max_completion_tokens": 9});
    let out = chat_request_to_messages(&body, "claude").unwrap();
    assert_eq!((out["max_tokens"].clone(), out["system"].clone()), (json!(9), json!("sys")));

    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    for (choice, parallel, expected) in [
        (json!("auto"), None, json!({"type": "auto"})),
        (json!("required"), None, json!({"type": "any"})),
        (json!("none"), Some(false), json!({"type": "none"})),
        (json!("required"), Some(false), json!({"type": "any", "disable_parallel_tool_use": true})),
        (Value::Null, Some(false), json!({"type": "auto", "disable_parallel_tool_use": true})),
    ] {
        let mut body = json!({"model": "m", "messages": [], "tools": tools, "tool_choice": choice});
        if let Some(p) = parallel {
            body["parallel_tool_calls"] = json!(p);
        }
        assert_eq!(chat_request_to_messages(&body, "c").unwrap()["tool_choice"], expected, "{body}");
    }
    let out = chat_request_to_messages(&json!({"model": "m", "messages": [], "tools": tools}), "c").unwrap();
    assert_eq!(out["tools"][0]["input_schema"], json!({"type": "object", "properties": {}}));
    assert!(out.get("tool_choice").is_none());
    // Without tools there is nothing to choose from.
    let out = chat_request_to_messages(&json!({"model": "m", "messages": [], "tool_choice": "none"}), "c").unwrap();
    assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
}

#[test]
fn outbound_request_rejects_what_anthropic_cannot_serve() {
    for (body, param) in [
        (json!({"model": "m"}), Some("messages")),
        (json!({"model": "m", "messages": "hi"}), Some("messages")),
        (json!({"model": "m", "messages": [], "n": 2}), Some("n")),
        (json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}), Some("messages")),
        (json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}), Some("messages")),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]}),
            Some("messages"),
        ),
        (json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}), Some("messages")),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
            Some("messages"),
        ),
        (json!({"model": "m", "messages": [], "tools": [{"type": "custom", "custom": {"name": "x"}}]}), Some("tools")),
        (
            json!({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}],
                    "tool_choice": {"type": "allowed_tools"}}),
            Some("tool_choice"),
        ),
        (json!([1]), None),
    ] {
        assert_eq!(param_of(chat_request_to_messages(&body, "c")), param, "{body}");
    }
}

#[test]
fn outbound_request_skips_empty_text_and_empty_assistant_turns() {
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "a"}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}]}
    ]});
    let out = chat_request_to_messages(&body, "c").unwrap();
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": "a"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]}])
    );
}

// --- Outbound responses ---

#[test]
fn outbound_response_translates_text_tools_and_usage() {
    let message = json!({
        "id": "msg_01XYZ", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}
    });
    let chat = message_to_chat_response(&message);
    assert_eq!(chat["id"], "chatcmpl-01XYZ");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["model"], "claude-sonnet-4-5");
    let choice = &chat["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Checking.");
    assert_eq!(choice["message"]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(choice["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(choice["message"]["tool_calls"][0]["function"]["arguments"], "{\"location\":\"Paris\"}");
    assert_eq!(
        chat["usage"],
        json!({"prompt_tokens": 115, "completion_tokens": 7, "total_tokens": 122,
                   "prompt_tokens_details": {"cached_tokens": 100}, "cache_creation_input_tokens": 5})
    );
    for (stop, finish) in
        [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")]
    {
        let m = json!({"id": "msg_1", "content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {}});
        let chat = message_to_chat_response(&m);
        assert_eq!(chat["choices"][0]["finish_reason"], finish);
        assert_eq!(chat["choices"][0]["message"]["content"], "x");
        assert!(chat["choices"][0]["message"].get("tool_calls").is_none());
    }
    let only_tool =
        json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use"});
    assert_eq!(message_to_chat_response(&only_tool)["choices"][0]["message"]["content"], Value::Null);
}

// --- Inbound requests ---

fn anthropic_request() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Be kind."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "...", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Rome"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true, "content": [
                    {"type": "text", "text": "no data"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}}
                ]},
                {"type": "text", "text": "Thanks"}
            ]},
            {"role": "assistant", "content": "You're welcome."}
        ],
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.2,
        "top_p": 0.8,
        "top_k": 5,
        "metadata": {"user_id": "u-1"},
        "stream": true
    })
}

#[test]
fn inbound_request_translates_every_feature() {
    let out = messages_to_chat_request(&anthropic_request()).unwrap();
    assert_eq!(out["model"], "claude-sonnet-4-5");
    assert_eq!(out["max_tokens"], 1024);
    assert_eq!(out["temperature"], 0.2);
    assert_eq!(out["top_p"], 0.8);
    assert!(out.get("top_k").is_none());
    assert_eq!(out["stop"], json!(["\n\nHuman:"]));
    assert_eq!(out["user"], "u-1");
    assert_eq!(out["stream"], true);
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        out["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                                       "parameters": {"type": "object", "properties": {}}}}])
    );
    assert_eq!(out["tool_choice"], "required");
    assert_eq!(out["parallel_tool_calls"], false);
    let m = out["messages"].as_array().unwrap();
    let roles: Vec<&str> = m.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "system", "user", "assistant", "tool", "tool", "user", "assistant"]);
    assert_eq!(m[0]["content"], "Be brief.");
    assert_eq!(m[1]["content"], "Be kind.");
    assert_eq!(
        m[2]["content"],
        json!([{"type": "text", "text": "Look:"},
                   {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                   {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}])
    );
    assert_eq!(m[3]["content"], "Checking.");
    assert_eq!(
        m[3]["tool_calls"][1],
        json!({"id": "toolu_2", "type": "function",
                                                  "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\"}"}})
    );
    assert_eq!(m[4], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}));
    assert_eq!(m[5], json!({"role": "tool", "tool_call_id": "toolu_2", "content": "no data"}));
    // The tool result's image travels with the user's text.
    assert_eq!(
        m[6]["content"],
        json!([{"type": "image_url", "image_url": {"url": "https://example.com/map.png"}}, {"type": "text", "text": "Thanks"}])
    );
    assert_eq!(m[7], json!({"role": "assistant", "content": "You're welcome."}));
}

#[test]
fn inbound_request_tool_choices_and_plain_system() {
    let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
    for (choice, expected) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "none"}), json!("none")),
        (json!({"type": "tool", "name": "f"}), json!({"type": "function", "function": {"name": "f"}})),
    ] {
        let body = json!({"model": "m", "max_tokens": 5, "messages": [], "system": "s", "tools": tools, "tool_choice": choice});
        let out = messages_to_chat_request(&body).unwrap();
        assert_eq!(out["tool_choice"], expected);
        assert!(out.get("parallel_tool_calls").is_none());
        assert_eq!(out["messages"], json!([{"role": "system", "content": "s"}]));
        assert!(out.get("stream").is_none() && out.get("stream_options").is_none());
    }
}

#[test]
fn inbound_request_rejects_invalid_bodies_naming_the_param() {
    let ok = |f: &dyn Fn(&mut Value)| {
        let mut body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        f(&mut body);
        body
    };
    assert!(messages_to_chat_request(&ok(&|_| {})).is_ok());
    for (body, param) in [
        (ok(&|b| drop(b.as_object_mut().unwrap().remove("messages"))), Some("messages")),
        (ok(&|b| b["messages"] = json!({"role": "user"})), Some("messages")),
        (ok(&|b| drop(b.as_object_mut().unwrap().remove("max_tokens"))), Some("max_tokens")),
        (ok(&|b| b["max_tokens"] = json!(0)), Some("max_tokens")),
        (ok(&|b| b["max_tokens"] = json!(-3)), Some("max_tokens")),
        (ok(&|b| b["max_tokens"] = json!("10")), Some("max_tokens")),
        (ok(&|b| b["max_tokens"] = json!(1.5)), Some("max_tokens")),
        (ok(&|b| drop(b.as_object_mut().unwrap().remove("model"))), Some("model")),
        (ok(&|b| b["model"] = json!(3)), Some("model")),
        (ok(&|b| b["system"] = json!(5)), Some("system")),
        (ok(&|b| b["system"] = json!([{"type": "image"}])), Some("system")),
        (ok(&|b| b["messages"][0]["role"] = json!("system")), Some("messages")),
        (ok(&|b| b["messages"][0]["content"] = json!(5)), Some("messages")),
        (ok(&|b| b["messages"][0]["content"] = json!([{"type": "document"}])), Some("messages")),
        (
            ok(&|b| b["messages"][0]["content"] = json!([{"type": "image", "source": {"type": "file"}}])),
            Some("messages"),
        ),
        (ok(&|b| b["messages"][0]["content"] = json!([{"type": "tool_result"}])), Some("messages")),
        (ok(&|b| b["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}])), Some("tools")),
        (ok(&|b| b["tools"] = json!([{"input_schema": {}}])), Some("tools")),
        (ok(&|b| b["tools"] = json!({})), Some("tools")),
        (
            ok(&|b| {
                b["tools"] = json!([{"name": "f"}]);
                b["tool_choice"] = json!({"type": "tool"})
            }),
            Some("tool_choice"),
        ),
        (
            ok(&|b| {
                b["tools"] = json!([{"name": "f"}]);
                b["tool_choice"] = json!({"type": "x"})
            }),
            Some("tool_choice"),
        ),
        (json!("hello"), None),
    ] {
        assert_eq!(param_of(messages_to_chat_request(&body)), param, "{body}");
    }
}

// --- Inbound responses ---

#[test]
fn inbound_response_translates_text_tools_and_usage() {
    let chat = json!({
        "id": "chatcmpl-123", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "On it.",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 8, "total_tokens": 128, "prompt_tokens_details": {"cached_tokens": 100}}
    });
    let msg = chat_response_to_message(&chat, "my-alias");
    assert_eq!(
        msg,
        json!({"id": "msg_123", "type": "message", "role": "assistant", "model": "my-alias",
                   "content": [{"type": "text", "text": "On it."},
                               {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"location": "Paris"}}],
                   "stop_reason": "tool_use", "stop_sequence": null,
                   "usage": {"input_tokens": 20, "output_tokens": 8, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0}})
    );
    for (finish, stop) in [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")] {
        let chat = json!({"id": "x", "choices": [{"message": {"content": "hi"}, "finish_reason": finish}]});
        let msg = chat_response_to_message(&chat, "m");
        assert_eq!(msg["stop_reason"], stop);
        assert_eq!(msg["content"], json!([{"type": "text", "text": "hi"}]));
        assert_eq!(msg["usage"]["input_tokens"], 0);
    }
    // A provider that finishes tool calls with "stop" still yields tool_use; bad arguments an empty input.
    let chat = json!({"choices": [{"finish_reason": "stop", "message": {"content": null, "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{broken"}}]}}]});
    let msg = chat_response_to_message(&chat, "m");
    assert_eq!(msg["stop_reason"], "tool_use");
    assert_eq!(msg["content"], json!([{"type": "tool_use", "id": "c", "name": "f", "input": {}}]));
    assert!(msg["id"].as_str().unwrap().starts_with("msg_"));
}

// --- Inbound streaming ---

#[test]
fn inbound_stream_emits_anthropic_events_and_reassembles_text() {
    let mut t = ChatToMessagesStream::new("my-alias");
    let input = openai_chunks(&[
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": ", world"}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage_chunk(30, 2, 10),
    ]);
    let out = translate(&mut t, &input);
    assert_eq!(
        names(&out),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let events = json_of(&out);
    for (event, (name, _)) in events.iter().zip(&out) {
        assert_eq!(event["type"].as_str(), name.as_deref());
    }
    assert_eq!(events[0]["message"]["id"], "msg_abc");
    assert_eq!(events[0]["message"]["model"], "my-alias");
    assert_eq!(events[0]["message"]["content"], json!([]));
    assert_eq!(events[1]["content_block"], json!({"type": "text", "text": ""}));
    let text: String = events.iter().filter_map(|e| e.pointer("/delta/text").and_then(Value::as_str)).collect();
    assert_eq!(text, "Hello, world");
    assert_eq!(events[6]["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        events[6]["usage"],
        json!({"input_tokens": 20, "output_tokens": 2, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0})
    );
    assert!(t.event(None, b"data after the end").is_empty() && t.end().is_empty());
}

#[test]
fn inbound_stream_reassembles_tool_arguments() {
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut c = json!({"index": index, "function": {"arguments": args}});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["type"] = json!("function");
        }
        if let Some(name) = name {
            c["function"]["name"] = json!(name);
        }
        chunk(json!({"tool_calls": [c]}), Value::Null)
    };
    let mut t = ChatToMessagesStream::new("m");
    let input = openai_chunks(&[
        chunk(json!({"role": "assistant", "content": "Sure."}), Value::Null),
        call(0, Some("call_a"), Some("get_weather"), ""),
        call(0, None, None, "{\"loc"),
        call(0, None, None, "ation\":\"Paris\"}"),
        call(1, Some("call_b"), Some("get_time"), "{\"tz\":"),
        // Some providers repeat the id on every delta.
        call(1, Some("call_b"), None, "\"CET\"}"),
        chunk(json!({}), json!("tool_calls")),
        usage_chunk(5, 9, 0),
    ]);
    let out = translate(&mut t, &input);
    assert_eq!(
        names(&out),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let events = json_of(&out);
    let starts: Vec<&Value> = events.iter().filter(|e| e["type"] == "content_block_start").collect();
    assert_eq!(
        starts[1]["content_block"],
        json!({"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}})
    );
    assert_eq!(starts[2]["index"], 2);
    assert_eq!(starts[2]["content_block"]["id"], "call_b");
    let args = |index: u64| -> Value {
        let s: String = events
            .iter()
            .filter(|e| e["index"] == index && e["delta"]["type"] == "input_json_delta")
            .map(|e| e["delta"]["partial_json"].as_str().unwrap())
            .collect();
        serde_json::from_str(&s).unwrap()
    };
    assert_eq!(args(1), json!({"location": "Paris"}));
    assert_eq!(args(2), json!({"tz": "CET"}));
    let delta = events.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 9);
}

#[test]
fn inbound_stream_reports_truncation_and_upstream_errors() {
    let mut t = ChatToMessagesStream::new("m");
    let out = translate(&mut t, &[(None, chunk(json!({"content": "par"}), Value::Null).to_string())]);
    assert_eq!(names(&out), ["message_start", "content_block_start", "ping", "content_block_delta", "error"]);
    assert_eq!(json_of(&out)[4]["error"]["type"], "api_error");

    let mut t = ChatToMessagesStream::new("m");
    let out = translate(&mut t, &[(None, json!({"error": {"message": "boom", "type": "server_error"}}).to_string())]);
    assert_eq!(names(&out), ["error"]);
    assert_eq!(json_of(&out)[0]["error"]["message"], "boom");

    // A finish reason without [DONE] still completes; an empty stream ending in [DONE] is a valid message.
    let mut t = ChatToMessagesStream::new("m");
    let out = translate(&mut t, &[(None, chunk(json!({"content": "x"}), json!("length")).to_string())]);
    assert_eq!(names(&out).last(), Some(&"message_stop"));
    assert_eq!(json_of(&out)[5]["delta"]["stop_reason"], "max_tokens");
    let mut t = ChatToMessagesStream::new("m");
    let out = translate(&mut t, &[(None, "[DONE]".to_owned())]);
    assert_eq!(names(&out), ["message_start", "ping", "message_delta", "message_stop"]);
}

// --- Outbound streaming ---

/// Anthropic's documented stream for text followed by a tool call.
fn anthropic_stream() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 3}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "check."}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1",
                "name": "get_weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": " \"Paris\"}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 42}}),
        json!({"type": "message_stop"}),
    ]
}

#[test]
fn outbound_stream_emits_openai_chunks_then_usage_and_done() {
    let mut t = MessagesToChatStream::new();
    let out = translate(&mut t, &borrow(&anthropic_events(&anthropic_stream())));
    assert!(out.iter().all(|(name, _)| name.is_none()));
    assert_eq!(out.last().unwrap().1, "[DONE]");
    let chunks = json_of(&out);
    assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-01" && c["model"] == "claude-sonnet-4-5"));
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    let text: String =
        chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str)).collect();
    assert_eq!(text, "Let me check.");
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0")).collect();
    assert_eq!(
        calls[0],
        &json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
    );
    let args: String = calls.iter().map(|c| c["function"]["arguments"].as_str().unwrap()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"location": "Paris"}));
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 68, "completion_tokens": 42, "total_tokens": 110, "prompt_tokens_details": {"cached_tokens": 40},
               "cache_creation_input_tokens": 3})
    );
}

#[test]
fn outbound_stream_handles_errors_and_truncation() {
    let mut t = MessagesToChatStream::new();
    let events = anthropic_events(&[
        anthropic_stream()[0].clone(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]);
    let out = translate(&mut t, &borrow(&events));
    assert_eq!(out.len(), 2, "no [DONE] after an error: {out:?}");
    let error = &json_of(&out)[1];
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert_eq!(error["error"]["message"], "Overloaded");

    // Cut before message_delta: no usage chunk and no [DONE], so metering marks it partial.
    let mut t = MessagesToChatStream::new();
    let out = translate(&mut t, &borrow(&anthropic_events(&anthropic_stream()[..8])));
    assert!(out.iter().all(|(_, d)| d != "[DONE]"));
    // Cut after message_delta: the answer is complete.
    let mut t = MessagesToChatStream::new();
    let out = translate(&mut t, &borrow(&anthropic_events(&anthropic_stream()[..15])));
    assert_eq!(out.last().unwrap().1, "[DONE]");
}

// --- Errors ---

/// Each new tool call opens a block: a provider that starts more calls than any answer
/// makes is cut off with an Anthropic error event, and nothing follows it.
#[test]
fn inbound_stream_blocks_are_bounded() {
    let mut t = ChatToMessagesStream::new("m");
    let mut calls: Vec<Value> = (0..2 * MAX_MESSAGE_BLOCKS)
        .map(|i| json!({"index": i, "id": format!("c{i}"), "function": {"name": "f", "arguments": "{}"}}))
        .collect();
    // A delta of the call still open when the limit is hit: nothing after the error either.
    calls.insert(
        MAX_MESSAGE_BLOCKS as usize + 1,
        json!({"index": MAX_MESSAGE_BLOCKS - 1, "function": {"arguments": "x"}}),
    );
    let chunk = json!({"choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": "tool_calls"}]});
    let out = t.event(None, chunk.to_string().as_bytes());
    let names: Vec<Option<&str>> = out.iter().map(|b| parse_event(b).name).collect();
    let starts = names.iter().filter(|n| **n == Some("content_block_start")).count();
    assert_eq!(starts as u64, MAX_MESSAGE_BLOCKS);
    assert_eq!(names.last(), Some(&Some("error")));
    assert!(t.finished());
    assert!(t.event(None, b"[DONE]").is_empty() && t.end().is_empty());
}

/// Blocks are forgotten when they stop, so a long answer keeps one; a provider that keeps
/// opening blocks without stopping them is cut off with an error event.
#[test]
fn outbound_stream_keeps_only_open_blocks() {
    let mut t = MessagesToChatStream::new();
    let start = |i: u64| {
        json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}).to_string()
    };
    let stop = |i: u64| json!({"type": "content_block_stop", "index": i}).to_string();
    for i in 0..1000 {
        t.event(None, start(i).as_bytes());
        t.event(None, stop(i).as_bytes());
    }
    assert!(t.blocks.is_empty() && !t.finished());
    for i in 0..MAX_OPEN_BLOCKS as u64 {
        t.event(None, start(i).as_bytes());
    }
    assert!(!t.finished());
    let out = t.event(None, start(1000).as_bytes());
    let error: Value = serde_json::from_slice(parse_event(&out[0]).data.as_slice()).unwrap();
    assert_eq!(error["error"]["code"], "upstream_error");
    assert!(t.finished());
    assert_eq!(t.blocks.len(), MAX_OPEN_BLOCKS);
    assert!(t.end().is_empty(), "no [DONE] after a failure");
}

#[test]
fn errors_translate_both_ways() {
    let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"}}"#;
    assert_eq!(
        error_to_openai(body),
        json!({"error": {"message": "Number of requests has exceeded your rate limit", "type": "rate_limit_error",
                             "param": null, "code": "rate_limit_exceeded"}})
    );
    let long = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
    assert_eq!(error_to_openai(long)["error"]["code"], "context_length_exceeded");
    assert_eq!(error_to_openai(b"<html>bad gateway</html>")["error"]["message"], "<html>bad gateway</html>");
    assert_eq!(error_to_openai(b"")["error"]["type"], "api_error");
    let already = br#"{"error":{"message":"m","type":"invalid_request_error","param":"x","code":"c"}}"#;
    assert_eq!(error_to_openai(already), serde_json::from_slice::<Value>(already).unwrap());

    let envelope = br#"{"error":{"message":"model 'x' does not exist","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#;
    assert_eq!(
        error_to_anthropic(404, envelope),
        json!({"type": "error", "error": {"type": "not_found_error", "message": "model 'x' does not exist"}})
    );
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (413, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ] {
        assert_eq!(error_to_anthropic(status, b"{}")["error"]["type"], kind, "{status}");
    }
    assert_eq!(error_to_anthropic(502, b"upstream down")["error"]["message"], "upstream down");
    assert_eq!(error_to_anthropic(500, b"{}")["error"]["message"], "the request failed with status 500");
}

// --- Round trips ---

#[test]
fn openai_request_survives_a_round_trip_through_anthropic() {
    let original = openai_request();
    let anthropic = chat_request_to_messages(&original, "claude").unwrap();
    let back = messages_to_chat_request(&anthropic).unwrap();
    assert_eq!(back["messages"], original["messages"]);
    assert_eq!(back["tools"], original["tools"]);
    assert_eq!(back["tool_choice"], original["tool_choice"]);
    for key in ["temperature", "top_p", "max_tokens", "stop", "user"] {
        assert_eq!(back[key], original[key], "{key}");
    }
}

#[test]
fn anthropic_request_survives_a_round_trip_through_openai() {
    let mut original = anthropic_request();
    // What OpenAI cannot carry: thinking blocks, top_k, cache marks, a tool result's image and error flag.
    original["messages"][1]["content"].as_array_mut().unwrap().remove(0);
    original["messages"][2]["content"][1] =
        json!({"type": "tool_result", "tool_use_id": "toolu_2", "content": "no data"});
    original["system"][0].as_object_mut().unwrap().remove("cache_control");
    original.as_object_mut().unwrap().remove("top_k");
    let openai = messages_to_chat_request(&original).unwrap();
    let back = chat_request_to_messages(&openai, "claude-sonnet-4-5").unwrap();
    assert_eq!(back["messages"], original["messages"]);
    for key in
        ["system", "tools", "tool_choice", "stop_sequences", "temperature", "top_p", "max_tokens", "metadata", "stream"]
    {
        assert_eq!(back[key], original[key], "{key}");
    }
}

#[test]
fn responses_and_usage_survive_round_trips() {
    let chat = json!({
        "id": "chatcmpl-rt", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "ok",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55, "prompt_tokens_details": {"cached_tokens": 30}}
    });
    let back = message_to_chat_response(&chat_response_to_message(&chat, "m"));
    assert_eq!(back["id"], chat["id"]);
    assert_eq!(back["choices"], chat["choices"]);
    assert_eq!(back["usage"], chat["usage"]);
}

#[test]
fn streams_survive_a_round_trip() {
    // Anthropic → OpenAI → Anthropic: the same text, tool call, stop reason and usage.
    let openai = translate(&mut MessagesToChatStream::new(), &borrow(&anthropic_events(&anthropic_stream())));
    let openai: Vec<(Option<&str>, String)> = openai.into_iter().map(|(_, d)| (None, d)).collect();
    let anthropic = json_of(&translate(&mut ChatToMessagesStream::new("claude-sonnet-4-5"), &openai));
    let original = anthropic_stream();
    let kept: Vec<&Value> = original
        .iter()
        .filter(|e| e["type"] != "ping" && e["index"] != 0 && e["delta"]["partial_json"] != "")
        .collect();
    assert_eq!(anthropic.len(), kept.len() + 1, "{anthropic:#?}"); // plus one ping
    let text = |events: &[&Value]| -> String {
        events.iter().filter_map(|e| e.pointer("/delta/text").and_then(Value::as_str)).collect()
    };
    assert_eq!(text(&anthropic.iter().collect::<Vec<_>>()), text(&kept));
    let tool_start = anthropic.iter().find(|e| e["content_block"]["type"] == "tool_use").unwrap();
    assert_eq!(tool_start["content_block"], original[9]["content_block"]);
    let delta = anthropic.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"],
        // Cache writes survive the round trip (LiteLLM's `cache_creation_input_tokens`).
        json!({"input_tokens": 25, "output_tokens": 42, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 3})
    );
    assert_eq!(anthropic[0]["message"]["id"], "msg_01");
}
