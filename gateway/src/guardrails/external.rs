//! An external guardrail in LiteLLM's generic guardrail API shape: `POST
//! {api_base}/beta/litellm_basic_guardrail_api` with the texts, answered `NONE`, `BLOCKED` or
//! `GUARDRAIL_INTERVENED` (with the texts rewritten). The call has a timeout and its answer a
//! size bound; a failed call blocks or passes as `unreachable_fallback` says. The service's
//! reason for a block is logged at debug level only and never returned to the client.

use super::config::{GuardrailParams, DEFAULT_TIMEOUT};
use crate::config::Secret;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

const PATH: &str = "/beta/litellm_basic_guardrail_api";
/// Default and largest answer read from the service.
const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// What a failed call does.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    #[default]
    FailClosed,
    FailOpen,
}

#[derive(Debug)]
pub struct External {
    url: String,
    api_key: Option<Secret>,
    params: serde_json::Map<String, serde_json::Value>,
    timeout: Duration,
    max_response_bytes: usize,
    pub fallback: Fallback,
}

/// Who is asking, as LiteLLM's `request_data` names it.
#[derive(Debug, Default, Serialize)]
pub struct RequestData {
    pub user_api_key_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_api_key_alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_api_key_user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_api_key_team_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_api_key_org_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_api_key_end_user_id: Option<String>,
}

#[derive(Serialize)]
struct Ask<'a> {
    texts: &'a [String],
    request_data: &'a RequestData,
    input_type: &'static str,
    litellm_call_id: &'a str,
    additional_provider_specific_params: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Answer {
    action: String,
    #[serde(default)]
    blocked_reason: Option<String>,
    #[serde(default)]
    texts: Option<Vec<String>>,
}

/// The service's verdict.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Block,
    /// The texts, rewritten, one for each sent.
    Rewrite(Vec<String>),
}

/// Why a call gave no verdict (never shown to the client).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("call failed: {0}")]
    Transport(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("answer not understood: {0}")]
    Invalid(String),
}

impl External {
    pub fn build(
        p: &GuardrailParams,
        env: &HashMap<String, Secret>,
        _origin: &str,
    ) -> Result<External, (&'static str, String)> {
        let base = p.api_base.as_deref().ok_or(("api_base", "is required".to_owned()))?;
        let base = resolve(base, env).map_err(|m| ("api_base", m))?;
        let parsed = reqwest::Url::parse(&base).map_err(|e| ("api_base", format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(("api_base", "must be an http or https URL".into()));
        }
        let base = base.trim_end_matches('/');
        let url = if base.ends_with(PATH) { base.to_owned() } else { format!("{base}{PATH}") };
        let api_key = match &p.api_key {
            Some(k) => Some(k.resolve(env).map_err(|e| ("api_key", e.to_string()))?),
            None => None,
        };
        let timeout = p.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(("timeout_ms", "must be 1 to 60000".into()));
        }
        let max_response_bytes = p.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes == 0 || max_response_bytes > MAX_RESPONSE_BYTES {
            return Err(("max_response_bytes", format!("must be 1 to {MAX_RESPONSE_BYTES}")));
        }
        Ok(External {
            url,
            api_key,
            params: p.additional_provider_specific_params.clone().unwrap_or_default(),
            timeout,
            max_response_bytes,
            fallback: p.unreachable_fallback.unwrap_or_default(),
        })
    }

    /// Asks the service about `texts` (`input_type` `request` or `response`).
    pub async fn check(
        &self,
        client: &reqwest::Client,
        texts: &[String],
        request_data: &RequestData,
        input_type: &'static str,
        call_id: &str,
    ) -> Result<Verdict, CallError> {
        let ask = Ask {
            texts,
            request_data,
            input_type,
            litellm_call_id: call_id,
            additional_provider_specific_params: &self.params,
        };
        let mut req = client.post(&self.url).timeout(self.timeout).json(&ask);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key.expose());
        }
        let call = async {
            let mut resp =
                req.send().await.map_err(|e| CallError::Transport(crate::providers::classify(&e).to_string()))?;
            if !resp.status().is_success() {
                return Err(CallError::Status(resp.status().as_u16()));
            }
            let mut body = Vec::new();
            while let Some(chunk) =
                resp.chunk().await.map_err(|e| CallError::Transport(crate::providers::classify(&e).to_string()))?
            {
                if body.len() + chunk.len() > self.max_response_bytes {
                    return Err(CallError::TooLarge(self.max_response_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        let body =
            tokio::time::timeout(self.timeout, call).await.map_err(|_| CallError::Transport("timed out".into()))??;
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| CallError::Invalid(e.to_string()))?;
        match answer.action.as_str() {
            "NONE" => Ok(Verdict::Pass),
            "BLOCKED" => {
                tracing::debug!(reason = answer.blocked_reason.as_deref().unwrap_or(""), "external guardrail blocked");
                Ok(Verdict::Block)
            }
            "GUARDRAIL_INTERVENED" => match answer.texts {
                Some(t) if t.len() == texts.len() => Ok(Verdict::Rewrite(t)),
                None => Ok(Verdict::Pass),
                Some(_) => Err(CallError::Invalid("`texts` does not have one entry per text sent".into())),
            },
            other => {
                Err(CallError::Invalid(format!("unknown action `{}`", other.chars().take(32).collect::<String>())))
            }
        }
    }
}

fn resolve(value: &str, env: &HashMap<String, Secret>) -> Result<String, String> {
    if value.starts_with("os.environ/") {
        Secret::new(value).resolve(env).map(|s| s.expose().to_owned()).map_err(|e| e.to_string())
    } else {
        Ok(value.to_owned())
    }
}
