//! OpenAI's API and its copies (vLLM, Ollama, Groq, ...), and Azure OpenAI, which differs only
//! in the URL (`/openai/deployments/{deployment}/...?api-version=`) and the `api-key` header.
//! Requests go as the client sent them (the model renamed); answers come back as they are.

use super::{ByteStream, Deployment, Endpoint, Provider, Target};
use crate::config::Secret;
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use bytes::Bytes;

/// Provider prefixes that speak OpenAI's API, with their public base URL where they have one.
const PREFIXES: &[(&str, Option<&str>)] = &[
    ("openai", Some("https://api.openai.com/v1")),
    ("text-completion-openai", Some("https://api.openai.com/v1")),
    ("openai_like", None),
    ("hosted_vllm", None),
    ("vllm", None),
    ("ollama", Some("http://127.0.0.1:11434/v1")),
    ("ollama_chat", Some("http://127.0.0.1:11434/v1")),
    ("lm_studio", Some("http://127.0.0.1:1234/v1")),
    ("groq", Some("https://api.groq.com/openai/v1")),
    ("together_ai", Some("https://api.together.xyz/v1")),
    ("mistral", Some("https://api.mistral.ai/v1")),
    ("deepseek", Some("https://api.deepseek.com/v1")),
    ("openrouter", Some("https://openrouter.ai/api/v1")),
    ("fireworks_ai", Some("https://api.fireworks.ai/inference/v1")),
    ("perplexity", Some("https://api.perplexity.ai")),
    ("xai", Some("https://api.x.ai/v1")),
    ("deepinfra", Some("https://api.deepinfra.com/v1/openai")),
    ("cerebras", Some("https://api.cerebras.ai/v1")),
];

/// Default `api-version` for Azure deployments that name none.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// OpenAI and every server that copies its API: `{api_base}/{endpoint}`, a bearer token.
#[derive(Debug)]
pub struct OpenAi;

/// Azure OpenAI: deployment URLs, `api-version`, the `api-key` header.
#[derive(Debug)]
pub struct Azure;

/// What the two share: the body goes and comes back as it is.
macro_rules! openai_wire {
    () => {
        fn request_body(&self, deployment: &Deployment, request: &ProxyRequest) -> Result<Vec<u8>, GatewayError> {
            request.upstream_body(&deployment.upstream_model)
        }

        fn passes_answers_through(&self) -> bool {
            true
        }

        fn response_body(&self, _deployment: &Deployment, body: Bytes) -> Bytes {
            body
        }

        fn error_body(&self, body: Bytes) -> Bytes {
            body
        }

        fn response_stream(&self, _deployment: &Deployment, raw: ByteStream) -> ByteStream {
            raw
        }
    };
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn prefixes(&self) -> &'static [(&'static str, Option<&'static str>)] {
        PREFIXES
    }

    fn serves(&self, _endpoint: Endpoint) -> bool {
        true
    }

    fn url(&self, target: Target<'_>, endpoint: Endpoint, _stream: bool) -> String {
        format!("{}/{}", target.api_base.trim_end_matches('/'), endpoint.path())
    }

    fn authenticate(&self, request: reqwest::RequestBuilder, key: Option<&Secret>) -> reqwest::RequestBuilder {
        match key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    openai_wire!();
}

impl Provider for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn prefixes(&self) -> &'static [(&'static str, Option<&'static str>)] {
        &[("azure", None)]
    }

    /// Azure OpenAI has no moderation endpoint (Azure AI Content Safety is another API), and
    /// no rerank.
    fn serves(&self, endpoint: Endpoint) -> bool {
        !matches!(endpoint, Endpoint::Moderations | Endpoint::Rerank)
    }

    fn url(&self, target: Target<'_>, endpoint: Endpoint, _stream: bool) -> String {
        let base = target.api_base.trim_end_matches('/');
        let version = target.api_version.unwrap_or(AZURE_DEFAULT_API_VERSION);
        if endpoint == Endpoint::Responses {
            format!("{base}/openai/responses?api-version={version}")
        } else {
            format!("{base}/openai/deployments/{}/{}?api-version={version}", target.upstream_model, endpoint.path())
        }
    }

    fn authenticate(&self, request: reqwest::RequestBuilder, key: Option<&Secret>) -> reqwest::RequestBuilder {
        match key {
            Some(key) => request.header("api-key", key.expose()),
            None => request,
        }
    }

    openai_wire!();
}
