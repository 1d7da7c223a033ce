//! Google Gemini as a provider: headers (the key goes in `x-goog-api-key`, never the URL). The
//! URL and the wire translation live in `crate::gemini`.

use super::Deployment;

pub fn request(
    client: &reqwest::Client,
    deployment: &Deployment,
    url: &reqwest::Url,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let mut request = client.post(url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    if let Some(key) = &deployment.api_key {
        request = request.header("x-goog-api-key", key.expose());
    }
    request
}
