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

use crate::config::Secret;
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::providers::{ByteStream, Deployment, Endpoint, Target};
use crate::sse::{frame, frame_json, SseTranslator};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tollgate_schemas::limits;

/// Anthropic requires `max_tokens`; OpenAI clients often leave it out.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub const DEFAULT_API_BASE: &str = "https://api.anthropic.com";
/// The API version Tollgate speaks.
pub const API_VERSION: &str = "2023-06-01";

/// Anthropic's Messages API: `{api_base}/v1/messages` (an `api_base` that already ends in `/v1`
/// is accepted too), the `x-api-key` and `anthropic-version` headers, chat only.
#[derive(Debug)]
pub struct Anthropic;

impl crate::providers::Provider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn prefixes(&self) -> &'static [(&'static str, Option<&'static str>)] {
        &[("anthropic", Some(DEFAULT_API_BASE))]
    }

    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::ChatCompletions
    }

    fn url(&self, target: Target<'_>, _endpoint: Endpoint, _stream: bool) -> String {
        let base = target.api_base.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/messages")
    }

    fn authenticate(&self, request: reqwest::RequestBuilder, key: Option<&Secret>) -> reqwest::RequestBuilder {
        let request = request.header("anthropic-version", API_VERSION);
        match key {
            Some(key) => request.header("x-api-key", key.expose()),
            None => request,
        }
    }

    fn request_body(&self, deployment: &Deployment, request: &ProxyRequest) -> Result<Vec<u8>, GatewayError> {
        let mut body = chat_request_to_messages(&request.to_value()?, &deployment.upstream_model)?;
        // The one output limit the request was reserved for (see `ProxyRequest::max_tokens`).
        if let Some(max) = request.max_tokens {
            body["max_tokens"] = json!(max);
        }
        crate::providers::encode(&body)
    }

    fn default_output_limit(&self) -> Option<u64> {
        Some(DEFAULT_MAX_TOKENS)
    }

    fn response_body(&self, _deployment: &Deployment, body: Bytes) -> Bytes {
        crate::providers::translate_json(body, message_to_chat_response)
    }

    fn error_body(&self, body: Bytes) -> Bytes {
        Bytes::from(error_to_openai(&body).to_string())
    }

    fn response_stream(&self, _deployment: &Deployment, raw: ByteStream) -> ByteStream {
        Box::pin(crate::sse::TranslatedStream::new(raw, MessagesToChatStream::new()))
    }
}

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
            input: (prompt - cached).saturating_sub(u64_at(usage, "/cache_creation_input_tokens")),
            output: u64_at(usage, "/completion_tokens"),
            cache_read: cached,
            cache_creation: u64_at(usage, "/cache_creation_input_tokens").min(prompt - cached),
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
        let mut usage = json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        });
        if self.cache_creation > 0 {
            // LiteLLM's name for Anthropic's count: prompt tokens written to the cache, priced
            // as such (`cache_creation_input_token_cost`).
            usage["cache_creation_input_tokens"] = json!(self.cache_creation);
        }
        usage
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

mod errors;
mod inbound;
mod outbound;
pub use errors::{error_to_anthropic, error_to_openai};
pub use inbound::{chat_response_to_message, messages_to_chat_request, ChatToMessagesStream};
pub use outbound::{chat_request_to_messages, message_to_chat_response, MessagesToChatStream};

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests;
