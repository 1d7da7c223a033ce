//! Inbound: an Anthropic client calls `/v1/messages` and any provider serves it. Its request
//! becomes an OpenAI chat request; the OpenAI answer and stream become Anthropic's.

use super::outbound::MAX_MESSAGE_BLOCKS;
use super::*;

// === Inbound: Anthropic request → OpenAI request ===

/// Inbound: an Anthropic Messages request (POST /v1/messages body) → an OpenAI chat request body.
///
/// Streams ask for the usage chunk (`stream_options.include_usage`), which
/// [`ChatToMessagesStream`] needs for the final `message_delta`. Dropped: `top_k`, `thinking`,
/// `cache_control` marks and thinking blocks of earlier turns.
pub fn messages_to_chat_request(body: &Value) -> Result<Value, GatewayError> {
    let request =
        body.as_object().ok_or_else(|| GatewayError::invalid("the request body must be a JSON object", None))?;
    let model = match request.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model,
        Some(_) => return Err(GatewayError::invalid("`model` must be a non-empty string", Some("model"))),
        None => return Err(GatewayError::invalid("`model` is required", Some("model"))),
    };
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(GatewayError::invalid("`messages` must be an array", Some("messages"))),
        None => return Err(GatewayError::invalid("`messages` is required", Some("messages"))),
    };
    let max_tokens = match request.get("max_tokens") {
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| GatewayError::invalid("`max_tokens` must be a positive integer", Some("max_tokens")))?,
        None => return Err(GatewayError::invalid("`max_tokens` is required", Some("max_tokens"))),
    };

    let mut chat_messages = Vec::with_capacity(messages.len() + 1);
    match request.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => chat_messages.push(json!({"role": "system", "content": text})),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                match (block.get("type").and_then(Value::as_str), block.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(text)) => chat_messages.push(json!({"role": "system", "content": text})),
                    _ => {
                        return Err(GatewayError::invalid(
                            format!("system.{i}: system blocks must be text blocks"),
                            Some("system"),
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(GatewayError::invalid("`system` must be a string or an array of text blocks", Some("system")))
        }
    }
    for (i, message) in messages.iter().enumerate() {
        inbound_message(i, message, &mut chat_messages)?;
    }

    let mut out = Map::new();
    out.insert("model".to_owned(), json!(model));
    out.insert("messages".to_owned(), Value::Array(chat_messages));
    out.insert("max_tokens".to_owned(), json!(max_tokens));
    // `guardrails` (LiteLLM's field, also on /v1/messages) is read by the gateway, never sent.
    copy_fields(request, &mut out, &["temperature", "top_p", "guardrails"]);
    if let Some(stop) = request.get("stop_sequences").and_then(Value::as_array).filter(|s| !s.is_empty()) {
        out.insert("stop".to_owned(), Value::Array(stop.clone()));
    }
    if let Some(user) = request.get("metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        out.insert("user".to_owned(), json!(user));
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".to_owned(), json!(true));
        out.insert("stream_options".to_owned(), json!({"include_usage": true}));
    }
    let tools = match request.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => {
            tools.iter().enumerate().map(|(i, t)| tool_to_openai(i, t)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(GatewayError::invalid("`tools` must be an array", Some("tools"))),
    };
    // OpenAI rejects `tool_choice` and `parallel_tool_calls` without tools.
    if !tools.is_empty() {
        out.insert("tools".to_owned(), Value::Array(tools));
        if let Some(choice) = request.get("tool_choice").filter(|c| !c.is_null()) {
            out.insert("tool_choice".to_owned(), tool_choice_to_openai(choice)?);
            if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
                out.insert("parallel_tool_calls".to_owned(), json!(false));
            }
        }
    }
    Ok(Value::Object(out))
}

/// Appends the OpenAI messages for one Anthropic message. A user message's `tool_result` blocks
/// become `tool` messages, placed first (OpenAI wants them right after the assistant's calls);
/// images inside tool results, which `tool` messages cannot carry, move to the user message.
fn inbound_message(i: usize, message: &Value, out: &mut Vec<Value>) -> Result<(), GatewayError> {
    let role = message.get("role").and_then(Value::as_str);
    if !matches!(role, Some("user" | "assistant")) {
        return Err(GatewayError::invalid(
            format!("messages.{i}.role: must be \"user\" or \"assistant\""),
            Some("messages"),
        ));
    }
    let blocks = match message.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(GatewayError::invalid(
                format!("messages.{i}.content: must be a string or an array of content blocks"),
                Some("messages"),
            ))
        }
    };
    let mut parts = Vec::new();
    let mut tool_messages = Vec::new();
    let mut tool_calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match (role, block.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => parts.push(text_part(block.get("text").and_then(Value::as_str).unwrap_or(""))),
            (Some("user"), Some("image")) => parts.push(image_to_openai(block, &at)?),
            (Some("user"), Some("tool_result")) => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| GatewayError::invalid(format!("{at}.tool_use_id: required"), Some("messages")))?;
                let content = tool_result_to_openai(block.get("content"), &at, &mut parts)?;
                tool_messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            (Some("assistant"), Some("tool_use")) => {
                let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = block.get("name").and_then(Value::as_str).unwrap_or_default();
                let arguments = block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string);
                tool_calls
                    .push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}));
            }
            // Earlier turns' reasoning: the model does not need it back, and OpenAI has no place for it.
            (Some("assistant"), Some("thinking" | "redacted_thinking")) => {}
            (_, other) => {
                return Err(GatewayError::invalid(
                    format!("{at}: content blocks of type {} are not supported here", other.unwrap_or("(none)")),
                    Some("messages"),
                ))
            }
        }
    }
    if role == Some("assistant") {
        let mut message = json!({"role": "assistant"});
        message["content"] = match (parts.is_empty(), tool_calls.is_empty()) {
            (true, false) => Value::Null,
            (true, true) => json!(""),
            (false, _) => collapse_parts(parts),
        };
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        out.push(message);
    } else {
        let had_tool_results = !tool_messages.is_empty();
        out.append(&mut tool_messages);
        if !parts.is_empty() || !had_tool_results {
            out.push(json!({"role": "user", "content": collapse_parts(parts)}));
        }
    }
    Ok(())
}

/// The text of a `tool_result`'s content; its images go to `images`.
fn tool_result_to_openai(content: Option<&Value>, at: &str, images: &mut Vec<Value>) -> Result<Value, GatewayError> {
    let blocks = match content {
        None | Some(Value::Null) => return Ok(json!("")),
        Some(Value::String(text)) => return Ok(json!(text)),
        Some(Value::Array(blocks)) => blocks,
        Some(_) => {
            return Err(GatewayError::invalid(
                format!("{at}.content: must be a string or an array of content blocks"),
                Some("messages"),
            ))
        }
    };
    let mut parts = Vec::new();
    for (k, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(text_part(block.get("text").and_then(Value::as_str).unwrap_or(""))),
            Some("image") => images.push(image_to_openai(block, &format!("{at}.content.{k}"))?),
            other => {
                return Err(GatewayError::invalid(
                    format!(
                        "{at}.content.{k}: content blocks of type {} are not supported in tool results",
                        other.unwrap_or("(none)")
                    ),
                    Some("messages"),
                ))
            }
        }
    }
    Ok(match parts.len() {
        0 => json!(""),
        _ => collapse_parts(parts),
    })
}

/// An Anthropic image block as an OpenAI `image_url` part (a `data:` URL for base64 sources).
fn image_to_openai(block: &Value, at: &str) -> Result<Value, GatewayError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    let url = match field("type") {
        Some("url") => field("url").map(str::to_owned),
        Some("base64") => {
            field("media_type").zip(field("data")).map(|(media, data)| format!("data:{media};base64,{data}"))
        }
        _ => None,
    };
    url.map(|url| json!({"type": "image_url", "image_url": {"url": url}})).ok_or_else(|| {
        GatewayError::invalid(
            format!("{at}.source: images need a `url` source or a `base64` source with `media_type`"),
            Some("messages"),
        )
    })
}

fn tool_to_openai(i: usize, tool: &Value) -> Result<Value, GatewayError> {
    // Anthropic's server tools (web search, code execution, ...) have a versioned `type` and run
    // inside Anthropic; no other provider can serve them.
    if let Some(kind) = tool.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
        return Err(GatewayError::invalid(format!("tools.{i}: tools of type {kind} are not supported"), Some("tools")));
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::invalid(format!("tools.{i}.name: required"), Some("tools")))?;
    let mut function = json!({"name": name});
    if let Some(description) = tool.get("description").filter(|d| d.is_string()) {
        function["description"] = description.clone();
    }
    function["parameters"] =
        tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    Ok(json!({"type": "function", "function": function}))
}

fn tool_choice_to_openai(choice: &Value) -> Result<Value, GatewayError> {
    match choice.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(json!("auto")),
        Some("any") => Ok(json!("required")),
        Some("none") => Ok(json!("none")),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
            None => Err(GatewayError::invalid("tool_choice.name: required for type tool", Some("tool_choice"))),
        },
        _ => Err(GatewayError::invalid(
            "tool_choice.type: must be one of \"auto\", \"any\", \"tool\", \"none\"",
            Some("tool_choice"),
        )),
    }
}

// === Inbound: OpenAI response → Anthropic response ===

/// Inbound: an OpenAI chat.completion response → an Anthropic Message response.
pub fn chat_response_to_message(chat: &Value, requested_model: &str) -> Value {
    let choice = chat.get("choices").and_then(Value::as_array).and_then(|c| c.first()).unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    match message.get("content") {
        Some(Value::String(text)) if !text.is_empty() => content.push(text_part(text)),
        Some(Value::Array(parts)) => content.extend(
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).filter(|t| !t.is_empty()).map(text_part),
        ),
        _ => {}
    }
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        content.push(text_part(refusal));
    }
    let calls = message.get("tool_calls").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    for call in calls {
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
            "input": arguments_to_input(call.pointer("/function/arguments").and_then(Value::as_str)),
        }));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    json!({
        "id": message_id(chat.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason(finish, !calls.is_empty()),
        "stop_sequence": null,
        "usage": TokenUsage::from_openai(chat.get("usage").unwrap_or(&Value::Null)).to_anthropic(),
    })
}

// === Inbound streaming: OpenAI chunks → Anthropic events ===

/// The content block a [`ChatToMessagesStream`] has open.
#[derive(Debug)]
enum OpenBlock {
    Text { index: u64 },
    Tool { index: u64, call: u64, id: String },
}

impl OpenBlock {
    fn index(&self) -> u64 {
        match self {
            OpenBlock::Text { index } | OpenBlock::Tool { index, .. } => *index,
        }
    }
}

/// Inbound streaming: OpenAI chat.completion.chunk events → Anthropic stream events.
///
/// OpenAI reports usage only in the last chunk, so `message_start` carries zero tokens and the
/// final `message_delta` the real counts (input as well as output). Tool calls are assumed to
/// stream one after another, as OpenAI sends them: Anthropic blocks cannot interleave.
#[derive(Debug)]
pub struct ChatToMessagesStream {
    model: String,
    started: bool,
    pinged: bool,
    open: Option<OpenBlock>,
    next_index: u64,
    saw_tool_calls: bool,
    finish_reason: Option<String>,
    usage: TokenUsage,
    finished: bool,
}

impl ChatToMessagesStream {
    pub fn new(requested_model: &str) -> Self {
        ChatToMessagesStream {
            model: requested_model.to_owned(),
            started: false,
            pinged: false,
            open: None,
            next_index: 0,
            saw_tool_calls: false,
            finish_reason: None,
            usage: TokenUsage::default(),
            finished: false,
        }
    }

    fn start(&mut self, chat_id: Option<&str>, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": message_id(chat_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": self.usage.input, "output_tokens": 0},
        });
        out.push(frame_json(Some("message_start"), &json!({"type": "message_start", "message": message})));
    }

    fn ping(&mut self, out: &mut Vec<Bytes>) {
        if !self.pinged {
            self.pinged = true;
            out.push(frame_json(Some("ping"), &json!({"type": "ping"})));
        }
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some(block) = self.open.take() {
            out.push(frame_json(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": block.index()}),
            ));
        }
    }

    /// Closes the open block and opens `block` (Anthropic's first block is followed by a ping).
    fn open_block(&mut self, block: OpenBlock, content_block: Value, out: &mut Vec<Bytes>) {
        self.close_block(out);
        out.push(frame_json(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": block.index(), "content_block": content_block}),
        ));
        self.next_index += 1;
        self.open = Some(block);
        self.ping(out);
    }

    fn delta(&self, index: u64, delta: Value) -> Bytes {
        frame_json(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": index, "delta": delta}))
    }

    /// Whether another block may open; if not, the stream fails (a provider switching between
    /// text and tool calls on every chunk would otherwise turn each small chunk into several
    /// events).
    fn room_for_block(&mut self, out: &mut Vec<Bytes>) -> bool {
        if self.next_index < MAX_MESSAGE_BLOCKS {
            return true;
        }
        out.extend(self.fail(&format!("the upstream stream opened more than {MAX_MESSAGE_BLOCKS} content blocks")));
        false
    }

    fn text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        let index = match self.open {
            Some(OpenBlock::Text { index }) => index,
            _ => {
                if !self.room_for_block(out) {
                    return;
                }
                let index = self.next_index;
                self.open_block(OpenBlock::Text { index }, json!({"type": "text", "text": ""}), out);
                index
            }
        };
        out.push(self.delta(index, json!({"type": "text_delta", "text": text})));
    }

    /// A tool call delta opens a block when it starts a new call: another `index`, or another
    /// `id` (some providers repeat the id on every delta, so a repeated one continues the call).
    fn tool_call(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.saw_tool_calls = true;
        let call_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let call_id = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
        let index = match &self.open {
            Some(OpenBlock::Tool { index, call, id }) if *call == call_index && call_id.is_none_or(|c| c == id) => {
                *index
            }
            _ => {
                if !self.room_for_block(out) {
                    return;
                }
                let index = self.next_index;
                let id = call_id.map_or_else(|| format!("toolu_{}", uuid::Uuid::now_v7().simple()), str::to_owned);
                let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default();
                let content_block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                self.open_block(OpenBlock::Tool { index, call: call_index, id }, content_block, out);
                index
            }
        };
        if let Some(arguments) = call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
            out.push(self.delta(index, json!({"type": "input_json_delta", "partial_json": arguments})));
        }
    }

    fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(None, &mut out);
        self.close_block(&mut out);
        self.ping(&mut out);
        self.finished = true;
        let stop = stop_reason(self.finish_reason.as_deref(), self.saw_tool_calls);
        out.push(frame_json(
            Some("message_delta"),
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": self.usage.to_anthropic(),
            }),
        ));
        out.push(frame_json(Some("message_stop"), &json!({"type": "message_stop"})));
        out
    }

    fn fail(&mut self, message: &str) -> Vec<Bytes> {
        self.finished = true;
        let error = json!({"type": "error", "error": {"type": "api_error", "message": message}});
        vec![frame_json(Some("error"), &error)]
    }
}

impl SseTranslator for ChatToMessagesStream {
    fn event(&mut self, _name: Option<&str>, data: &[u8]) -> Vec<Bytes> {
        if self.finished {
            return Vec::new();
        }
        if data.trim_ascii() == b"[DONE]" {
            return self.finish();
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            return Vec::new();
        };
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("the upstream provider failed");
            return self.fail(message);
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = TokenUsage::from_openai(usage);
        }
        let mut out = Vec::new();
        self.start(chunk.get("id").and_then(Value::as_str), &mut out);
        let choices = chunk.get("choices").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        // Anthropic has one answer per message: other choices (`n` > 1) are not forwarded.
        let Some(choice) = choices.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) else {
            return out;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.text(text, &mut out);
            }
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).map_or(&[][..], Vec::as_slice) {
            self.tool_call(call, &mut out);
        }
        if self.finished {
            return out;
        }
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(finish.to_owned());
            self.close_block(&mut out);
        }
        out
    }

    /// A stream that ended without a finish reason or `[DONE]` was cut short: Anthropic clients
    /// learn it from an `error` event rather than a clean `message_stop`.
    fn end(&mut self) -> Vec<Bytes> {
        if self.finished {
            Vec::new()
        } else if self.finish_reason.is_some() {
            self.finish()
        } else {
            self.fail("the upstream stream ended before the response was complete")
        }
    }

    fn finished(&self) -> bool {
        self.finished
    }
}
