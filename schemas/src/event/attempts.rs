//! The upstream attempts of a request that was retried or fell back (docs/design.md, "Attempts"):
//! each call to a deployment, in order, with its outcome. Recorded only when a request made more
//! than one attempt; a request answered by its first attempt carries none (the event's own
//! `provider`, `deployment`, `status` and `latency_ms` describe that one call).
//!
//! An attempt names its deployment by its id (`provider/upstream_model#index`) only: never an
//! `api_base`, a key or any part of the prompt.

use serde::{Deserialize, Serialize};

/// One call to one deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAttempt {
    /// The model group the deployment was picked from: the requested model, or the fallback
    /// the request moved on to.
    pub model_group: String,
    /// The deployment's id, `provider/upstream_model#index`.
    pub deployment: String,
    /// The deployment's provider (`openai`, `anthropic`, ...).
    pub provider: String,
    /// How the request came to this attempt.
    pub kind: AttemptKind,
    /// What the attempt came to.
    pub outcome: AttemptOutcome,
    /// The provider's HTTP status, when it answered (`ok` and `error_status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// From sending the attempt to its answer's headers, or to its failure.
    pub latency_ms: u64,
}

/// How a request came to an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// The request's first call.
    First,
    /// Another call within the same model group, after a retryable failure.
    Retry,
    /// The first call to a fallback model group.
    Fallback,
}

/// What an attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The provider answered with a success status: the request's answer.
    Ok,
    /// The provider answered with an error status (`status`).
    ErrorStatus,
    /// No answer within the deployment's timeout.
    Timeout,
    /// No connection, or it broke before an answer.
    Connect,
    /// The client went away while the attempt was waiting for the provider.
    Cancelled,
}

impl AttemptOutcome {
    /// The outcome's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::ErrorStatus => "error_status",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Connect => "connect",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_the_wire() {
        let a = UpstreamAttempt {
            model_group: "gpt-4o".into(),
            deployment: "openai/gpt-4o#1".into(),
            provider: "openai".into(),
            kind: AttemptKind::Fallback,
            outcome: AttemptOutcome::ErrorStatus,
            status: Some(503),
            latency_ms: 12,
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["kind"], "fallback");
        assert_eq!(v["outcome"], "error_status");
        assert_eq!(v["status"], 503);
        let timeout = UpstreamAttempt { outcome: AttemptOutcome::Timeout, status: None, ..a };
        let v = serde_json::to_value(&timeout).unwrap();
        assert!(v.get("status").is_none(), "no status without an answer");
        assert_eq!(v["outcome"], AttemptOutcome::Timeout.as_str());
        assert_eq!(serde_json::from_value::<UpstreamAttempt>(v).unwrap(), timeout);
    }
}
