//! A request answered from the cache: metered as its own event (after admission, so budgets
//! and rate limits held), then the stored answer, whole or replayed as SSE, after the
//! request's post-call guardrails.

use super::{Entry, ResponseCache};
use crate::error::GatewayError;
use crate::guardrails::Applied;
use crate::http::wire::ProxyRequest;
use crate::http::{header, Reply};
use crate::metering::recorder::UsageRecorder;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use std::sync::Arc;
use tollgate_schemas::event::CacheHit;

/// A hit: the cache, its entry and key, and the request's guardrails.
pub struct Hit<'a> {
    pub cache: &'a ResponseCache,
    pub entry: Arc<Entry>,
    pub key: &'a super::key::CacheKey,
    pub applied: &'a Applied,
    pub client: &'a reqwest::Client,
}

/// Meters the hit and answers with its entry. A guarded request's entry is the provider's
/// answer: its post-call hook runs on it first (masked values restored with this request's
/// own, post-call guardrails run), and a block answers 400 `guardrail_blocked`, streamed or
/// not (nothing was sent yet), metered as a hit that was refused.
pub async fn answer(
    hit: Hit<'_>,
    request: &ProxyRequest,
    recorder: UsageRecorder,
    mut headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<Reply, GatewayError> {
    let Hit { cache, entry, key, applied, client } = hit;
    let saved =
        CacheHit { hit: true, saved_input_tokens: entry.prompt_tokens, saved_output_tokens: entry.completion_tokens };
    let guarded = applied.after_call(client, entry.body.clone()).await;
    let refused =
        guarded.as_ref().err().map(|e| (actix_web::ResponseError::status_code(e).as_u16(), e.kind_and_code().1));
    let (charged, written) =
        recorder.finish_cache_hit(cache.hit_cost(&entry), saved, entry.served_model.clone(), refused);
    // As for any answer: it goes once its event is as durable as `spool.answer_after` asks.
    written.wait().await;
    let body = guarded?;
    headers.extend(header("x-tollgate-cache", "hit"));
    // LiteLLM's header of a hit: the entry's key (a hash; it reveals nothing of the prompt).
    headers.extend(header("x-litellm-cache-key", &key.hex()));
    headers.extend(header("x-tollgate-cost-nano-usd", &charged.0.to_string()));
    headers.extend(header("x-tollgate-response-cost", &charged.to_string()));
    if request.stream {
        // Only chat completions are stored, and they are checked when stored (see `store`).
        let events = super::replay::chunks(&body, request.client_wants_usage).unwrap_or_default();
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        return Ok(Reply::Stream { headers, stream: Box::new(stream) });
    }
    Ok(Reply::Full { status: StatusCode::OK, content_type: "application/json".to_owned(), headers, body })
}
