//! LiteLLM's response cache settings (`litellm_settings.cache` and `cache_params`), read in
//! LiteLLM's shape with Tollgate's bounds and additions (entry size, memory, price of a hit,
//! sharing between teams). Unknown keys are errors naming the field.

use super::Secret;
use serde::Deserialize;

/// Largest answer stored by default: 1 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1 << 20;
/// Memory the in-process cache may hold by default: 256 MiB.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 256 << 20;
/// How long an answer is kept by default, in seconds (LiteLLM's default TTL is unset; a day
/// bounds what a forgotten cache holds).
pub const DEFAULT_TTL_SECS: u64 = 86_400;
/// The longest TTL a config or a request may set: 30 days.
pub const MAX_TTL_SECS: u64 = 30 * 86_400;

/// How long a Redis read or write may take by default, in milliseconds.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 250;
/// The longest a Redis read or write may be allowed, in milliseconds.
pub const MAX_REDIS_TIMEOUT_MS: u64 = 5_000;

/// Where answers are kept.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CacheType {
    /// In the gateway's memory (LiteLLM's `local`).
    #[default]
    Local,
    /// In a Redis that gateways share (LiteLLM's `redis`): `host`/`port`/`password`, or `url`;
    /// over TLS with `ssl: true` or a `rediss://` url.
    Redis,
}

/// `litellm_settings.cache_params`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheParams {
    #[serde(rename = "type")]
    pub kind: CacheType,
    /// Redis address (`type: redis`): `host` and `port` (default 6379), `password` (and an ACL
    /// `username`), or `url` (`redis://[[user]:password@]host:port[/db]`, `rediss://` for TLS;
    /// LiteLLM also calls it `redis_url`). Each may be `os.environ/VAR`.
    pub host: Option<Secret>,
    pub port: Option<Secret>,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
    #[serde(alias = "redis_url")]
    pub url: Option<Secret>,
    /// TLS to Redis (redis-py's names, as LiteLLM passes them): `ssl` (`true`/`false`, or
    /// `os.environ/VAR`), `ssl_cert_reqs` (`required`, the default, or `none`), `ssl_ca_certs`
    /// (a PEM file of CAs trusted besides the system's roots), `ssl_certfile` and `ssl_keyfile`
    /// (a client certificate and its key, PEM). See [`super::cache_tls`].
    pub ssl: Option<Secret>,
    pub ssl_cert_reqs: Option<String>,
    pub ssl_ca_certs: Option<String>,
    pub ssl_certfile: Option<String>,
    pub ssl_keyfile: Option<String>,
    /// Tollgate: the longest a Redis read or write may take, in milliseconds; past it the
    /// request goes on as a miss (default 250).
    pub redis_timeout_ms: u64,
    /// Seconds an answer is kept.
    pub ttl: u64,
    /// Prefix of every entry's key: gateways with different namespaces share nothing.
    pub namespace: Option<String>,
    /// LiteLLM's call types to cache; Tollgate caches chat completions (`completion`,
    /// `acompletion`) only, and none when the list leaves them out.
    pub supported_call_types: Option<Vec<String>>,
    /// Tollgate: the largest answer stored, in bytes.
    pub max_entry_bytes: u64,
    /// Tollgate: the memory the in-process cache may hold, in bytes.
    pub max_memory_bytes: u64,
    /// Tollgate: what a hit costs, as a percentage (0 to 100) of what the stored answer cost.
    pub hit_cost_percent: u8,
    /// Tollgate: whether teams share entries. Off: the team (or the key, without a team) is
    /// part of every entry's key, so no team is ever served another's answer.
    pub share_across_teams: bool,
}

impl Default for CacheParams {
    fn default() -> Self {
        CacheParams {
            kind: CacheType::Local,
            host: None,
            port: None,
            username: None,
            password: None,
            url: None,
            ssl: None,
            ssl_cert_reqs: None,
            ssl_ca_certs: None,
            ssl_certfile: None,
            ssl_keyfile: None,
            redis_timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
            ttl: DEFAULT_TTL_SECS,
            namespace: None,
            supported_call_types: None,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            hit_cost_percent: 0,
            share_across_teams: false,
        }
    }
}

impl CacheParams {
    /// The first setting out of its bounds, as (field, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_TTL_SECS).contains(&self.ttl) {
            return Err(("ttl", format!("must be from 1 to {MAX_TTL_SECS} seconds")));
        }
        if let Some(ns) = &self.namespace {
            tollgate_schemas::limits::check_id("namespace", ns).map_err(|e| ("namespace", e.to_string()))?;
        }
        if !(1..=64 << 20).contains(&self.max_entry_bytes) {
            return Err(("max_entry_bytes", "must be from 1 byte to 64 MiB".to_owned()));
        }
        if self.max_memory_bytes < self.max_entry_bytes {
            return Err(("max_memory_bytes", "must be at least max_entry_bytes".to_owned()));
        }
        if self.hit_cost_percent > 100 {
            return Err(("hit_cost_percent", "must be from 0 to 100".to_owned()));
        }
        if !(1..=MAX_REDIS_TIMEOUT_MS).contains(&self.redis_timeout_ms) {
            return Err(("redis_timeout_ms", format!("must be from 1 to {MAX_REDIS_TIMEOUT_MS} milliseconds")));
        }
        self.check_redis()?;
        if let Some(t) = self.supported_call_types.iter().flatten().find(|t| !CALL_TYPES.contains(&t.as_str())) {
            return Err(("supported_call_types", format!("`{t}` is not one of {}", CALL_TYPES.join(", "))));
        }
        Ok(())
    }

    /// A Redis cache has an address, given one way only, and TLS settings that can take effect
    /// (their files readable); a local one has none of these.
    fn check_redis(&self) -> Result<(), (&'static str, String)> {
        let redis_only = [
            self.host.is_some(),
            self.port.is_some(),
            self.url.is_some(),
            self.username.is_some(),
            self.password.is_some(),
            self.ssl.is_some(),
            self.ssl_cert_reqs.is_some(),
            self.ssl_ca_certs.is_some(),
            self.ssl_certfile.is_some(),
            self.ssl_keyfile.is_some(),
        ];
        if self.kind == CacheType::Local {
            return match redis_only.contains(&true) {
                true => Err(("type", "the address, password and `ssl*` settings are for `type: redis`".to_owned())),
                false => Ok(()),
            };
        }
        let has_parts =
            self.host.is_some() || self.port.is_some() || self.username.is_some() || self.password.is_some();
        match (&self.url, has_parts) {
            (Some(_), true) => {
                return Err((
                    "url",
                    "give either `url` or `host`, `port`, `username` and `password`, not both".to_owned(),
                ))
            }
            (None, false) => return Err(("host", "`type: redis` needs `host` (and `port`) or `url`".to_owned())),
            (None, true) if self.host.is_none() => {
                return Err(("host", "`type: redis` needs `host` (and `port`) or `url`".to_owned()))
            }
            (Some(url), false) if !["redis://", "rediss://"].iter().any(|s| url.expose().starts_with(s)) => {
                return Err(("url", "must be a `redis://` or `rediss://` URL".to_owned()))
            }
            // redis-rs reads a `#insecure` fragment as "verify no certificate": that is said
            // with `ssl_cert_reqs: none`, which is warned about.
            (Some(url), false) if url.expose().contains('#') => {
                return Err((
                    "url",
                    "must not have a `#` fragment (use `ssl_cert_reqs: none` to verify nothing)".to_owned(),
                ))
            }
            _ => {}
        }
        if self.port.as_ref().is_some_and(|p| p.expose().parse::<u16>().is_err()) {
            return Err(("port", "must be a port number".to_owned()));
        }
        if self.username.is_some() && self.password.is_none() {
            return Err(("username", "an ACL `username` needs its `password`".to_owned()));
        }
        self.redis_tls().map(|_| ())
    }

    /// The Redis URL of `type: redis` (with its password: never to be logged): `rediss://`
    /// when TLS is on.
    pub fn redis_url(&self) -> Option<Secret> {
        if self.kind != CacheType::Redis {
            return None;
        }
        if let Some(url) = &self.url {
            return Some(url.clone());
        }
        let scheme = if self.redis_tls_on().unwrap_or(false) { "rediss" } else { "redis" };
        let host = self.host.as_ref()?.expose();
        let port = self.port.as_ref().map_or("6379", Secret::expose);
        let user = self.username.as_ref().map(|u| url_escape(u.expose())).unwrap_or_default();
        let auth = self.password.as_ref().map(|p| format!("{user}:{}@", url_escape(p.expose()))).unwrap_or_default();
        Some(Secret::new(format!("{scheme}://{auth}{host}:{port}")))
    }

    /// Whether chat completions are cached under `supported_call_types`.
    pub fn caches_chat(&self) -> bool {
        self.supported_call_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == "completion" || t == "acompletion"))
    }
}

/// `text` with the characters a URL's user information cannot hold percent-encoded.
fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// LiteLLM's call type names.
const CALL_TYPES: &[&str] = &[
    "completion",
    "acompletion",
    "embedding",
    "aembedding",
    "atranscription",
    "transcription",
    "atext_completion",
    "text_completion",
    "arerank",
    "rerank",
    "aresponses",
    "responses",
];
