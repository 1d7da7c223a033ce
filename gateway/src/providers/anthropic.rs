//! Anthropic's Messages API as a provider: URL and headers. The wire translation lives in
//! `crate::anthropic`.

use super::Deployment;

pub const DEFAULT_API_BASE: &str = "https://api.anthropic.com";
/// The API version Tollgate speaks.
pub const API_VERSION: &str = "2023-06-01";

pub fn request(client: &reqwest::Client, deployment: &Deployment, body: Vec<u8>) -> reqwest::RequestBuilder {
    let base = deployment.api_base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    let mut request = client
        .post(format!("{base}/v1/messages"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("anthropic-version", API_VERSION)
        .body(body);
    if let Some(key) = &deployment.api_key {
        request = request.header("x-api-key", key.expose());
    }
    request
}
