//! Virtual keys as the gateway handles them: read from the request's headers, hashed at once
//! (SHA-256, then HMAC with the server secret for lookups), shown only as `sk-...abcd`. The raw
//! key must never be logged, put in a metric, an event or an error message.

use crate::config::VirtualKeyConfig;
use actix_web::http::header::HeaderMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tollgate_schemas::tenancy::{KeyRecord, Limits};

/// SHA-256 hex of a raw key: the identity of config-file keys and of keys stored before the
/// server secret (LiteLLM's `token`), and how the master key is compared.
pub fn hash_key(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// The shortest server secret accepted for hashing keys, in bytes.
pub const MIN_KEY_HASH_SECRET: usize = 32;

/// How virtual keys are found: by `HMAC-SHA-256(secret, SHA-256(key))`, hex. Without the
/// secret, a copy of the database or the ledger does not let anyone test guessed keys. Keying
/// the HMAC on the SHA-256 (not the key itself) lets a record stored under its SHA-256 (before
/// the secret, or imported from LiteLLM) be found and rehashed.
#[derive(Clone)]
pub struct KeyHasher {
    /// `None`: no secret (a gateway with only config-file keys); lookup ids are plain SHA-256.
    secret: Option<Arc<[u8]>>,
}

impl KeyHasher {
    pub fn new(secret: Option<&[u8]>) -> KeyHasher {
        KeyHasher { secret: secret.map(Arc::from) }
    }

    /// The id a key is stored and looked up under.
    pub fn lookup(&self, raw: &str) -> String {
        self.lookup_of_digest(&Sha256::digest(raw.as_bytes()))
    }

    /// The lookup id of a key known by its SHA-256 hex (`None` when that is not one).
    pub fn lookup_of_legacy(&self, sha256_hex: &str) -> Option<String> {
        let digest = hex::decode(sha256_hex).ok().filter(|d| d.len() == 32)?;
        Some(self.lookup_of_digest(&digest))
    }

    fn lookup_of_digest(&self, digest: &[u8]) -> String {
        use hmac::Mac;
        match &self.secret {
            Some(secret) => match hmac::Hmac::<Sha256>::new_from_slice(secret) {
                Ok(mut mac) => {
                    mac.update(digest);
                    hex::encode(mac.finalize().into_bytes())
                }
                // HMAC takes keys of any length; this arm cannot be reached.
                Err(_) => hex::encode(digest),
            },
            None => hex::encode(digest),
        }
    }

    /// Whether keys are hashed with a server secret.
    pub fn keyed(&self) -> bool {
        self.secret.is_some()
    }
}

/// `sk-...abcd`: enough of a key to recognise it, too little to use it.
pub fn key_name(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() < 12 {
        return "***".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}...{tail}")
}

/// The raw key from `Authorization: Bearer`, `x-api-key` (Anthropic SDKs) or `api-key` (Azure).
pub fn raw_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    ["x-api-key", "api-key"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()))
}

/// A key declared in the config file, as a record.
pub fn config_key_record(k: &VirtualKeyConfig) -> Option<KeyRecord> {
    let key_id = match (&k.key, &k.key_hash) {
        (Some(raw), _) => hash_key(raw.expose()),
        (None, Some(h)) => h.to_ascii_lowercase(),
        (None, None) => return None, // rejected by config validation
    };
    Some(KeyRecord {
        key_name: k.key.as_ref().map(|raw| key_name(raw.expose())).unwrap_or_default(),
        key_id,
        key_alias: k.key_alias.clone(),
        team_id: k.team_id.clone(),
        user_id: k.user_id.clone(),
        organization_id: k.organization_id.clone(),
        models: k.models.clone(),
        limits: Limits {
            max_budget: k.max_budget,
            soft_budget: k.soft_budget,
            budget_duration: k.budget_duration,
            rpm_limit: k.rpm_limit,
            tpm_limit: k.tpm_limit,
            max_parallel_requests: k.max_parallel_requests,
            ..Limits::default()
        },
        blocked: k.blocked,
        expires: k.expires,
        ..KeyRecord::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_looked_up_by_a_keyed_hash_of_their_sha256() {
        let plain = KeyHasher::new(None);
        assert_eq!(plain.lookup("sk-abc"), hash_key("sk-abc"), "no secret: the SHA-256");
        let keyed = KeyHasher::new(Some(&[7u8; 32]));
        let other = KeyHasher::new(Some(&[8u8; 32]));
        let id = keyed.lookup("sk-abc");
        assert_eq!(id.len(), 64);
        assert_ne!(id, hash_key("sk-abc"));
        assert_ne!(id, other.lookup("sk-abc"), "the secret matters");
        assert_eq!(keyed.lookup_of_legacy(&hash_key("sk-abc")), Some(id), "found from the legacy hash too");
        assert_eq!(keyed.lookup_of_legacy("not-hex"), None);
    }

    #[test]
    fn reads_the_key_from_each_header_style() {
        let mut h = HeaderMap::new();
        h.insert("authorization".parse().unwrap(), "Bearer sk-abc".parse().unwrap());
        assert_eq!(raw_key(&h), Some("sk-abc"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key".parse().unwrap(), "sk-def".parse().unwrap());
        assert_eq!(raw_key(&h), Some("sk-def"));
        assert_eq!(raw_key(&HeaderMap::new()), None);
    }

    #[test]
    fn key_names_hide_the_key() {
        assert_eq!(key_name("sk-1234567890abcdef"), "sk-...cdef");
        assert_eq!(key_name("short"), "***");
    }
}
