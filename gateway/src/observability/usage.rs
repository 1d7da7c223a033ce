//! Per-request metrics, recorded once when a request's usage event is published: the
//! OpenTelemetry GenAI client and server metrics, and spend and tokens by team and model. Also
//! refusals by reason and budget utilisation, recorded at admission.
//!
//! GenAI names follow the semantic conventions (`gen_ai.client.token.usage`, ...) in their
//! Prometheus form: dots become underscores and the unit `s` becomes `_seconds`.

use super::labels::opt_in;
use super::{litellm, Policy};
use crate::error::{GatewayError, Scope};
use crate::providers::Endpoint;
use metrics::{counter, SharedString};
use std::time::Duration;
use tollgate_schemas::{NanoUsd, UsageEvent};

pub const TOKEN_USAGE: &str = "gen_ai_client_token_usage";
pub const OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token_seconds";
pub const TIME_PER_OUTPUT_TOKEN: &str = "gen_ai_server_time_per_output_token_seconds";

/// `gen_ai.operation.name` of an endpoint.
pub fn operation_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        // Not one of the GenAI conventions' well-known operations: its own name.
        Endpoint::Moderations => "moderation",
        Endpoint::Rerank => "rerank",
        Endpoint::AudioSpeech => "text_to_speech",
        Endpoint::ImageGenerations => "image_generation",
        Endpoint::AudioTranscriptions => "speech_to_text",
        Endpoint::AudioTranslations => "speech_translation",
    }
}

/// `gen_ai.provider.name` of a provider prefix: the convention's well-known value where it has
/// one, else the prefix.
fn provider_name(policy: &Policy, provider: Option<&str>) -> SharedString {
    let known = match provider {
        Some("azure" | "azure_ai") => "azure.ai.openai",
        Some("gemini") => "gcp.gemini",
        Some("vertex_ai") => "gcp.vertex_ai",
        Some("bedrock") => "aws.bedrock",
        Some("mistral") => "mistral_ai",
        Some("xai") => "x_ai",
        other => return policy.providers.get_opt(other),
    };
    SharedString::const_str(known)
}

/// What the usage event does not say about a request.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub operation: &'static str,
    /// The `model` label (`Router::metric_label`): the model group, never a name a client chose
    /// through a wildcard.
    pub model: &'a str,
    /// From sending the request upstream to the first generated token of a stream.
    pub first_token: Option<Duration>,
}

/// Records the metrics of one finished request.
pub fn record(event: &UsageEvent, timing: Request<'_>) {
    record_with(super::policy(), event, timing);
}

pub fn record_with(policy: &Policy, event: &UsageEvent, timing: Request<'_>) {
    let request_model = policy.models.get(timing.model);
    // A wildcard deployment serves whatever name the client sent: its response model would be
    // that name again, so it is labelled by the pattern, like the request.
    let response_model = if timing.model == event.requested_model {
        policy.models.get_opt(event.served_model.as_deref())
    } else {
        request_model.clone()
    };
    let provider = provider_name(policy, event.provider.as_deref());
    let handles = &policy.handles;
    let error_type = if event.status >= 400 { event.status.to_string() } else { String::new() };
    let genai = [
        ("gen_ai_operation_name", timing.operation),
        ("gen_ai_provider_name", &*provider),
        ("gen_ai_request_model", &*request_model),
        ("gen_ai_response_model", &*response_model),
    ];
    let [operation, provider_label, requested, responded] = genai;
    handles
        .histogram(OPERATION_DURATION, &[operation, provider_label, requested, responded, ("error_type", &error_type)])
        .record(event.latency_ms as f64 / 1000.0);
    if event.prompt_tokens > 0 || event.completion_tokens > 0 {
        for (kind, n) in [("input", event.prompt_tokens), ("output", event.completion_tokens)] {
            let labels = [operation, provider_label, requested, responded, ("gen_ai_token_type", kind)];
            handles.histogram(TOKEN_USAGE, &labels).record(n as f64);
        }
    }
    if let Some(first) = timing.first_token {
        handles.histogram(TIME_TO_FIRST_TOKEN, &genai).record(first.as_secs_f64());
        let total = Duration::from_millis(event.latency_ms);
        if event.completion_tokens > 1 && total > first {
            let per_token = (total - first).as_secs_f64() / (event.completion_tokens - 1) as f64;
            handles.histogram(TIME_PER_OUTPUT_TOKEN, &genai).record(per_token);
        }
    }
    let tenant = Tenant::of(policy, event, request_model.clone());
    if event.cost_nano_usd.0 > 0 {
        handles
            .counter("tollgate_tenant_spend_nano_usd_total", &tenant.label_strs())
            .increment(event.cost_nano_usd.0.unsigned_abs());
    }
    for (kind, n) in [("input", event.prompt_tokens), ("output", event.completion_tokens)] {
        if n > 0 {
            let [team, model, alias, customer] = tenant.label_strs();
            handles
                .counter("tollgate_tenant_tokens_total", &[team, model, alias, customer, ("type", kind)])
                .increment(n);
        }
    }
    if policy.litellm {
        litellm::record(policy, &tenant, event, timing);
    }
}

/// The tenant labels of a request.
pub(super) struct Tenant {
    pub team: SharedString,
    pub model: SharedString,
    pub key_alias: SharedString,
    pub customer: SharedString,
}

impl Tenant {
    fn of(policy: &Policy, event: &UsageEvent, model: SharedString) -> Tenant {
        Tenant {
            team: policy.team.get_opt(event.team_id.as_deref()),
            model,
            key_alias: opt_in(policy.key_alias.as_ref(), event.key_alias.as_deref()),
            customer: opt_in(policy.customer.as_ref(), event.customer_id.as_deref()),
        }
    }

    /// The labels as recorded.
    fn label_strs(&self) -> [(&'static str, &str); 4] {
        [("team", &*self.team), ("model", &*self.model), ("key_alias", &*self.key_alias), ("customer", &*self.customer)]
    }
}

/// Counts a request refused before reaching a provider, by its error code.
pub fn refused(err: &GatewayError) {
    let (_, code) = err.kind_and_code();
    counter!("tollgate_requests_refused_total", "reason" => code).increment(1);
    if super::policy().litellm {
        litellm::refused(err, code);
    }
}

/// Records how much of a team's budget is spent, each time a request is checked against it.
pub fn budget_checked(scope: Scope, scope_id: &str, spent: NanoUsd, max: NanoUsd) {
    let Some(team) = scope_id.strip_prefix("team/").filter(|_| scope == Scope::Team) else { return };
    let policy = super::policy();
    let team = policy.team.get(team);
    if team == SharedString::const_str(super::labels::OTHER) || max.0 <= 0 {
        return;
    }
    metrics::gauge!("tollgate_budget_utilisation_ratio", "scope" => "team", "team" => team.clone())
        .set(spent.0 as f64 / max.0 as f64);
    if policy.litellm {
        litellm::team_budget(team, spent, max);
    }
}

#[cfg(test)]
mod tests;
