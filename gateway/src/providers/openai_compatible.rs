//! Any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, Groq, ...).

use super::{Deployment, UpstreamError, UpstreamResponse};

/// POSTs a chat completion body to the deployment and returns the answer as it came.
pub async fn chat_completions(
    client: &reqwest::Client,
    deployment: &Deployment,
    body: Vec<u8>,
) -> Result<UpstreamResponse, UpstreamError> {
    let url = format!("{}/chat/completions", deployment.api_base.trim_end_matches('/'));
    let mut request = client
        .post(url)
        .timeout(deployment.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(key) = &deployment.api_key {
        request = request.bearer_auth(key.expose());
    }
    let response = request.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.bytes().await.map_err(classify)?;
    Ok(UpstreamResponse { status, content_type, body })
}

/// Maps a transport error without its URL (which could carry credentials).
fn classify(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else if e.is_connect() {
        UpstreamError::Unavailable("connection failed".into())
    } else if e.is_body() || e.is_decode() {
        UpstreamError::Unavailable("response body interrupted".into())
    } else {
        UpstreamError::Unavailable("request failed".into())
    }
}
