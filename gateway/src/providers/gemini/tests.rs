use super::stream::MAX_CANDIDATES;
use super::*;

fn translate(body: Value) -> Value {
    chat_request_to_generate(&body).unwrap()
}

#[test]
fn builds_urls_without_the_key() {
    assert_eq!(
        url("", "gemini-2.0-flash", false),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(
        url("http://127.0.0.1:9/gemini/v1beta/", "models/gemini-2.5-pro", true),
        "http://127.0.0.1:9/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
}

#[test]
fn rejects_requests_without_messages() {
    for body in [json!({"model": "g"}), json!({"messages": "hi"})] {
        let err = chat_request_to_generate(&body).unwrap_err();
        assert!(matches!(err, GatewayError::InvalidRequest { param: Some("messages"), .. }), "{err:?}");
    }
    let only_system = json!({"messages": [{"role": "system", "content": "be brief"}]});
    assert!(chat_request_to_generate(&only_system).is_err());
    let bad_role = json!({"messages": [{"role": "wizard", "content": "x"}]});
    assert!(chat_request_to_generate(&bad_role).is_err());
}

#[test]
fn system_messages_become_the_system_instruction_and_turns_alternate() {
    let out = translate(json!({"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "answer in French"}]},
        {"role": "user", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "bonjour"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "again"}
    ]}));
    assert_eq!(out["systemInstruction"], json!({"parts": [{"text": "be brief"}, {"text": "answer in French"}]}));
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "hello"}, {"text": "there"}]},
            {"role": "model", "parts": [{"text": "bonjour"}]},
            {"role": "user", "parts": [{"text": "again"}]}
        ])
    );
    assert!(out.get("generationConfig").is_none());
    assert!(out.get("tools").is_none());
}

#[test]
fn images_become_inline_or_file_data() {
    let out = translate(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.WEBP?size=2"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/photo"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    ]}]}));
    assert_eq!(
        out["contents"][0]["parts"],
        json!([
            {"text": "what is this?"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.WEBP?size=2"}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
            {"inlineData": {"mimeType": "audio/wav", "data": "AAAA"}}
        ])
    );
    let not_base64 = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]});
    assert!(chat_request_to_generate(&not_base64).is_err());
}

#[test]
fn tools_and_tool_choice_translate() {
    let out = translate(json!({
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [
            {"type": "function", "function": {
                "name": "get_weather", "description": "Weather by city", "strict": true,
                "parameters": {
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "location": {"type": "string", "description": "city"},
                        "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                        "when": {"$ref": "#/$defs/When"},
                        "tags": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                                 "properties": {"k": {"const": "v"}}}},
                        "extra": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": null}
                    },
                    "required": ["location"],
                    "$defs": {"When": {"type": "string", "format": "date-time", "additionalProperties": false}}
                }
            }},
            {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
    }));
    assert_eq!(
        out["tools"],
        json!([{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather by city", "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "city"},
                    "unit": {"type": "string", "nullable": true, "enum": ["c", "f"]},
                    "when": {"type": "string", "format": "date-time"},
                    "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"enum": ["v"]}}}},
                    "extra": {"type": "integer", "nullable": true, "default": null}
                },
                "required": ["location"]
            }},
            {"name": "now"}
        ]}])
    );
    assert_eq!(
        out["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
    for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
        let out = translate(json!({
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": choice
        }));
        assert_eq!(out["toolConfig"]["functionCallingConfig"], json!({"mode": mode}));
    }
    let bad = json!({"messages": [{"role": "user", "content": "x"}],
                         "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"});
    let err = chat_request_to_generate(&bad).unwrap_err();
    assert!(matches!(err, GatewayError::InvalidRequest { param: Some("tool_choice"), .. }));
}

#[test]
fn tool_calls_and_results_round_trip_into_contents() {
    let out = translate(json!({"messages": [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp\": 21}"},
        {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
        {"role": "user", "content": "thanks"}
    ]}));
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"content": {"temp": 21}}}},
                {"functionResponse": {"name": "get_time", "response": {"content": {"result": "noon"}}}},
                {"text": "thanks"}
            ]}
        ])
    );
    let orphan = json!({"messages": [{"role": "user", "content": "x"},
                                         {"role": "tool", "tool_call_id": "nope", "content": "1"}]});
    assert!(chat_request_to_generate(&orphan).is_err());
}

#[test]
fn generation_config_translates() {
    let out = translate(json!({
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.3, "top_p": 0.9, "max_tokens": 100, "stop": "END", "n": 2, "seed": 7,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true, "schema": {
            "type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": false}}}
    }));
    assert_eq!(
        out["generationConfig"],
        json!({
            "temperature": 0.3, "topP": 0.9, "maxOutputTokens": 100, "stopSequences": ["END"],
            "candidateCount": 2, "seed": 7, "responseMimeType": "application/json",
            "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}}
        })
    );
    let out = translate(json!({
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 50, "max_tokens": 100, "stop": ["a", "b"],
        "response_format": {"type": "json_object"}
    }));
    assert_eq!(
        out["generationConfig"],
        json!({"maxOutputTokens": 50, "stopSequences": ["a", "b"], "responseMimeType": "application/json"})
    );
    let bad = json!({"messages": [{"role": "user", "content": "x"}], "stop": 3});
    assert!(matches!(
        chat_request_to_generate(&bad).unwrap_err(),
        GatewayError::InvalidRequest { param: Some("stop"), .. }
    ));
}

#[test]
fn responses_translate_text_and_usage() {
    let resp = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking...", "thought": true}, {"text": "Hello"}, {"text": " world"}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                          "cachedContentTokenCount": 4, "totalTokenCount": 18},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc"
    });
    let out = generate_response_to_chat(&resp, "fast");
    assert_eq!(out["id"], "chatcmpl-abc");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], "fast");
    assert_eq!(out["choices"][0]["message"]["content"], "Hello world");
    assert_eq!(out["choices"][0]["message"]["reasoning_content"], "thinking...");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18,
                   "prompt_tokens_details": {"cached_tokens": 4},
                   "completion_tokens_details": {"reasoning_tokens": 3}})
    );
    // Audio and image tokens by modality: parts of the prompt and of the completion.
    let resp = json!({"candidates": [], "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 50,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}, {"modality": "AUDIO", "tokenCount": 15},
                                {"modality": "IMAGE", "tokenCount": 5}],
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 40}, {"modality": "IMAGE", "tokenCount": 10}]}});
    assert_eq!(
        generate_response_to_chat(&resp, "m")["usage"],
        json!({"prompt_tokens": 30, "completion_tokens": 50, "total_tokens": 80,
               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 15, "image_tokens": 5},
               "completion_tokens_details": {"audio_tokens": 40, "image_tokens": 10}})
    );
    let generated = generate_response_to_chat(&json!({"candidates": []}), "m");
    assert!(generated["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(generated.get("usage").is_none());
}

#[test]
fn responses_translate_tool_calls_and_finish_reasons() {
    let resp = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
    });
    let out = generate_response_to_chat(&resp, "m");
    let message = &out["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["tool_calls"][0]["id"], "call_0");
    assert_eq!(message["tool_calls"][0]["type"], "function");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(message["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "Paris"}));
    assert_eq!(message["tool_calls"][1]["id"], "call_1");
    assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    for (reason, expected) in [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ] {
        let resp = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
        assert_eq!(generate_response_to_chat(&resp, "m")["choices"][0]["finish_reason"], expected, "{reason}");
    }
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"},
                             "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}});
    let out = generate_response_to_chat(&blocked, "m");
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(out["usage"]["prompt_tokens"], 7);
}

fn run_stream(events: &[Value]) -> Vec<String> {
    let mut t = GenerateToChatStream::new("fast");
    let mut out = Vec::new();
    for e in events {
        out.extend(t.event(None, e.to_string().as_bytes()));
    }
    out.extend(t.end());
    out.extend(t.end());
    out.into_iter().map(|b| String::from_utf8(b.to_vec()).unwrap()).collect()
}

fn chunk_json(frame: &str) -> Value {
    serde_json::from_str(frame.strip_prefix("data: ").unwrap().trim_end()).unwrap()
}

#[test]
fn stream_reassembles_text_and_ends_with_usage_then_done() {
    let meta = |c: u64| json!({"promptTokenCount": 4, "candidatesTokenCount": c, "totalTokenCount": 4 + c});
    let frames = run_stream(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
                   "usageMetadata": meta(1), "responseId": "r1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "index": 0}],
                   "usageMetadata": meta(2), "responseId": "r1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "!"}]}, "index": 0,
                   "finishReason": "STOP"}], "usageMetadata": meta(3), "responseId": "r1"}),
    ]);
    assert_eq!(frames.last().unwrap(), "data: [DONE]\n\n");
    let chunks: Vec<Value> = frames[..frames.len() - 1].iter().map(|f| chunk_json(f)).collect();
    let text: String = chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/content")?.as_str()).collect();
    assert_eq!(text, "Hello!");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["delta"].get("role"), None);
    for c in &chunks {
        assert_eq!(c["id"], "chatcmpl-r1");
        assert_eq!(c["model"], "fast");
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    let finishes: Vec<&Value> = chunks.iter().filter_map(|c| c.pointer("/choices/0/finish_reason")).collect();
    assert_eq!(finishes.iter().filter(|f| !f.is_null()).count(), 1);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 4);
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(usage["usage"]["total_tokens"], 7);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.get("usage").is_none()));
    let before_usage = &chunks[chunks.len() - 2];
    assert_eq!(before_usage["choices"][0]["finish_reason"], "stop");
}

#[test]
fn stream_delivers_tool_calls() {
    let frames = run_stream(&[json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 6, "totalTokenCount": 15}
    })]);
    let chunks: Vec<Value> = frames[..frames.len() - 1].iter().map(|f| chunk_json(f)).collect();
    let call = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["id"], "call_0");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"location\":\"Paris\"}");
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[2]["usage"]["completion_tokens"], 6);
    assert_eq!(frames.last().unwrap(), "data: [DONE]\n\n");
}

#[tokio::test]
async fn stream_translates_crlf_framed_bytes() {
    use crate::sse::TranslatedStream;
    use futures::StreamExt;
    let wire = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"tok\"}],\"role\":\"model\"},\"index\":0}],",
        "\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":1,\"totalTokenCount\":4}}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" tok\"}],\"role\":\"model\"},\"index\":0,",
        "\"finishReason\":\"STOP\"}],",
        "\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2,\"totalTokenCount\":5}}\r\n\r\n",
    );
    let (a, b) = wire.as_bytes().split_at(50);
    let chunks: Vec<Result<Bytes, crate::sse::EventTooLarge>> =
        vec![Ok(Bytes::copy_from_slice(a)), Ok(Bytes::copy_from_slice(b))];
    let out: Vec<Bytes> = TranslatedStream::new(futures::stream::iter(chunks), GenerateToChatStream::new("m"))
        .map(|r| r.unwrap())
        .collect()
        .await;
    let text: String = out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
    let frames: Vec<&str> = text.split_inclusive("\n\n").collect();
    assert_eq!(frames.last(), Some(&"data: [DONE]\n\n"));
    let chunks: Vec<Value> = frames[..frames.len() - 1].iter().map(|f| chunk_json(f)).collect();
    let content: String = chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/content")?.as_str()).collect();
    assert_eq!(content, "tok tok");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 2);
}

/// Definitions that each refer to the next ten times would expand to 10⁸ subschemas within
/// the depth bound: the translation stops at [`MAX_SCHEMA_NODES`] and answers a 400 naming
/// the field, never a partial schema.
#[test]
fn schema_expansion_is_bounded_by_what_it_produces() {
    let mut defs = Map::new();
    for level in 0..10 {
        let properties: Map<String, Value> =
            (0..10).map(|i| (format!("p{i}"), json!({"$ref": format!("#/$defs/D{}", level + 1)}))).collect();
        defs.insert(format!("D{level}"), json!({"type": "object", "properties": properties}));
    }
    defs.insert("D10".into(), json!({"type": "string"}));
    let schema = json!({"type": "object", "properties": {"root": {"$ref": "#/$defs/D0"}}, "$defs": defs});

    let mut budget = SchemaBudget::default();
    let defs = schema.get("$defs").and_then(Value::as_object);
    assert_eq!(clean_schema(&schema, defs, 0, &mut budget), Err(SchemaTooLarge::Nodes));
    assert_eq!(budget.nodes, MAX_SCHEMA_NODES + 1, "work done before stopping");

    let tool = json!({"type": "function", "function": {"name": "f", "parameters": schema}});
    let body = json!({"messages": [{"role": "user", "content": "x"}], "tools": [tool]});
    match chat_request_to_generate(&body) {
        Err(GatewayError::InvalidRequest { param: Some("tools"), message }) => {
            assert!(message.contains("10000 subschemas"), "{message}")
        }
        other => panic!("expected a 400 naming `tools`, got {other:?}"),
    }
    let body = json!({"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}});
    assert!(matches!(
        chat_request_to_generate(&body),
        Err(GatewayError::InvalidRequest { param: Some("response_format"), .. })
    ));
}

/// Inlining copies a definition's keywords once per reference: a long description referred
/// to a hundred times passes [`MAX_SCHEMA_BYTES`] with few nodes. The budget is shared by
/// every schema of the request.
#[test]
fn schema_copies_are_bounded_across_the_request() {
    let big = json!({"type": "string", "description": "d".repeat(100_000)});
    let properties: Map<String, Value> = (0..100).map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/Big"}))).collect();
    let schema = json!({"type": "object", "properties": properties, "$defs": {"Big": big}});
    let mut budget = SchemaBudget::default();
    let defs = schema.get("$defs").and_then(Value::as_object);
    assert_eq!(clean_schema(&schema, defs, 0, &mut budget), Err(SchemaTooLarge::Bytes));
    assert!(budget.nodes < 200, "{budget:?}");

    // Each tool alone is fine; together they are not.
    let properties: Map<String, Value> = (0..30).map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/Big"}))).collect();
    let schema = json!({"type": "object", "properties": properties, "$defs": {"Big": big}});
    let tool = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": schema}});
    let one = json!({"messages": [{"role": "user", "content": "x"}], "tools": [tool("a")]});
    assert!(chat_request_to_generate(&one).is_ok());
    let three = json!({"messages": [{"role": "user", "content": "x"}], "tools": [tool("a"), tool("b"), tool("c")]});
    match chat_request_to_generate(&three) {
        Err(GatewayError::InvalidRequest { param: Some("tools"), message }) => {
            assert!(message.contains("bytes"), "{message}")
        }
        other => panic!("expected a 400 naming `tools`, got {other:?}"),
    }
}

/// A stream naming more candidates than any request can ask for ends with an error event,
/// and owes no `[DONE]`: metering sees it cut short.
#[test]
fn stream_candidates_are_bounded() {
    let mut t = GenerateToChatStream::new("m");
    let event =
        |index: usize| json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "index": index}]}).to_string();
    for i in 0..MAX_CANDIDATES {
        assert!(!t.event(None, event(i).as_bytes()).is_empty());
        assert!(!t.finished());
    }
    assert!(!t.event(None, event(0).as_bytes()).is_empty(), "a known candidate goes on");
    let out = t.event(None, event(MAX_CANDIDATES).as_bytes());
    let err = chunk_json(std::str::from_utf8(&out[0]).unwrap());
    assert_eq!(err["error"]["code"], "upstream_error");
    assert!(t.finished());
    assert_eq!(t.choices.len(), MAX_CANDIDATES);
    assert!(t.event(None, event(1).as_bytes()).is_empty());
    assert!(t.end().is_empty());

    let mut t = GenerateToChatStream::new("m");
    let many: Vec<Value> = (0..=MAX_CANDIDATES).map(|_| json!({"content": {"parts": [{"text": "x"}]}})).collect();
    let out = t.event(None, json!({"candidates": many}).to_string().as_bytes());
    assert_eq!(out.len(), 1, "only the error event");
    assert!(t.finished());
}

#[test]
fn stream_passes_errors_and_tolerates_noise() {
    let mut t = GenerateToChatStream::new("m");
    assert!(t.event(None, b"not json").is_empty());
    let out = t.event(None, br#"{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}"#);
    let err = chunk_json(std::str::from_utf8(&out[0]).unwrap());
    assert_eq!(err["error"]["message"], "overloaded");
    assert_eq!(err["error"]["type"], "api_error");
    // No usage was reported: no usage chunk, only the terminator.
    let end: Vec<Bytes> = t.end();
    assert_eq!(end, vec![Bytes::from_static(b"data: [DONE]\n\n")]);
}

#[test]
fn errors_translate_to_the_openai_envelope() {
    let out = error_to_openai(
            br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
        );
    assert_eq!(
        out,
        json!({"error": {"message": "Resource has been exhausted (e.g. check quota).", "type": "rate_limit_error",
                             "param": null, "code": "rate_limit_exceeded"}})
    );
    let key = error_to_openai(
            br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",
                "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#,
        );
    assert_eq!(key["error"]["type"], "authentication_error");
    assert_eq!(key["error"]["code"], "invalid_api_key");
    let long = error_to_openai(
            br#"[{"error":{"code":400,"message":"The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}]"#,
        );
    assert_eq!(long["error"]["code"], "context_length_exceeded");
    assert_eq!(long["error"]["type"], "invalid_request_error");
    let bad =
        error_to_openai(br#"{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}"#);
    assert_eq!(bad["error"]["code"], "invalid_request");
    let missing = error_to_openai(br#"{"error":{"code":404,"message":"models/x is not found","status":"NOT_FOUND"}}"#);
    assert_eq!(missing["error"]["code"], "not_found");
    let internal = error_to_openai(br#"{"error":{"code":500,"message":"boom","status":"INTERNAL"}}"#);
    assert_eq!(internal["error"], json!({"message": "boom", "type": "api_error", "param": null, "code": "internal"}));
    let html = error_to_openai(b"<html>Bad Gateway</html>");
    assert_eq!(html["error"]["message"], "<html>Bad Gateway</html>");
    assert_eq!(html["error"]["type"], "api_error");
    assert_eq!(error_to_openai(b"")["error"]["message"], "the upstream provider returned an error");
}

/// Found by fuzzing: `candidatesTokenCount + thoughtsTokenCount` (and the total) were added
/// unchecked. A debug build panicked; a release build wrapped around, so counts of
/// `u64::MAX - 1` and 3 billed 1 completion token. The sums saturate now, and a saturated
/// count is not believed by metering (the request is counted by Tollgate instead).
#[test]
fn gemini_usage_sums_saturate_and_are_not_believed() {
    let resp = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}}],
                          "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": u64::MAX - 1,
                                            "thoughtsTokenCount": 3}});
    let chat = generate_response_to_chat(&resp, "g");
    assert_eq!(chat["usage"]["completion_tokens"], json!(u64::MAX));
    assert_eq!(chat["usage"]["total_tokens"], json!(u64::MAX));
    let read: crate::http::wire::ResponseUsage = serde_json::from_value(chat).unwrap();
    assert_eq!(read.usage(), None, "a saturated count is not believed");
    let mut stream = GenerateToChatStream::new("g");
    stream.event(None, resp.to_string().as_bytes());
    let usage_chunk = stream.end().remove(0);
    assert!(String::from_utf8_lossy(&usage_chunk).contains("18446744073709551615"));
}

/// Found by fuzzing: Gemini's `responseId`, of any length, was repeated in every chunk of a
/// stream. One up to `limits::MAX_ID_BYTES` is kept; a longer one is replaced.
#[test]
fn a_response_id_of_any_length_is_not_repeated_in_every_chunk() {
    let mut stream = GenerateToChatStream::new("g");
    let first = json!({"responseId": "r".repeat(100_000), "candidates": [{"content": {"parts": [{"text": "a"}]}}]});
    let size = |out: Vec<Bytes>| out.iter().map(Bytes::len).sum::<usize>();
    assert!(size(stream.event(None, first.to_string().as_bytes())) < 1024);
    let next = json!({"candidates": [{"content": {"parts": [{"text": "b"}]}}]});
    assert!(size(stream.event(None, next.to_string().as_bytes())) < 1024);
    let kept = generate_response_to_chat(&json!({"responseId": "abc"}), "g");
    assert_eq!(kept["id"], "chatcmpl-abc");
}
