//! LiteLLM's Prometheus metric names and labels, for dashboards built on LiteLLM
//! (`gateway.metrics.litellm_compatible`; docs/observability.md has the mapping). Names are as
//! LiteLLM exposes them, counters with their `_total`. LiteLLM reports spend in USD as a float;
//! so does this, converted from the integer nano-USD at the last moment.
//!
//! Key labels (`hashed_api_key`) stay empty: a key's hash is never a label. `api_key_alias` and
//! `end_user` are filled only when their opt-in labels are on.

use super::usage::{Request, Tenant};
use crate::error::GatewayError;
use metrics::{counter, gauge, histogram, SharedString};
use tollgate_schemas::{NanoUsd, UsageEvent};

const EMPTY: SharedString = SharedString::const_str("");

fn usd(n: NanoUsd) -> f64 {
    n.0 as f64 / 1e9
}

/// Labels LiteLLM puts on its per-request metrics.
fn request_labels(t: &Tenant) -> Vec<(&'static str, SharedString)> {
    vec![
        ("end_user", t.customer.clone()),
        ("hashed_api_key", EMPTY),
        ("api_key_alias", t.key_alias.clone()),
        ("model", t.model.clone()),
        ("team", t.team.clone()),
        ("team_alias", EMPTY),
        ("user", EMPTY),
    ]
}

fn plus(
    mut labels: Vec<(&'static str, SharedString)>,
    more: &[(&'static str, SharedString)],
) -> Vec<(&'static str, SharedString)> {
    labels.extend(more.iter().cloned());
    labels
}

pub(super) fn record(policy: &super::Policy, t: &Tenant, event: &UsageEvent, timing: Request<'_>) {
    let labels = request_labels(t);
    let requested = [("requested_model", t.model.clone())];
    gauge!("litellm_spend_metric_total", &labels).increment(usd(event.cost_nano_usd));
    let tokens = event.prompt_tokens.saturating_add(event.completion_tokens);
    counter!("litellm_total_tokens_total", &labels).increment(tokens);
    let with_requested = plus(labels.clone(), &requested);
    counter!("litellm_total_tokens_metric_total", &with_requested).increment(tokens);
    counter!("litellm_input_tokens_metric_total", &with_requested).increment(event.prompt_tokens);
    counter!("litellm_output_tokens_metric_total", &with_requested).increment(event.completion_tokens);
    counter!("litellm_requests_metric_total", &labels).increment(1);
    let status = event.status.to_string();
    counter!(
        "litellm_proxy_total_requests_metric_total",
        &plus(labels.clone(), &[("status_code", status.clone().into())])
    )
    .increment(1);
    if event.status >= 400 {
        let class = event.error_type.clone().unwrap_or_default();
        let failed = plus(labels.clone(), &[("exception_status", status.into()), ("exception_class", class.into())]);
        counter!("litellm_proxy_failed_requests_metric_total", &failed).increment(1);
    }
    let seconds = event.latency_ms as f64 / 1000.0;
    histogram!("litellm_request_total_latency_metric", &labels).record(seconds);
    if let Some(first) = timing.first_token {
        histogram!("litellm_llm_api_time_to_first_token_metric", &labels).record(first.as_secs_f64());
    }
    if let Some(deployment) = &event.deployment {
        let d = deployment_labels(policy, t, deployment, event.provider.as_deref());
        counter!("litellm_deployment_total_requests_total", &d).increment(1);
        if event.status < 400 {
            counter!("litellm_deployment_success_responses_total", &d).increment(1);
        } else {
            counter!("litellm_deployment_failure_responses_total", &d).increment(1);
        }
    }
}

fn deployment_labels(
    policy: &super::Policy,
    t: &Tenant,
    deployment: &str,
    provider: Option<&str>,
) -> Vec<(&'static str, SharedString)> {
    vec![
        ("litellm_model_name", t.model.clone()),
        ("model_id", policy.deployments.get(deployment)),
        ("api_base", EMPTY),
        ("api_provider", policy.providers.get_opt(provider)),
        ("requested_model", t.model.clone()),
        ("hashed_api_key", EMPTY),
        ("api_key_alias", t.key_alias.clone()),
        ("team", t.team.clone()),
        ("team_alias", EMPTY),
    ]
}

/// A request refused before it reached a provider.
pub(super) fn refused(err: &GatewayError, code: &'static str) {
    use actix_web::ResponseError;
    let labels = [
        ("end_user", EMPTY),
        ("hashed_api_key", EMPTY),
        ("api_key_alias", EMPTY),
        ("requested_model", EMPTY),
        ("team", EMPTY),
        ("team_alias", EMPTY),
        ("user", EMPTY),
        ("exception_status", err.status_code().as_u16().to_string().into()),
        ("exception_class", SharedString::const_str(code)),
    ];
    counter!("litellm_proxy_failed_requests_metric_total", &labels).increment(1);
}

/// A team's budget, as LiteLLM reports it.
pub(super) fn team_budget(team: SharedString, spent: NanoUsd, max: NanoUsd) {
    let labels = [("team", team), ("team_alias", EMPTY)];
    gauge!("litellm_remaining_team_budget_metric", &labels).set(usd(NanoUsd(max.0.saturating_sub(spent.0))));
    gauge!("litellm_team_max_budget_metric", &labels).set(usd(max));
}

/// A deployment's state (0 healthy, 1 failing, 2 cooled down) under LiteLLM's name.
pub(super) fn deployment_state(model: SharedString, id: SharedString, provider: SharedString, state: f64) {
    let labels = [("litellm_model_name", model), ("model_id", id), ("api_base", EMPTY), ("api_provider", provider)];
    gauge!("litellm_deployment_state", &labels).set(state);
}

/// A deployment was cooled down.
pub fn cooled_down(model: &str, id: &str, provider: &str) {
    let policy = super::policy();
    if !policy.litellm {
        return;
    }
    let labels = [
        ("litellm_model_name", policy.models.get(model)),
        ("model_id", policy.deployments.get(id)),
        ("api_base", EMPTY),
        ("api_provider", policy.providers.get(provider)),
        ("exception_status", EMPTY),
    ];
    counter!("litellm_deployment_cooled_down_total", &labels).increment(1);
}
