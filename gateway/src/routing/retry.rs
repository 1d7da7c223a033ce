//! Calls a model group through the router with retries, backoff, cooldowns and fallbacks, and
//! returns the first successful upstream response (headers received, body unread) or the last
//! failure. Nothing is sent to the client before this returns, so retrying is always safe.

use crate::error::GatewayError;
use crate::providers::{self, Deployment, Endpoint, UpstreamError};
use crate::routing::router::{PickedDeployment, Router};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_schemas::event::{AttemptKind, AttemptOutcome};
use tollgate_schemas::telemetry::recorder::Child;
use tollgate_schemas::telemetry::span::{SpanKind, Text, Value};

/// Largest error body read from a provider (for the client and for classification).
const MAX_ERROR_BODY: usize = 1024 * 1024;
/// Longest wait a provider's `Retry-After` may impose on one retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

pub struct RoutedAnswer {
    pub picked: PickedDeployment,
    pub response: reqwest::Response,
    /// When the successful attempt was sent.
    pub sent_at: Instant,
    pub attempts: u32,
}

/// How the last attempt failed.
pub enum RoutedFailure {
    /// The provider answered with an error status; passed through to the client.
    Upstream { picked: PickedDeployment, status: u16, content_type: Option<String>, body: Bytes, attempts: u32 },
    /// No answer: connection failed or timed out.
    Transport { picked: PickedDeployment, error: UpstreamError, attempts: u32 },
    /// The request could not be built or no deployment exists.
    Gateway(GatewayError),
}

/// What to do after an error answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Rate limits, timeouts, server errors: retry, then fall back.
    Retryable,
    /// The prompt is too long for the model: try `context_window_fallbacks`.
    ContextWindow,
    /// The provider's content filter refused: try `content_policy_fallbacks`.
    ContentPolicy,
    /// Anything else (bad request, auth, not found): answer the client as is.
    Final,
}

/// Classifies an error answer by status and, for 400s, by the provider's error text.
pub fn classify(status: u16, body: &[u8]) -> ErrorClass {
    match status {
        408 | 409 | 425 | 429 | 500..=599 => ErrorClass::Retryable,
        400 | 413 | 422 => {
            let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
            if [
                "context_length_exceeded",
                "maximum context length",
                "context window",
                "prompt is too long",
                "too many tokens",
            ]
            .iter()
            .any(|p| text.contains(p))
            {
                ErrorClass::ContextWindow
            } else if ["content_policy_violation", "content_filter", "content management policy", "safety system"]
                .iter()
                .any(|p| text.contains(p))
            {
                ErrorClass::ContentPolicy
            } else {
                ErrorClass::Final
            }
        }
        _ => ErrorClass::Final,
    }
}

/// Exponential backoff with full jitter (100 ms × 2^attempt, at most 5 s), never shorter than
/// the provider's `Retry-After` (capped) or the configured minimum.
pub fn backoff(attempt: u32, retry_after: Option<Duration>, minimum: Duration, jitter: f64) -> Duration {
    let ceiling = Duration::from_millis(100u64.saturating_mul(1u64 << attempt.min(6))).min(Duration::from_secs(5));
    let jittered = ceiling.mul_f64(jitter.clamp(0.0, 1.0));
    jittered.max(retry_after.map_or(Duration::ZERO, |r| r.min(MAX_RETRY_AFTER))).max(minimum)
}

/// `Retry-After` in seconds (the HTTP-date form is rare from LLM providers and ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
}

async fn read_error_body(response: reqwest::Response, timeout: Duration) -> Bytes {
    let read = async {
        let mut response = response;
        let mut out = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = MAX_ERROR_BODY.saturating_sub(out.len());
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        Bytes::from(out)
    };
    tokio::time::timeout(timeout, read).await.unwrap_or_default()
}

/// Sends one attempt's body to a deployment, with the attempt span's `traceparent`: a
/// pass-through's own URL, method and headers.
pub type SendFn<'a> = dyn Fn(Arc<Deployment>, Vec<u8>, Option<String>) -> BoxFuture<'a, Result<reqwest::Response, UpstreamError>>
    + Sync
    + 'a;

/// How an attempt reaches a deployment.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// The deployment's endpoint (`providers::send`); error bodies translated into OpenAI's
    /// envelope; fallbacks to other model groups.
    Endpoint,
    /// A pass-through (`http/passthrough`): `send` makes the request; only the deployments of
    /// the model group `only` accepts (its provider family) are tried; error bodies stay in the
    /// provider's format; no fallback to another model group (its body names this one).
    PassThrough { send: &'a SendFn<'a>, only: &'a (dyn Fn(&Deployment) -> bool + Sync) },
}

/// One request to route: what to ask, how to build the body for a deployment, which models
/// the caller may use, and where to note each attempt (the deployment being tried, and what
/// each came to).
pub struct Call<'a> {
    pub model: &'a str,
    pub endpoint: Endpoint,
    pub stream: bool,
    pub body_for: &'a (dyn Fn(&Deployment) -> Result<Vec<u8>, GatewayError> + Sync),
    /// The content type of the bodies `body_for` makes.
    pub content_type: &'a str,
    /// The key's allow-lists: a fallback model it may not use is skipped.
    pub allowed: &'a (dyn Fn(&str) -> bool + Sync),
    /// The prompt's size in bytes, and its tokens (counted only when asked), for the checks
    /// against context windows.
    pub prompt_bytes: u64,
    pub prompt_tokens: &'a (dyn Fn() -> u64 + Sync),
    pub attempt: &'a crate::metering::recorder::Attempt,
    pub via: Via<'a>,
}

/// Sends the request to its model's deployments, retrying and falling back per `router`'s
/// policy.
pub async fn call(router: &Router, client: &reqwest::Client, spec: Call<'_>) -> Result<RoutedAnswer, RoutedFailure> {
    let Call {
        model,
        endpoint,
        stream,
        body_for,
        content_type,
        allowed,
        attempt: trying,
        prompt_bytes,
        prompt_tokens,
        via,
    } = spec;
    let fallbacks = matches!(via, Via::Endpoint);
    let policy = router.policy.clone();
    let mut chain: Vec<String> = vec![model.to_owned()];
    let mut general_fallbacks_added = false;
    let mut last: Option<RoutedFailure> = None;
    let mut attempts = 0u32;
    let mut position = 0;
    // Position 0 is the model asked for; each later one is a fallback.
    while position < chain.len() && position <= policy.max_fallbacks {
        let group = chain[position].clone();
        if position > 0 && !allowed(&group) {
            metrics::counter!("tollgate_fallbacks_skipped_total", "reason" => "model_not_allowed").increment(1);
            position += 1;
            continue;
        }
        // Deployments whose context window the prompt exceeds are never tried; when that is
        // all of them, the prompt goes to the context window fallbacks as if each had refused.
        let checked = policy.pre_call_checks || !router.context_window_fallbacks(&group).is_empty();
        let (too_small, deployments) =
            if checked { router.too_small_for(&group, prompt_bytes, prompt_tokens) } else { (Vec::new(), 0) };
        if deployments > 0 && too_small.len() == deployments {
            metrics::counter!("tollgate_context_window_skips_total", "model" => router.metric_label(&group))
                .increment(1);
            let exceeded = RoutedFailure::Gateway(router.context_window_exceeded(&group, prompt_tokens()));
            let list = router.context_window_fallbacks(&group);
            if list.is_empty() {
                return Err(exceeded);
            }
            for m in list.iter().rev() {
                if !chain.contains(m) {
                    chain.insert(position + 1, m.clone());
                }
            }
            last = Some(exceeded);
            position += 1;
            continue;
        }
        // Deployments never to try: too small for the prompt, or of another family.
        let mut never = too_small;
        if let Via::PassThrough { only, .. } = via {
            never.extend(router.indices_where(&group, |d| !only(d)));
        }
        let mut tried: Vec<usize> = never.clone();
        let mut special_fallback = false;
        for attempt in 0..=policy.num_retries {
            // Prefer a deployment not yet tried; retry the same one when none is left.
            let picked = router.pick(&group, &tried).or_else(|| router.pick(&group, &never));
            let Some((index, picked)) = picked else { break };
            tried.push(index);
            attempts += 1;
            let body = match body_for(&picked.deployment) {
                Ok(b) => b,
                // A request this deployment cannot take: when an earlier one already failed,
                // that failure is the answer (and what the usage event records).
                Err(e) => return Err(last.unwrap_or(RoutedFailure::Gateway(e))),
            };
            let kind = match (attempt, position) {
                (0, 0) => AttemptKind::First,
                (0, _) => AttemptKind::Fallback,
                _ => AttemptKind::Retry,
            };
            trying.begin(&picked.deployment, (position > 0).then_some(group.as_str()), kind);
            let mut span = attempt_span(&picked, &group, attempts, position > 0);
            let call = (body, content_type, &mut span);
            let once = attempt_once(router, client, picked, &group, (endpoint, via), call, stream, attempts).await;
            drop(span);
            let (outcome, status) = once.outcome();
            trying.end(outcome, status);
            let (failure, class, wait) = match once {
                Attempted::Answered(answer) => return Ok(answer),
                Attempted::Failed { failure, class, wait } => (failure, class, wait),
            };
            match class {
                ErrorClass::Retryable => last = Some(failure),
                ErrorClass::ContextWindow | ErrorClass::ContentPolicy => {
                    let list = if class == ErrorClass::ContextWindow {
                        router.context_window_fallbacks(&group)
                    } else {
                        router.content_policy_fallbacks(&group)
                    };
                    if list.is_empty() || !fallbacks {
                        return Err(failure);
                    }
                    for m in list.iter().rev() {
                        if !chain.contains(m) {
                            chain.insert(position + 1, m.clone());
                        }
                    }
                    last = Some(failure);
                    special_fallback = true;
                    break;
                }
                ErrorClass::Final => return Err(failure),
            }
            if attempt < policy.num_retries {
                let delay = backoff(attempt, wait, policy.retry_after_min, fastrand::f64());
                metrics::counter!("tollgate_upstream_retries_total", "model" => router.metric_label(&group))
                    .increment(1);
                tokio::time::sleep(delay).await;
            }
        }
        if fallbacks && !special_fallback && !general_fallbacks_added && group == model {
            general_fallbacks_added = true;
            for m in router.fallbacks(model) {
                if !chain.contains(m) {
                    chain.push(m.clone());
                }
            }
        }
        position += 1;
        if position < chain.len() {
            metrics::counter!("tollgate_fallbacks_total", "model" => router.metric_label(model)).increment(1);
        }
    }
    Err(last.unwrap_or_else(|| RoutedFailure::Gateway(GatewayError::ModelNotFound(model.to_owned()))))
}

/// The span of one attempt: which deployment of which model group, the how-manieth attempt,
/// and whether it is a fallback; `attempt_once` records the provider's status and error class.
fn attempt_span(picked: &PickedDeployment, group: &str, attempt: u32, fallback: bool) -> Child {
    let mut span = crate::traces::child("upstream_attempt");
    span.record(|s| {
        let d = &picked.deployment;
        let text = |v: &str| Value::Str(Text::new(v));
        s.kind = SpanKind::Client;
        // Its six attributes, and the status and error class recorded after the call, in one
        // allocation.
        s.attributes.reserve(8);
        // A new span: each key is added once, without a search for one to replace.
        s.add("gen_ai.provider.name", text(crate::traces::provider_name(&d.provider)));
        s.add("gen_ai.request.model", text(&d.upstream_model));
        s.add("tollgate.model_group", text(group));
        s.add("tollgate.deployment", text(&d.id));
        s.add("tollgate.attempt", Value::I64(i64::from(attempt)));
        s.add("tollgate.fallback", Value::Bool(fallback));
    });
    span
}

/// Records an attempt's outcome on its span: the provider's status, and for a failure its class
/// (the status, `timeout` or `unavailable`) and status `ERROR`.
fn record_attempt(span: &mut Child, status: Option<u16>, error: Option<&str>) {
    span.record(|s| {
        if let Some(status) = status {
            s.set("http.response.status_code", Value::I64(i64::from(status)));
        }
        if let Some(error) = error {
            s.set("error.type", Value::Str(Text::new(error)));
            s.set_error(error);
        }
    });
}

/// What one attempt at one deployment came to.
enum Attempted {
    Answered(RoutedAnswer),
    /// How to go on (a transport failure is retryable), and how long the provider asked to
    /// wait before a retry.
    Failed {
        failure: RoutedFailure,
        class: ErrorClass,
        wait: Option<Duration>,
    },
}

impl Attempted {
    /// What the attempt came to, for the usage event's `attempts`.
    fn outcome(&self) -> (AttemptOutcome, Option<u16>) {
        match self {
            Attempted::Answered(a) => (AttemptOutcome::Ok, Some(a.response.status().as_u16())),
            Attempted::Failed { failure, .. } => match failure {
                RoutedFailure::Upstream { status, .. } => (AttemptOutcome::ErrorStatus, Some(*status)),
                RoutedFailure::Transport { error: UpstreamError::Timeout, .. } => (AttemptOutcome::Timeout, None),
                // `attempt_once` fails only with an answer or without one: a gateway error is
                // never an attempt's, and would mean no answer.
                RoutedFailure::Transport { .. } | RoutedFailure::Gateway(_) => (AttemptOutcome::Connect, None),
            },
        }
    }
}

/// Sends `body` to the deployment of `picked` once; on failure, records it against the
/// deployment (cooldowns) and in the metrics.
#[allow(clippy::too_many_arguments)]
async fn attempt_once(
    router: &Router,
    client: &reqwest::Client,
    picked: PickedDeployment,
    group: &str,
    (endpoint, via): (Endpoint, Via<'_>),
    (body, content_type, span): (Vec<u8>, &str, &mut Child),
    stream: bool,
    attempts: u32,
) -> Attempted {
    let sent_at = Instant::now();
    let traceparent = span.traceparent();
    let sent = match via {
        Via::Endpoint => {
            providers::send(client, &picked.deployment, endpoint, body, content_type, stream, traceparent.as_deref())
                .await
        }
        Via::PassThrough { send, .. } => send(picked.deployment.clone(), body, traceparent).await,
    };
    match sent {
        Ok(response) if response.status().is_success() => {
            record_attempt(span, Some(response.status().as_u16()), None);
            Attempted::Answered(RoutedAnswer { picked, response, sent_at, attempts })
        }
        Ok(response) => {
            let status = response.status().as_u16();
            record_attempt(span, Some(status), Some(&status.to_string()));
            let wait = retry_after(response.headers());
            let content_type = Some(match via {
                Via::Endpoint => providers::answer_content_type(&picked.deployment, response.headers()),
                // The provider's own error, in its own type.
                Via::PassThrough { .. } => response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_owned(),
            });
            let body = read_error_body(response, picked.deployment.timeout).await;
            let body = match via {
                Via::Endpoint => picked.deployment.api.error_body(body),
                Via::PassThrough { .. } => body,
            };
            let class = classify(status, &body);
            tracing::info!(deployment = %picked.deployment.id, status, class = ?class, "upstream attempt failed");
            if matches!(status, 401 | 403 | 404 | 408 | 429) || status >= 500 {
                router.record_failure(&picked);
            }
            metrics::counter!("tollgate_upstream_errors_total", "model" => router.metric_label(group), "status" => status.to_string())
                .increment(1);
            Attempted::Failed {
                failure: RoutedFailure::Upstream { picked, status, content_type, body, attempts },
                class,
                wait,
            }
        }
        Err(error) => {
            router.record_failure(&picked);
            let label = if matches!(error, UpstreamError::Timeout) { "timeout" } else { "unavailable" };
            record_attempt(span, None, Some(label));
            metrics::counter!("tollgate_upstream_errors_total", "model" => router.metric_label(group), "status" => label)
                .increment(1);
            Attempted::Failed {
                failure: RoutedFailure::Transport { picked, error, attempts },
                class: ErrorClass::Retryable,
                wait: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_provider_errors() {
        assert_eq!(classify(429, b""), ErrorClass::Retryable);
        assert_eq!(classify(503, b""), ErrorClass::Retryable);
        assert_eq!(classify(400, br#"{"error":{"code":"context_length_exceeded"}}"#), ErrorClass::ContextWindow);
        assert_eq!(classify(400, br#"{"error":{"code":"content_policy_violation"}}"#), ErrorClass::ContentPolicy);
        assert_eq!(classify(400, br#"{"error":{"message":"bad temperature"}}"#), ErrorClass::Final);
        assert_eq!(classify(401, b""), ErrorClass::Final);
    }

    #[test]
    fn backoff_grows_honours_retry_after_and_is_bounded() {
        assert_eq!(backoff(0, None, Duration::ZERO, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(3, None, Duration::ZERO, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(20, None, Duration::ZERO, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(0, None, Duration::ZERO, 0.0), Duration::ZERO);
        assert_eq!(backoff(0, Some(Duration::from_secs(2)), Duration::ZERO, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(0, Some(Duration::from_secs(3600)), Duration::ZERO, 0.5), MAX_RETRY_AFTER);
        assert_eq!(backoff(0, None, Duration::from_millis(300), 0.0), Duration::from_millis(300));
    }
}
