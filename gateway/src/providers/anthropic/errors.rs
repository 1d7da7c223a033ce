//! Error bodies both ways: Anthropic's in OpenAI's envelope, and OpenAI's in Anthropic's.

use super::*;

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
pub(super) fn error_envelope(error: &Value) -> Value {
    let message = match error {
        Value::String(message) => message.as_str(),
        _ => error.get("message").and_then(Value::as_str).unwrap_or(crate::providers::UNREADABLE_ERROR),
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

/// Outbound errors: an Anthropic error body (`{"type":"error","error":{"type","message"}}`) →
/// the OpenAI envelope `{"error":{"message","type","param","code"}}`.
pub fn error_to_openai(body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(parsed) if parsed.get("error").is_some_and(|e| e.is_object() || e.is_string()) => {
            error_envelope(&parsed["error"])
        }
        _ => crate::providers::unreadable_error(body),
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
        Err(_) => Some(crate::providers::raw_error_text(body)),
    };
    let message =
        message.filter(|m| !m.is_empty()).unwrap_or_else(|| format!("the request failed with status {status}"));
    json!({"type": "error", "error": {"type": kind, "message": message}})
}
