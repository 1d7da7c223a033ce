//! Outbound: an OpenAI-shaped request served by Anthropic. The request becomes a Messages
//! request; Anthropic's answer and stream become OpenAI's.

use super::errors::error_envelope;
use super::*;

// === Outbound: OpenAI request → Anthropic request ===

/// Outbound (provider = Anthropic): an OpenAI chat request body → an Anthropic Messages request
/// body for `upstream_model`.
///
/// System and developer messages become the top-level `system` (Anthropic has no other place
/// for them). Tool results become `tool_result` blocks of one user message, as Anthropic
/// requires. Rejected: `n` > 1, non-function tools, audio and file parts. Dropped:
/// `response_format`, `logprobs`, `seed`, penalties, `reasoning_effort`.
pub fn chat_request_to_messages(body: &Value, upstream_model: &str) -> Result<Value, GatewayError> {
    let request =
        body.as_object().ok_or_else(|| GatewayError::invalid("the request body must be a JSON object", None))?;
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(GatewayError::invalid("`messages` must be an array", Some("messages"))),
        None => return Err(GatewayError::invalid("`messages` is required", Some("messages"))),
    };
    if request.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(GatewayError::invalid("this model returns one choice: `n` must be 1", Some("n")));
    }
    let max_tokens = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|name| request.get(*name).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);

    let (system, out_messages) = translate_messages(messages)?;

    let mut out = Map::new();
    out.insert("model".to_owned(), json!(upstream_model));
    out.insert("messages".to_owned(), Value::Array(out_messages));
    out.insert("max_tokens".to_owned(), json!(max_tokens));
    if !system.is_empty() {
        out.insert("system".to_owned(), collapse_parts(system));
    }
    copy_fields(request, &mut out, &["temperature", "top_p"]);
    match request.get("stop") {
        Some(Value::String(stop)) => {
            out.insert("stop_sequences".to_owned(), json!([stop]));
        }
        Some(Value::Array(stops)) if !stops.is_empty() => {
            out.insert("stop_sequences".to_owned(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    if let Some(user) = request.get("user").and_then(Value::as_str) {
        out.insert("metadata".to_owned(), json!({"user_id": user}));
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".to_owned(), json!(true));
    }
    add_tools(request, &mut out)?;
    Ok(Value::Object(out))
}

/// OpenAI messages → Anthropic's top-level `system` blocks and its messages.
fn translate_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), GatewayError> {
    let mut system = Vec::new();
    let mut out_messages: Vec<Value> = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let content = message.get("content").unwrap_or(&Value::Null);
        match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => system.extend(text_blocks(content, i)?),
            Some("user") => {
                let blocks = user_blocks(content, i)?;
                push_user_content(&mut out_messages, blocks);
            }
            Some("assistant") => {
                let blocks = assistant_blocks(message, i)?;
                if !blocks.is_empty() {
                    out_messages.push(json!({"role": "assistant", "content": collapse_parts(blocks)}));
                }
            }
            Some("tool") => {
                let id = message.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                    GatewayError::invalid(format!("messages.{i}.tool_call_id: required"), Some("messages"))
                })?;
                let mut result = json!({"type": "tool_result", "tool_use_id": id});
                match content {
                    Value::Null => {}
                    Value::String(_) => result["content"] = content.clone(),
                    _ => result["content"] = Value::Array(text_blocks(content, i)?),
                }
                push_tool_result(&mut out_messages, result);
            }
            other => {
                return Err(GatewayError::invalid(
                    format!("messages.{i}.role: role {} is not supported", other.unwrap_or("(none)")),
                    Some("messages"),
                ))
            }
        }
    }

    Ok((system, out_messages))
}

/// OpenAI `tools`, `tool_choice` and `parallel_tool_calls` → Anthropic's `tools` and `tool_choice`.
fn add_tools(request: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    let tools = match request.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => {
            tools.iter().enumerate().map(|(i, t)| tool_to_anthropic(i, t)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(GatewayError::invalid("`tools` must be an array", Some("tools"))),
    };
    if !tools.is_empty() {
        out.insert("tools".to_owned(), Value::Array(tools));
        let mut choice = match request.get("tool_choice") {
            None | Some(Value::Null) => None,
            Some(choice) => Some(tool_choice_to_anthropic(choice)?),
        };
        if request.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
            let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = json!(true);
            }
        }
        if let Some(choice) = choice {
            out.insert("tool_choice".to_owned(), choice);
        }
    }
    Ok(())
}

/// Text content (a string or text parts) as Anthropic text blocks; empty texts are left out
/// because Anthropic rejects empty text blocks.
fn text_blocks(content: &Value, i: usize) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(text) if text.is_empty() => Ok(Vec::new()),
        Value::String(text) => Ok(vec![text_part(text)]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, part)| match part.get("type").and_then(Value::as_str) {
                Some("text" | "refusal") => {
                    let text = part.get("text").or_else(|| part.get("refusal")).and_then(Value::as_str);
                    text.filter(|t| !t.is_empty()).map(|t| Ok(text_part(t)))
                }
                other => Some(Err(unsupported_part(other, i, j))),
            })
            .collect(),
        _ => Err(GatewayError::invalid(
            format!("messages.{i}.content: must be a string or an array of content parts"),
            Some("messages"),
        )),
    }
}

fn unsupported_part(kind: Option<&str>, i: usize, j: usize) -> GatewayError {
    GatewayError::invalid(
        format!("messages.{i}.content.{j}: content parts of type {} are not supported here", kind.unwrap_or("(none)")),
        Some("messages"),
    )
}

fn user_blocks(content: &Value, i: usize) -> Result<Vec<Value>, GatewayError> {
    let Value::Array(parts) = content else {
        return match content {
            Value::String(text) => Ok(vec![text_part(text)]),
            _ => text_blocks(content, i),
        };
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    blocks.push(text_part(text));
                }
            }
            Some("image_url") => blocks.push(image_to_anthropic(part, i, j)?),
            other => return Err(unsupported_part(other, i, j)),
        }
    }
    Ok(blocks)
}

/// An OpenAI `image_url` part as an Anthropic image block: `data:` URLs become base64 sources.
fn image_to_anthropic(part: &Value, i: usize, j: usize) -> Result<Value, GatewayError> {
    let bad =
        |what: &str| GatewayError::invalid(format!("messages.{i}.content.{j}.image_url: {what}"), Some("messages"));
    let url = part
        .pointer("/image_url/url")
        .or_else(|| part.get("image_url"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`url` is required"))?;
    let Some(data_url) = url.strip_prefix("data:") else {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    };
    let (meta, data) = data_url.split_once(',').ok_or_else(|| bad("malformed data URL"))?;
    let media_type = meta.strip_suffix(";base64").ok_or_else(|| bad("data URLs must be base64-encoded"))?;
    Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}))
}

fn assistant_blocks(message: &Value, i: usize) -> Result<Vec<Value>, GatewayError> {
    let mut blocks = text_blocks(message.get("content").unwrap_or(&Value::Null), i)?;
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        blocks.push(text_part(refusal));
    }
    for (j, call) in
        message.get("tool_calls").and_then(Value::as_array).map_or(&[][..], Vec::as_slice).iter().enumerate()
    {
        let bad = |what: &str| GatewayError::invalid(format!("messages.{i}.tool_calls.{j}: {what}"), Some("messages"));
        let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
        let input = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(arguments)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| bad("`function.arguments` must be a JSON object"))?
        };
        blocks.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).ok_or_else(|| bad("`id` is required"))?,
            "name": call.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| bad("`function.name` is required"))?,
            "input": input,
        }));
    }
    Ok(blocks)
}

/// The user message carrying the latest tool results, if it is the last message.
fn tool_result_carrier(messages: &mut [Value]) -> Option<&mut Vec<Value>> {
    let last = messages.last_mut()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let blocks = last.get_mut("content")?.as_array_mut()?;
    let first_type = blocks.first().and_then(|b| b.get("type")).and_then(Value::as_str);
    (first_type == Some("tool_result")).then_some(blocks)
}

/// Anthropic wants every result of one assistant turn in the next user message, ahead of any
/// text; consecutive OpenAI `tool` messages (and the user text after them) are merged into it.
fn push_tool_result(messages: &mut Vec<Value>, result: Value) {
    if let Some(blocks) = tool_result_carrier(messages) {
        let at = blocks.iter().take_while(|b| b.get("type").and_then(Value::as_str) == Some("tool_result")).count();
        blocks.insert(at, result);
    } else {
        messages.push(json!({"role": "user", "content": [result]}));
    }
}

fn push_user_content(messages: &mut Vec<Value>, blocks: Vec<Value>) {
    if let Some(carrier) = tool_result_carrier(messages) {
        carrier.extend(blocks);
    } else {
        messages.push(json!({"role": "user", "content": collapse_parts(blocks)}));
    }
}

fn tool_to_anthropic(i: usize, tool: &Value) -> Result<Value, GatewayError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(GatewayError::invalid(format!("tools.{i}.type: only function tools are supported"), Some("tools")));
    }
    let function = tool.get("function").unwrap_or(&Value::Null);
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::invalid(format!("tools.{i}.function.name: required"), Some("tools")))?;
    let mut out = json!({"name": name});
    if let Some(description) = function.get("description").filter(|d| d.is_string()) {
        out["description"] = description.clone();
    }
    out["input_schema"] = function
        .get("parameters")
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    Ok(out)
}

fn tool_choice_to_anthropic(choice: &Value) -> Result<Value, GatewayError> {
    match choice {
        Value::String(mode) if mode == "auto" => Ok(json!({"type": "auto"})),
        Value::String(mode) if mode == "required" => Ok(json!({"type": "any"})),
        Value::String(mode) if mode == "none" => Ok(json!({"type": "none"})),
        _ => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Ok(json!({"type": "tool", "name": name})),
            None => Err(GatewayError::invalid(
                "`tool_choice` must be \"auto\", \"required\", \"none\" or a function",
                Some("tool_choice"),
            )),
        },
    }
}

// === Outbound: Anthropic response → OpenAI response ===

/// Outbound: an Anthropic Message response → an OpenAI chat.completion response. Thinking
/// blocks are not forwarded.
pub fn message_to_chat_response(message: &Value) -> Value {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message.get("content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice) {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").and_then(Value::as_str).unwrap_or_default(),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut chat_message = json!({"role": "assistant"});
    chat_message["content"] = if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) };
    if !tool_calls.is_empty() {
        chat_message["tool_calls"] = Value::Array(tool_calls);
    }
    let finish = message.get("stop_reason").and_then(Value::as_str).map_or("stop", finish_reason);
    json!({
        "id": chat_id(message.get("id").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": model_name(message.get("model")),
        "choices": [{"index": 0, "message": chat_message, "logprobs": null, "finish_reason": finish}],
        "usage": TokenUsage::from_anthropic(message.get("usage").unwrap_or(&Value::Null)).to_openai(),
    })
}

// === Outbound streaming: Anthropic events → OpenAI chunks ===

/// What a content block of the Anthropic stream turns into.
#[derive(Debug, Clone, Copy)]
pub(super) enum BlockKind {
    Text,
    /// A tool call, with its position in OpenAI's `tool_calls`.
    Tool(u64),
    /// Thinking and server-tool blocks: not forwarded.
    Ignored,
}

/// Outbound streaming: Anthropic stream events → OpenAI chat.completion.chunk events, ending with
/// a usage chunk (`choices: []`) and `data: [DONE]`.
///
/// The usage chunk is always emitted; the metering stage hides it from clients that did not ask.
/// A stream that stops before its `message_delta` ends without `[DONE]`, so metering sees it as
/// partial. Only open blocks are remembered, at most [`MAX_OPEN_BLOCKS`] of them: a provider
/// that opens more ends the stream with an error.
#[derive(Debug)]
pub struct MessagesToChatStream {
    id: String,
    model: Value,
    created: i64,
    /// Open content blocks: Anthropic's index, and what the block is.
    pub(super) blocks: Vec<(u64, BlockKind)>,
    tool_calls: u64,
    finish_reason: Option<&'static str>,
    usage: TokenUsage,
    done: bool,
}

impl Default for MessagesToChatStream {
    fn default() -> Self {
        MessagesToChatStream::new()
    }
}

impl MessagesToChatStream {
    pub fn new() -> Self {
        MessagesToChatStream {
            id: chat_id(None),
            model: Value::Null,
            created: chrono::Utc::now().timestamp(),
            blocks: Vec::new(),
            tool_calls: 0,
            finish_reason: None,
            usage: TokenUsage::default(),
            done: false,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        frame_json(
            None,
            &json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
            }),
        )
    }

    fn block(&self, index: u64) -> Option<BlockKind> {
        self.blocks.iter().rev().find(|(i, _)| *i == index).map(|(_, kind)| *kind)
    }

    /// The usage chunk and `[DONE]`.
    fn close(&mut self) -> Vec<Bytes> {
        self.done = true;
        let usage = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage.to_openai(),
        });
        vec![frame_json(None, &usage), frame(None, b"[DONE]")]
    }

    fn content_block_start(&mut self, event: &Value) -> Vec<Bytes> {
        let index = u64_at(event, "/index");
        if self.blocks.len() >= MAX_OPEN_BLOCKS {
            self.done = true;
            let message = format!("the upstream stream opened more than {MAX_OPEN_BLOCKS} content blocks at once");
            let error = json!({"type": "api_error", "message": message, "code": "upstream_error"});
            return vec![frame_json(None, &error_envelope(&error))];
        }
        let block = event.get("content_block").unwrap_or(&Value::Null);
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                self.blocks.push((index, BlockKind::Text));
                match block.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    Some(text) => vec![self.chunk(json!({"content": text}), None)],
                    None => Vec::new(),
                }
            }
            Some("tool_use") => {
                let call = self.tool_calls;
                self.tool_calls += 1;
                self.blocks.push((index, BlockKind::Tool(call)));
                // Streamed tool_use blocks start with an empty input and send it as deltas.
                let arguments = match block.get("input") {
                    Some(Value::Object(input)) if !input.is_empty() => Value::Object(input.clone()).to_string(),
                    _ => String::new(),
                };
                let delta = json!({"tool_calls": [{
                    "index": call,
                    "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
                    "type": "function",
                    "function": {"name": block.get("name").and_then(Value::as_str).unwrap_or_default(), "arguments": arguments},
                }]});
                vec![self.chunk(delta, None)]
            }
            _ => {
                self.blocks.push((index, BlockKind::Ignored));
                Vec::new()
            }
        }
    }

    fn content_block_delta(&mut self, event: &Value) -> Vec<Bytes> {
        let delta = event.get("delta").unwrap_or(&Value::Null);
        let kind = self.block(u64_at(event, "/index"));
        match (delta.get("type").and_then(Value::as_str), kind) {
            (Some("text_delta"), Some(BlockKind::Text) | None) => {
                match delta.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    Some(text) => vec![self.chunk(json!({"content": text}), None)],
                    None => Vec::new(),
                }
            }
            (Some("input_json_delta"), Some(BlockKind::Tool(call))) => {
                match delta.get("partial_json").and_then(Value::as_str).filter(|p| !p.is_empty()) {
                    Some(partial) => {
                        let delta = json!({"tool_calls": [{"index": call, "function": {"arguments": partial}}]});
                        vec![self.chunk(delta, None)]
                    }
                    None => Vec::new(),
                }
            }
            _ => Vec::new(), // thinking, signatures, citations
        }
    }
}

impl SseTranslator for MessagesToChatStream {
    fn event(&mut self, name: Option<&str>, data: &[u8]) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return Vec::new();
        };
        let kind = event.get("type").and_then(Value::as_str).or(name).unwrap_or_default();
        match kind {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.id = chat_id(message.get("id").and_then(Value::as_str));
                self.model = model_name(message.get("model"));
                self.usage.update_from_anthropic(message.get("usage").unwrap_or(&Value::Null));
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => self.content_block_start(&event),
            "content_block_delta" => self.content_block_delta(&event),
            "message_delta" => {
                self.usage.update_from_anthropic(event.get("usage").unwrap_or(&Value::Null));
                let stop = event.pointer("/delta/stop_reason").and_then(Value::as_str);
                let finish = stop.map_or("stop", finish_reason);
                self.finish_reason = Some(finish);
                vec![self.chunk(json!({}), Some(finish))]
            }
            "content_block_stop" => {
                let index = u64_at(&event, "/index");
                if let Some(at) = self.blocks.iter().rposition(|(i, _)| *i == index) {
                    self.blocks.remove(at);
                }
                Vec::new()
            }
            "message_stop" => self.close(),
            "error" => {
                self.done = true;
                vec![frame_json(None, &error_envelope(event.get("error").unwrap_or(&Value::Null)))]
            }
            _ => Vec::new(), // ping
        }
    }

    fn end(&mut self) -> Vec<Bytes> {
        match (self.done, self.finish_reason) {
            (false, Some(_)) => self.close(),
            _ => Vec::new(),
        }
    }

    fn finished(&self) -> bool {
        self.done
    }
}

/// Most content blocks a [`MessagesToChatStream`] keeps open: Anthropic opens one at a time.
pub(super) const MAX_OPEN_BLOCKS: usize = 64;

/// Most content blocks a [`ChatToMessagesStream`] opens in one message: a text block and the
/// tool calls, with room to spare.
pub(super) const MAX_MESSAGE_BLOCKS: u64 = 1024;
