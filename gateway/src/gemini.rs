//! Translation between OpenAI Chat Completions (the gateway's own format) and Google Gemini's
//! `generateContent` / `streamGenerateContent` (the AI Studio `v1beta` REST API): request bodies,
//! responses, stream events and error bodies.
//!
//! Pure functions over JSON values: nothing here does I/O. The API key must never appear in a
//! URL built here — it travels in the `x-goog-api-key` header, so it cannot leak into logs of URLs.

use crate::error::GatewayError;
use crate::sse::{frame, frame_json, SseTranslator};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Google AI Studio's REST base.
pub const DEFAULT_API_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";

/// The URL of a Gemini call: `{api_base}/models/{model}:generateContent` or
/// `{api_base}/models/{model}:streamGenerateContent?alt=sse` (an empty `api_base` means
/// [`DEFAULT_API_BASE`]). The API key goes in the `x-goog-api-key` header, not the URL.
pub fn url(api_base: &str, upstream_model: &str, stream: bool) -> String {
    let base = api_base.trim_end_matches('/');
    let base = if base.is_empty() { DEFAULT_API_BASE } else { base };
    let model = upstream_model.strip_prefix("models/").unwrap_or(upstream_model);
    if stream {
        format!("{base}/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{base}/models/{model}:generateContent")
    }
}

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

// === Requests ===

/// An OpenAI chat request body → a Gemini `generateContent` body.
pub fn chat_request_to_generate(body: &Value) -> Result<Value, GatewayError> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` must be an array", "messages"))?;
    let (system, contents) = translate_messages(messages)?;
    if contents.is_empty() {
        return Err(invalid("`messages` must contain at least one user or assistant message", "messages"));
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    // One budget for every schema of the request: many small tools cannot add up to much.
    let mut budget = SchemaBudget::default();
    let declarations = match body.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(tools) => function_declarations(tools, &mut budget)?,
    };
    if !declarations.is_empty() {
        out.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
        if let Some(config) = function_calling_config(body.get("tool_choice").unwrap_or(&Value::Null))? {
            out.insert("toolConfig".into(), json!({ "functionCallingConfig": config }));
        }
    }
    let generation = generation_config(body, &mut budget)?;
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(out))
}

/// Turns of a conversation, merged so that roles alternate as Gemini requires.
#[derive(Default)]
struct Turns {
    turns: Vec<(&'static str, Vec<Value>)>,
}

impl Turns {
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => self.turns.push((role, parts)),
        }
    }

    fn into_contents(self) -> Vec<Value> {
        self.turns.into_iter().map(|(role, parts)| json!({ "role": role, "parts": parts })).collect()
    }
}

/// `(systemInstruction parts, contents)` of a message list.
fn translate_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), GatewayError> {
    let mut system = Vec::new();
    let mut turns = Turns::default();
    // Gemini names a function response by the function's name; OpenAI refers to the call's id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let text = plain_text(content)?;
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
            }
            "user" => turns.push("user", content_parts(content)?),
            "assistant" => {
                let mut parts = content_parts(content)?;
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let name = call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("every assistant tool call needs `function.name`", "messages"))?;
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.insert(id, name);
                    }
                    let args = call_arguments(call.pointer("/function/arguments"));
                    parts.push(json!({ "functionCall": { "name": name, "args": args } }));
                }
                if let Some(name) = message.pointer("/function_call/name").and_then(Value::as_str) {
                    let args = call_arguments(message.pointer("/function_call/arguments"));
                    parts.push(json!({ "functionCall": { "name": name, "args": args } }));
                }
                turns.push("model", parts);
            }
            "tool" | "function" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let name =
                    call_names.get(id).copied().or_else(|| message.get("name").and_then(Value::as_str)).ok_or_else(
                        || invalid(format!("tool message refers to an unknown tool_call_id '{id}'"), "messages"),
                    )?;
                turns.push("user", vec![function_response(name, content)?]);
            }
            "" => return Err(invalid("every message needs a `role`", "messages")),
            other => return Err(invalid(format!("unsupported message role '{other}'"), "messages")),
        }
    }
    Ok((system, turns.into_contents()))
}

/// The text of a content that may only hold text (system and tool messages).
fn plain_text(content: &Value) -> Result<String, GatewayError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => {
            let mut text = String::new();
            for item in items {
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(item.get("text").and_then(Value::as_str).unwrap_or_default()),
                    _ => return Err(invalid("system and tool messages may only contain text parts", "messages")),
                }
            }
            Ok(text)
        }
        _ => Err(invalid("message `content` must be a string or an array of parts", "messages")),
    }
}

/// Gemini parts of a user or assistant content (empty texts dropped: Gemini rejects them).
fn content_parts(content: &Value) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                if let Some(part) = content_part(item)? {
                    parts.push(part);
                }
            }
            Ok(parts)
        }
        _ => Err(invalid("message `content` must be a string or an array of parts", "messages")),
    }
}

fn content_part(item: &Value) -> Result<Option<Value>, GatewayError> {
    let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "text" | "refusal" => {
            let text = item.get(kind).and_then(Value::as_str).unwrap_or_default();
            Ok((!text.is_empty()).then(|| json!({ "text": text })))
        }
        "image_url" => {
            let url = item
                .pointer("/image_url/url")
                .or_else(|| item.get("image_url"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("an `image_url` part needs `image_url.url`", "messages"))?;
            media_part(url).map(Some)
        }
        "input_audio" => {
            let data = item.pointer("/input_audio/data").and_then(Value::as_str);
            let format = item.pointer("/input_audio/format").and_then(Value::as_str);
            match (data, format) {
                (Some(data), Some(format)) => {
                    Ok(Some(json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } })))
                }
                _ => Err(invalid("an `input_audio` part needs `data` and `format`", "messages")),
            }
        }
        "file" => match item.pointer("/file/file_data").and_then(Value::as_str) {
            Some(url) => media_part(url).map(Some),
            None => Err(invalid("a `file` part must carry `file.file_data` (file ids are not supported)", "messages")),
        },
        other => Err(invalid(format!("unsupported content part type '{other}'"), "messages")),
    }
}

/// A `data:` URL → `inlineData`; any other URL → `fileData`.
fn media_part(url: &str) -> Result<Value, GatewayError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) =
            rest.split_once(',').ok_or_else(|| invalid("a `data:` URL must contain a comma", "messages"))?;
        let mime = header.strip_suffix(";base64").ok_or_else(|| invalid("a `data:` URL must be base64", "messages"))?;
        let mime = if mime.is_empty() { "application/octet-stream" } else { mime };
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    Ok(json!({ "fileData": { "mimeType": guess_mime(url), "fileUri": url } }))
}

/// A MIME type from a URL's extension; `image/jpeg` when unknown (the URL was an `image_url`).
fn guess_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let ext = file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => "image/jpeg",
    }
}

/// OpenAI tool-call arguments (a JSON string) → Gemini `args` (an object). Arguments a model
/// produced malformed are kept as a string rather than failing the whole conversation.
fn call_arguments(arguments: Option<&Value>) -> Value {
    match arguments {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => Value::Object(o),
            _ => json!({ "arguments": s }),
        },
        Some(other) => json!({ "arguments": other }),
    }
}

fn function_response(name: &str, content: &Value) -> Result<Value, GatewayError> {
    let text = plain_text(content)?;
    let content = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| json!({ "result": text }));
    Ok(json!({ "functionResponse": { "name": name, "response": { "content": content } } }))
}

fn function_declarations(tools: &Value, budget: &mut SchemaBudget) -> Result<Vec<Value>, GatewayError> {
    let tools = tools.as_array().ok_or_else(|| invalid("`tools` must be an array", "tools"))?;
    let mut declarations = Vec::with_capacity(tools.len());
    for tool in tools {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") | None => {}
            Some(other) => return Err(invalid(format!("unsupported tool type '{other}'"), "tools")),
        }
        let function = tool.get("function").unwrap_or(tool);
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("every tool needs `function.name`", "tools"))?;
        let mut declaration = json!({ "name": name });
        if let Some(description) = function.get("description").filter(|d| d.is_string()) {
            declaration["description"] = description.clone();
        }
        // Gemini rejects an OBJECT schema without properties: a function without arguments
        // simply has no `parameters`.
        if let Some(parameters) = function.get("parameters").filter(|p| has_properties(p)) {
            declaration["parameters"] = gemini_schema(parameters, "tools", budget)?;
        }
        declarations.push(declaration);
    }
    Ok(declarations)
}

fn has_properties(schema: &Value) -> bool {
    schema.get("properties").and_then(Value::as_object).is_some_and(|p| !p.is_empty())
}

fn function_calling_config(choice: &Value) -> Result<Option<Value>, GatewayError> {
    let mode = match choice {
        Value::Null => return Ok(None),
        Value::String(s) => match s.as_str() {
            "auto" => "AUTO",
            "none" => "NONE",
            "required" => "ANY",
            other => return Err(invalid(format!("unsupported tool_choice '{other}'"), "tool_choice")),
        },
        Value::Object(_) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("`tool_choice` must name a function", "tool_choice"))?;
            return Ok(Some(json!({ "mode": "ANY", "allowedFunctionNames": [name] })));
        }
        _ => return Err(invalid("`tool_choice` must be a string or an object", "tool_choice")),
    };
    Ok(Some(json!({ "mode": mode })))
}

/// Schema keywords Gemini's `Schema` accepts; any other key makes it reject the request.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// Bounds the inlining of `$ref`s, which may be recursive.
const MAX_SCHEMA_DEPTH: usize = 16;

/// Most subschemas the translation of one request's schemas may produce (`tools` and
/// `response_format` together). `$ref`s are inlined, so definitions that each refer to the
/// next several times multiply at every level: the bound is on what is produced, not on what
/// was sent. OpenAI's structured outputs allow 5,000 properties; this leaves room beyond.
const MAX_SCHEMA_NODES: usize = 10_000;

/// Most bytes of keyword values (descriptions, enums, defaults, property names) the
/// translation may copy, counted as they would be written: inlining copies them once per
/// reference.
const MAX_SCHEMA_BYTES: usize = 8 * 1024 * 1024;

/// What the translation of a request's schemas has produced so far.
#[derive(Debug, Default)]
struct SchemaBudget {
    nodes: usize,
    bytes: usize,
}

/// The translation would pass a bound: it stops, with nothing produced.
#[derive(Debug, PartialEq, Eq)]
enum SchemaTooLarge {
    Nodes,
    Bytes,
}

impl SchemaBudget {
    fn node(&mut self) -> Result<(), SchemaTooLarge> {
        self.nodes += 1;
        if self.nodes > MAX_SCHEMA_NODES {
            return Err(SchemaTooLarge::Nodes);
        }
        Ok(())
    }

    fn spend(&mut self, bytes: usize) -> Result<(), SchemaTooLarge> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > MAX_SCHEMA_BYTES {
            return Err(SchemaTooLarge::Bytes);
        }
        Ok(())
    }

    /// A copy of `value`, paid for first.
    fn copy(&mut self, value: &Value) -> Result<Value, SchemaTooLarge> {
        self.spend(written_size(value))?;
        Ok(value.clone())
    }
}

/// About the bytes `value` takes written as JSON. Recursive, over a value the JSON reader
/// bounded to 128 levels.
fn written_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 4,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().map(|v| written_size(v) + 1).sum::<usize>() + 2,
        Value::Object(o) => o.iter().map(|(k, v)| k.len() + 4 + written_size(v)).sum::<usize>() + 2,
    }
}

/// A JSON schema reduced to what Gemini accepts: local `$ref`s inlined, `["T", "null"]` types and
/// `anyOf [.., {"type": "null"}]` turned into `nullable`, `const` into a one-value `enum`, and
/// every other unsupported keyword (`additionalProperties`, `$schema`, `strict`, ...) dropped.
/// A schema whose translation would pass [`MAX_SCHEMA_NODES`] or [`MAX_SCHEMA_BYTES`] is a 400
/// naming `param`.
fn gemini_schema(schema: &Value, param: &'static str, budget: &mut SchemaBudget) -> Result<Value, GatewayError> {
    let defs = schema.get("$defs").or_else(|| schema.get("definitions")).and_then(Value::as_object);
    clean_schema(schema, defs, 0, budget).map_err(|e| {
        let bound = match e {
            SchemaTooLarge::Nodes => format!("{MAX_SCHEMA_NODES} subschemas"),
            SchemaTooLarge::Bytes => format!("{MAX_SCHEMA_BYTES} bytes"),
        };
        invalid(
            format!("the JSON schemas of this request expand to more than {bound} once their `$ref`s are inlined"),
            param,
        )
    })
}

fn clean_schema(
    schema: &Value,
    defs: Option<&Map<String, Value>>,
    depth: usize,
    budget: &mut SchemaBudget,
) -> Result<Value, SchemaTooLarge> {
    budget.node()?;
    let Value::Object(obj) = schema else { return Ok(json!({})) };
    if depth > MAX_SCHEMA_DEPTH {
        return Ok(json!({}));
    }
    // A `$ref` is replaced by its target; keys beside it (`description`, ...) still apply.
    let target = obj.get("$ref").and_then(Value::as_str).and_then(|r| {
        let name = r.strip_prefix("#/$defs/").or_else(|| r.strip_prefix("#/definitions/"))?;
        defs?.get(name)
    });
    let mut out = match target.map(|t| clean_schema(t, defs, depth + 1, budget)).transpose()? {
        Some(Value::Object(resolved)) => resolved,
        _ => Map::new(),
    };
    for (key, value) in obj {
        match key.as_str() {
            "properties" => {
                let mut properties = Map::new();
                for (name, s) in value.as_object().into_iter().flatten() {
                    budget.spend(name.len() + 4)?;
                    properties.insert(name.clone(), clean_schema(s, defs, depth + 1, budget)?);
                }
                out.insert(key.clone(), Value::Object(properties));
            }
            "items" => {
                out.insert(key.clone(), clean_schema(value, defs, depth + 1, budget)?);
            }
            "anyOf" | "oneOf" => {
                let mut variants = Vec::new();
                for variant in value.as_array().into_iter().flatten() {
                    if variant.get("type").and_then(Value::as_str) == Some("null") {
                        out.insert("nullable".into(), Value::Bool(true));
                    } else {
                        variants.push(clean_schema(variant, defs, depth + 1, budget)?);
                    }
                }
                match <[Value; 1]>::try_from(variants) {
                    Ok([Value::Object(only)]) => {
                        for (k, v) in only {
                            out.entry(k).or_insert(v);
                        }
                    }
                    Ok([only]) => {
                        out.insert("anyOf".into(), json!([only]));
                    }
                    Err(variants) if variants.is_empty() => {}
                    Err(variants) => {
                        out.insert("anyOf".into(), Value::Array(variants));
                    }
                }
            }
            "type" => match value {
                Value::Array(types) => {
                    if types.iter().any(|t| t == "null") {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                    if let Some(first) = types.iter().find(|t| *t != "null") {
                        out.insert(key.clone(), budget.copy(first)?);
                    }
                }
                _ => {
                    out.insert(key.clone(), budget.copy(value)?);
                }
            },
            "const" if !out.contains_key("enum") => {
                out.insert("enum".into(), Value::Array(vec![budget.copy(value)?]));
            }
            k if SCHEMA_KEYS.contains(&k) => {
                out.insert(key.clone(), budget.copy(value)?);
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

fn generation_config(body: &Value, budget: &mut SchemaBudget) -> Result<Map<String, Value>, GatewayError> {
    let mut config = Map::new();
    let present = |name: &str| body.get(name).filter(|v| !v.is_null());
    for (openai, gemini) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        if let Some(value) = present(openai) {
            config.insert(gemini.into(), value.clone());
        }
    }
    if let Some(max) = present("max_completion_tokens").or_else(|| present("max_tokens")) {
        config.insert("maxOutputTokens".into(), max.clone());
    }
    match present("stop") {
        None => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            config.insert("stopSequences".into(), Value::Array(items.clone()));
        }
        Some(_) => return Err(invalid("`stop` must be a string or an array of strings", "stop")),
    }
    if let Some(format) = present("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = format.pointer("/json_schema/schema") {
                    config.insert("responseSchema".into(), gemini_schema(schema, "response_format", budget)?);
                }
            }
            _ => {
                return Err(invalid(
                    "`response_format.type` must be 'text', 'json_object' or 'json_schema'",
                    "response_format",
                ))
            }
        }
    }
    Ok(config)
}

// === Responses ===

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An OpenAI completion id from Gemini's `responseId`, kept only up to `limits::MAX_ID_BYTES`: a
/// stream repeats it in every chunk.
fn chat_id(resp: &Value) -> String {
    let response_id = resp.get("responseId").and_then(Value::as_str);
    match response_id.filter(|id| id.len() <= tollgate_schemas::limits::MAX_ID_BYTES) {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
    }
}

fn finish_reason(reason: &str, made_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if made_calls => "tool_calls",
        _ => "stop",
    }
}

/// OpenAI usage from Gemini's `usageMetadata`: thinking tokens are billed as output, and
/// `promptTokenCount` already includes the cached tokens (as OpenAI's `prompt_tokens` does).
/// Sums saturate: counts past any real request are then not believed by metering (which counts
/// the request itself) rather than wrapping around to a small number.
fn usage(meta: &Value) -> Value {
    let count = |key: &str| meta.get(key).and_then(Value::as_u64).unwrap_or(0);
    let prompt = count("promptTokenCount");
    let thoughts = count("thoughtsTokenCount");
    let completion = count("candidatesTokenCount").saturating_add(thoughts);
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": { "cached_tokens": count("cachedContentTokenCount") },
    });
    if thoughts > 0 {
        usage["completion_tokens_details"] = json!({ "reasoning_tokens": thoughts });
    }
    usage
}

/// What a candidate's parts say, in OpenAI terms.
#[derive(Default)]
struct Said {
    text: String,
    reasoning: String,
    tool_calls: Vec<Value>,
}

/// Reads Gemini parts; tool calls get ids `call_<n>` from `next_call` unless Gemini gave one.
fn read_parts(parts: &[Value], next_call: &mut usize) -> Said {
    let mut said = Said::default();
    for part in parts {
        if let Some(call) = part.get("functionCall") {
            let id = match call.get("id").and_then(Value::as_str) {
                Some(id) => id.to_owned(),
                None => format!("call_{next_call}"),
            };
            *next_call += 1;
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
            let arguments = call.get("args").map_or_else(|| "{}".to_owned(), Value::to_string);
            said.tool_calls.push(json!({
                "id": id,
                "type": "function",
                "function": { "name": name, "arguments": arguments },
            }));
        } else if let Some(text) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                said.reasoning.push_str(text);
            } else {
                said.text.push_str(text);
            }
        }
    }
    said
}

fn candidate_parts(candidate: &Value) -> &[Value] {
    candidate.pointer("/content/parts").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn is_blocked_prompt(resp: &Value) -> bool {
    resp.pointer("/promptFeedback/blockReason").is_some_and(|r| !r.is_null())
}

/// A Gemini GenerateContentResponse → an OpenAI `chat.completion` naming `model`.
pub fn generate_response_to_chat(resp: &Value, model: &str) -> Value {
    let candidates = resp.get("candidates").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let mut next_call = 0;
    let mut choices: Vec<Value> = candidates
        .iter()
        .enumerate()
        .map(|(position, candidate)| {
            let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            let said = read_parts(candidate_parts(candidate), &mut next_call);
            let reason = candidate.get("finishReason").and_then(Value::as_str).unwrap_or("STOP");
            let finish = finish_reason(reason, !said.tool_calls.is_empty());
            let mut message = json!({
                "role": "assistant",
                "content": if said.text.is_empty() && !said.tool_calls.is_empty() { Value::Null } else { json!(said.text) },
            });
            if !said.reasoning.is_empty() {
                message["reasoning_content"] = json!(said.reasoning);
            }
            if !said.tool_calls.is_empty() {
                message["tool_calls"] = Value::Array(said.tool_calls);
            }
            json!({ "index": index, "message": message, "finish_reason": finish })
        })
        .collect();
    if choices.is_empty() && is_blocked_prompt(resp) {
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": null },
            "finish_reason": "content_filter",
        }));
    }
    let mut out = json!({
        "id": chat_id(resp),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": choices,
    });
    if let Some(meta) = resp.get("usageMetadata") {
        out["usage"] = usage(meta);
    }
    out
}

// === impl GenerateToChatStream ===

#[derive(Default)]
struct ChoiceState {
    role_sent: bool,
    tool_calls: usize,
}

/// Gemini's `alt=sse` stream (each event a GenerateContentResponse) → OpenAI
/// `chat.completion.chunk` events, ending with a usage chunk (`choices: []`, from the last
/// `usageMetadata` seen, which Gemini repeats on every event) and `data: [DONE]`.
///
/// The usage chunk is always emitted when Gemini reported usage: the metering stage reads it and
/// hides it from clients that did not ask for it. At most [`MAX_CANDIDATES`] candidates are
/// followed: a stream that names more ends with an error.
pub struct GenerateToChatStream {
    model: String,
    id: Option<String>,
    created: u64,
    choices: HashMap<u64, ChoiceState>,
    next_call: usize,
    usage: Option<Value>,
    ended: bool,
    failed: bool,
}

/// Most candidates one Gemini stream may carry: OpenAI's `n` is at most 128 too.
const MAX_CANDIDATES: usize = 128;

impl GenerateToChatStream {
    pub fn new(model: &str) -> Self {
        GenerateToChatStream {
            model: model.to_owned(),
            id: None,
            created: now_secs(),
            choices: HashMap::new(),
            next_call: 0,
            usage: None,
            ended: false,
            failed: false,
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id.as_deref().unwrap_or("chatcmpl-gemini"),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn choice_chunk(&self, index: u64, delta: Map<String, Value>, finish: Option<&str>) -> Bytes {
        frame_json(None, &self.chunk(json!([{ "index": index, "delta": delta, "finish_reason": finish }])))
    }

    /// Ends the stream with an error event: more candidates than [`MAX_CANDIDATES`].
    fn fail(&mut self) -> Vec<Bytes> {
        self.failed = true;
        let message = format!("the upstream stream has more than {MAX_CANDIDATES} candidates");
        let error =
            json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_error"}});
        vec![frame_json(None, &error)]
    }
}

impl SseTranslator for GenerateToChatStream {
    fn event(&mut self, _name: Option<&str>, data: &[u8]) -> Vec<Bytes> {
        if self.failed {
            return Vec::new();
        }
        let Ok(resp) = serde_json::from_slice::<Value>(data) else { return Vec::new() };
        if let Some(error) = resp.get("error") {
            return vec![frame_json(None, &error_envelope(error))];
        }
        if self.id.is_none() {
            self.id = Some(chat_id(&resp));
        }
        if let Some(meta) = resp.get("usageMetadata") {
            self.usage = Some(usage(meta));
        }
        let mut out = Vec::new();
        let candidates = resp.get("candidates").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        // Each candidate of an event becomes up to two chunks: more of them than any request
        // asks for would turn a small event into a large output.
        if candidates.len() > MAX_CANDIDATES {
            return self.fail();
        }
        for (position, candidate) in candidates.iter().enumerate() {
            let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            if self.choices.len() >= MAX_CANDIDATES && !self.choices.contains_key(&index) {
                out.extend(self.fail());
                return out;
            }
            let said = read_parts(candidate_parts(candidate), &mut self.next_call);
            let state = self.choices.entry(index).or_default();
            let mut delta = Map::new();
            if !state.role_sent {
                state.role_sent = true;
                delta.insert("role".into(), json!("assistant"));
                delta.insert("content".into(), json!(""));
            }
            if !said.text.is_empty() {
                delta.insert("content".into(), json!(said.text));
            }
            if !said.reasoning.is_empty() {
                delta.insert("reasoning_content".into(), json!(said.reasoning));
            }
            if !said.tool_calls.is_empty() {
                let calls: Vec<Value> = said
                    .tool_calls
                    .into_iter()
                    .map(|mut call| {
                        call["index"] = json!(state.tool_calls);
                        state.tool_calls += 1;
                        call
                    })
                    .collect();
                delta.insert("tool_calls".into(), Value::Array(calls));
            }
            let made_calls = state.tool_calls > 0;
            if !delta.is_empty() {
                out.push(self.choice_chunk(index, delta, None));
            }
            if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                out.push(self.choice_chunk(index, Map::new(), Some(finish_reason(reason, made_calls))));
            }
        }
        if candidates.is_empty() && is_blocked_prompt(&resp) {
            let mut delta = Map::new();
            delta.insert("role".into(), json!("assistant"));
            out.push(self.choice_chunk(0, delta, Some("content_filter")));
        }
        out
    }

    fn end(&mut self) -> Vec<Bytes> {
        // A failed stream owes nothing: without `[DONE]`, metering sees it cut short.
        if self.ended || self.failed {
            return Vec::new();
        }
        self.ended = true;
        let mut out = Vec::with_capacity(2);
        if let Some(usage) = self.usage.take() {
            let mut chunk = self.chunk(json!([]));
            chunk["usage"] = usage;
            out.push(frame_json(None, &chunk));
        }
        out.push(frame(None, b"[DONE]"));
        out
    }

    fn finished(&self) -> bool {
        self.failed
    }
}

// === Errors ===

/// A Gemini error body (`{"error": {"code", "message", "status"}}`, possibly inside the JSON
/// array of a non-SSE stream) → the OpenAI envelope `{"error": {"message", "type", "param", "code"}}`.
pub fn error_to_openai(body: &[u8]) -> Value {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let error = parsed.as_ref().map(|v| v.get(0).unwrap_or(v)).and_then(|v| v.get("error")).filter(|e| e.is_object());
    match error {
        Some(error) => error_envelope(error),
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(1000)]);
            let text = text.trim();
            let message = if text.is_empty() { "the upstream provider returned an error" } else { text };
            json!({ "error": { "message": message, "type": "api_error", "param": null, "code": null } })
        }
    }
}

fn error_envelope(error: &Value) -> Value {
    let status = error.get("status").and_then(Value::as_str).unwrap_or_default();
    let message = error.get("message").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(status);
    let message = if message.is_empty() { "the upstream provider returned an error" } else { message };
    let reasons: Vec<&str> = error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("reason").and_then(Value::as_str))
        .collect();
    let lower = message.to_ascii_lowercase();
    let (kind, code) = if reasons.contains(&"API_KEY_INVALID") || status == "UNAUTHENTICATED" {
        ("authentication_error", "invalid_api_key".to_owned())
    } else {
        match status {
            "PERMISSION_DENIED" => ("permission_error", "permission_denied".to_owned()),
            "RESOURCE_EXHAUSTED" => ("rate_limit_error", "rate_limit_exceeded".to_owned()),
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE"
                if lower.contains("token count") && lower.contains("exceeds the maximum") =>
            {
                ("invalid_request_error", "context_length_exceeded".to_owned())
            }
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
                ("invalid_request_error", "invalid_request".to_owned())
            }
            "NOT_FOUND" => ("invalid_request_error", "not_found".to_owned()),
            "DEADLINE_EXCEEDED" => ("timeout_error", "upstream_timeout".to_owned()),
            "" => ("api_error", "upstream_error".to_owned()),
            other => ("api_error", other.to_ascii_lowercase()),
        }
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests {
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
        let properties: Map<String, Value> =
            (0..100).map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/Big"}))).collect();
        let schema = json!({"type": "object", "properties": properties, "$defs": {"Big": big}});
        let mut budget = SchemaBudget::default();
        let defs = schema.get("$defs").and_then(Value::as_object);
        assert_eq!(clean_schema(&schema, defs, 0, &mut budget), Err(SchemaTooLarge::Bytes));
        assert!(budget.nodes < 200, "{budget:?}");

        // Each tool alone is fine; together they are not.
        let properties: Map<String, Value> =
            (0..30).map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/Big"}))).collect();
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
        let missing =
            error_to_openai(br#"{"error":{"code":404,"message":"models/x is not found","status":"NOT_FOUND"}}"#);
        assert_eq!(missing["error"]["code"], "not_found");
        let internal = error_to_openai(br#"{"error":{"code":500,"message":"boom","status":"INTERNAL"}}"#);
        assert_eq!(
            internal["error"],
            json!({"message": "boom", "type": "api_error", "param": null, "code": "internal"})
        );
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
        let read: crate::openai::ResponseUsage = serde_json::from_value(chat).unwrap();
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
}
