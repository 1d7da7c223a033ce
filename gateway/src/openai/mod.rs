//! OpenAI wire types, kept apart from the core. Request bodies are parsed once into top-level
//! fields whose values stay raw JSON; only what the gateway must read is decoded, and only the
//! model name is changed before forwarding.

use crate::error::GatewayError;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;

/// A chat completion request: top-level fields kept as raw JSON.
pub struct ChatRequest {
    fields: HashMap<String, Box<RawValue>>,
    pub model: String,
    pub stream: bool,
    /// The request's end-user id (`user`), used as the customer.
    pub user: Option<String>,
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, GatewayError> {
        let fields: HashMap<String, Box<RawValue>> = serde_json::from_slice(body)
            .map_err(|e| GatewayError::invalid(format!("request body is not a valid JSON object: {e}"), None))?;
        let model = match fields.get("model") {
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map_err(|_| GatewayError::invalid("`model` must be a string", Some("model")))?,
            None => return Err(GatewayError::invalid("`model` is required", Some("model"))),
        };
        match fields.get("messages") {
            Some(raw) if raw.get().trim_start().starts_with('[') => {}
            Some(_) => return Err(GatewayError::invalid("`messages` must be an array", Some("messages"))),
            None => return Err(GatewayError::invalid("`messages` is required", Some("messages"))),
        }
        let stream = match fields.get("stream") {
            None => false,
            Some(raw) => match raw.get().trim() {
                "true" => true,
                "false" | "null" => false,
                _ => return Err(GatewayError::invalid("`stream` must be a boolean", Some("stream"))),
            },
        };
        let user = match fields.get("user") {
            None => None,
            Some(raw) if raw.get().trim() == "null" => None,
            Some(raw) => Some(
                serde_json::from_str::<String>(raw.get())
                    .map_err(|_| GatewayError::invalid("`user` must be a string", Some("user")))?,
            ),
        };
        Ok(ChatRequest { fields, model, stream, user })
    }

    /// The body to send upstream, naming the upstream model.
    pub fn to_upstream_body(&self, upstream_model: &str) -> Result<Vec<u8>, GatewayError> {
        let model = serde_json::value::to_raw_value(upstream_model)
            .map_err(|e| GatewayError::Internal(format!("cannot encode model name: {e}")))?;
        let mut out: HashMap<&str, &RawValue> = self.fields.iter().map(|(k, v)| (k.as_str(), v.as_ref())).collect();
        out.insert("model", &model);
        serde_json::to_vec(&out).map_err(|e| GatewayError::Internal(format!("cannot encode request: {e}")))
    }
}

/// The parts of a chat completion response the gateway reads.
#[derive(Deserialize, Default)]
pub struct ChatResponseUsage {
    pub model: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Deserialize, Default, Clone, Copy)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize, Default, Clone, Copy)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rewrites_only_the_model() {
        let body = br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"user":"c-1"}"#;
        let req = ChatRequest::parse(body).unwrap();
        assert_eq!(req.model, "fast");
        assert_eq!(req.user.as_deref(), Some("c-1"));
        assert!(!req.stream);
        let out: serde_json::Value = serde_json::from_slice(&req.to_upstream_body("gpt-4o-mini").unwrap()).unwrap();
        assert_eq!(out["model"], "gpt-4o-mini");
        assert_eq!(out["temperature"], 0.2);
        assert_eq!(out["messages"][0]["content"], "hi");
    }

    #[test]
    fn rejects_bad_bodies_with_the_param() {
        for (body, param) in [
            (&br#"{"messages":[]}"#[..], Some("model")),
            (br#"{"model":1,"messages":[]}"#, Some("model")),
            (br#"{"model":"m","messages":"hi"}"#, Some("messages")),
            (br#"{"model":"m","messages":[],"stream":"yes"}"#, Some("stream")),
            (br#"{"model":"m""#, None),
            (br#"[1,2]"#, None),
        ] {
            match ChatRequest::parse(body) {
                Err(GatewayError::InvalidRequest { param: p, .. }) => {
                    assert_eq!(p, param, "{body:?}")
                }
                Err(other) => panic!("unexpected error {other:?}"),
                Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}
