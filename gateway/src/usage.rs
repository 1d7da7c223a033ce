//! Builds and publishes the one usage event of each request that reached a provider.
//!
//! A [`UsageRecorder`] is created just before the provider is called. Whatever happens next —
//! success, upstream error, timeout, or the client going away (the handler future is dropped) —
//! it publishes exactly one event: `finish` consumes it, and `Drop` covers every other exit.

use crate::admission::Admitted;
use crate::auth::Principal;
use crate::events::{Permit, UsageSink};
use crate::pricing::{cost, Tokens};
use crate::providers::Deployment;
use chrono::{DateTime, Utc};
use metrics::counter;
use std::sync::Arc;
use std::time::Instant;
use tollgate_schemas::{NanoUsd, UsageEvent, USAGE_EVENT_VERSION};
use uuid::Uuid;

/// Status recorded when the client disconnected before the answer (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

pub struct UsageRecorder {
    sink: Arc<dyn UsageSink>,
    /// The room taken for the event at admission; given back if no event is published.
    permit: Option<Permit>,
    event: Option<UsageEvent>,
    started: Instant,
    /// The request's admission: its spend and tokens are counted here when it ends, and its
    /// parallel-request slots are freed when the recorder goes.
    admitted: Option<Admitted>,
}

/// How a request ended.
#[derive(Default)]
pub struct Outcome<'a> {
    pub status: u16,
    pub error_type: Option<&'a str>,
    pub tokens: Tokens,
    pub served_model: Option<String>,
    /// The answer was cut short; `tokens` are what was delivered.
    pub partial: bool,
    /// `tokens` were counted by Tollgate, not reported by the provider.
    pub estimated: bool,
    /// The deployment that finally answered, when retries or fallbacks moved the request.
    pub deployment: Option<&'a Deployment>,
}

impl UsageRecorder {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        sink: Arc<dyn UsageSink>,
        permit: Permit,
        gateway_id: &str,
        request_id: &str,
        principal: &Principal,
        admitted: Admitted,
        requested_model: &str,
        stream: bool,
        started: Instant,
        admitted_at: DateTime<Utc>,
    ) -> UsageRecorder {
        let key = &principal.key;
        let event = UsageEvent {
            version: USAGE_EVENT_VERSION,
            event_id: Uuid::now_v7(),
            // The instant the budgets were checked and reserved against: the event's spend
            // windows (day, month, budget windows) are those of this instant, so a request
            // that ends in the next window is charged where its reservation was taken.
            occurred_at: admitted_at,
            gateway_id: gateway_id.to_owned(),
            request_id: request_id.to_owned(),
            key_id: key.key_id.clone(),
            key_alias: key.key_alias.clone(),
            team_id: key.team_id.clone(),
            user_id: key.user_id.clone(),
            customer_id: principal.customer_id.clone(),
            organization_id: principal.organization_id.clone(),
            requested_model: requested_model.to_owned(),
            served_model: None,
            provider: None,
            deployment: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            cost_nano_usd: NanoUsd::ZERO,
            latency_ms: 0,
            status: 0,
            error_type: None,
            stream,
            partial: false,
            estimated: false,
            budget_windows: admitted.budget_windows(),
        };
        UsageRecorder { sink, permit: Some(permit), event: Some(event), started, admitted: Some(admitted) }
    }

    /// Records a request the gateway failed after reaching `deployment` (timeout, broken body).
    pub fn fail(self, err: &crate::error::GatewayError, deployment: &Deployment) {
        use actix_web::ResponseError;
        self.finish(Outcome {
            status: err.status_code().as_u16(),
            error_type: Some(err.kind_and_code().1),
            deployment: Some(deployment),
            ..Outcome::default()
        });
    }

    /// Drops the event: for requests that never reached a provider.
    pub fn abandon(mut self) {
        self.event = None;
        self.permit = None;
    }

    /// Records the outcome, publishes the event and returns the cost charged.
    pub fn finish(mut self, outcome: Outcome<'_>) -> NanoUsd {
        let Some(mut event) = self.event.take() else {
            return NanoUsd::ZERO;
        };
        let tokens = within_bounds(outcome.tokens);
        let has_tokens = tokens.prompt > 0 || tokens.completion > 0;
        let charged = match outcome.deployment.map(|d| d.price) {
            Some(Some(price)) => {
                // Prices and believed token counts are bounded so that no request costs more
                // than the ledger accepts; should that ever fail, charge the bound (never
                // nothing), and say so.
                let max = tollgate_schemas::limits::MAX_COST_PER_REQUEST;
                match cost(&price, tokens) {
                    Ok(c) if c <= max => c,
                    _ => {
                        tracing::error!(event_id = %event.event_id, "cost beyond the per-request bound; charging the bound");
                        counter!("tollgate_cost_clamped_total").increment(1);
                        max
                    }
                }
            }
            Some(None) if has_tokens => {
                counter!("tollgate_unpriced_requests_total", "model" => event.requested_model.clone()).increment(1);
                NanoUsd::ZERO
            }
            _ => NanoUsd::ZERO,
        };
        event.status = outcome.status;
        event.error_type = outcome.error_type.map(str::to_owned);
        event.prompt_tokens = tokens.prompt;
        event.completion_tokens = tokens.completion;
        event.cached_tokens = tokens.cached;
        event.served_model = served_model(outcome.served_model, outcome.deployment);
        event.partial = outcome.partial;
        event.estimated = outcome.estimated;
        if let Some(d) = outcome.deployment {
            event.provider = Some(d.provider.clone());
            event.deployment = Some(d.id.clone());
        }
        event.cost_nano_usd = charged;
        self.publish(event);
        charged
    }

    fn publish(&mut self, mut event: UsageEvent) {
        event.latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(a) = &self.admitted {
            a.settle(event.cost_nano_usd, event.prompt_tokens.saturating_add(event.completion_tokens));
        }
        if event.cost_nano_usd.0 > 0 {
            counter!("tollgate_spend_nano_usd_total", "model" => event.requested_model.clone())
                .increment(event.cost_nano_usd.0.unsigned_abs());
        }
        // Never blocks: the room was taken at admission. A request admitted without room
        // (policy `serve`) has its event counted and dropped by the sink.
        let permit = self.permit.take().unwrap_or_else(Permit::unbacked);
        self.sink.publish(permit, event);
    }
}

/// Token counts as the event records them: at most `limits::MAX_TOKENS_PER_REQUEST` each.
/// Counts a provider reports are believed only within that bound already; Tollgate's own
/// estimates (the bytes of a body, of a stream that ran for hours) are bounded by nothing but
/// time. A count past the bound is charged at the bound, as a cost past its bound is: the
/// ledger would refuse the event, and leave the request unbilled.
fn within_bounds(tokens: Tokens) -> Tokens {
    let max = tollgate_schemas::limits::MAX_TOKENS_PER_REQUEST;
    if tokens.prompt <= max && tokens.completion <= max && tokens.cached <= max {
        return tokens;
    }
    counter!("tollgate_token_counts_clamped_total").increment(1);
    tracing::warn!("token counts beyond the per-request bound; charging the bound");
    Tokens { prompt: tokens.prompt.min(max), completion: tokens.completion.min(max), cached: tokens.cached.min(max) }
}

/// The model a provider says it served, as the event records it. The name comes from the
/// provider's answer: one the ledger would refuse (too long, control characters) would get the
/// whole event dead-lettered and the request left unbilled, so the deployment's own model name
/// stands in for it.
fn served_model(reported: Option<String>, deployment: Option<&Deployment>) -> Option<String> {
    let max = tollgate_schemas::limits::MAX_NAME_BYTES;
    match reported {
        Some(name) if tollgate_schemas::limits::check_name("served_model", &name, max).is_ok() => Some(name),
        Some(_) => {
            counter!("tollgate_upstream_model_names_refused_total").increment(1);
            tracing::warn!("a provider named the served model out of bounds; recording the deployment's model");
            deployment.map(|d| d.upstream_model.clone())
        }
        None => None,
    }
}

impl Drop for UsageRecorder {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            // The client went away before the provider answered; the upstream call was cancelled
            // with the request, so nothing was generated for it.
            event.status = CLIENT_CLOSED;
            event.error_type = Some("client_disconnected".to_owned());
            event.partial = true;
            self.publish(event);
        }
    }
}

#[cfg(test)]
mod fuzz;
