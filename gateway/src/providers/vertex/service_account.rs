//! A Google service account's sign-in (OAuth 2.0 for server-to-server applications): a JWT
//! signed RS256 with the account's private key is exchanged at its `token_uri` for an access
//! token, which is kept until shortly before it expires. One exchange at a time: requests that
//! find the token stale wait for the exchange under way rather than start their own.
//!
//! Signing uses OpenSSL, which the gateway already links (PostgreSQL's TLS for the LiteLLM
//! import): no other cryptography crate. The private key, the JWT and the access token never
//! reach a log, a metric or an error message.

use crate::config::Secret;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

/// The scope Vertex AI calls need.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, when the key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// How long a signed JWT is valid (Google's maximum).
const JWT_LIFETIME_SECS: u64 = 3600;
/// The grant type of the exchange.
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// A key file is a few kilobytes.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// The token endpoint's answer is a few hundred bytes; more is refused unread.
pub const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
/// Google's tokens are about 200 bytes; a longer one is not taken.
const MAX_ACCESS_TOKEN_BYTES: usize = 4096;
/// The longest lifetime believed: a token is refreshed at least daily.
const MAX_TOKEN_LIFETIME_SECS: u64 = 86_400;
/// A token is refreshed this long before it expires (at most half its lifetime).
const REFRESH_MARGIN_SECS: u64 = 300;
/// Bounds one exchange, whatever the deployment's timeout.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a service account key cannot be used (at start-up). Never quotes the key.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")]
    TooLarge { path: String },
    #[error("not a service account key (JSON with `client_email` and `private_key`): {0}")]
    NotAKey(String),
    #[error("`private_key` is not an RSA private key in PEM")]
    BadPrivateKey,
    #[error("`token_uri` is not a URL")]
    BadTokenUri,
}

/// Why no access token could be had (at request time). Never quotes the key or a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the JWT could not be signed")]
    Sign,
    #[error("the token endpoint could not be reached")]
    Transport,
    #[error("the token endpoint did not answer in time")]
    Timeout,
    #[error("the token endpoint answered {0}")]
    Refused(u16),
    #[error("the token endpoint's answer is larger than {MAX_TOKEN_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("the token endpoint's answer holds no usable access token")]
    Malformed,
    /// The exchange this caller waited for failed: it is not tried again at once.
    #[error("the token exchange just failed")]
    JustFailed,
}

/// The fields of a key file Tollgate reads.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: Secret,
    private_key_id: Option<String>,
    project_id: Option<String>,
    token_uri: Option<String>,
}

/// A service account: who signs, with what key, where tokens are had, and the token in hand.
pub struct ServiceAccount {
    email: String,
    key: PKey<Private>,
    key_id: Option<String>,
    project_id: Option<String>,
    token_uri: reqwest::Url,
    tokens: TokenCache,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount").field("email", &self.email).finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// From `vertex_credentials`: the key's JSON itself when it starts with `{`, else the path
    /// of a file holding it.
    pub fn from_config(value: &str) -> Result<ServiceAccount, CredentialsError> {
        let value = value.trim();
        if value.starts_with('{') {
            return ServiceAccount::from_json(value.as_bytes());
        }
        let read_error = |e: std::io::Error| CredentialsError::Read { path: value.to_owned(), reason: e.to_string() };
        let size = std::fs::metadata(value).map_err(read_error)?.len();
        if size > MAX_KEY_FILE_BYTES {
            return Err(CredentialsError::TooLarge { path: value.to_owned() });
        }
        ServiceAccount::from_json(&std::fs::read(value).map_err(read_error)?)
    }

    /// From a key file's JSON.
    pub fn from_json(json: &[u8]) -> Result<ServiceAccount, CredentialsError> {
        // serde_json's message names a line and column, never the text there.
        let file: KeyFile = serde_json::from_slice(json).map_err(|e| CredentialsError::NotAKey(e.to_string()))?;
        let key = PKey::private_key_from_pem(file.private_key.expose().as_bytes())
            .ok()
            .filter(|k| k.rsa().is_ok())
            .ok_or(CredentialsError::BadPrivateKey)?;
        let token_uri = file.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI);
        let token_uri = reqwest::Url::parse(token_uri).map_err(|_| CredentialsError::BadTokenUri)?;
        Ok(ServiceAccount {
            email: file.client_email,
            key,
            key_id: file.private_key_id,
            project_id: file.project_id,
            token_uri,
            tokens: TokenCache::default(),
        })
    }

    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }

    /// A valid access token: the one in hand, or a new one from the token endpoint.
    pub async fn token(&self, client: &reqwest::Client) -> Result<Secret, TokenError> {
        self.tokens.get(|| self.exchange(client)).await
    }

    /// The JWT asserting this account for `now` (seconds since the epoch).
    pub fn assertion(&self, now: u64) -> Result<String, TokenError> {
        let mut header = json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(id) = &self.key_id {
            header["kid"] = json!(id);
        }
        let claims = json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri.as_str(),
            "iat": now,
            "exp": now + JWT_LIFETIME_SECS,
        });
        let signed =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key).map_err(|_| TokenError::Sign)?;
        signer.update(signed.as_bytes()).map_err(|_| TokenError::Sign)?;
        let signature = signer.sign_to_vec().map_err(|_| TokenError::Sign)?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// One exchange of a fresh JWT for an access token and its lifetime.
    async fn exchange(&self, client: &reqwest::Client) -> Result<(Secret, Duration), TokenError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        // The assertion is base64url and dots: nothing in it needs escaping in a form.
        let body = format!("grant_type={}&assertion={}", GRANT_TYPE.replace(':', "%3A"), self.assertion(now)?);
        let request = client
            .post(self.token_uri.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send();
        let response = match tokio::time::timeout(EXCHANGE_TIMEOUT, request).await {
            Err(_) => return Err(TokenError::Timeout),
            Ok(Err(_)) => return Err(TokenError::Transport),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let answer = crate::providers::read_answer(response, MAX_TOKEN_ANSWER_BYTES).await.map_err(|e| match e {
            crate::providers::AnswerError::TooLarge { .. } => TokenError::TooLarge,
            crate::providers::AnswerError::Transport(_) => TokenError::Transport,
        })?;
        if !status.is_success() {
            return Err(TokenError::Refused(status.as_u16()));
        }
        read_token(&answer)
    }
}

/// The access token and its lifetime from the token endpoint's answer.
pub fn read_token(answer: &[u8]) -> Result<(Secret, Duration), TokenError> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Secret,
        expires_in: u64,
    }
    let answer: Answer = serde_json::from_slice(answer).map_err(|_| TokenError::Malformed)?;
    let token = answer.access_token.expose();
    // It goes into a header: visible ASCII only, and bounded.
    let usable =
        !token.is_empty() && token.len() <= MAX_ACCESS_TOKEN_BYTES && token.bytes().all(|b| b.is_ascii_graphic());
    if !usable || answer.expires_in == 0 {
        return Err(TokenError::Malformed);
    }
    Ok((answer.access_token, Duration::from_secs(answer.expires_in.min(MAX_TOKEN_LIFETIME_SECS))))
}

/// The token in hand and when to replace it.
struct Token {
    value: Secret,
    refresh_at: Instant,
}

/// An access token kept until shortly before it expires, and replaced by one exchange at a
/// time. Generic over the exchange so that tests can count exchanges.
#[derive(Default)]
pub struct TokenCache {
    current: RwLock<Option<Token>>,
    /// Held by the one exchange under way; when the last exchange failed.
    exchanging: Mutex<Option<Instant>>,
}

impl TokenCache {
    /// The token in hand while it is fresh; else the result of `exchange`, run by one caller
    /// while the others wait for it. Callers that waited for an exchange that failed fail too
    /// ([`TokenError::JustFailed`]) rather than each try in turn behind the lock (a token
    /// endpoint that hangs would hold every one of them 30 s more); the next caller tries again.
    pub async fn get<F, Fut>(&self, exchange: F) -> Result<Secret, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Secret, Duration), TokenError>>,
    {
        if let Some(token) = self.fresh().await {
            return Ok(token);
        }
        let asked = Instant::now();
        let mut last_failure = self.exchanging.lock().await;
        // Whoever held the lock before may have just replaced the token, or failed to.
        if let Some(token) = self.fresh().await {
            return Ok(token);
        }
        if last_failure.is_some_and(|failed| failed >= asked) {
            return Err(TokenError::JustFailed);
        }
        let (value, lifetime) = match exchange().await {
            Ok(token) => token,
            Err(e) => {
                *last_failure = Some(Instant::now());
                return Err(e);
            }
        };
        let margin = Duration::from_secs(REFRESH_MARGIN_SECS).min(lifetime / 2);
        let refresh_at = Instant::now() + lifetime - margin;
        *self.current.write().await = Some(Token { value: value.clone(), refresh_at });
        Ok(value)
    }

    async fn fresh(&self) -> Option<Secret> {
        let current = self.current.read().await;
        current.as_ref().filter(|t| Instant::now() < t.refresh_at).map(|t| t.value.clone())
    }
}
