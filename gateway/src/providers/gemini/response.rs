//! Gemini answers as OpenAI chat completions.

use super::*;

pub(super) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An OpenAI completion id from Gemini's `responseId`, kept only up to `limits::MAX_ID_BYTES`: a
/// stream repeats it in every chunk.
pub(super) fn chat_id(resp: &Value) -> String {
    let response_id = resp.get("responseId").and_then(Value::as_str);
    match response_id.filter(|id| id.len() <= tollgate_schemas::limits::MAX_ID_BYTES) {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
    }
}

pub(super) fn finish_reason(reason: &str, made_calls: bool) -> &'static str {
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
pub(super) fn usage(meta: &Value) -> Value {
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
    let prompt_audio = by_modality(meta, "promptTokensDetails", "AUDIO");
    let prompt_image = by_modality(meta, "promptTokensDetails", "IMAGE");
    let audio = by_modality(meta, "candidatesTokensDetails", "AUDIO");
    let image = by_modality(meta, "candidatesTokensDetails", "IMAGE");
    let details = [
        ("prompt_tokens_details", "audio_tokens", prompt_audio),
        ("prompt_tokens_details", "image_tokens", prompt_image),
        ("completion_tokens_details", "reasoning_tokens", thoughts),
        ("completion_tokens_details", "audio_tokens", audio),
        ("completion_tokens_details", "image_tokens", image),
    ];
    for (list, key, n) in details.into_iter().filter(|(.., n)| *n > 0) {
        usage[list][key] = json!(n);
    }
    usage
}

/// The tokens of one modality in a `*TokensDetails` list (`[{"modality": "AUDIO",
/// "tokenCount": 12}]`), summed, saturating.
fn by_modality(meta: &Value, list: &str, modality: &str) -> u64 {
    let Some(items) = meta.get(list).and_then(Value::as_array) else { return 0 };
    items
        .iter()
        .filter(|i| i.get("modality").and_then(Value::as_str) == Some(modality))
        .filter_map(|i| i.get("tokenCount").and_then(Value::as_u64))
        .fold(0, u64::saturating_add)
}

/// What a candidate's parts say, in OpenAI terms.
#[derive(Default)]
pub(super) struct Said {
    pub(super) text: String,
    pub(super) reasoning: String,
    pub(super) tool_calls: Vec<Value>,
}

/// Reads Gemini parts; tool calls get ids `call_<n>` from `next_call` unless Gemini gave one.
pub(super) fn read_parts(parts: &[Value], next_call: &mut usize) -> Said {
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

pub(super) fn candidate_parts(candidate: &Value) -> &[Value] {
    candidate.pointer("/content/parts").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

pub(super) fn is_blocked_prompt(resp: &Value) -> bool {
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
