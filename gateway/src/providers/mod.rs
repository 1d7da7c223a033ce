//! Upstream providers. Each deployment names a provider adapter; the adapter turns a request
//! into the provider's wire format and back.

pub mod openai_compatible;

use crate::config::Secret;
use bytes::Bytes;
use std::time::Duration;

/// One upstream deployment of a model (a `model_list` entry).
#[derive(Debug)]
pub struct Deployment {
    /// `model_name` clients ask for.
    pub model_name: String,
    /// Provider prefix of `litellm_params.model`, e.g. `openai`.
    pub provider: String,
    /// The model name the provider knows.
    pub upstream_model: String,
    /// Stable name for events and metrics: `provider/upstream_model#index`.
    pub id: String,
    pub api_base: String,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
}

/// A provider's answer, passed through to the client.
pub struct UpstreamResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
}
