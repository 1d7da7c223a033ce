//! Anthropic's Messages API as a provider: URL and headers. The wire translation lives in
//! `crate::anthropic`.

use super::Deployment;

pub const DEFAULT_API_BASE: &str = "https://api.anthropic.com";
/// The API version Tollgate speaks.
pub const API_VERSION: &str = "2023-06-01";

/// `{api_base}/v1/messages` (an `api_base` that already ends in `/v1` is accepted too).
pub fn url(api_base: &str) -> String {
    let base = api_base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1/messages")
}

pub fn request(
    client: &reqwest::Client,
    deployment: &Deployment,
    url: &reqwest::Url,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let mut request = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("anthropic-version", API_VERSION)
        .body(body);
    if let Some(key) = &deployment.api_key {
        request = request.header("x-api-key", key.expose());
    }
    request
}
