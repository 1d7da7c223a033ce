//! Google Gemini as a provider: URL and headers (the key goes in `x-goog-api-key`, never the
//! URL). The wire translation lives in `crate::gemini`.

use super::Deployment;

pub fn request(
    client: &reqwest::Client,
    deployment: &Deployment,
    body: Vec<u8>,
    stream: bool,
) -> reqwest::RequestBuilder {
    let url = crate::gemini::url(&deployment.api_base, &deployment.upstream_model, stream);
    let mut request = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    if let Some(key) = &deployment.api_key {
        request = request.header("x-goog-api-key", key.expose());
    }
    request
}
