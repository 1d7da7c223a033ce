//! Translation between OpenAI Chat Completions (the gateway's own format) and Google Gemini's
//! `generateContent` / `streamGenerateContent` (the AI Studio `v1beta` REST API): request bodies,
//! responses, stream events and error bodies.
//!
//! Pure functions over JSON values: nothing here does I/O. The API key must never appear in a
//! URL built here — it travels in the `x-goog-api-key` header, so it cannot leak into logs of URLs.

use crate::config::Secret;
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::providers::{ByteStream, Deployment, Endpoint, Target};
use crate::sse::{frame, frame_json, SseTranslator};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Google AI Studio's REST base.
pub const DEFAULT_API_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";

/// Google Gemini's `generateContent` / `streamGenerateContent`: the key in the `x-goog-api-key`
/// header, chat only.
#[derive(Debug)]
pub struct Gemini;

impl crate::providers::Provider for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn prefixes(&self) -> &'static [(&'static str, Option<&'static str>)] {
        &[("gemini", Some(DEFAULT_API_BASE))]
    }

    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::ChatCompletions
    }

    fn url(&self, target: Target<'_>, _endpoint: Endpoint, stream: bool) -> String {
        url(target.api_base, target.upstream_model, stream)
    }

    fn authenticate(&self, request: reqwest::RequestBuilder, key: Option<&Secret>) -> reqwest::RequestBuilder {
        match key {
            // In a header, never the URL (URLs end up in logs).
            Some(key) => request.header("x-goog-api-key", key.expose()),
            None => request,
        }
    }

    fn request_body(&self, _deployment: &Deployment, request: &ProxyRequest) -> Result<Vec<u8>, GatewayError> {
        let mut body = chat_request_to_generate(&request.to_value()?)?;
        // The one output limit the request was reserved for (see `ProxyRequest::max_tokens`).
        if let (Some(max), Some(body)) = (request.max_tokens, body.as_object_mut()) {
            let config = body.entry("generationConfig").or_insert_with(|| json!({}));
            if let Some(config) = config.as_object_mut() {
                config.insert("maxOutputTokens".to_owned(), json!(max));
            }
        }
        crate::providers::encode(&body)
    }

    fn response_body(&self, deployment: &Deployment, body: Bytes) -> Bytes {
        crate::providers::translate_json(body, |v| generate_response_to_chat(v, &deployment.upstream_model))
    }

    fn error_body(&self, body: Bytes) -> Bytes {
        Bytes::from(error_to_openai(&body).to_string())
    }

    fn response_stream(&self, deployment: &Deployment, raw: ByteStream) -> ByteStream {
        Box::pin(crate::sse::TranslatedStream::new(raw, GenerateToChatStream::new(&deployment.upstream_model)))
    }
}

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

mod errors;
mod response;
mod stream;
pub use errors::error_to_openai;
pub use response::generate_response_to_chat;
pub use stream::GenerateToChatStream;

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests;
