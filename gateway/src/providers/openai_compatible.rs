//! OpenAI's API and its copies (vLLM, Ollama, Groq, ...), and Azure OpenAI, which differs only
//! in the URL (`/openai/deployments/{deployment}/...?api-version=`) and the `api-key` header
//! (set in `providers::send`).

use super::{Endpoint, ProviderKind};

/// Default `api-version` for Azure deployments that name none.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

pub fn url(
    kind: ProviderKind,
    api_base: &str,
    upstream_model: &str,
    api_version: Option<&str>,
    endpoint: Endpoint,
) -> String {
    let base = api_base.trim_end_matches('/');
    match kind {
        ProviderKind::Azure => {
            let version = api_version.unwrap_or(AZURE_DEFAULT_API_VERSION);
            if endpoint == Endpoint::Responses {
                format!("{base}/openai/responses?api-version={version}")
            } else {
                format!("{base}/openai/deployments/{upstream_model}/{}?api-version={version}", endpoint.path())
            }
        }
        _ => format!("{base}/{}", endpoint.path()),
    }
}
