//! The exact-match response cache for chat completions (and /v1/messages, served as chat): a
//! successful answer (whole, or a stream that ended cleanly, assembled by [`assemble`]) is kept
//! under a hash of what decides it (see [`key`]), in the gateway's memory ([`local`]) or in a
//! shared Redis ([`redis_store`]), and the same request later is answered from it, streamed
//! requests as SSE ([`replay`]). A hit is metered as
//! its own usage event (`cache` set, no tokens, the configured price of a hit) after admission,
//! so budgets and rate limits apply to it.
//!
//! It must never keep an error or a partial answer, never fail or stall a request because its
//! backend failed (a miss instead), nor serve one team's entry to another unless
//! `cache_params.share_across_teams` says so.

pub mod assemble;
pub mod codec;
pub mod controls;
pub mod hit;
pub mod key;
pub mod local;
pub mod redis_client;
pub mod redis_store;
pub mod replay;

use crate::config::{CacheParams, CacheType};
use crate::limits::pricing::Tokens;
use bytes::Bytes;
use metrics::counter;
use std::sync::Arc;
use std::time::Duration;
use tollgate_schemas::NanoUsd;

/// A stored answer: the OpenAI chat completion body and what it cost when a provider made it.
#[derive(Debug)]
pub struct Entry {
    pub body: Bytes,
    pub cost: NanoUsd,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub served_model: Option<String>,
    /// When it was stored, in seconds since the Unix epoch (for `s-maxage`).
    pub stored_at: u64,
}

/// Seconds since the Unix epoch now.
fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What the pipeline does with the cache for one request: the entry's key, and the request's
/// own controls.
#[derive(Clone, Debug)]
pub struct Plan {
    pub key: key::CacheKey,
    pub controls: controls::Controls,
}

/// Where entries are kept (`cache_params.type`).
enum Backend {
    Local(local::LocalStore),
    Redis(redis_store::RedisStore),
}

/// The response cache: its settings and its backend.
pub struct ResponseCache {
    backend: Backend,
    params: CacheParams,
}

impl ResponseCache {
    /// The cache `params` describe (already checked by the config).
    pub fn new(params: CacheParams) -> Result<ResponseCache, redis_store::BadAddress> {
        let backend = match params.kind {
            CacheType::Local => Backend::Local(local::LocalStore::new(params.max_memory_bytes)),
            CacheType::Redis => Backend::Redis(redis_store::RedisStore::new(&params)?),
        };
        Ok(ResponseCache { backend, params })
    }

    pub fn params(&self) -> &CacheParams {
        &self.params
    }

    /// The stored answer for `plan`, unless the request said `no-cache`. Counts the hit or miss.
    pub async fn lookup(&self, plan: &Plan, model_label: &str) -> Option<Arc<Entry>> {
        if plan.controls.no_cache {
            counter!("tollgate_cache_bypassed_total", "model" => model_label.to_owned()).increment(1);
            return None;
        }
        let found = match &self.backend {
            Backend::Local(store) => store.get(&plan.key).await,
            Backend::Redis(store) => store.get(&plan.key).await.map(Arc::new),
        };
        // `s-maxage`: an older entry is a miss (a clock that went back makes none older).
        let found =
            found.filter(|e| plan.controls.max_age.is_none_or(|age| now_secs().saturating_sub(e.stored_at) <= age));
        let name = if found.is_some() { "tollgate_cache_hits_total" } else { "tollgate_cache_misses_total" };
        counter!(name, "model" => model_label.to_owned()).increment(1);
        found
    }

    /// Keeps a whole, successful answer, unless the request said `no-store` or it is larger
    /// than `max_entry_bytes`.
    pub async fn store(&self, plan: &Plan, body: &Bytes, cost: NanoUsd, tokens: Tokens, served_model: Option<&str>) {
        if plan.controls.no_store {
            return;
        }
        if u64::try_from(body.len()).unwrap_or(u64::MAX) > self.params.max_entry_bytes {
            counter!("tollgate_cache_entries_too_large_total").increment(1);
            return;
        }
        // Only what replays as a stream is kept: a whole chat completion.
        if replay::chunks(body, false).is_none() {
            return;
        }
        let ttl = Duration::from_secs(plan.controls.ttl.unwrap_or(self.params.ttl));
        let entry = Entry {
            body: body.clone(),
            cost,
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            served_model: served_model.map(str::to_owned),
            stored_at: now_secs(),
        };
        match &self.backend {
            Backend::Local(store) => store.put(&plan.key, entry, ttl).await,
            Backend::Redis(store) => store.put(&plan.key, &entry, ttl).await,
        }
    }

    /// What a hit on `entry` costs: `hit_cost_percent` of what the answer cost, rounded down.
    pub fn hit_cost(&self, entry: &Entry) -> NanoUsd {
        hit_cost(entry.cost, self.params.hit_cost_percent)
    }
}

/// The stored answer for `plan`, with the cache that holds it, when both are there.
pub async fn lookup<'a>(
    cache: Option<&'a ResponseCache>,
    plan: Option<&'a Plan>,
    model_label: &str,
) -> Option<(&'a ResponseCache, Arc<Entry>, &'a key::CacheKey)> {
    let (cache, plan) = (cache?, plan?);
    cache.lookup(plan, model_label).await.map(|entry| (cache, entry, &plan.key))
}

/// `percent` of `cost`, rounded down, in integer arithmetic.
pub fn hit_cost(cost: NanoUsd, percent: u8) -> NanoUsd {
    let scaled = i128::from(cost.0.max(0)) * i128::from(percent.min(100)) / 100;
    NanoUsd(i64::try_from(scaled).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
