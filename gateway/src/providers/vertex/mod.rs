//! Google Vertex AI (`vertex_ai/<model>`): Gemini models through `generateContent` and
//! `streamGenerateContent?alt=sse`, Anthropic's Claude models through `rawPredict` and
//! `streamRawPredict`. The wire formats are those of the Gemini and Anthropic families, whose
//! translations are reused as they are; what is Vertex's own is the URL (project, location,
//! publisher) and the sign-in: a service account's OAuth token ([`ServiceAccount`]), sent as
//! `Authorization: Bearer`.
//!
//! Which publisher serves a deployment is read from its model: `claude-*` is Anthropic's, any
//! other Google's. Nothing here logs a key or a token.

mod service_account;
mod setup;

pub use service_account::{CredentialsError, ServiceAccount, TokenError};
pub use setup::{base_url, setup};

use crate::config::Secret;
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::providers::{anthropic, gemini, ByteStream, Deployment, Endpoint, Target};
use bytes::Bytes;
use serde_json::{json, Value};

/// The `anthropic_version` a Claude request on Vertex AI carries in its body (Vertex takes no
/// `anthropic-version` header).
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Vertex AI: Google's and Anthropic's models of one Google Cloud project and region.
#[derive(Debug)]
pub struct Vertex;

/// The publisher of a Vertex AI model, which decides its URL and wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publisher {
    Google,
    Anthropic,
}

impl Publisher {
    /// `claude-*` models are Anthropic's; every other model is Google's.
    pub fn of(model: &str) -> Publisher {
        if model.starts_with("claude") {
            Publisher::Anthropic
        } else {
            Publisher::Google
        }
    }
}

/// The URL of a call to `model` under `api_base` (`{host}/v1/projects/{p}/locations/{l}`, built
/// by [`setup`]): `{api_base}/publishers/{google|anthropic}/models/{model}:{method}`.
pub fn url(api_base: &str, model: &str, stream: bool) -> String {
    let base = api_base.trim_end_matches('/');
    let (publisher, method) = match (Publisher::of(model), stream) {
        (Publisher::Google, false) => ("google", "generateContent"),
        (Publisher::Google, true) => ("google", "streamGenerateContent?alt=sse"),
        (Publisher::Anthropic, false) => ("anthropic", "rawPredict"),
        (Publisher::Anthropic, true) => ("anthropic", "streamRawPredict"),
    };
    format!("{base}/publishers/{publisher}/models/{model}:{method}")
}

impl crate::providers::Provider for Vertex {
    fn name(&self) -> &'static str {
        "vertex_ai"
    }

    fn prefixes(&self) -> &'static [(&'static str, Option<&'static str>)] {
        // The base URL depends on the location: [`setup`] builds it.
        &[("vertex_ai", None)]
    }

    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::ChatCompletions
    }

    fn url(&self, target: Target<'_>, _endpoint: Endpoint, stream: bool) -> String {
        url(target.api_base, target.upstream_model, stream)
    }

    fn setup(
        &self,
        params: &crate::config::LitellmParams,
    ) -> Result<crate::providers::Setup, crate::providers::SetupError> {
        setup(params)
    }

    fn authenticate(&self, request: reqwest::RequestBuilder, key: Option<&Secret>) -> reqwest::RequestBuilder {
        match key {
            // The service account's access token (`providers::send` fetched it).
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    fn request_body(&self, deployment: &Deployment, request: &ProxyRequest) -> Result<Vec<u8>, GatewayError> {
        match Publisher::of(&deployment.upstream_model) {
            Publisher::Google => gemini::Gemini.request_body(deployment, request),
            Publisher::Anthropic => {
                let body = anthropic::chat_request_to_messages(&request.to_value()?, &deployment.upstream_model)?;
                crate::providers::encode(&claude_body(body, request.max_tokens))
            }
        }
    }

    fn default_output_limit(&self) -> Option<u64> {
        // Claude requires a limit; a Gemini deployment is reserved for as much (the trait
        // does not say which model is asked).
        Some(anthropic::DEFAULT_MAX_TOKENS)
    }

    fn response_body(&self, deployment: &Deployment, body: Bytes) -> Bytes {
        match Publisher::of(&deployment.upstream_model) {
            Publisher::Google => gemini::Gemini.response_body(deployment, body),
            Publisher::Anthropic => anthropic::Anthropic.response_body(deployment, body),
        }
    }

    fn error_body(&self, body: Bytes) -> Bytes {
        // Claude's own errors come in Anthropic's shape (`"type": "error"`); Vertex's (sign-in,
        // quota, a model not found) in Google's.
        let anthropic_shaped =
            serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.get("type") == Some(&json!("error")));
        if anthropic_shaped {
            Bytes::from(anthropic::error_to_openai(&body).to_string())
        } else {
            Bytes::from(gemini::error_to_openai(&body).to_string())
        }
    }

    fn response_stream(&self, deployment: &Deployment, raw: ByteStream) -> ByteStream {
        match Publisher::of(&deployment.upstream_model) {
            Publisher::Google => gemini::Gemini.response_stream(deployment, raw),
            Publisher::Anthropic => anthropic::Anthropic.response_stream(deployment, raw),
        }
    }
}

/// An Anthropic Messages body as Vertex AI takes it: the model is in the URL, not the body, and
/// the API version is the body's `anthropic_version`. `max_tokens` is the limit the request was
/// reserved for.
fn claude_body(mut body: Value, max_tokens: Option<u64>) -> Value {
    if let Some(fields) = body.as_object_mut() {
        fields.remove("model");
        fields.insert("anthropic_version".to_owned(), json!(ANTHROPIC_VERSION));
        if let Some(max) = max_tokens {
            fields.insert("max_tokens".to_owned(), json!(max));
        }
    }
    body
}

#[cfg(test)]
mod tests;
