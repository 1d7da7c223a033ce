//! Anthropic's Messages API as a provider: URL and API version (headers are set in
//! `providers::send`). The wire translation lives in
//! `crate::anthropic`.

pub const DEFAULT_API_BASE: &str = "https://api.anthropic.com";
/// The API version Tollgate speaks.
pub const API_VERSION: &str = "2023-06-01";

/// `{api_base}/v1/messages` (an `api_base` that already ends in `/v1` is accepted too).
pub fn url(api_base: &str) -> String {
    let base = api_base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1/messages")
}
