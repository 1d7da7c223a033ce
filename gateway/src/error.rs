//! The gateway's one error type, its status mapping, and the one place that renders the OpenAI
//! error envelope `{"error": {"message", "type", "param", "code"}}`.
//!
//! Messages here reach clients: they must never contain a virtual key, a provider key or an
//! upstream URL.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<&'static str> },
    #[error("{message}")]
    InvalidField { message: String, field: String },
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("missing API key: pass it as 'Authorization: Bearer <key>'")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this API key is blocked")]
    KeyBlocked,
    #[error("this API key has expired")]
    KeyExpired,
    /// The key's team, user or organization (or the request's customer) is blocked.
    #[error("this {0} is blocked")]
    Blocked(Scope),
    /// The key names a team, user or organization that no longer exists.
    #[error("this API key's {0} no longer exists")]
    TenantMissing(Scope),
    #[error(
        "budget exceeded for this {scope}: spent {spent} USD of {max} USD{}{}",
        if *.committed { "; the rest is committed to requests in flight" } else { "" },
        resets_suffix(.resets_at)
    )]
    BudgetExceeded {
        scope: Scope,
        spent: tollgate_schemas::NanoUsd,
        max: tollgate_schemas::NanoUsd,
        resets_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Refused because what is left is leased to requests in flight (credit leases).
        committed: bool,
    },
    /// A batch whose most possible cost is more than what is left of a hard budget: refused
    /// at creation (docs/design.md §2.13, "Budgets"). The same type and code as a request
    /// over budget.
    #[error(
        "budget exceeded for this {scope}: this batch can cost up to {max_cost} USD and {left} USD is left of its {max} USD budget{}",
        if *.held { " (the rest is held by requests and batches in flight)" } else { "" }
    )]
    BatchOverBudget {
        scope: Scope,
        max_cost: tollgate_schemas::NanoUsd,
        left: tollgate_schemas::NanoUsd,
        max: tollgate_schemas::NanoUsd,
        held: bool,
    },
    #[error("{limit} limit of this {scope} reached ({allowed} per gateway); retry in {retry_after_secs} s")]
    RateLimited { scope: Scope, limit: RateLimit, allowed: u64, retry_after_secs: u64 },
    #[error("budgets cannot be checked: this gateway has no budget state newer than {bound_secs} s; retry shortly")]
    BudgetViewStale { bound_secs: u64 },
    /// The budget lease store (the ledger database) could not grant budget: hard budgets fail
    /// closed.
    #[error("budgets cannot be checked: the budget lease store is unavailable; retry shortly")]
    BudgetLeaseUnavailable,
    #[error("{0}")]
    Forbidden(String),
    /// A field's value names what the caller's role may not touch (another team, another user).
    #[error("{message}")]
    ForbiddenField { message: String, field: &'static str },
    /// A console request made with the session cookie lacks its session's `X-CSRF-Token`.
    #[error("this change needs the session's X-CSRF-Token header")]
    CsrfMismatch,
    /// The console's session cookie names no live session (signed out or expired).
    #[error("the console session has expired or was signed out; sign in again")]
    SessionExpired,
    #[error("too many sign-in attempts; retry in {retry_after_secs} s")]
    SignInThrottled { retry_after_secs: u64 },
    #[error("{kind} {id:?} does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    /// The database (tenancy records, ledgers) cannot be reached now.
    #[error("the database cannot be reached now; retry shortly")]
    DatabaseUnavailable,
    #[error("the admin API needs a database: configure `database` (Cassandra or ScyllaDB)")]
    AdminUnavailable,
    #[error("this API key may not charge this customer: it belongs to another team or organization")]
    CustomerNotAllowed,
    #[error("this API key may not use model '{0}'")]
    ModelNotAllowed(String),
    /// A guardrail blocked the request or its answer; the text it matched is never echoed.
    #[error("blocked by guardrail '{guardrail}'")]
    GuardrailBlocked { guardrail: String },
    /// An external guardrail that fails closed could not give a verdict.
    #[error("guardrail '{guardrail}' could not check this request; it fails closed")]
    GuardrailUnavailable { guardrail: String },
    #[error("model '{0}' does not exist on this gateway")]
    ModelNotFound(String),
    #[error(
        "this request's prompt ({tokens} tokens, estimated) is longer than the context window of every deployment of \
         model '{model}' (at most {window} tokens)"
    )]
    ContextWindowExceeded { model: String, tokens: u64, window: u64 },
    #[error("model '{0}' has no price, and this gateway is set to refuse models without one")]
    ModelUnpriced(String),
    #[error("the upstream provider for model '{model}' is unavailable")]
    UpstreamUnavailable { model: String },
    #[error("the upstream provider for model '{model}' did not answer within {timeout_ms} ms")]
    UpstreamTimeout { model: String, timeout_ms: u64 },
    #[error("the upstream provider for model '{model}' answered with more than {limit} bytes")]
    UpstreamResponseTooLarge { model: String, limit: usize },
    #[error("the client closed the connection")]
    ClientClosed,
    #[error("usage metering is backlogged; retry shortly")]
    MeteringBacklogFull,
    /// The usage log cannot be written (the embedded log's disk is full, say).
    #[error("usage metering is unavailable; retry shortly")]
    MeteringUnavailable,
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
}

fn resets_suffix(at: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map(|t| format!("; the budget resets at {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or_default()
}

/// Who a limit or a block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Key,
    Team,
    User,
    Customer,
    Organization,
    /// A per-model budget or limit (of the key or the team).
    Model,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Key => "API key",
            Scope::Team => "team",
            Scope::User => "user",
            Scope::Customer => "customer",
            Scope::Organization => "organization",
            Scope::Model => "model",
        })
    }
}

/// Which rate limit was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimit {
    RequestsPerMinute,
    TokensPerMinute,
    ParallelRequests,
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RateLimit::RequestsPerMinute => "requests-per-minute",
            RateLimit::TokensPerMinute => "tokens-per-minute",
            RateLimit::ParallelRequests => "parallel-requests",
        })
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: EnvelopeBody<'a>,
}

#[derive(Serialize)]
struct EnvelopeBody<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl GatewayError {
    /// `(type, code)` of the envelope; `code` is also the `error_type` of the usage event.
    pub fn kind_and_code(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::InvalidRequest { .. } | GatewayError::InvalidField { .. } => {
                ("invalid_request_error", "invalid_request")
            }
            GatewayError::Blocked(scope) => match scope {
                Scope::Customer => ("permission_error", "customer_blocked"),
                Scope::Team => ("authentication_error", "team_blocked"),
                Scope::User => ("authentication_error", "user_blocked"),
                Scope::Organization => ("authentication_error", "organization_blocked"),
                Scope::Key | Scope::Model => ("authentication_error", "key_blocked"),
            },
            GatewayError::TenantMissing(scope) => match scope {
                Scope::Team => ("authentication_error", "team_not_found"),
                Scope::User => ("authentication_error", "user_not_found"),
                _ => ("authentication_error", "organization_not_found"),
            },
            GatewayError::BudgetExceeded { scope, .. } | GatewayError::BatchOverBudget { scope, .. } => (
                "budget_exceeded",
                match scope {
                    Scope::Key => "key_budget_exceeded",
                    Scope::Team => "team_budget_exceeded",
                    Scope::User => "user_budget_exceeded",
                    Scope::Customer => "customer_budget_exceeded",
                    Scope::Organization => "organization_budget_exceeded",
                    Scope::Model => "model_budget_exceeded",
                },
            ),
            GatewayError::RateLimited { limit, .. } => (
                "rate_limit_error",
                match limit {
                    RateLimit::RequestsPerMinute => "rpm_limit_exceeded",
                    RateLimit::TokensPerMinute => "tpm_limit_exceeded",
                    RateLimit::ParallelRequests => "parallel_request_limit_exceeded",
                },
            ),
            GatewayError::BudgetViewStale { .. } => ("api_error", "budget_view_stale"),
            GatewayError::BudgetLeaseUnavailable => ("api_error", "budget_lease_unavailable"),
            GatewayError::Forbidden(_) | GatewayError::ForbiddenField { .. } => ("permission_error", "forbidden"),
            GatewayError::CsrfMismatch => ("permission_error", "csrf_token_mismatch"),
            GatewayError::SessionExpired => ("authentication_error", "session_expired"),
            GatewayError::SignInThrottled { .. } => ("rate_limit_error", "sign_in_throttled"),
            GatewayError::NotFound { .. } => ("invalid_request_error", "not_found"),
            GatewayError::Conflict(_) => ("invalid_request_error", "conflict"),
            GatewayError::AdminUnavailable => ("api_error", "admin_api_unavailable"),
            GatewayError::DatabaseUnavailable => ("api_error", "database_unavailable"),
            GatewayError::BodyTooLarge { .. } => ("invalid_request_error", "body_too_large"),
            GatewayError::MissingKey => ("authentication_error", "missing_api_key"),
            GatewayError::InvalidKey => ("authentication_error", "invalid_api_key"),
            GatewayError::KeyBlocked => ("authentication_error", "key_blocked"),
            GatewayError::KeyExpired => ("authentication_error", "key_expired"),
            GatewayError::ModelNotAllowed(_) => ("permission_error", "model_not_allowed"),
            GatewayError::CustomerNotAllowed => ("permission_error", "customer_not_allowed"),
            GatewayError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::GuardrailBlocked { .. } => ("invalid_request_error", "guardrail_blocked"),
            GatewayError::GuardrailUnavailable { .. } => ("api_error", "guardrail_unavailable"),
            GatewayError::ModelUnpriced(_) => ("invalid_request_error", "model_not_priced"),
            GatewayError::ContextWindowExceeded { .. } => ("invalid_request_error", "context_length_exceeded"),
            GatewayError::UpstreamUnavailable { .. } => ("api_error", "upstream_unavailable"),
            GatewayError::UpstreamTimeout { .. } => ("timeout_error", "upstream_timeout"),
            GatewayError::UpstreamResponseTooLarge { .. } => ("api_error", "upstream_response_too_large"),
            GatewayError::RouteNotFound(_) => ("invalid_request_error", "route_not_found"),
            GatewayError::MeteringBacklogFull => ("api_error", "metering_backlog_full"),
            GatewayError::MeteringUnavailable => ("api_error", "metering_unavailable"),
            GatewayError::ClientClosed => ("invalid_request_error", "client_disconnected"),
            GatewayError::Internal(_) => ("api_error", "internal_error"),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => *param,
            GatewayError::InvalidField { field, .. } => Some(field),
            GatewayError::ForbiddenField { field, .. } => Some(field),
            GatewayError::ModelNotAllowed(_) | GatewayError::ModelNotFound(_) | GatewayError::ModelUnpriced(_) => {
                Some("model")
            }
            _ => None,
        }
    }

    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        GatewayError::InvalidRequest { message: message.into(), param }
    }

    /// A 400 naming the request field at fault.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        GatewayError::InvalidField { field: field.into(), message: message.into() }
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            GatewayError::InvalidRequest { .. }
            | GatewayError::InvalidField { .. }
            | GatewayError::ModelUnpriced(_)
            | GatewayError::ContextWindowExceeded { .. }
            | GatewayError::GuardrailBlocked { .. }
            | GatewayError::BudgetExceeded { .. }
            | GatewayError::BatchOverBudget { .. } => StatusCode::BAD_REQUEST,
            GatewayError::Blocked(Scope::Customer)
            | GatewayError::Forbidden(_)
            | GatewayError::ForbiddenField { .. }
            | GatewayError::CsrfMismatch => StatusCode::FORBIDDEN,
            GatewayError::SessionExpired => StatusCode::UNAUTHORIZED,
            GatewayError::SignInThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::GuardrailUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Blocked(_) | GatewayError::TenantMissing(_) => StatusCode::UNAUTHORIZED,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::BudgetViewStale { .. }
            | GatewayError::BudgetLeaseUnavailable
            | GatewayError::AdminUnavailable
            | GatewayError::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::NotFound { .. } => StatusCode::NOT_FOUND,
            GatewayError::Conflict(_) => StatusCode::CONFLICT,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::MissingKey
            | GatewayError::InvalidKey
            | GatewayError::KeyBlocked
            | GatewayError::KeyExpired => StatusCode::UNAUTHORIZED,
            GatewayError::ModelNotAllowed(_) | GatewayError::CustomerNotAllowed => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound(_) | GatewayError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::UpstreamUnavailable { .. } | GatewayError::UpstreamResponseTooLarge { .. } => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::MeteringBacklogFull | GatewayError::MeteringUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            // nginx's "client closed request"; nobody reads it.
            GatewayError::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (kind, code) = self.kind_and_code();
        let envelope =
            Envelope { error: EnvelopeBody { message: self.to_string(), kind, param: self.param(), code: Some(code) } };
        let mut response = HttpResponse::build(self.status_code());
        if let GatewayError::RateLimited { retry_after_secs, .. } | GatewayError::SignInThrottled { retry_after_secs } =
            self
        {
            response.insert_header(("retry-after", retry_after_secs.to_string()));
        }
        response.json(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn renders_the_openai_envelope() {
        let resp = GatewayError::invalid("messages must be an array", Some("messages")).error_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let bytes = resp.into_body().try_into_bytes().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["code"], "invalid_request");
        assert_eq!(v["error"]["message"], "messages must be an array");
    }
}
