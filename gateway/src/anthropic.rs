//! Translation between OpenAI Chat Completions (the gateway's canonical format) and Anthropic's
//! Messages API, both ways: inbound (an Anthropic client calls `/v1/messages` and any provider
//! serves it) and outbound (an OpenAI-shaped request is served by Anthropic). Requests,
//! responses, streams and error bodies each have a pair of translations.
//!
//! Everything here is pure: no I/O, no routing, no keys. Bodies are handled as
//! `serde_json::Value`, so unknown fields never fail a request. What one side cannot express is
//! either dropped where that loses nothing the model needs (sampling knobs such as `top_k`,
//! thinking blocks of earlier turns) or rejected with a 400 naming the parameter — never turned
//! into something that means otherwise.

use crate::error::GatewayError;
use crate::sse::{frame, frame_json, SseTranslator};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tollgate_schemas::limits;

/// Anthropic requires `max_tokens`; OpenAI clients often leave it out.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

// === Shared vocabulary: ids, stop reasons, usage ===

/// The id a provider gave, if it is one worth keeping: an id is repeated in every chunk of a
/// stream, so one of unbounded length would make every chunk as large (a fresh id replaces it).
fn provider_id(id: Option<&str>) -> Option<&str> {
    id.filter(|id| !id.is_empty() && id.len() <= limits::MAX_ID_BYTES)
}

/// The model a provider says answered, if it is a name within bounds (`null` otherwise). It is
/// repeated in every chunk of a stream and read by metering as the served model: neither may
/// grow with, or break on, whatever the provider put there.
fn model_name(model: Option<&Value>) -> Value {
    match model {
        Some(Value::String(name)) if limits::check_name("model", name, limits::MAX_NAME_BYTES).is_ok() => {
            Value::String(name.clone())
        }
        _ => Value::Null,
    }
}

/// An Anthropic message id derived from an OpenAI completion id (`chatcmpl-x` → `msg_x`).
fn message_id(chat_id: Option<&str>) -> String {
    match provider_id(chat_id) {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => format!("msg_{}", uuid::Uuid::now_v7().simple()),
    }
}

/// An OpenAI completion id derived from an Anthropic message id (`msg_x` → `chatcmpl-x`).
fn chat_id(message_id: Option<&str>) -> String {
    match provider_id(message_id) {
        Some(id) if id.starts_with("chatcmpl-") => id.to_owned(),
        Some(id) => format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id)),
        None => format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
    }
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`. Some OpenAI-compatible providers
/// finish tool calls with `stop`; Anthropic clients loop on `tool_use`, so the calls decide.
fn stop_reason(finish_reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        Some("tool_calls" | "function_call") => "tool_use",
        _ if has_tool_calls => "tool_use",
        _ => "end_turn",
    }
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Token counts in Anthropic's terms. Anthropic's `input_tokens` excludes the prompt tokens read
/// from or written to its cache, which OpenAI's `prompt_tokens` includes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TokenUsage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl TokenUsage {
    fn from_openai(usage: &Value) -> TokenUsage {
        let prompt = u64_at(usage, "/prompt_tokens");
        let cached = u64_at(usage, "/prompt_tokens_details/cached_tokens").min(prompt);
        TokenUsage {
            input: prompt - cached,
            output: u64_at(usage, "/completion_tokens"),
            cache_read: cached,
            cache_creation: 0,
        }
    }

    /// Takes the counts `usage` carries. Anthropic's counts are cumulative (a `message_delta`
    /// repeats `output_tokens` in full), so each replaces the last rather than adding to it.
    fn update_from_anthropic(&mut self, usage: &Value) {
        for (key, slot) in [
            ("input_tokens", &mut self.input),
            ("output_tokens", &mut self.output),
            ("cache_read_input_tokens", &mut self.cache_read),
            ("cache_creation_input_tokens", &mut self.cache_creation),
        ] {
            if let Some(n) = usage.get(key).and_then(Value::as_u64) {
                *slot = n;
            }
        }
    }

    fn from_anthropic(usage: &Value) -> TokenUsage {
        let mut out = TokenUsage::default();
        out.update_from_anthropic(usage);
        out
    }

    fn to_anthropic(self) -> Value {
        json!({
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_creation,
        })
    }

    fn to_openai(self) -> Value {
        let prompt = self.input.saturating_add(self.cache_read).saturating_add(self.cache_creation);
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }
}

/// Tool arguments as Anthropic's `input`, which must be an object. Providers send `""` for a
/// call without arguments; a model's malformed JSON also becomes an empty object.
fn arguments_to_input(arguments: Option<&str>) -> Value {
    match arguments.map(serde_json::from_str::<Value>) {
        Some(Ok(input @ Value::Object(_))) => input,
        _ => json!({}),
    }
}

/// Parts collapse to a plain string when there is a single text part, the form every
/// OpenAI-compatible provider accepts.
fn collapse_parts(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && parts[0].get("type").and_then(Value::as_str) == Some("text") {
        return parts.swap_remove(0).get("text").cloned().unwrap_or_else(|| json!(""));
    }
    Value::Array(parts)
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn copy_fields(from: &Map<String, Value>, to: &mut Map<String, Value>, names: &[&str]) {
    for &name in names {
        if let Some(v) = from.get(name).filter(|v| !v.is_null()) {
            to.insert(name.to_owned(), v.clone());
        }
    }
}

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
    copy_fields(request, &mut out, &["temperature", "top_p"]);
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
    Ok(Value::Object(out))
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
enum BlockKind {
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
    blocks: Vec<(u64, BlockKind)>,
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
const MAX_OPEN_BLOCKS: usize = 64;

/// Most content blocks a [`ChatToMessagesStream`] opens in one message: a text block and the
/// tool calls, with room to spare.
const MAX_MESSAGE_BLOCKS: u64 = 1024;

// === Errors ===

/// The OpenAI code clients and the router key on, for an Anthropic error.
fn openai_code(kind: &str, message: &str) -> Value {
    match kind {
        "rate_limit_error" => json!("rate_limit_exceeded"),
        "authentication_error" => json!("invalid_api_key"),
        "invalid_request_error" if message.to_ascii_lowercase().contains("prompt is too long") => {
            json!("context_length_exceeded")
        }
        _ => json!(kind),
    }
}

/// An OpenAI envelope from an `error` object of either shape (`{type, message}` from Anthropic,
/// `{message, type, param, code}` from OpenAI).
fn error_envelope(error: &Value) -> Value {
    let message = match error {
        Value::String(message) => message.as_str(),
        _ => error.get("message").and_then(Value::as_str).unwrap_or("the upstream provider returned an error"),
    };
    let kind = error.get("type").and_then(Value::as_str).unwrap_or("api_error");
    let code = error.get("code").filter(|c| !c.is_null()).cloned().unwrap_or_else(|| openai_code(kind, message));
    json!({"error": {
        "message": message,
        "type": kind,
        "param": error.get("param").cloned().unwrap_or(Value::Null),
        "code": code,
    }})
}

/// A body that is not JSON, shortened so a stray HTML page does not become a huge message.
fn raw_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(500) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Outbound errors: an Anthropic error body (`{"type":"error","error":{"type","message"}}`) →
/// the OpenAI envelope `{"error":{"message","type","param","code"}}`.
pub fn error_to_openai(body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(parsed) if parsed.get("error").is_some_and(|e| e.is_object() || e.is_string()) => {
            error_envelope(&parsed["error"])
        }
        _ => {
            let message = raw_message(body);
            let message =
                if message.is_empty() { "the upstream provider returned an error".to_owned() } else { message };
            json!({"error": {"message": message, "type": "api_error", "param": null, "code": null}})
        }
    }
}

/// Inbound errors: an OpenAI envelope (or any body) and its status → an Anthropic error body,
/// its type chosen by the status.
pub fn error_to_anthropic(status: u16, body: &[u8]) -> Value {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(parsed) => match parsed.get("error") {
            Some(Value::String(message)) => Some(message.clone()),
            Some(error) => error.get("message").and_then(Value::as_str).map(str::to_owned),
            None => parsed.get("message").and_then(Value::as_str).map(str::to_owned),
        },
        Err(_) => Some(raw_message(body)),
    };
    let message =
        message.filter(|m| !m.is_empty()).unwrap_or_else(|| format!("the request failed with status {status}"));
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests {
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
            let delta =
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}});
            assert!(size(t.event(None, delta.to_string().as_bytes())) < 1024);
            let end =
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}});
            t.event(None, end.to_string().as_bytes());
            let usage_chunk = t.event(None, br#"{"type":"message_stop"}"#).remove(0);
            let data = parse_event(&usage_chunk).data;
            let read: crate::openai::ResponseUsage = serde_json::from_slice(&data).expect("metering reads it");
            assert_eq!(read.usage().map(|u| (u.prompt_tokens, u.completion_tokens)), Some((5, 2)));
        }
        let answer = message_to_chat_response(
            &json!({"id": huge, "model": {"a": 1}, "usage": {"input_tokens": 3, "output_tokens": 4}}),
        );
        assert!(answer.to_string().len() < 1024 && answer["model"].is_null());
        let read: crate::openai::ResponseUsage = serde_json::from_value(answer).expect("metering reads it");
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
        let body =
            json!({"model": "m", "messages": [{"role": "developer", "content": "sys"}], "max_completion_tokens": 9});
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
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                Some("messages"),
            ),
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
            (
                json!({"model": "m", "messages": [], "tools": [{"type": "custom", "custom": {"name": "x"}}]}),
                Some("tools"),
            ),
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
                   "prompt_tokens_details": {"cached_tokens": 100}})
        );
        for (stop, finish) in
            [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")]
        {
            let m =
                json!({"id": "msg_1", "content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {}});
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
        let out =
            translate(&mut t, &[(None, json!({"error": {"message": "boom", "type": "server_error"}}).to_string())]);
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
            json!({"prompt_tokens": 68, "completion_tokens": 42, "total_tokens": 110, "prompt_tokens_details": {"cached_tokens": 40}})
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
            json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
                .to_string()
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
        for key in [
            "system",
            "tools",
            "tool_choice",
            "stop_sequences",
            "temperature",
            "top_p",
            "max_tokens",
            "metadata",
            "stream",
        ] {
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
            json!({"input_tokens": 28, "output_tokens": 42, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 0})
        );
        assert_eq!(anthropic[0]["message"]["id"], "msg_01");
    }
}
