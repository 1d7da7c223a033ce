//! The shared backend (`type: redis`): entries in a Redis that gateways share, under
//! `tollgate:cache:<hex of the key>`, each with a Redis TTL of its own.
//!
//! Redis is never allowed to fail or stall a request: every read and write is bounded by
//! `redis_timeout_ms`, and a Redis that is slow, down or holds garbage is a miss (or an entry not
//! kept), counted in `tollgate_cache_errors_total{op}` and logged without the address or password.
//! What is read back is bounded before it is decoded ([`super::codec`]).
//!
//! Over TLS (`rediss://` or `ssl: true`) a Redis whose certificate does not verify is one that
//! fails: a miss, counted and warned about like a Redis that is down ([`super::redis_client`]).

use super::key::CacheKey;
use super::{codec, redis_client, Entry};
use crate::config::CacheParams;
use metrics::counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use std::time::Duration;

/// Every key Tollgate writes starts so.
pub const KEY_PREFIX: &str = "tollgate:cache:";

pub struct RedisStore {
    connection: ConnectionManager,
    timeout: Duration,
    max_entry_bytes: u64,
}

/// Why the Redis backend could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the response cache's Redis address is not usable: {0}")]
pub struct BadAddress(pub(super) String);

impl RedisStore {
    /// A store on the Redis `params` name. It connects lazily: a Redis that is down at start-up
    /// (or whose certificate does not verify) is a miss until it is up.
    pub fn new(params: &CacheParams) -> Result<RedisStore, BadAddress> {
        let client = redis_client::client(params)?;
        let timeout = Duration::from_millis(params.redis_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| BadAddress(format!("{:?}", e.kind())))?;
        // The host alone: the URL may hold the password.
        let host = params.host.as_ref().map_or("(from url)", |h| h.expose());
        let tls = params.redis_tls_on().unwrap_or(false);
        tracing::info!(host, tls, timeout_ms = params.redis_timeout_ms, "response cache: entries in a shared Redis");
        Ok(RedisStore { connection, timeout, max_entry_bytes: params.max_entry_bytes })
    }

    /// The entry under `key`; `None` when there is none, or Redis failed, timed out or held
    /// something that is not an entry.
    pub async fn get(&self, key: &CacheKey) -> Option<Entry> {
        let last = codec::max_encoded_len(self.max_entry_bytes);
        let mut connection = self.connection.clone();
        // A range, not GET: a huge value costs no more than the bound to read.
        let read = connection.getrange::<_, Vec<u8>>(redis_key(key), 0, isize::try_from(last).unwrap_or(isize::MAX));
        let bytes = match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return failed("get", &e),
            Err(_) => return failed("get", &TimedOut),
        };
        // A missing key reads as nothing.
        if bytes.is_empty() {
            return None;
        }
        codec::decode(&bytes, self.max_entry_bytes)
            .inspect_err(|why| {
                counter!("tollgate_cache_errors_total", "op" => "decode").increment(1);
                tracing::warn!(%why, "response cache: a Redis value is not an entry; served as a miss");
            })
            .ok()
    }

    /// Keeps `entry` under `key` for `ttl`; a failure only means it is not kept.
    pub async fn put(&self, key: &CacheKey, entry: &Entry, ttl: Duration) {
        let mut connection = self.connection.clone();
        let write = connection.set_ex::<_, _, ()>(redis_key(key), codec::encode(entry), ttl.as_secs().max(1));
        let _: Option<()> = match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => failed("set", &e),
            Err(_) => failed("set", &TimedOut),
        };
    }
}

/// The Redis key of `key`.
pub fn redis_key(key: &CacheKey) -> String {
    format!("{KEY_PREFIX}{}", key.hex())
}

/// A Redis call that took longer than `redis_timeout_ms`.
struct TimedOut;

/// What went wrong, told without the address or password a Redis error may quote.
trait Failure {
    fn kind(&self) -> String;
}

impl Failure for redis::RedisError {
    fn kind(&self) -> String {
        format!("{:?}", redis::RedisError::kind(self))
    }
}

impl Failure for TimedOut {
    fn kind(&self) -> String {
        "timed out".to_owned()
    }
}

/// Seconds between two warnings of a failing Redis: every failure is counted, but a Redis that
/// is down would otherwise log twice per request.
const WARN_EVERY_SECS: u64 = 10;

/// When (seconds since the Unix epoch) the last warning was logged.
static LAST_WARNING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts and logs a failed call (at most one warning per [`WARN_EVERY_SECS`]); the request goes
/// on without the cache (`None`: a miss).
fn failed<T>(op: &'static str, e: &dyn Failure) -> Option<T> {
    counter!("tollgate_cache_errors_total", "op" => op).increment(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if due(&LAST_WARNING, now) {
        tracing::warn!(op, kind = %e.kind(), "response cache: Redis failed; going on without the cache (tollgate_cache_errors_total counts every failure)");
    }
    None
}

/// Whether a warning is due at `now`, marking it logged when so.
fn due(last: &std::sync::atomic::AtomicU64, now: u64) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let before = last.load(Relaxed);
    (before == 0 || now >= before.saturating_add(WARN_EVERY_SECS))
        && last.compare_exchange(before, now.max(1), Relaxed, Relaxed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_redis_is_warned_about_once_per_period() {
        let last = std::sync::atomic::AtomicU64::new(0);
        assert!(due(&last, 1_000));
        assert!(!due(&last, 1_000));
        assert!(!due(&last, 1_000 + WARN_EVERY_SECS - 1));
        assert!(due(&last, 1_000 + WARN_EVERY_SECS));
    }

    #[test]
    fn keys_are_prefixed_hex() {
        let key = redis_key(&CacheKey([0xab; 32]));
        assert_eq!(key, format!("{KEY_PREFIX}{}", "ab".repeat(32)));
    }

    #[test]
    fn a_bad_address_never_shows_its_password() {
        let params = CacheParams {
            kind: crate::config::CacheType::Redis,
            url: Some(crate::config::Secret::new("redis://:hunter2@[bad")),
            ..CacheParams::default()
        };
        let err = RedisStore::new(&params).err().expect("the address is refused").to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
