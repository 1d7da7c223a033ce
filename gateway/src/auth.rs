//! Virtual-key authentication from a moka-cached key view: no remote call on a warm cache.
//!
//! Keys are only ever handled as their SHA-256 hash once they leave the request header; the raw
//! key must never be logged, put in a metric, an event or an error message.

use crate::config::VirtualKeyConfig;
use crate::error::GatewayError;
use actix_web::http::header::HeaderMap;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use moka::future::Cache;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What the gateway knows about a virtual key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyView {
    /// SHA-256 hex of the key.
    pub key_id: String,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    /// Allowed model names; empty means all.
    pub models: Vec<String>,
    pub blocked: bool,
    pub expires: Option<DateTime<Utc>>,
}

impl KeyView {
    /// Blocked and expiry, checked on every request, cached or not.
    pub fn check_active(&self, now: DateTime<Utc>) -> Result<(), GatewayError> {
        if self.blocked {
            return Err(GatewayError::KeyBlocked);
        }
        if self.expires.is_some_and(|e| e <= now) {
            return Err(GatewayError::KeyExpired);
        }
        Ok(())
    }

    /// Whether the key may use `model`.
    pub fn check_model(&self, model: &str) -> Result<(), GatewayError> {
        if !self.models.is_empty() && !self.models.iter().any(|m| m == model) {
            return Err(GatewayError::ModelNotAllowed(model.to_owned()));
        }
        Ok(())
    }
}

/// SHA-256 hex of a raw key.
pub fn hash_key(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
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

/// Where key views come from on a cache miss.
pub trait KeySource: Send + Sync + 'static {
    fn load(&self, key_id: &str) -> BoxFuture<'_, Result<Option<KeyView>, GatewayError>>;
}

/// Keys declared in the config file.
pub struct ConfigKeys {
    by_id: HashMap<String, KeyView>,
}

impl ConfigKeys {
    pub fn new(keys: &[VirtualKeyConfig]) -> ConfigKeys {
        let by_id = keys
            .iter()
            .map(|k| {
                let key_id = match (&k.key, &k.key_hash) {
                    (Some(raw), _) => hash_key(raw.expose()),
                    (None, Some(h)) => h.to_ascii_lowercase(),
                    (None, None) => String::new(), // rejected by config validation
                };
                let view = KeyView {
                    key_id: key_id.clone(),
                    key_alias: k.key_alias.clone(),
                    team_id: k.team_id.clone(),
                    user_id: k.user_id.clone(),
                    organization_id: k.organization_id.clone(),
                    models: k.models.clone(),
                    blocked: k.blocked,
                    expires: k.expires,
                };
                (key_id, view)
            })
            .filter(|(id, _)| !id.is_empty())
            .collect();
        ConfigKeys { by_id }
    }
}

impl KeySource for ConfigKeys {
    fn load(&self, key_id: &str) -> BoxFuture<'_, Result<Option<KeyView>, GatewayError>> {
        let found = self.by_id.get(key_id).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// The cached key view. A miss loads once from the source (concurrent misses for the same key
/// wait for that one load); unknown keys are cached briefly so a flood of bad keys does not
/// reach the source.
pub struct KeyCache {
    source: Arc<dyn KeySource>,
    known: Cache<String, Arc<KeyView>>,
    unknown: Cache<String, ()>,
}

impl KeyCache {
    pub fn new(source: Arc<dyn KeySource>, ttl: Duration, negative_ttl: Duration) -> KeyCache {
        KeyCache {
            source,
            known: Cache::builder().max_capacity(1_000_000).time_to_live(ttl).build(),
            unknown: Cache::builder().max_capacity(100_000).time_to_live(negative_ttl).build(),
        }
    }

    /// Authenticates a raw key and returns its view. Blocked/expiry are checked by the caller on
    /// every hit via [`KeyView::check`].
    pub async fn authenticate(&self, raw: &str) -> Result<Arc<KeyView>, GatewayError> {
        let key_id = hash_key(raw);
        if let Some(view) = self.known.get(&key_id).await {
            return Ok(view);
        }
        if self.unknown.contains_key(&key_id) {
            return Err(GatewayError::InvalidKey);
        }
        let source = self.source.clone();
        let id = key_id.clone();
        let loaded = self
            .known
            .try_get_with(key_id.clone(), async move {
                match source.load(&id).await {
                    Ok(Some(view)) => Ok(Arc::new(view)),
                    Ok(None) => Err(None),
                    Err(e) => Err(Some(e.to_string())),
                }
            })
            .await;
        match loaded {
            Ok(view) => Ok(view),
            Err(e) => match e.as_ref() {
                None => {
                    self.unknown.insert(key_id, ()).await;
                    Err(GatewayError::InvalidKey)
                }
                Some(msg) => Err(GatewayError::Internal(format!("key lookup failed: {msg}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn key(raw: &str) -> VirtualKeyConfig {
        VirtualKeyConfig {
            key: Some(Secret::new(raw)),
            key_hash: None,
            key_alias: Some("a".into()),
            team_id: Some("t".into()),
            user_id: None,
            organization_id: None,
            models: vec!["gpt-4o-mini".into()],
            blocked: false,
            expires: None,
        }
    }

    #[tokio::test]
    async fn known_keys_authenticate_and_unknown_do_not() {
        let cache =
            KeyCache::new(Arc::new(ConfigKeys::new(&[key("sk-1")])), Duration::from_secs(60), Duration::from_secs(1));
        let view = cache.authenticate("sk-1").await.unwrap();
        assert_eq!(view.key_id, hash_key("sk-1"));
        assert_eq!(view.team_id.as_deref(), Some("t"));
        assert!(matches!(cache.authenticate("sk-2").await, Err(GatewayError::InvalidKey)));
        assert!(matches!(cache.authenticate("sk-2").await, Err(GatewayError::InvalidKey)));
    }

    #[test]
    fn checks_model_blocked_and_expiry() {
        let mut view = KeyView {
            key_id: "x".into(),
            key_alias: None,
            team_id: None,
            user_id: None,
            organization_id: None,
            models: vec!["a".into()],
            blocked: false,
            expires: None,
        };
        let now = Utc::now();
        assert!(view.check_active(now).is_ok() && view.check_model("a").is_ok());
        assert!(matches!(view.check_model("b"), Err(GatewayError::ModelNotAllowed(_))));
        view.expires = Some(now - chrono::Duration::seconds(1));
        assert!(matches!(view.check_active(now), Err(GatewayError::KeyExpired)));
        view.blocked = true;
        assert!(matches!(view.check_active(now), Err(GatewayError::KeyBlocked)));
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
}
