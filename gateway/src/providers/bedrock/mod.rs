//! AWS Bedrock's Converse API (`POST /model/{modelId}/converse`, and `converse-stream`, whose
//! answer is AWS's binary event-stream), configured as LiteLLM configures it: `bedrock/<modelId>`
//! or `bedrock/converse/<modelId>`, with `aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token` and `aws_region_name`. Requests are signed with SigV4 ([`sigv4`]); a
//! deployment with an `api_key` (a Bedrock API key) sends it as a bearer token instead.
//!
//! Chat only. The credentials never appear in a URL, a log or an error: only the signature
//! derived from them is sent.

pub mod converse;
pub mod eventstream;
pub mod sigv4;
pub mod stream;

use crate::config::{LitellmParams, Secret};
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::providers::{ByteStream, Deployment, Endpoint, Target};
use bytes::Bytes;
use sigv4::AwsCredentials;
use std::sync::Arc;

/// Bedrock's runtime API through the Converse operations.
#[derive(Debug)]
pub struct Bedrock;

/// The public runtime endpoint of a region.
pub fn regional_endpoint(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

impl crate::providers::Provider for Bedrock {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    fn prefixes(&self) -> &'static [(&'static str, Option<&'static str>)] {
        &[("bedrock", None)]
    }

    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::ChatCompletions
    }

    fn upstream_model<'a>(&self, model: &'a str) -> &'a str {
        model.strip_prefix("converse/").unwrap_or(model)
    }

    fn base_from_params(&self, params: &LitellmParams) -> Option<String> {
        params.aws_bedrock_runtime_endpoint.clone().or_else(|| params.aws_region_name.as_deref().map(regional_endpoint))
    }

    fn signing(&self, params: &LitellmParams) -> Result<Option<Arc<AwsCredentials>>, (&'static str, String)> {
        if params.model.starts_with("bedrock/invoke/") {
            return Err((
                "model",
                "Bedrock's InvokeModel API is not served: name the model `bedrock/<modelId>`".into(),
            ));
        }
        let (id, secret) = match (&params.aws_access_key_id, &params.aws_secret_access_key) {
            (Some(id), Some(secret)) => (id, secret),
            (None, None) if params.api_key.is_some() => return Ok(None),
            (None, None) => {
                return Err(("aws_access_key_id", "a `bedrock/` deployment needs AWS credentials or an api_key".into()))
            }
            (Some(_), None) => return Err(("aws_secret_access_key", "required with aws_access_key_id".into())),
            (None, Some(_)) => return Err(("aws_access_key_id", "required with aws_secret_access_key".into())),
        };
        let region = params
            .aws_region_name
            .clone()
            .ok_or_else(|| ("aws_region_name", "a `bedrock/` deployment signs for a region: name it".to_owned()))?;
        Ok(Some(Arc::new(AwsCredentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: params.aws_session_token.clone(),
            region,
        })))
    }

    fn url(&self, target: Target<'_>, _endpoint: Endpoint, stream: bool) -> String {
        let base = target.api_base.trim_end_matches('/');
        let model = sigv4::uri_encode(target.upstream_model, false);
        let operation = if stream { "converse-stream" } else { "converse" };
        format!("{base}/model/{model}/{operation}")
    }

    fn authenticate(&self, request: reqwest::RequestBuilder, key: Option<&Secret>) -> reqwest::RequestBuilder {
        match key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    fn sign(
        &self,
        request: reqwest::RequestBuilder,
        deployment: &Deployment,
        url: &reqwest::Url,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        let Some(credentials) = deployment.aws.as_deref() else {
            return self.authenticate(request, deployment.api_key.as_ref());
        };
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let signed = sigv4::sign(
            credentials,
            sigv4::SERVICE,
            &sigv4::Request {
                method: "POST",
                host: &host,
                path: url.path(),
                query: url.query().unwrap_or_default(),
                headers: &[("content-type", "application/json")],
                body,
            },
            chrono::Utc::now(),
        );
        let request = request.header("x-amz-date", signed.amz_date).header("authorization", signed.authorization);
        match signed.security_token {
            Some(token) => request.header("x-amz-security-token", token),
            None => request,
        }
    }

    fn request_body(&self, _deployment: &Deployment, request: &ProxyRequest) -> Result<Vec<u8>, GatewayError> {
        crate::providers::encode(&converse::chat_to_converse(&request.to_value()?, request.max_tokens)?)
    }

    fn response_body(&self, deployment: &Deployment, body: Bytes) -> Bytes {
        crate::providers::translate_json(body, |v| converse::converse_to_chat(v, &deployment.upstream_model))
    }

    fn error_body(&self, body: Bytes) -> Bytes {
        Bytes::from(converse::error_to_openai(&body).to_string())
    }

    fn response_stream(&self, deployment: &Deployment, raw: ByteStream) -> ByteStream {
        Box::pin(stream::FrameStream::new(raw, stream::ConverseToChatStream::new(&deployment.upstream_model)))
    }
}

#[cfg(test)]
pub(crate) mod fuzz;
#[cfg(test)]
mod tests;
