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
    #[error("this API key may not use model '{0}'")]
    ModelNotAllowed(String),
    #[error("model '{0}' does not exist on this gateway")]
    ModelNotFound(String),
    #[error("the upstream provider for model '{model}' is unavailable")]
    UpstreamUnavailable { model: String },
    #[error("the upstream provider for model '{model}' did not answer within {timeout_ms} ms")]
    UpstreamTimeout { model: String, timeout_ms: u64 },
    #[error("the client closed the connection")]
    ClientClosed,
    #[error("usage metering is backlogged; retry shortly")]
    MeteringBacklogFull,
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
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
            GatewayError::InvalidRequest { .. } => ("invalid_request_error", "invalid_request"),
            GatewayError::BodyTooLarge { .. } => ("invalid_request_error", "body_too_large"),
            GatewayError::MissingKey => ("authentication_error", "missing_api_key"),
            GatewayError::InvalidKey => ("authentication_error", "invalid_api_key"),
            GatewayError::KeyBlocked => ("authentication_error", "key_blocked"),
            GatewayError::KeyExpired => ("authentication_error", "key_expired"),
            GatewayError::ModelNotAllowed(_) => ("permission_error", "model_not_allowed"),
            GatewayError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::UpstreamUnavailable { .. } => ("api_error", "upstream_unavailable"),
            GatewayError::UpstreamTimeout { .. } => ("timeout_error", "upstream_timeout"),
            GatewayError::RouteNotFound(_) => ("invalid_request_error", "route_not_found"),
            GatewayError::MeteringBacklogFull => ("api_error", "metering_backlog_full"),
            GatewayError::ClientClosed => ("invalid_request_error", "client_disconnected"),
            GatewayError::Internal(_) => ("api_error", "internal_error"),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => *param,
            GatewayError::ModelNotAllowed(_) | GatewayError::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        GatewayError::InvalidRequest { message: message.into(), param }
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            GatewayError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::MissingKey
            | GatewayError::InvalidKey
            | GatewayError::KeyBlocked
            | GatewayError::KeyExpired => StatusCode::UNAUTHORIZED,
            GatewayError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound(_) | GatewayError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::MeteringBacklogFull => StatusCode::SERVICE_UNAVAILABLE,
            // nginx's "client closed request"; nobody reads it.
            GatewayError::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (kind, code) = self.kind_and_code();
        let envelope =
            Envelope { error: EnvelopeBody { message: self.to_string(), kind, param: self.param(), code: Some(code) } };
        HttpResponse::build(self.status_code()).json(envelope)
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
