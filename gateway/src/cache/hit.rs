//! A request answered from the cache: metered as its own event (after admission, so budgets
//! and rate limits held), then the stored answer, whole or replayed as SSE.

use super::{Entry, ResponseCache};
use crate::http::wire::ProxyRequest;
use crate::http::{header, Reply};
use crate::metering::recorder::UsageRecorder;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use std::sync::Arc;
use tollgate_schemas::event::CacheHit;

/// Meters the hit on `entry` and answers with it.
pub async fn answer(
    cache: &ResponseCache,
    entry: Arc<Entry>,
    key: &super::key::CacheKey,
    request: &ProxyRequest,
    recorder: UsageRecorder,
    mut headers: Vec<(HeaderName, HeaderValue)>,
) -> Reply {
    let saved =
        CacheHit { hit: true, saved_input_tokens: entry.prompt_tokens, saved_output_tokens: entry.completion_tokens };
    let (charged, written) = recorder.finish_cache_hit(cache.hit_cost(&entry), saved, entry.served_model.clone());
    // As for any answer: it goes once its event is as durable as `spool.answer_after` asks.
    written.wait().await;
    headers.extend(header("x-tollgate-cache", "hit"));
    // LiteLLM's header of a hit: the entry's key (a hash; it reveals nothing of the prompt).
    headers.extend(header("x-litellm-cache-key", &key.hex()));
    headers.extend(header("x-tollgate-cost-nano-usd", &charged.0.to_string()));
    headers.extend(header("x-tollgate-response-cost", &charged.to_string()));
    if request.stream {
        // Only chat completions are stored, and they are checked when stored (see `store`).
        let events = super::replay::chunks(&entry.body, request.client_wants_usage).unwrap_or_default();
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        return Reply::Stream { headers, stream: Box::new(stream) };
    }
    Reply::Full {
        status: StatusCode::OK,
        content_type: "application/json".to_owned(),
        headers,
        body: entry.body.clone(),
    }
}
