//! Builds and publishes the one usage event of each request that reached a provider.
//!
//! A [`UsageRecorder`] is created just before the provider is called. Whatever happens next —
//! success, upstream error, timeout, or the client going away (the handler future is dropped) —
//! it publishes exactly one event: `finish` consumes it, and `Drop` covers every other exit.

use crate::config::DisconnectPolicy;
use crate::http::wire::ProxyRequest;
use crate::limits::admission::Admitted;
use crate::limits::pricing::{cost_by_token_type, Tokens};
use crate::metering::sink::{Permit, UsageSink, Written};
use crate::observability::usage::{operation_name, Request};
use crate::providers::Deployment;
use crate::tenancy::auth::Principal;
use chrono::{DateTime, Utc};
use metrics::counter;
use std::sync::Arc;
use std::time::Instant;
use tollgate_schemas::{NanoUsd, UsageEvent, USAGE_EVENT_VERSION};
use uuid::Uuid;

/// Status recorded when the client disconnected before the answer (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

pub use crate::metering::attempts::Attempt;

/// How a request whose client hung up is charged (`billing.on_client_disconnect`) and what
/// that needs: the request, for its prompt, and the deployment being tried.
pub struct Disconnects {
    pub policy: DisconnectPolicy,
    pub request: Arc<ProxyRequest>,
    pub attempt: Arc<Attempt>,
}

pub struct UsageRecorder {
    sink: Arc<dyn UsageSink>,
    disconnects: Option<Disconnects>,
    /// Set once the client is known to have hung up, and when: the event is marked so and
    /// answered 499, whatever it is charged.
    disconnected: Option<&'static str>,
    /// The room taken for the event at admission; given back if no event is published.
    permit: Option<Permit>,
    event: Option<UsageEvent>,
    started: Instant,
    /// The request's admission: its spend and tokens are counted here when it ends, and its
    /// parallel-request slots are freed when the recorder goes.
    admitted: Option<Admitted>,
    /// From the upstream call to the first generated token of a stream (for metrics).
    first_token: Option<std::time::Duration>,
    /// The `model` label of its metrics (see `Router::metric_label`): never a name a client
    /// chose through a wildcard.
    model_label: String,
    /// The request's root span when it is traced (`traces`), else none: its outcome is recorded
    /// there, and `metering` is its child.
    root: Option<tollgate_schemas::telemetry::recorder::Root>,
    /// `gen_ai.operation.name` of its metrics when no parsed request says it (pass-through).
    operation: Option<&'static str>,
    /// The request's upstream attempts, for the event's `attempts`.
    tried: Option<Arc<Attempt>>,
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
            client_disconnected: None,
            budget_windows: admitted.budget_windows(),
            tags: principal.tags.clone(),
            ..UsageEvent::default()
        };
        UsageRecorder {
            sink,
            disconnects: None,
            disconnected: None,
            permit: Some(permit),
            event: Some(event),
            started,
            admitted: Some(admitted),
            first_token: None,
            model_label: requested_model.to_owned(),
            root: None,
            operation: None,
            tried: None,
        }
    }

    /// Notes when a stream's first token arrived, counted from the upstream call.
    pub fn first_token(&mut self, after: std::time::Duration) {
        self.first_token.get_or_insert(after);
    }

    /// The `model` label its metrics carry, when not the requested model itself.
    pub fn labelled(mut self, model_label: &str) -> UsageRecorder {
        model_label.clone_into(&mut self.model_label);
        self
    }

    /// The request's root span and trace id: the event carries the id, the root the outcome.
    pub fn traced(
        mut self,
        root: Option<tollgate_schemas::telemetry::recorder::Root>,
        trace_id: Option<String>,
    ) -> UsageRecorder {
        if let Some(event) = self.event.as_mut() {
            event.trace_id = trace_id;
        }
        self.root = root;
        self
    }

    /// The GenAI operation its metrics name, for a request without a parsed `ProxyRequest`.
    pub fn operation(mut self, operation: &'static str) -> UsageRecorder {
        self.operation = Some(operation);
        self
    }

    /// The upstream attempts the routed call notes, listed in the event when there are several.
    pub fn tried(mut self, attempts: Arc<Attempt>) -> UsageRecorder {
        self.tried = Some(attempts);
        self
    }

    /// How to charge the request if its client hangs up.
    pub fn on_disconnect(mut self, disconnects: Disconnects) -> UsageRecorder {
        self.disconnects = Some(disconnects);
        self
    }

    /// The client hung up (`when`: `waiting_for_provider`, `reading_answer`,
    /// `during_stream`); the event, whenever it is finished, says so.
    pub fn mark_disconnected(&mut self, when: &'static str) {
        self.disconnected = Some(when);
    }

    /// The policy for a hang-up (the default when none was given).
    pub fn disconnect_policy(&self) -> DisconnectPolicy {
        self.disconnects.as_ref().map_or_else(DisconnectPolicy::default, |d| d.policy)
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
        self.finish_event(outcome).0
    }

    /// [`finish`](Self::finish) for an answer: also returns what the answer awaits before it
    /// goes to the client (its event durable as `spool.answer_after` asks).
    pub fn finish_answer(mut self, outcome: Outcome<'_>) -> (NanoUsd, Written) {
        self.finish_event(outcome)
    }

    /// Ends a request answered from the response cache: its own event, no tokens, `cost` (the
    /// configured price of a hit) and the tokens the stored answer saved. `refused`: the status
    /// and error code of a hit its post-call guardrails blocked (charged as a hit all the same,
    /// as a blocked answer is charged what the provider made).
    pub fn finish_cache_hit(
        mut self,
        cost: NanoUsd,
        saved: tollgate_schemas::event::CacheHit,
        served_model: Option<String>,
        refused: Option<(u16, &'static str)>,
    ) -> (NanoUsd, Written) {
        let Some(mut event) = self.event.take() else {
            return (NanoUsd::ZERO, Written::now());
        };
        let cost = cost.min(tollgate_schemas::limits::MAX_COST_PER_REQUEST);
        event.status = refused.map_or(200, |(status, _)| status);
        if let Some((_, code)) = refused {
            event.error_type = Some(code.to_owned());
        }
        event.served_model = served_model.filter(|m| {
            tollgate_schemas::limits::check_name("served_model", m, tollgate_schemas::limits::MAX_NAME_BYTES).is_ok()
        });
        event.cache = Some(saved);
        event.cost_nano_usd = cost;
        (cost, self.publish(event))
    }

    fn finish_event(&mut self, mut outcome: Outcome<'_>) -> (NanoUsd, Written) {
        let Some(mut event) = self.event.take() else {
            return (NanoUsd::ZERO, Written::now());
        };
        if let Some(when) = self.disconnected {
            event.client_disconnected = Some(when.to_owned());
            outcome.status = CLIENT_CLOSED;
            outcome.error_type = Some("client_disconnected");
            outcome.partial = true;
            if self.disconnect_policy() == DisconnectPolicy::ChargeDelivered && when != "during_stream" {
                // Nothing reached the client.
                outcome.tokens = Tokens::default();
            }
        }
        let tokens = within_bounds(outcome.tokens);
        let has_tokens = tokens.prompt > 0 || tokens.completion > 0;
        let charged = match outcome.deployment.map(|d| d.price) {
            Some(Some(price)) => {
                // Prices and believed token counts are bounded so that no request costs more
                // than the ledger accepts; should that ever fail, charge the bound (never
                // nothing), and say so.
                let max = tollgate_schemas::limits::MAX_COST_PER_REQUEST;
                match cost_by_token_type(&price, tokens) {
                    Ok((c, parts)) if c <= max => {
                        // Parts that sum to the cost exactly: finance's line per token type.
                        event.cost_by_token_type = parts;
                        c
                    }
                    _ => {
                        tracing::error!(event_id = %event.event_id, "cost beyond the per-request bound; charging the bound");
                        counter!("tollgate_cost_clamped_total").increment(1);
                        max
                    }
                }
            }
            Some(None) => {
                // Served at cost zero under `billing.unpriced_models: serve`: marked for finance.
                event.unpriced = true;
                if has_tokens {
                    counter!("tollgate_unpriced_requests_total", "model" => self.model_label.clone()).increment(1);
                }
                NanoUsd::ZERO
            }
            _ => NanoUsd::ZERO,
        };
        event.status = outcome.status;
        event.error_type = outcome.error_type.map(str::to_owned);
        event.prompt_tokens = tokens.prompt;
        event.completion_tokens = tokens.completion;
        event.cached_tokens = tokens.cached;
        event.cache_write_tokens = tokens.cache_write;
        event.reasoning_tokens = tokens.reasoning;
        event.audio_input_tokens = tokens.audio_input;
        event.audio_output_tokens = tokens.audio_output;
        event.image_input_tokens = tokens.image_input;
        event.image_output_tokens = tokens.image_output;
        event.search_units = tokens.search_units;
        event.characters = tokens.characters;
        event.images = tokens.images;
        event.pixels = tokens.pixels;
        event.audio_seconds = tokens.seconds;
        event.served_model = served_model(outcome.served_model, outcome.deployment);
        event.partial = outcome.partial;
        event.estimated = outcome.estimated;
        if let Some(d) = outcome.deployment {
            event.provider = Some(d.provider.clone());
            event.deployment = Some(d.id.clone());
        }
        if let Some(tried) = &self.tried {
            (event.attempts, event.attempts_omitted) = tried.for_event(&event.requested_model);
        }
        event.cost_nano_usd = charged;
        (charged, self.publish(event))
    }

    fn publish(&mut self, mut event: UsageEvent) -> Written {
        let _metering = crate::traces::metering_child(self.root.as_ref());
        crate::traces::record_outcome(self.root.as_ref(), &event);
        event.latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(a) = &self.admitted {
            a.settle(event.cost_nano_usd, event.prompt_tokens.saturating_add(event.completion_tokens));
        }
        let operation = self.operation.unwrap_or_else(|| {
            operation_name(
                self.disconnects.as_ref().map_or(crate::providers::Endpoint::ChatCompletions, |d| d.request.endpoint),
            )
        });
        let timing = Request { operation, model: &self.model_label, first_token: self.first_token };
        crate::observability::usage::record(&event, timing);
        if event.cost_nano_usd.0 > 0 {
            counter!("tollgate_spend_nano_usd_total", "model" => self.model_label.clone())
                .increment(event.cost_nano_usd.0.unsigned_abs());
        }
        // Never blocks: the room was taken at admission. A request admitted without room
        // (policy `serve`) has its event counted and dropped by the sink.
        let permit = self.permit.take().unwrap_or_else(Permit::unbacked);
        self.sink.publish(permit, event)
    }
}

/// Token counts as the event records them: at most `limits::MAX_TOKENS_PER_REQUEST` each.
/// Counts a provider reports are believed only within that bound already; Tollgate's own
/// estimates (the bytes of a body, of a stream that ran for hours) are bounded by nothing but
/// time. A count past the bound is charged at the bound, as a cost past its bound is: the
/// ledger would refuse the event, and leave the request unbilled.
fn within_bounds(tokens: Tokens) -> Tokens {
    let max = tollgate_schemas::limits::MAX_TOKENS_PER_REQUEST;
    if tokens.largest() <= max {
        return tokens;
    }
    counter!("tollgate_token_counts_clamped_total").increment(1);
    tracing::warn!("token counts beyond the per-request bound; charging the bound");
    tokens.clamped(max)
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
        if self.event.is_none() {
            return;
        }
        // The client went away before the provider answered and the call was cancelled with
        // the request (policy `finish_upstream` hands the call on instead of dropping it here).
        // Providers bill a cancelled call's prompt: so does `charge_prompt`, at the price of the
        // deployment being tried; `charge_delivered` charges nothing.
        self.disconnected = self.disconnected.or(Some("waiting_for_provider"));
        let (tokens, deployment) = match &self.disconnects {
            Some(d) if d.policy != DisconnectPolicy::ChargeDelivered => {
                (Tokens { prompt: d.request.prompt_tokens_estimate(), ..Tokens::default() }, d.attempt.get())
            }
            Some(d) => (Tokens::default(), d.attempt.get()),
            None => (Tokens::default(), None),
        };
        // No answer waits for this event: the client is gone.
        let _charged_and_unawaited = self.finish_event(Outcome {
            tokens,
            estimated: tokens.prompt > 0,
            deployment: deployment.as_deref(),
            ..Outcome::default()
        });
    }
}

#[cfg(test)]
mod fuzz;
