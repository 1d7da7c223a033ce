//! Upstream providers. A deployment names its provider by the prefix of
//! `litellm_params.model` (`openai/gpt-4o`, `azure/my-deployment`, `groq/llama-3.1-8b`); the
//! provider family behind that prefix (a [`Provider`]) decides the URL, the authentication
//! headers and the wire format. Everything that differs between providers is in the trait;
//! the rest of the gateway speaks OpenAI's format and calls it.
//!
//! Adding a provider: a folder `providers/<name>/` with one implementation of [`Provider`], and
//! one line in [`REGISTRY`] (CONTRIBUTING.md walks through it).

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai;
pub mod vertex;

use crate::config::{LitellmParams, Secret};
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::limits::pricing::Price;
use bedrock::sigv4::AwsCredentials;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Every provider family the gateway can call.
pub static REGISTRY: &[&dyn Provider] =
    &[&openai::OpenAi, &openai::Azure, &anthropic::Anthropic, &gemini::Gemini, &bedrock::Bedrock, &vertex::Vertex];

/// Where a deployment is: what its URLs are built from.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub api_base: &'a str,
    pub upstream_model: &'a str,
    pub api_version: Option<&'a str>,
}

/// What a family makes of a deployment's own settings at start-up (Vertex AI's project,
/// location and service account).
#[derive(Debug, Default)]
pub struct Setup {
    /// The base URL the deployment's URLs are built from, over `api_base` and the default.
    pub api_base: Option<String>,
    /// Whose access tokens authenticate the deployment's calls, in place of `api_key`.
    pub service_account: Option<Arc<vertex::ServiceAccount>>,
}

/// A deployment setting a family cannot use: the field of `litellm_params`, and why.
#[derive(Debug)]
pub struct SetupError {
    pub field: &'static str,
    pub message: String,
}

/// One provider family: how a deployment of it is called, and how its answers are read back
/// into OpenAI's format. Metering reads usage from the translated answers and stream chunks,
/// so a family maps its usage there (`usage` with `prompt_tokens`, `completion_tokens`).
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The family's name (`openai`, `azure`, `anthropic`, `gemini`).
    fn name(&self) -> &'static str;

    /// The prefixes of `litellm_params.model` that name this family, each with its public base
    /// URL where it has one.
    fn prefixes(&self) -> &'static [(&'static str, Option<&'static str>)];

    /// The deployment's own settings, read at start-up; most families have none.
    fn setup(&self, _params: &crate::config::LitellmParams) -> Result<Setup, SetupError> {
        Ok(Setup::default())
    }

    /// Whether the family serves `endpoint` (families with a translated API serve chat only).
    fn serves(&self, endpoint: Endpoint) -> bool;

    /// The model the provider and the model catalogue know, from what follows the prefix
    /// (Bedrock's `converse/<id>` is `<id>`).
    fn upstream_model<'a>(&self, model: &'a str) -> &'a str {
        model
    }

    /// The base URL a deployment's own parameters give when it sets no `api_base` (Bedrock's
    /// region).
    fn base_from_params(&self, _params: &LitellmParams) -> Option<String> {
        None
    }

    /// The AWS credentials a deployment signs its requests with (Bedrock's), read at start-up
    /// with the other parameters the family requires; `Err` names the field at fault.
    fn signing(&self, _params: &LitellmParams) -> Result<Option<Arc<AwsCredentials>>, (&'static str, String)> {
        Ok(None)
    }

    /// The URL of `endpoint` (a stream may have a URL of its own).
    fn url(&self, target: Target<'_>, endpoint: Endpoint, stream: bool) -> String;

    /// Sets the authentication header for `key` (never in the URL: URLs end up in logs), and
    /// any header the API requires.
    fn authenticate(&self, request: reqwest::RequestBuilder, key: Option<&Secret>) -> reqwest::RequestBuilder;

    /// Authenticates a request to `url` with `body`: [`Provider::authenticate`] with the
    /// deployment's key, or a signature of the whole request (Bedrock's SigV4).
    fn sign(
        &self,
        request: reqwest::RequestBuilder,
        deployment: &Deployment,
        _url: &reqwest::Url,
        _body: &[u8],
    ) -> reqwest::RequestBuilder {
        self.authenticate(request, deployment.api_key.as_ref())
    }

    /// The body to send: the OpenAI request as is (model renamed), or translated. The output
    /// limit the request was reserved for (`ProxyRequest::max_tokens`) is the one sent.
    fn request_body(&self, deployment: &Deployment, request: &ProxyRequest) -> Result<Vec<u8>, GatewayError>;

    /// Output tokens a deployment generates when the request sets no limit, where the family
    /// sets one (Anthropic requires it): a request without a limit reserves at least this much.
    fn default_output_limit(&self) -> Option<u64> {
        None
    }

    /// Whether answers are sent on as the provider wrote them (already OpenAI's format): their
    /// content type is kept.
    fn passes_answers_through(&self) -> bool {
        false
    }

    /// A successful non-streamed answer in OpenAI's format (a body that is not JSON is passed
    /// on as it is).
    fn response_body(&self, deployment: &Deployment, body: Bytes) -> Bytes;

    /// A provider's error body in OpenAI's error envelope.
    fn error_body(&self, body: Bytes) -> Bytes;

    /// A streamed answer as OpenAI chat chunks.
    fn response_stream(&self, deployment: &Deployment, raw: ByteStream) -> ByteStream;
}

/// The provider family a `litellm_params.model` prefix names.
pub fn by_prefix(prefix: &str) -> Option<&'static dyn Provider> {
    REGISTRY.iter().copied().find(|p| p.prefixes().iter().any(|(name, _)| *name == prefix))
}

/// `(provider prefix, upstream model)` of a `litellm_params.model` (no prefix is `openai`), the
/// upstream model as its family names it ([`Provider::upstream_model`]).
pub fn split_model(model: &str) -> (&str, &str) {
    let (provider, upstream) = model.split_once('/').unwrap_or(("openai", model));
    (provider, by_prefix(provider).map_or(upstream, |api| api.upstream_model(upstream)))
}

/// Every prefix [`by_prefix`] accepts, for error messages.
pub fn supported_prefixes() -> Vec<&'static str> {
    REGISTRY.iter().flat_map(|p| p.prefixes().iter().map(|(name, _)| *name)).collect()
}

/// The public base URL of a provider prefix, when it has one.
pub fn default_api_base(prefix: &str) -> Option<&'static str> {
    REGISTRY.iter().flat_map(|p| p.prefixes().iter()).find(|(name, _)| *name == prefix).and_then(|(_, base)| *base)
}

/// The OpenAI-shaped endpoints the gateway forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    /// `/v1/moderations`: metered by its input tokens; its answer has no usage, so they are
    /// counted by Tollgate.
    Moderations,
    /// `/v1/rerank`, Cohere's shape (Cohere, Jina, vLLM, Infinity serve it): metered by search
    /// units, the provider's `meta.billed_units.search_units` else one per 100 documents.
    Rerank,
    /// `/v1/audio/speech`: text to speak, metered by its characters; the answer is audio.
    AudioSpeech,
    /// `/v1/images/generations`: images from a prompt, metered per image (else per pixel).
    ImageGenerations,
    /// `/v1/audio/transcriptions` and `/v1/audio/translations`: an uploaded audio file
    /// (multipart/form-data), metered by the seconds of audio the provider reports.
    AudioTranscriptions,
    AudioTranslations,
}

impl Endpoint {
    /// Every endpoint, for tests that go over them all.
    pub const ALL: [Endpoint; 10] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::Moderations,
        Endpoint::Rerank,
        Endpoint::AudioSpeech,
        Endpoint::ImageGenerations,
        Endpoint::AudioTranscriptions,
        Endpoint::AudioTranslations,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Moderations => "moderations",
            Endpoint::Rerank => "rerank",
            Endpoint::AudioSpeech => "audio/speech",
            Endpoint::ImageGenerations => "images/generations",
            Endpoint::AudioTranscriptions => "audio/transcriptions",
            Endpoint::AudioTranslations => "audio/translations",
        }
    }

    /// Whether its answers generate tokens (a completion): embeddings, moderations and rerank
    /// only read their input; speech answers audio, metered by the characters read; image
    /// generation answers images, metered by their count.
    pub fn generates(self) -> bool {
        !matches!(
            self,
            Endpoint::Embeddings
                | Endpoint::Moderations
                | Endpoint::Rerank
                | Endpoint::AudioSpeech
                | Endpoint::ImageGenerations
                | Endpoint::AudioTranscriptions
                | Endpoint::AudioTranslations
        )
    }
}

/// Upstream URLs of a deployment, parsed at start-up so no request parses a URL.
#[derive(Debug, Default)]
pub struct EndpointUrls {
    pub chat: Option<reqwest::Url>,
    pub chat_stream: Option<reqwest::Url>,
    pub completions: Option<reqwest::Url>,
    pub embeddings: Option<reqwest::Url>,
    pub responses: Option<reqwest::Url>,
    pub moderations: Option<reqwest::Url>,
    pub rerank: Option<reqwest::Url>,
    pub audio_speech: Option<reqwest::Url>,
    pub image_generations: Option<reqwest::Url>,
    pub audio_transcriptions: Option<reqwest::Url>,
    pub audio_translations: Option<reqwest::Url>,
}

impl EndpointUrls {
    pub fn get(&self, endpoint: Endpoint, stream: bool) -> Option<&reqwest::Url> {
        match endpoint {
            Endpoint::ChatCompletions if stream => self.chat_stream.as_ref(),
            Endpoint::ChatCompletions => self.chat.as_ref(),
            Endpoint::Completions => self.completions.as_ref(),
            Endpoint::Embeddings => self.embeddings.as_ref(),
            Endpoint::Responses => self.responses.as_ref(),
            Endpoint::Moderations => self.moderations.as_ref(),
            Endpoint::Rerank => self.rerank.as_ref(),
            Endpoint::AudioSpeech => self.audio_speech.as_ref(),
            Endpoint::ImageGenerations => self.image_generations.as_ref(),
            Endpoint::AudioTranscriptions => self.audio_transcriptions.as_ref(),
            Endpoint::AudioTranslations => self.audio_translations.as_ref(),
        }
    }
}

/// A deployment URL that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct BadUrl {
    pub url: String,
    pub reason: String,
}

/// The URLs of a deployment: `Err` names the URL that does not parse.
pub fn endpoint_urls(api: &dyn Provider, target: Target<'_>) -> Result<EndpointUrls, BadUrl> {
    let parse = |url: String| reqwest::Url::parse(&url).map(Some).map_err(|e| BadUrl { url, reason: e.to_string() });
    let served = |e: Endpoint| if api.serves(e) { parse(api.url(target, e, false)) } else { Ok(None) };
    Ok(EndpointUrls {
        chat: parse(api.url(target, Endpoint::ChatCompletions, false))?,
        chat_stream: parse(api.url(target, Endpoint::ChatCompletions, true))?,
        completions: served(Endpoint::Completions)?,
        embeddings: served(Endpoint::Embeddings)?,
        responses: served(Endpoint::Responses)?,
        moderations: served(Endpoint::Moderations)?,
        rerank: served(Endpoint::Rerank)?,
        audio_speech: served(Endpoint::AudioSpeech)?,
        image_generations: served(Endpoint::ImageGenerations)?,
        audio_transcriptions: served(Endpoint::AudioTranscriptions)?,
        audio_translations: served(Endpoint::AudioTranslations)?,
    })
}

/// One upstream deployment of a model (a `model_list` entry), resolved at start-up.
#[derive(Debug)]
pub struct Deployment {
    /// `model_name` clients ask for.
    pub model_name: String,
    /// Provider prefix of `litellm_params.model`, e.g. `openai`.
    pub provider: String,
    /// The provider family's API the deployment speaks.
    pub api: &'static dyn Provider,
    /// The model (or Azure deployment) name the provider knows.
    pub upstream_model: String,
    /// Stable name for events and metrics: `provider/upstream_model#index`.
    pub id: String,
    pub api_base: String,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    /// AWS credentials its requests are signed with (Bedrock), when it has them.
    pub aws: Option<Arc<AwsCredentials>>,
    /// A service account whose access token is sent in place of `api_key` (Vertex AI).
    pub service_account: Option<Arc<vertex::ServiceAccount>>,
    /// Parsed once at start-up: the URL of each endpoint this deployment serves.
    pub urls: EndpointUrls,
    /// Whole-request timeout (until the last byte of a non-streamed answer, or the first byte
    /// of a stream).
    pub timeout: Duration,
    /// Longest silence between two chunks of a stream.
    pub stream_idle_timeout: Duration,
    /// Longest a stream may last, however steadily the provider sends.
    pub stream_max_duration: Duration,
    /// `None` for a model without a price, served under `billing.unpriced_models: serve`.
    pub price: Option<Price>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub weight: f64,
    pub model_info: Option<serde_json::Map<String, serde_json::Value>>,
    /// The most prompt tokens the model takes (`model_info.max_input_tokens`), when known.
    pub max_input_tokens: Option<u64>,
}

#[cfg(test)]
impl Deployment {
    /// A deployment for unit tests: `api`'s, of model group `m` on upstream model
    /// `upstream-model` at `http://127.0.0.1:9`, one-second timeouts and nothing else set.
    pub fn for_test(api: &'static dyn Provider) -> Deployment {
        Deployment {
            model_name: "m".into(),
            provider: "p".into(),
            api,
            upstream_model: "upstream-model".into(),
            id: "p/upstream-model#0".into(),
            api_base: "http://127.0.0.1:9".into(),
            api_key: None,
            api_version: None,
            aws: None,
            service_account: None,
            urls: EndpointUrls::default(),
            timeout: Duration::from_secs(1),
            stream_idle_timeout: Duration::from_secs(1),
            stream_max_duration: Duration::from_secs(1),
            price: None,
            rpm: None,
            tpm: None,
            weight: 1.0,
            model_info: None,
            max_input_tokens: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
}

/// The body to send to the deployment, or a 400 when its provider does not serve the
/// request's endpoint.
pub fn request_body(deployment: &Deployment, request: &ProxyRequest) -> Result<Vec<u8>, GatewayError> {
    if !deployment.api.serves(request.endpoint) {
        return Err(GatewayError::invalid(
            format!("model '{}' does not support /{}", deployment.model_name, request.endpoint.path()),
            Some("model"),
        ));
    }
    deployment.api.request_body(deployment, request)
}

/// Re-encodes a translated request body.
fn encode(body: &serde_json::Value) -> Result<Vec<u8>, GatewayError> {
    serde_json::to_vec(body).map_err(|e| GatewayError::Internal(format!("cannot encode request: {e}")))
}

/// A translated answer: `f` over the body's JSON, or the body as it is when it is not JSON.
fn translate_json(body: Bytes, f: impl FnOnce(&serde_json::Value) -> serde_json::Value) -> Bytes {
    match serde_json::from_slice(&body) {
        Ok(v) => Bytes::from(f(&v).to_string()),
        Err(_) => body,
    }
}

/// The message of an error body that is not one its family's envelope: the body's text,
/// shortened so that a stray HTML page does not become a huge message (empty when it has none).
pub(crate) fn raw_error_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(500) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The OpenAI envelope of an error body no family could read.
pub(crate) fn unreadable_error(body: &[u8]) -> serde_json::Value {
    let text = raw_error_text(body);
    let message = if text.is_empty() { UNREADABLE_ERROR } else { &text };
    serde_json::json!({ "error": { "message": message, "type": "api_error", "param": null, "code": null } })
}

/// The message of an error that said nothing.
pub(crate) const UNREADABLE_ERROR: &str = "the upstream provider returned an error";

/// The content type of a successful answer as the client gets it.
pub fn answer_content_type(deployment: &Deployment, headers: &reqwest::header::HeaderMap) -> String {
    let kept = deployment.api.passes_answers_through().then(|| headers.get(reqwest::header::CONTENT_TYPE)).flatten();
    kept.and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_owned()
}

/// Why a provider's stream ended before its end.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The connection failed or the body was cut (the error may carry the URL: log it through
    /// [`classify`]).
    #[error("the upstream provider's stream failed")]
    Transport(#[from] reqwest::Error),
    #[error(transparent)]
    EventTooLarge(#[from] crate::sse::EventTooLarge),
    /// A post-call guardrail ended the stream (`crate::guardrails`); it names the guardrail.
    #[error("the answer was blocked by guardrail '{0}'")]
    GuardrailBlocked(String),
}

/// A streamed answer as OpenAI chat chunks.
pub type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, StreamError>> + Send>>;

/// A provider's streamed answer as OpenAI chat chunks.
pub fn response_stream(deployment: &Deployment, response: reqwest::Response) -> ByteStream {
    use futures::TryStreamExt;
    let raw: ByteStream = Box::pin(response.bytes_stream().map_err(StreamError::from));
    deployment.api.response_stream(deployment, raw)
}

/// Why a non-streamed answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the upstream provider's answer was cut")]
    Transport(#[from] reqwest::Error),
    #[error("the upstream provider's answer exceeds {limit} bytes")]
    TooLarge { limit: usize },
}

/// The content type of a provider's answer; `application/json` when it names none.
pub fn content_type_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned()
}

/// Reads a non-streamed answer, at most `limit` bytes of it: a larger one is refused from its
/// `Content-Length`, or as soon as the bytes read pass the limit.
pub async fn read_answer(response: reqwest::Response, limit: usize) -> Result<bytes::Bytes, AnswerError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(AnswerError::TooLarge { limit });
    }
    let declared = response.content_length().map_or(0, |n| n as usize);
    read_capped(response.bytes_stream(), declared, limit).await
}

/// The bytes of `body` if they are at most `limit`; stops reading at the first byte over it.
async fn read_capped<S, E>(body: S, declared: usize, limit: usize) -> Result<bytes::Bytes, AnswerError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>>,
    AnswerError: From<E>,
{
    use futures::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut read = 0usize;
    // The usual answer is one read: it is kept as it is, without a copy.
    let mut first: Option<bytes::Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        read = read.saturating_add(chunk.len());
        if read > limit {
            return Err(AnswerError::TooLarge { limit });
        }
        if let Some(first) = first.take() {
            joined.reserve(declared.min(limit).max(read));
            joined.extend_from_slice(&first);
        }
        if joined.is_empty() {
            first = Some(chunk);
        } else {
            joined.extend_from_slice(&chunk);
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// The one upstream HTTP client of the process: pooled connections, and redirects followed
/// only within the same host (provider keys must never leave the configured host).
pub fn upstream_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        // Provider keys travel in headers reqwest does not know are secret (`x-api-key`,
        // `api-key`, `x-goog-api-key`): a redirect is followed only to the same origin
        // (scheme, host and port).
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt.previous().last().is_some_and(|from| {
                from.host_str() == attempt.url().host_str()
                    && from.port_or_known_default() == attempt.url().port_or_known_default()
                    && from.scheme() == attempt.url().scheme()
            });
            if !same_host {
                metrics::counter!("tollgate_upstream_redirects_refused_total").increment(1);
                attempt.stop()
            } else if attempt.previous().len() >= 5 {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .connect_timeout(Duration::from_secs(10))
        .build()
}

/// Sends `body` to the deployment's `endpoint` and returns once the response headers arrived.
/// The caller reads the body (bounded by the deployment timeout) or streams it.
pub async fn send(
    client: &reqwest::Client,
    deployment: &Deployment,
    endpoint: Endpoint,
    body: Vec<u8>,
    content_type: &str,
    stream: bool,
    traceparent: Option<&str>,
) -> Result<reqwest::Response, UpstreamError> {
    let Some(url) = deployment.urls.get(endpoint, stream) else {
        return Err(UpstreamError::Unavailable(format!("{} does not serve /{}", deployment.id, endpoint.path())));
    };
    let token = match &deployment.service_account {
        Some(account) => Some(account.token(client).await.map_err(|e| {
            metrics::counter!("tollgate_upstream_token_failures_total", "provider" => deployment.api.name())
                .increment(1);
            UpstreamError::Unavailable(format!("{}: no access token: {e}", deployment.id))
        })?),
        None => None,
    };
    // One request shape for every provider; only the headers differ.
    let request = client.post(url.clone()).header(reqwest::header::CONTENT_TYPE, content_type);
    let mut request = match &token {
        Some(token) => deployment.api.authenticate(request, Some(token)).body(body),
        None => deployment.api.sign(request, deployment, url, &body).body(body),
    };
    // The provider sees the attempt's span as its caller (W3C Trace Context).
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    match tokio::time::timeout(deployment.timeout, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(UpstreamError::Timeout),
    }
}

/// Maps a transport error without its URL (which could carry credentials).
pub fn classify(e: &reqwest::Error) -> UpstreamError {
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

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An answer within the limit is read whole; a larger one is refused at the first read past
    /// the limit, without reading the rest.
    #[tokio::test]
    async fn answers_are_read_up_to_the_limit() {
        let chunks = || {
            futures::stream::iter([&b"{\"a\":"[..], b"1", b"}"].map(|c| Ok::<_, reqwest::Error>(Bytes::from_static(c))))
        };
        assert_eq!(read_capped(chunks(), 0, 7).await.unwrap(), Bytes::from_static(b"{\"a\":1}"));
        assert!(matches!(read_capped(chunks(), 0, 6).await, Err(AnswerError::TooLarge { limit: 6 })));

        let reads = AtomicUsize::new(0);
        let endless = futures::stream::repeat(Bytes::from(vec![b'x'; 1024]))
            .inspect(|_| {
                reads.fetch_add(1, Ordering::Relaxed);
            })
            .map(Ok::<_, reqwest::Error>);
        assert!(matches!(read_capped(endless, 0, 64 * 1024).await, Err(AnswerError::TooLarge { .. })));
        assert_eq!(reads.into_inner(), 65);
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A small HTTP server: answers its connections with `responses` in turn (`{addr}` in one
    /// is replaced by its own address) and sends each request head it read to the channel.
    async fn server(responses: Vec<String>) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for response in responses.iter().cycle() {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = socket.write_all(response.replace("{addr}", &addr.to_string()).as_bytes()).await;
            }
        });
        (addr, rx)
    }

    fn redirect_to(url: &str) -> String {
        format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {url}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn provider_keys_never_follow_a_redirect_to_another_host() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_owned();
        let (elsewhere, mut seen_elsewhere) = server(vec![ok.clone()]).await;
        // `localhost` is another host than `127.0.0.1`, even on the same machine.
        let (origin, _) = server(vec![redirect_to(&format!("http://localhost:{}/steal", elsewhere.port()))]).await;
        let client = upstream_client().unwrap();
        let resp = client
            .post(format!("http://{origin}/v1/messages"))
            .header("x-api-key", "sk-provider-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 307, "the redirect is not followed");
        assert!(seen_elsewhere.try_recv().is_err(), "nothing reached the other host");

        // Within the same origin a redirect is followed.
        let (origin, mut seen) = server(vec![redirect_to("http://{addr}/moved"), ok]).await;
        let resp = client.get(format!("http://{origin}/v1/models")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(seen.recv().await.unwrap().starts_with("GET /v1/models"));
        assert!(seen.recv().await.unwrap().starts_with("GET /moved"));
    }
}
