//! A pass-through request sent through the router, as the model routes' calls are
//! (`routing::retry::call`): a 408, 409, 425, 429, 5xx or a failed connection is retried on
//! another deployment of the model group and family, cooldowns are honoured, and nothing has
//! reached the client before an answer is chosen; then the answer relayed and metered.

use super::{path, stream, usage, Incoming};
use crate::error::GatewayError;
use crate::http::header;
use crate::metering::recorder::{Attempt, Outcome, UsageRecorder};
use crate::providers::{AnswerError, Deployment, Endpoint, StreamError, UpstreamError};
use crate::routing::retry::{self, RoutedAnswer, Via};
use crate::tenancy::auth::Principal;
use crate::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use std::sync::Arc;

/// The client headers a provider receives: its content negotiation and Anthropic's betas. No
/// other (the virtual key least of all).
const FORWARDED_HEADERS: [&str; 3] = ["content-type", "accept", "anthropic-beta"];

/// Sends the request through the router and relays what it came to. `generates`: the method
/// can make the provider generate (a `POST`); other methods are metered at 0 tokens, not
/// estimated.
pub(super) async fn routed(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    principal: &Principal,
    group: &str,
    incoming: Incoming<'_>,
    recorder: UsageRecorder,
    generates: bool,
) -> Result<HttpResponse, GatewayError> {
    let Incoming { family, tail, query, body, named } = incoming;
    let (body, strip_usage) = usage::ask_for_usage(family, tail, body, named.stream);
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
    let headers: Vec<(&str, String)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|name| Some((*name, req.headers().get(*name)?.to_str().ok()?.to_owned())))
        .collect();
    let target = Target { state, method, headers: &headers, tail, query: &query };
    let send = |d: Arc<Deployment>, body: Vec<u8>, traceparent: Option<String>| target.send(d, body, traceparent);
    // A deployment whose base the path cannot be joined to is not tried.
    let body_for = |d: &Deployment| path::upstream_url(&d.api_base, tail, &query).map(|_| body.to_vec());
    let allowed = |m: &str| crate::pipeline::check_model(state, principal, m).is_ok();
    let only = |d: &Deployment| family.serves(d);
    let attempt = Arc::new(Attempt::default());
    let recorder = recorder.tried(attempt.clone());
    let spec = retry::Call {
        model: group,
        // Not read: a pass-through's `send` makes the request.
        endpoint: Endpoint::ChatCompletions,
        stream: named.stream,
        body_for: &body_for,
        content_type: "",
        allowed: &allowed,
        // No context-window check: the body is the provider's own, not read for a prompt.
        prompt_bytes: 0,
        prompt_tokens: &|| 0,
        attempt: &attempt,
        via: Via::PassThrough { send: &send, only: &only },
    };
    match retry::call(&state.router, &state.client, spec).await {
        Ok(answer) => relay(state, family, answer, recorder, (generates, strip_usage)).await,
        // The last error status passed on with the provider's body; no answer at all a 502 or
        // 504; a request no deployment could take, no event.
        Err(failure) => {
            let headers = header("x-tollgate-model-group", group).into_iter().collect();
            crate::pipeline::meter_failure(failure, recorder, group, headers).map(crate::http::Reply::into_response)
        }
    }
}

/// Where and how a pass-through request goes: the method, the client's forwarded headers, the
/// path and query joined to each deployment's base.
struct Target<'a> {
    state: &'a AppState,
    method: reqwest::Method,
    headers: &'a [(&'a str, String)],
    tail: &'a str,
    query: &'a str,
}

impl<'a> Target<'a> {
    /// One attempt: the deployment's credentials set by its family (`Provider::authenticate`),
    /// and the attempt span's `traceparent` when the request is traced.
    fn send(
        &self,
        deployment: Arc<Deployment>,
        body: Vec<u8>,
        traceparent: Option<String>,
    ) -> BoxFuture<'a, Result<reqwest::Response, UpstreamError>> {
        let Ok(url) = path::upstream_url(&deployment.api_base, self.tail, self.query) else {
            // `body_for` refuses such a deployment before any attempt: never reached.
            let refused = UpstreamError::Unavailable(format!("{}: no pass-through URL", deployment.id));
            return Box::pin(std::future::ready(Err(refused)));
        };
        let mut request = self.state.client.request(self.method.clone(), url);
        for (name, value) in self.headers {
            request = request.header(*name, value);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let request = deployment.api.authenticate(request, deployment.api_key.as_ref());
        // A body only where the client sent one: a `GET` with a body is refused by some servers.
        let request = if body.is_empty() { request } else { request.body(body) };
        let timeout = deployment.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, request.send()).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(crate::providers::classify(&e)),
                Err(_) => Err(UpstreamError::Timeout),
            }
        })
    }
}

fn answer_headers(
    attempts: u32,
    group: &str,
) -> impl Iterator<Item = (actix_web::http::header::HeaderName, actix_web::http::header::HeaderValue)> {
    header("x-tollgate-attempts", &attempts.to_string()).into_iter().chain(header("x-tollgate-model-group", group))
}

/// The provider's answer, its status and content type kept, metered: a whole answer by the
/// usage it reports (none: 0 tokens, `estimated` when the request could generate); a stream
/// passed on as it comes, metered by the usage its events report (`stream::metered`), without
/// the usage chunk the gateway asked for when the client did not (`strip_usage`).
async fn relay(
    state: &AppState,
    family: super::Family,
    answer: RoutedAnswer,
    recorder: UsageRecorder,
    (generates, strip_usage): (bool, bool),
) -> Result<HttpResponse, GatewayError> {
    let RoutedAnswer { picked, response, sent_at, attempts } = answer;
    let deployment = picked.deployment.clone();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = crate::providers::content_type_of(&response);
    let mut reply = HttpResponse::build(status);
    reply.insert_header(("content-type", content_type.clone()));
    for h in answer_headers(attempts, &deployment.model_name) {
        reply.insert_header(h);
    }
    if content_type.starts_with("text/event-stream") {
        let metered = stream::Metered { family, picked, router: state.router.clone(), strip_usage };
        let body = Box::pin(response.bytes_stream().map_err(StreamError::from));
        let stream = Box::pin(stream::metered(body, recorder, metered, &state.background));
        return Ok(reply.streaming(crate::traces::in_request(stream)));
    }
    let remaining = deployment.timeout.saturating_sub(sent_at.elapsed());
    let read = tokio::time::timeout(remaining, crate::providers::read_answer(response, state.max_response_bytes)).await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(AnswerError::TooLarge { limit })) => {
            let err = GatewayError::UpstreamResponseTooLarge { model: deployment.model_name.clone(), limit };
            recorder.fail(&err, &deployment);
            return Err(err);
        }
        Ok(Err(AnswerError::Transport(_))) | Err(_) => {
            let err = GatewayError::UpstreamUnavailable { model: deployment.model_name.clone() };
            recorder.fail(&err, &deployment);
            return Err(err);
        }
    };
    let (tokens, served_model) = usage::reported(family, &body);
    let counted = tokens.map_or(0, |t| t.prompt.saturating_add(t.completion));
    state.router.record_success(&picked, sent_at.elapsed(), counted);
    let (charged, written) = recorder.finish_answer(Outcome {
        status: status.as_u16(),
        estimated: tokens.is_none() && generates,
        tokens: tokens.unwrap_or_default(),
        served_model: served_model.or_else(|| Some(deployment.upstream_model.clone())),
        deployment: Some(&deployment),
        ..Outcome::default()
    });
    written.wait().await;
    reply.insert_header(("x-tollgate-cost-nano-usd", charged.0.to_string()));
    Ok(reply.body(body))
}
