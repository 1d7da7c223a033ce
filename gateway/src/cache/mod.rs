//! The exact-match response cache for chat completions (and /v1/messages, served as chat): a
//! whole, successful answer is kept under a hash of what decides it (see [`key`]), and the same
//! request later is answered from it, streamed requests as SSE ([`replay`]). A hit is metered as
//! its own usage event (`cache` set, no tokens, the configured price of a hit) after admission,
//! so budgets and rate limits apply to it.
//!
//! It must never keep an error, a partial answer or a stream (streamed answers are not stored:
//! only whole ones are), nor serve one team's entry to another unless
//! `cache_params.share_across_teams` says so.

pub mod controls;
pub mod hit;
pub mod key;
pub mod replay;

use crate::config::CacheParams;
use crate::limits::pricing::Tokens;
use bytes::Bytes;
use metrics::counter;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_schemas::NanoUsd;

/// A stored answer: the OpenAI chat completion body and what it cost when a provider made it.
#[derive(Debug)]
pub struct Entry {
    pub body: Bytes,
    pub cost: NanoUsd,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub served_model: Option<String>,
    ttl: Duration,
}

/// What the pipeline does with the cache for one request: the entry's key, and the request's
/// own controls.
#[derive(Clone, Debug)]
pub struct Plan {
    pub key: key::CacheKey,
    pub controls: controls::Controls,
}

/// The in-process cache (moka), bounded in memory by the weight of its entries.
pub struct ResponseCache {
    entries: moka::future::Cache<key::CacheKey, Arc<Entry>>,
    params: CacheParams,
}

/// Each entry expires after its own TTL (the request's `cache.ttl`, else `cache_params.ttl`).
struct PerEntryTtl;

impl moka::Expiry<key::CacheKey, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _: &key::CacheKey, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl ResponseCache {
    /// The cache `params` describe (already checked by the config).
    pub fn new(params: CacheParams) -> ResponseCache {
        let entries = moka::future::Cache::builder()
            .max_capacity(params.max_memory_bytes)
            .weigher(|_, e: &Arc<Entry>| u32::try_from(e.body.len().saturating_add(ENTRY_OVERHEAD)).unwrap_or(u32::MAX))
            .expire_after(PerEntryTtl)
            .build();
        ResponseCache { entries, params }
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
        let found = self.entries.get(&plan.key).await;
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
            ttl,
        };
        self.entries.insert(plan.key.clone(), Arc::new(entry)).await;
    }

    /// What a hit on `entry` costs: `hit_cost_percent` of what the answer cost, rounded down.
    pub fn hit_cost(&self, entry: &Entry) -> NanoUsd {
        hit_cost(entry.cost, self.params.hit_cost_percent)
    }
}

/// The stored answer for `plan`, with the cache that holds it, when both are there.
pub async fn lookup<'a>(
    cache: Option<&'a ResponseCache>,
    plan: Option<&Plan>,
    model_label: &str,
) -> Option<(&'a ResponseCache, Arc<Entry>)> {
    let (cache, plan) = (cache?, plan?);
    cache.lookup(plan, model_label).await.map(|entry| (cache, entry))
}

/// Bytes an entry weighs beyond its body (key, counts, bookkeeping), so that many tiny answers
/// cannot hold unbounded memory.
const ENTRY_OVERHEAD: usize = 256;

/// `percent` of `cost`, rounded down, in integer arithmetic.
pub fn hit_cost(cost: NanoUsd, percent: u8) -> NanoUsd {
    let scaled = i128::from(cost.0.max(0)) * i128::from(percent.min(100)) / 100;
    NanoUsd(i64::try_from(scaled).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
