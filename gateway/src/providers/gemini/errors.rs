//! Gemini error bodies in OpenAI's envelope.

use super::*;

/// A Gemini error body (`{"error": {"code", "message", "status"}}`, possibly inside the JSON
/// array of a non-SSE stream) → the OpenAI envelope `{"error": {"message", "type", "param", "code"}}`.
pub fn error_to_openai(body: &[u8]) -> Value {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let error = parsed.as_ref().map(|v| v.get(0).unwrap_or(v)).and_then(|v| v.get("error")).filter(|e| e.is_object());
    match error {
        Some(error) => error_envelope(error),
        None => crate::providers::unreadable_error(body),
    }
}

pub(super) fn error_envelope(error: &Value) -> Value {
    let status = error.get("status").and_then(Value::as_str).unwrap_or_default();
    let message = error.get("message").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(status);
    let message = if message.is_empty() { crate::providers::UNREADABLE_ERROR } else { message };
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
