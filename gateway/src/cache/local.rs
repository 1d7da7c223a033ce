//! The in-process backend (`type: local`): moka, bounded in memory by the weight of its
//! entries, each expiring after its own TTL.

use super::key::CacheKey;
use super::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes an entry weighs beyond its body (key, counts, bookkeeping), so that many tiny answers
/// cannot hold unbounded memory.
const ENTRY_OVERHEAD: usize = 256;

/// An entry and how long it lives.
#[derive(Clone)]
struct Held {
    entry: Arc<Entry>,
    ttl: Duration,
}

pub struct LocalStore {
    entries: moka::future::Cache<CacheKey, Held>,
}

/// Each entry expires after its own TTL (the request's `cache.ttl`, else `cache_params.ttl`).
struct PerEntryTtl;

impl moka::Expiry<CacheKey, Held> for PerEntryTtl {
    fn expire_after_create(&self, _: &CacheKey, held: &Held, _: Instant) -> Option<Duration> {
        Some(held.ttl)
    }
}

impl LocalStore {
    /// A store holding at most `max_memory_bytes` of entries.
    pub fn new(max_memory_bytes: u64) -> LocalStore {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_memory_bytes)
            .weigher(|_, h: &Held| u32::try_from(h.entry.body.len().saturating_add(ENTRY_OVERHEAD)).unwrap_or(u32::MAX))
            .expire_after(PerEntryTtl)
            .build();
        LocalStore { entries }
    }

    pub async fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.entries.get(key).await.map(|h| h.entry)
    }

    pub async fn put(&self, key: &CacheKey, entry: Entry, ttl: Duration) {
        self.entries.insert(key.clone(), Held { entry: Arc::new(entry), ttl }).await;
    }
}
