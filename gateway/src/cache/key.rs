//! The key of a cached answer: SHA-256 of what decides the answer (endpoint, model group, every
//! body field but those that only shape delivery or accounting) and of who may see it (the
//! team, or the key without a team, unless teams share), within a namespace. Field values are
//! compared as the client wrote them: equal JSON spelt differently is a different entry.
//!
//! A request that runs guardrails is keyed on the request its pre-call guardrails made (PII
//! masked, rewrites done: a value masked is never keyed raw), under a tag of its own and with
//! the identity (name and settings, hashed) of every guardrail it runs: an entry is never served
//! across guardrail configs, nor between guarded and unguarded requests.

use super::controls::Controls;
use super::{Plan, ResponseCache};
use crate::error::GatewayError;
use crate::http::wire::ProxyRequest;
use crate::providers::Endpoint;
use crate::tenancy::auth::Principal;
use sha2::{Digest, Sha256};

/// Fields that do not change the answer: how it is delivered (`stream`, `stream_options`: a
/// streamed request is answered from a whole one), the cache's own controls, and what is only
/// recorded (`user`, `metadata`).
const NOT_IN_KEY: [&str; 5] = ["stream", "stream_options", "cache", "user", "metadata"];

/// An entry's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key in lowercase hex: the name of its Redis entry, and LiteLLM's `x-litellm-cache-key`.
    pub fn hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
    }
}

/// Who may be served an entry.
fn scope(principal: &Principal, shared: bool) -> String {
    match (&principal.key.team_id, shared) {
        (_, true) => "shared".to_owned(),
        (Some(team), false) => format!("team:{team}"),
        (None, false) => format!("key:{}", principal.key.key_id),
    }
}

/// The key of `request` (its model already the model group) for `principal`, running the
/// guardrails of `guardrails` (their identities; none for an unguarded request).
pub fn derive<'a>(
    request: &ProxyRequest,
    principal: &Principal,
    cache: &ResponseCache,
    controls: &Controls,
    guardrails: impl Iterator<Item = &'a [u8; 32]>,
) -> CacheKey {
    let params = cache.params();
    let namespace = controls.namespace.as_deref().or(params.namespace.as_deref()).unwrap_or("");
    let mut fields: Vec<(&str, &str)> =
        request.fields().iter().filter(|(name, _)| !NOT_IN_KEY.contains(name)).collect();
    fields.sort_unstable();
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        // Length-prefixed, so no two different sequences of parts hash alike.
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    let mut guardrails = guardrails.peekable();
    // A tag of their own for guarded keys: the parts after it cannot be read as an unguarded
    // key's (every key's first part is its tag).
    if guardrails.peek().is_none() {
        part(b"tollgate-response-cache-v1");
    } else {
        part(b"tollgate-response-cache-v1+guardrails");
    }
    part(request.endpoint.path().as_bytes());
    part(request.model.as_bytes());
    part(scope(principal, params.share_across_teams).as_bytes());
    part(namespace.as_bytes());
    for g in guardrails {
        part(g);
    }
    for (name, value) in fields {
        part(name.as_bytes());
        part(value.as_bytes());
    }
    CacheKey(hash.finalize().into())
}

/// The request as it goes upstream (its `cache` field removed) and its plan, when the cache
/// serves it: chat completions only, with the cache on and chat among its call types.
pub fn prepare(
    cache: Option<&ResponseCache>,
    principal: &Principal,
    request: ProxyRequest,
) -> Result<(ProxyRequest, Option<Plan>), GatewayError> {
    let Some(cache) = cache.filter(|c| c.params().caches_chat()) else { return Ok((request, None)) };
    if request.endpoint != Endpoint::ChatCompletions {
        return Ok((request, None));
    }
    let controls = Controls::parse(request.fields().get("cache"))?;
    let request = if request.fields().contains("cache") { request.without("cache")? } else { request };
    let key = derive(&request, principal, cache, &controls, std::iter::empty());
    Ok((request, Some(Plan { key, controls })))
}

/// The plan of a request that runs guardrails, once its pre-call guardrails ran: keyed on the
/// request they made (`guarded`, as it goes upstream) and on the guardrails' identity.
pub fn after_guardrails(
    plan: Plan,
    cache: &ResponseCache,
    principal: &Principal,
    guarded: &ProxyRequest,
    applied: &crate::guardrails::Applied,
) -> Plan {
    if !applied.runs_any() {
        return plan;
    }
    let key = derive(guarded, principal, cache, &plan.controls, applied.cache_identity());
    Plan { key, controls: plan.controls }
}
