//! Console sessions, held in this gateway's memory only: a random 256-bit id (the cookie) maps
//! to the key the admin signed in with and a CSRF token. The key never leaves the server again:
//! every console call is checked with it exactly as a Bearer call would be, so a key blocked or
//! demoted after sign-in loses its console at once. Never log a session id, token or key.

use moka::sync::Cache;
use std::sync::Arc;
use std::time::Duration;
use tollgate_schemas::secret::Secret;

/// The cookie that carries the session id.
pub const COOKIE: &str = "tollgate_session";
/// The header every state-changing console call carries.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// One signed-in admin.
pub struct Session {
    /// The master key or admin key signed in with.
    pub key: Secret,
    /// Sent back as `X-CSRF-Token` on every change.
    pub csrf: String,
    /// When the session ends at the latest (UTC, RFC 3339), for the console to show.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The live sessions: bounded, each ending after its lifetime or idle time.
pub struct Sessions {
    live: Cache<String, Arc<Session>>,
    ttl: Duration,
}

impl Sessions {
    pub fn new(ttl: Duration, idle: Duration, max: u64) -> Sessions {
        Sessions { live: Cache::builder().max_capacity(max).time_to_live(ttl).time_to_idle(idle).build(), ttl }
    }

    /// A new session for `key`: its id (the cookie's value) and the session.
    pub fn open(&self, key: &str) -> Result<(String, Arc<Session>), openssl::error::ErrorStack> {
        let id = random_token()?;
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::hours(8));
        let session =
            Arc::new(Session { key: Secret::new(key), csrf: random_token()?, expires_at: chrono::Utc::now() + ttl });
        self.live.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session of cookie value `id`, if any.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        // Ids are 64 hex digits: anything else is not looked up.
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.live.get(id)
    }

    pub fn close(&self, id: &str) {
        self.live.invalidate(id);
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// 256 bits from OpenSSL's CSPRNG, as 64 hex digits.
fn random_token() -> Result<String, openssl::error::ErrorStack> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_have_random_ids_and_tokens_and_end_when_closed() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60), 10);
        let (a, sa) = s.open("sk-a").unwrap();
        let (b, _) = s.open("sk-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(sa.csrf, a);
        assert_eq!(s.get(&a).unwrap().key.expose(), "sk-a");
        assert!(s.get("nope").is_none() && s.get(&"0".repeat(64)).is_none());
        s.close(&a);
        assert!(s.get(&a).is_none() && s.get(&b).is_some());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60), 5);
        for _ in 0..50 {
            s.open("sk").unwrap();
        }
        s.live.run_pending_tasks();
        assert!(s.live.entry_count() <= 5, "{}", s.live.entry_count());
    }
}
