//! OpenAI chat ⇄ Bedrock's Converse API: the request body, the answer, and the pieces the
//! stream shares (finish reasons, usage). Pure functions over JSON values.

use crate::error::GatewayError;
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

// === Requests ===

/// An OpenAI chat request body → a Converse body (the model is in the URL, not the body).
pub fn chat_to_converse(body: &Value, max_tokens: Option<u64>) -> Result<Value, GatewayError> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` must be an array", "messages"))?;
    let (system, turns) = translate_messages(messages)?;
    if turns.is_empty() {
        return Err(invalid("`messages` must contain at least one user or assistant message", "messages"));
    }
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(turns));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let config = inference_config(body, max_tokens)?;
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if let Some(tools) = tool_config(body)? {
        out.insert("toolConfig".into(), tools);
    }
    Ok(Value::Object(out))
}

/// `(system blocks, messages)`: consecutive messages of one role merged, as Converse wants
/// roles to alternate; tool results are the user's.
fn translate_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), GatewayError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match message.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => {
                let text = text_of(content)?;
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
                continue;
            }
            "user" => ("user", text_blocks(content)?),
            "assistant" => {
                let mut blocks = text_blocks(content)?;
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    blocks.push(tool_use(call)?);
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let result = json!({ "toolResult": { "toolUseId": id, "content": [{ "text": text_of(content)? }] } });
                ("user", vec![result])
            }
            "" => return Err(invalid("every message needs a `role`", "messages")),
            other => return Err(invalid(format!("unsupported message role '{other}'"), "messages")),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns.into_iter().map(|(role, content)| json!({ "role": role, "content": content })).collect();
    Ok((system, turns))
}

/// The text of a content (a string, or text parts).
fn text_of(content: &Value) -> Result<String, GatewayError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some(other) => {
                        return Err(invalid(
                            format!("content part type '{other}' is not supported for Bedrock"),
                            "messages",
                        ))
                    }
                    None => return Err(invalid("every content part needs a `type`", "messages")),
                }
            }
            Ok(text)
        }
        _ => Err(invalid("message `content` must be a string or an array of parts", "messages")),
    }
}

/// Converse text blocks of a content (empty texts dropped: Converse refuses them).
fn text_blocks(content: &Value) -> Result<Vec<Value>, GatewayError> {
    let text = text_of(content)?;
    Ok(if text.is_empty() { Vec::new() } else { vec![json!({ "text": text })] })
}

/// An OpenAI tool call → a `toolUse` block (arguments a model wrote malformed kept as a string).
fn tool_use(call: &Value) -> Result<Value, GatewayError> {
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("every assistant tool call needs `function.name`", "messages"))?;
    let id = call.get("id").and_then(Value::as_str).unwrap_or(name);
    let input = match call.pointer("/function/arguments") {
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or_else(|_| json!({ "arguments": s })),
        Some(Value::Object(o)) => Value::Object(o.clone()),
        _ => json!({}),
    };
    Ok(json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } }))
}

fn inference_config(body: &Value, max_tokens: Option<u64>) -> Result<Map<String, Value>, GatewayError> {
    let mut config = Map::new();
    if let Some(max) = max_tokens {
        config.insert("maxTokens".into(), json!(max));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        match body.get(from) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                config.insert(to.into(), v.clone());
            }
            Some(_) => return Err(invalid(format!("`{from}` must be a number"), from)),
        }
    }
    let stops: Vec<Value> = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.clone(),
        Some(_) => return Err(invalid("`stop` must be a string or an array of strings", "stop")),
    };
    if !stops.is_empty() {
        config.insert("stopSequences".into(), Value::Array(stops));
    }
    Ok(config)
}

/// OpenAI `tools` → Converse `toolConfig` (function tools; `tool_choice` `required` or a named
/// function become `any` or `tool`; `none` sends no tools).
fn tool_config(body: &Value) -> Result<Option<Value>, GatewayError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("`tools` must be an array", "tools")),
    };
    let choice = body.get("tool_choice").unwrap_or(&Value::Null);
    if tools.is_empty() || choice.as_str() == Some("none") {
        return Ok(None);
    }
    let mut specs = Vec::with_capacity(tools.len());
    for tool in tools {
        let function = tool.get("function").unwrap_or(tool);
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("every tool needs `function.name`", "tools"))?;
        let mut spec = json!({ "name": name, "inputSchema": { "json": function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})) } });
        if let Some(description) = function.get("description").and_then(Value::as_str) {
            spec["description"] = json!(description);
        }
        specs.push(json!({ "toolSpec": spec }));
    }
    let mut config = json!({ "tools": specs });
    match choice {
        Value::String(s) if s == "required" => config["toolChoice"] = json!({ "any": {} }),
        Value::Object(_) => {
            if let Some(name) = choice.pointer("/function/name").and_then(Value::as_str) {
                config["toolChoice"] = json!({ "tool": { "name": name } });
            }
        }
        _ => {}
    }
    Ok(Some(config))
}

// === Answers ===

/// A Converse `stopReason` → OpenAI's `finish_reason`.
pub fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("tool_use") => "tool_calls",
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("guardrail_intervened") | Some("content_filtered") => "content_filter",
        _ => "stop",
    }
}

/// Converse `usage` → OpenAI `usage`: cache reads and writes are prompt tokens too, the reads
/// counted as cached.
pub fn usage(usage: &Value) -> Option<Value> {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64);
    let input = count("inputTokens")?;
    let output = count("outputTokens").unwrap_or(0);
    let read = count("cacheReadInputTokens").unwrap_or(0);
    let written = count("cacheWriteInputTokens").unwrap_or(0);
    let prompt = input.saturating_add(read).saturating_add(written);
    let mut out = json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt.saturating_add(output),
    });
    if read > 0 {
        out["prompt_tokens_details"] = json!({ "cached_tokens": read });
    }
    Some(out)
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A Converse answer → an OpenAI chat completion.
pub fn converse_to_chat(answer: &Value, model: &str) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    let blocks = answer.pointer("/output/message/content").and_then(Value::as_array);
    for block in blocks.into_iter().flatten() {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(call) = block.get("toolUse") {
            let arguments = call.get("input").map_or_else(|| "{}".to_owned(), Value::to_string);
            calls.push(json!({
                "id": call.get("toolUseId").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": { "name": call.get("name").and_then(Value::as_str).unwrap_or_default(), "arguments": arguments },
            }));
        }
    }
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) } });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = finish_reason(answer.get("stopReason").and_then(Value::as_str));
    let mut chat = json!({
        "id": format!("chatcmpl-bedrock-{}", now_secs()),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
    });
    if let Some(usage) = answer.get("usage").and_then(usage) {
        chat["usage"] = usage;
    }
    chat
}

// === Errors ===

/// A Bedrock error body (`{"message": "..."}`; its type travels in `x-amzn-ErrorType`) → the
/// OpenAI envelope. The message decides the class where it says what went wrong.
pub fn error_to_openai(body: &[u8]) -> Value {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let Some(message) = message else { return crate::providers::unreadable_error(body) };
    exception_envelope(None, message)
}

/// The envelope of an exception, by its type when known (a stream's `:exception-type`).
pub fn exception_envelope(kind: Option<&str>, message: &str) -> Value {
    let lower = message.to_ascii_lowercase();
    let (kind, code) = match kind {
        Some("throttlingException") | Some("ThrottlingException") => ("rate_limit_error", "rate_limit_exceeded"),
        Some("serviceUnavailableException") => ("api_error", "service_unavailable"),
        _ if lower.contains("too many tokens") || lower.contains("input is too long") => {
            ("invalid_request_error", "context_length_exceeded")
        }
        _ if lower.contains("security token") || lower.contains("signature") => {
            ("authentication_error", "invalid_api_key")
        }
        Some("validationException") => ("invalid_request_error", "invalid_request"),
        _ => ("api_error", "upstream_error"),
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}
