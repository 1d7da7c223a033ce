//! Upstream providers. A deployment names its provider by the prefix of
//! `litellm_params.model` (`openai/gpt-4o`, `azure/my-deployment`, `groq/llama-3.1-8b`); the
//! provider decides the URL, the authentication header and the wire format.

pub mod anthropic;
pub mod openai_compatible;

use crate::config::Secret;
use crate::pricing::Price;
use std::time::Duration;

/// The wire protocol a deployment speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI's API, or any server that copies it (vLLM, Ollama, Groq, Together, ...).
    OpenAiCompatible,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    Azure,
    /// Anthropic's Messages API, translated to and from OpenAI chat.
    Anthropic,
    /// Google Gemini generateContent / streamGenerateContent, translated likewise.
    Gemini,
}

/// Provider prefixes that speak OpenAI's API, with their public base URL where they have one.
const OPENAI_COMPATIBLE: &[(&str, Option<&str>)] = &[
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

impl ProviderKind {
    pub fn from_prefix(prefix: &str) -> Option<ProviderKind> {
        match prefix {
            "azure" => Some(ProviderKind::Azure),
            "anthropic" => Some(ProviderKind::Anthropic),
            "gemini" => Some(ProviderKind::Gemini),
            p if OPENAI_COMPATIBLE.iter().any(|(name, _)| *name == p) => Some(ProviderKind::OpenAiCompatible),
            _ => None,
        }
    }

    /// Every prefix `from_prefix` accepts, for error messages.
    pub fn supported_prefixes() -> Vec<&'static str> {
        let mut all: Vec<&str> = OPENAI_COMPATIBLE.iter().map(|(n, _)| *n).collect();
        all.extend(["azure", "anthropic", "gemini"]);
        all
    }

    /// Whether the provider serves `endpoint` (translated providers serve chat only).
    pub fn serves(self, endpoint: Endpoint) -> bool {
        match self {
            ProviderKind::OpenAiCompatible | ProviderKind::Azure => true,
            ProviderKind::Anthropic | ProviderKind::Gemini => endpoint == Endpoint::ChatCompletions,
        }
    }
}

/// The public base URL of a provider prefix, when it has one.
pub fn default_api_base(prefix: &str) -> Option<&'static str> {
    match prefix {
        "anthropic" => Some(anthropic::DEFAULT_API_BASE),
        "gemini" => Some(crate::gemini::DEFAULT_API_BASE),
        _ => OPENAI_COMPATIBLE.iter().find(|(name, _)| *name == prefix).and_then(|(_, base)| *base),
    }
}

/// The OpenAI-shaped endpoints the gateway forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
        }
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
}

impl EndpointUrls {
    pub fn get(&self, endpoint: Endpoint, stream: bool) -> Option<&reqwest::Url> {
        match endpoint {
            Endpoint::ChatCompletions if stream => self.chat_stream.as_ref(),
            Endpoint::ChatCompletions => self.chat.as_ref(),
            Endpoint::Completions => self.completions.as_ref(),
            Endpoint::Embeddings => self.embeddings.as_ref(),
            Endpoint::Responses => self.responses.as_ref(),
        }
    }
}

/// The URLs of a deployment: `Err` names the URL that does not parse.
pub fn endpoint_urls(
    kind: ProviderKind,
    api_base: &str,
    upstream_model: &str,
    api_version: Option<&str>,
) -> Result<EndpointUrls, String> {
    let parse = |u: String| reqwest::Url::parse(&u).map(Some).map_err(|e| format!("{u}: {e}"));
    let url = |endpoint: Endpoint, stream: bool| -> String {
        match kind {
            ProviderKind::OpenAiCompatible | ProviderKind::Azure => {
                openai_compatible::url(kind, api_base, upstream_model, api_version, endpoint)
            }
            ProviderKind::Anthropic => anthropic::url(api_base),
            ProviderKind::Gemini => crate::gemini::url(api_base, upstream_model, stream),
        }
    };
    let serves = |e: Endpoint| kind.serves(e);
    Ok(EndpointUrls {
        chat: parse(url(Endpoint::ChatCompletions, false))?,
        chat_stream: parse(url(Endpoint::ChatCompletions, true))?,
        completions: if serves(Endpoint::Completions) { parse(url(Endpoint::Completions, false))? } else { None },
        embeddings: if serves(Endpoint::Embeddings) { parse(url(Endpoint::Embeddings, false))? } else { None },
        responses: if serves(Endpoint::Responses) { parse(url(Endpoint::Responses, false))? } else { None },
    })
}

/// One upstream deployment of a model (a `model_list` entry), resolved at start-up.
#[derive(Debug)]
pub struct Deployment {
    /// `model_name` clients ask for.
    pub model_name: String,
    /// Provider prefix of `litellm_params.model`, e.g. `openai`.
    pub provider: String,
    pub kind: ProviderKind,
    /// The model (or Azure deployment) name the provider knows.
    pub upstream_model: String,
    /// Stable name for events and metrics: `provider/upstream_model#index`.
    pub id: String,
    pub api_base: String,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    /// Parsed once at start-up: the URL of each endpoint this deployment serves.
    pub urls: EndpointUrls,
    /// Whole-request timeout (until the last byte of a non-streamed answer, or the first byte
    /// of a stream).
    pub timeout: Duration,
    /// Longest silence between two chunks of a stream.
    pub stream_idle_timeout: Duration,
    /// Longest a stream may last, however steadily the provider sends.
    pub stream_max_duration: Duration,
    /// `None` only under `gateway.allow_unpriced_models`.
    pub price: Option<Price>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub weight: f64,
    pub model_info: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
}

/// The body to send to the deployment: the OpenAI request as is (model renamed), or translated
/// into the provider's format.
pub fn request_body(
    deployment: &Deployment,
    request: &crate::openai::ProxyRequest,
) -> Result<Vec<u8>, crate::error::GatewayError> {
    use crate::error::GatewayError;
    if !deployment.kind.serves(request.endpoint) {
        return Err(GatewayError::invalid(
            format!("model '{}' does not support /{}", deployment.model_name, request.endpoint.path()),
            Some("model"),
        ));
    }
    let encode = |v: serde_json::Value| {
        serde_json::to_vec(&v).map_err(|e| GatewayError::Internal(format!("cannot encode request: {e}")))
    };
    match deployment.kind {
        ProviderKind::OpenAiCompatible | ProviderKind::Azure => request.upstream_body(&deployment.upstream_model),
        ProviderKind::Anthropic => {
            let mut body =
                crate::anthropic::chat_request_to_messages(&request.to_value()?, &deployment.upstream_model)?;
            // The one output limit the request was reserved for (see `ProxyRequest::max_tokens`).
            if let Some(max) = request.max_tokens {
                body["max_tokens"] = serde_json::json!(max);
            }
            encode(body)
        }
        ProviderKind::Gemini => {
            let mut body = crate::gemini::chat_request_to_generate(&request.to_value()?)?;
            if let (Some(max), Some(body)) = (request.max_tokens, body.as_object_mut()) {
                let config = body.entry("generationConfig").or_insert_with(|| serde_json::json!({}));
                if let Some(config) = config.as_object_mut() {
                    config.insert("maxOutputTokens".to_owned(), serde_json::json!(max));
                }
            }
            encode(body)
        }
    }
}

/// Output tokens a deployment generates when the request sets no limit, where the adapter sets
/// one (Anthropic requires it): a request without a limit reserves at least this much.
pub fn default_output_limit(deployment: &Deployment) -> Option<u64> {
    match deployment.kind {
        ProviderKind::Anthropic => Some(crate::anthropic::DEFAULT_MAX_TOKENS),
        ProviderKind::OpenAiCompatible | ProviderKind::Azure | ProviderKind::Gemini => None,
    }
}

/// A successful non-streamed answer in OpenAI's format.
pub fn response_body(deployment: &Deployment, body: bytes::Bytes) -> bytes::Bytes {
    let translate = |f: &dyn Fn(&serde_json::Value) -> serde_json::Value| match serde_json::from_slice(&body) {
        Ok(v) => bytes::Bytes::from(f(&v).to_string()),
        Err(_) => body.clone(),
    };
    match deployment.kind {
        ProviderKind::OpenAiCompatible | ProviderKind::Azure => body.clone(),
        ProviderKind::Anthropic => translate(&crate::anthropic::message_to_chat_response),
        ProviderKind::Gemini => translate(&|v| crate::gemini::generate_response_to_chat(v, &deployment.upstream_model)),
    }
}

/// A provider's error body in OpenAI's envelope.
pub fn error_body(deployment: &Deployment, body: bytes::Bytes) -> bytes::Bytes {
    match deployment.kind {
        ProviderKind::OpenAiCompatible | ProviderKind::Azure => body,
        ProviderKind::Anthropic => bytes::Bytes::from(crate::anthropic::error_to_openai(&body).to_string()),
        ProviderKind::Gemini => bytes::Bytes::from(crate::gemini::error_to_openai(&body).to_string()),
    }
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
}

/// A streamed answer as OpenAI chat chunks.
pub type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, StreamError>> + Send>>;

pub fn response_stream(deployment: &Deployment, response: reqwest::Response) -> ByteStream {
    use crate::sse::TranslatedStream;
    use futures::TryStreamExt;
    let raw: ByteStream = Box::pin(response.bytes_stream().map_err(StreamError::from));
    match deployment.kind {
        ProviderKind::OpenAiCompatible | ProviderKind::Azure => raw,
        ProviderKind::Anthropic => Box::pin(TranslatedStream::new(raw, crate::anthropic::MessagesToChatStream::new())),
        ProviderKind::Gemini => {
            Box::pin(TranslatedStream::new(raw, crate::gemini::GenerateToChatStream::new(&deployment.upstream_model)))
        }
    }
}

/// Why a non-streamed answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the upstream provider's answer was cut")]
    Transport(#[from] reqwest::Error),
    #[error("the upstream provider's answer exceeds {limit} bytes")]
    TooLarge { limit: usize },
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
    stream: bool,
) -> Result<reqwest::Response, UpstreamError> {
    let Some(url) = deployment.urls.get(endpoint, stream) else {
        return Err(UpstreamError::Unavailable(format!("{} does not serve /{}", deployment.id, endpoint.path())));
    };
    // One request shape for every provider; only the authentication header differs.
    let mut request = client.post(url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    if deployment.kind == ProviderKind::Anthropic {
        request = request.header("anthropic-version", anthropic::API_VERSION);
    }
    if let Some(key) = &deployment.api_key {
        request = match deployment.kind {
            ProviderKind::OpenAiCompatible => request.bearer_auth(key.expose()),
            ProviderKind::Azure => request.header("api-key", key.expose()),
            ProviderKind::Anthropic => request.header("x-api-key", key.expose()),
            // In a header, never the URL (URLs end up in logs).
            ProviderKind::Gemini => request.header("x-goog-api-key", key.expose()),
        };
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
