//! One model request from admission to answer: admit (the key may use the model, its limits and
//! its customer's admit it, a hard budget reserves the worst case, the usage sink has room),
//! call (the router's retries and fallbacks, cancelled when the client hangs up, unless billing
//! says to finish), respond (a metered stream, or the whole answer read within its bound and
//! metered). Every request that reached a provider produces one usage event.

use crate::config::DisconnectPolicy;
use crate::error::GatewayError;
use crate::http::wire::{ProxyRequest, ResponseUsage};
use crate::http::{header, hung_up, Reply};
use crate::limits::pricing::Tokens;
use crate::metering::recorder::{Attempt, Disconnects, Outcome, UsageRecorder};
use crate::metering::stream::MeteredStream;
use crate::providers::{AnswerError, UpstreamError};
use crate::routing::retry::{self, RoutedFailure};
use crate::tenancy::auth::Principal;
use crate::traces::RequestTrace;
use crate::AppState;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;
use tollgate_schemas::telemetry::recorder::Child;

/// The request's customer: `x-tollgate-customer-id`, else the body's `user` (checked by the
/// caller: `ProxyRequest::parse`, the pass-through's `body_user`). Ids that are too long, hold
/// control characters, whitespace or `/` are refused with a 400 naming the header.
pub(crate) fn customer_id(req: &HttpRequest, user: Option<&str>) -> Result<Option<String>, GatewayError> {
    const HEADER: &str = "x-tollgate-customer-id";
    match req.headers().get(HEADER) {
        Some(v) => {
            let id = v.to_str().map_err(|_| GatewayError::field(HEADER, format!("`{HEADER}` must be text")))?;
            if id.is_empty() {
                return Ok(user.map(str::to_owned));
            }
            tollgate_schemas::limits::check_id(HEADER, id).map_err(|e| GatewayError::field(HEADER, e.to_string()))?;
            Ok(Some(id.to_owned()))
        }
        None => Ok(user.map(str::to_owned)),
    }
}

/// The customer's admission, looked up only once the key's own limits admitted the request
/// (so a flood of customer ids is rate limited before it costs reads).
pub(crate) async fn admit_customer(
    state: &AppState,
    principal: &mut Principal,
    admitted: &mut crate::limits::admission::Admitted,
    (customer, model): (Option<&str>, &str),
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), GatewayError> {
    let Some(id) = customer else { return Ok(()) };
    if let Some(party) = state.tenancy.with_customer(principal, id, state.shared_customers).await? {
        admitted.admit_party(&party, model, &state.limiter, &state.budget_settings, now)?;
    }
    Ok(())
}

/// Whether the principal may use `model` (allow-lists, access groups).
pub(crate) fn check_model(state: &AppState, principal: &Principal, model: &str) -> Result<(), GatewayError> {
    principal.check_model(model, &|m| state.router.groups_of(m))
}

/// The most `request` can cost: every byte of its body a prompt token, `max_tokens` (or the
/// configured reserve) output tokens for each of its `n` choices (none for embeddings and
/// moderations), at the highest price among the deployments it can reach. Prompts only referenced by the body (files, image URLs,
/// earlier responses) can cost more than their bytes: docs/limits.md says so.
fn worst_case_cost(state: &AppState, request: &ProxyRequest) -> tollgate_schemas::NanoUsd {
    let Some(price) = state.router.worst_price(&request.model) else { return tollgate_schemas::NanoUsd::ZERO };
    // Without a limit the provider decides: at least the configured reserve, and at least
    // the limit an adapter sets by itself (Anthropic's).
    let completion = request.worst_output_tokens(|| {
        let reserve = state.budget_settings.reserve_output_tokens;
        state.router.worst_default_output(&request.model).map_or(reserve, |d| d.max(reserve))
    });
    let prompt = u64::try_from(request.body_len).unwrap_or(u64::MAX);
    // Only absurd `max_tokens` overflow: reserve everything that is left.
    crate::limits::pricing::worst_case_cost(&price, prompt, completion, request.units(None, None))
        .unwrap_or(tollgate_schemas::NanoUsd(i64::MAX))
}

pub(crate) type Served = Result<(String, Reply), (String, GatewayError)>;

pub(crate) async fn serve(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    mut principal: Principal,
    request: ProxyRequest,
    request_id: &str,
    trace: &RequestTrace,
    started: Instant,
) -> Served {
    let mut request = request;
    // A `model_group_alias` is served, allowed, limited and metered as its model group.
    if let Some(group) = state.router.alias_target(&request.model) {
        request.model = group.to_owned();
    }
    let (request, plan) = crate::cache::key::prepare(state.cache.as_deref(), &principal, request)
        .map_err(|e| ("unknown".to_owned(), e))?;
    let request = Arc::new(request);
    let unknown = |e| ("unknown".to_owned(), e);
    state.router.lookup(&request.model).map_err(unknown)?;
    let label = state.router.metric_label(&request.model);
    let fail = |e| (label.clone(), e);
    let now = chrono::Utc::now();
    let admission = crate::traces::child("admission");
    let (admitted, permit) = admit(req, state, &mut principal, (&request, now), &admission)
        .await
        .inspect_err(crate::observability::usage::refused)
        .map_err(fail)?;
    drop(admission);
    let limit_headers = admitted.reservation.headers.clone();
    // A span only where guardrails are configured.
    let span = if state.guardrails.is_empty() { Child::none() } else { crate::traces::child("guardrails") };
    let guarded =
        crate::guardrails::before_call(&state.guardrails, &state.client, &principal, &request, request_id).await;
    drop(span);

    let attempt = Arc::new(Attempt::default());
    let recorder = UsageRecorder::start(
        state.sink.clone(),
        permit,
        &state.gateway_id,
        request_id,
        &principal,
        admitted,
        &request.model,
        request.stream,
        started,
        now,
    )
    .labelled(&label)
    .traced(trace.outcome_span(), trace.trace_id.clone())
    .tried(attempt.clone());
    // A block is metered as a refusal: an event with no cost, its reason the error's code.
    let (request, applied) = match guarded {
        Ok((rebuilt, applied)) => (rebuilt.map(Arc::new).unwrap_or(request), applied),
        Err(e) => return Err(fail(crate::guardrails::refuse(recorder, e))),
    };
    // A guarded request is keyed on what its pre-call guardrails made of it, and on which
    // guardrails it runs: no entry answers across guardrail configs (docs/design.md §2.11).
    let plan = match (plan, state.cache.as_deref()) {
        (Some(plan), Some(cache)) => {
            Some(crate::cache::key::after_guardrails(plan, cache, &principal, &request, &applied))
        }
        (plan, _) => plan,
    };
    let mut recorder = recorder.on_disconnect(Disconnects {
        policy: state.disconnect_policy,
        request: request.clone(),
        attempt: attempt.clone(),
    });
    if let Some((cache, entry, key)) = crate::cache::lookup(state.cache.as_deref(), plan.as_ref(), &label).await {
        let hit = crate::cache::hit::Hit { cache, entry, key, applied: &applied, client: &state.client };
        return crate::cache::hit::answer(hit, &request, recorder, limit_headers)
            .await
            .map(|reply| (label.clone(), reply))
            .map_err(fail);
    }
    let call = routed_call(state.clone(), request.clone(), principal, attempt);
    let mut call = Box::pin(call);
    let routed = tokio::select! {
        routed = &mut call => routed,
        _ = hung_up(req) => {
            if state.disconnect_policy == DisconnectPolicy::FinishUpstream {
                // The provider finishes its work in the background and the request is charged
                // what it reports.
                recorder.mark_disconnected("waiting_for_provider");
                // It keeps the request's log fields.
                let finish = finish_upstream(state.clone(), request.clone(), call, recorder, applied);
                state.background.spawn(crate::traces::carried(finish));
            }
            // Otherwise the call is cancelled here, and the recorder's drop charges the request
            // as the policy says.
            return Err(fail(GatewayError::ClientClosed));
        }
    };
    let answer = match routed {
        Ok(answer) => answer,
        Err(failure) => {
            return meter_failure(failure, recorder, &request.model, limit_headers)
                .map(|r| (label.clone(), r))
                .map_err(fail)
        }
    };

    respond(req, state, &request, answer, recorder, limit_headers, &label, &applied, plan.as_ref())
        .await
        .map(|r| (label.clone(), r))
        .map_err(fail)
}

/// Admission: the key may use the model; the key's limits, then the customer's, admit the
/// request; a hard budget reserves its worst case; the usage sink has room for its event.
async fn admit(
    req: &HttpRequest,
    state: &AppState,
    principal: &mut Principal,
    (request, now): (&ProxyRequest, chrono::DateTime<chrono::Utc>),
    span: &Child,
) -> Result<(crate::limits::admission::Admitted, crate::metering::sink::Permit), GatewayError> {
    check_model(state, principal, &request.model)?;
    let customer = customer_id(req, request.user.as_deref())?;
    let header = crate::tenancy::tags::header_tags(req)?;
    principal.tags =
        crate::tenancy::tags::event_tags(principal, request.tags.clone(), header, state.reject_client_tags)?;
    let mut admitted = crate::limits::admission::admit(
        principal,
        &request.model,
        &state.budget_view,
        &state.limiter,
        &state.budget_settings,
        now,
    )?;
    admit_customer(state, principal, &mut admitted, (customer.as_deref(), &request.model), now).await?;
    if let Some(leases) = state.leases.as_ref().filter(|_| admitted.has_hard_budget()) {
        let grant = crate::traces::child_of(span, "lease_grant");
        admitted.reserve(leases, worst_case_cost(state, request), now).await?;
        drop(grant);
    }
    Ok((admitted, usage_permit(state)?))
}

/// A place in the metering backlog for the request's usage event (§3.5).
pub(crate) fn usage_permit(state: &AppState) -> Result<crate::metering::sink::Permit, GatewayError> {
    state.sink.admit().map_err(|e| match e {
        crate::metering::sink::SinkError::Unavailable => GatewayError::MeteringUnavailable,
        _ => GatewayError::MeteringBacklogFull,
    })
}

/// The answer to relay: a metered stream, or the whole answer once read and metered (and kept
/// in the response cache when `plan` says so).
#[allow(clippy::too_many_arguments)]
async fn respond(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    request: &Arc<ProxyRequest>,
    answer: retry::RoutedAnswer,
    recorder: UsageRecorder,
    limit_headers: Vec<(HeaderName, HeaderValue)>,
    label: &str,
    applied: &Arc<crate::guardrails::Applied>,
    plan: Option<&crate::cache::Plan>,
) -> Result<Reply, GatewayError> {
    let deployment = answer.picked.deployment.clone();
    let mut headers: Vec<(HeaderName, HeaderValue)> = [
        header("x-tollgate-attempts", &answer.attempts.to_string()),
        header("x-tollgate-model-group", &deployment.model_name),
    ]
    .into_iter()
    .flatten()
    .chain(limit_headers)
    .collect();
    if request.stream {
        let capture =
            state.cache.clone().zip(plan).and_then(|(cache, plan)| crate::cache::assemble::Capture::new(cache, plan));
        let stream = metered_stream(state, request, answer, recorder, label, applied, capture);
        return Ok(Reply::Stream { headers, stream: Box::new(stream) });
    }

    let content_type = crate::providers::answer_content_type(&deployment, answer.response.headers());
    let whole = meter_whole_answer(state, request, answer, recorder, hung_up(req), applied).await?;
    if whole.client_gone {
        return Err(GatewayError::ClientClosed);
    }
    if let (Some(cache), Some(plan)) = (state.cache.as_deref(), plan) {
        // The provider's answer, before the post-call guardrails: PII stays masked in the
        // cache, and a hit runs them again.
        cache.store(plan, &whole.provider_body, whole.charged, whole.tokens, whole.served_model.as_deref()).await;
    }
    headers.extend(header("x-tollgate-cost-nano-usd", &whole.charged.0.to_string()));
    headers.extend(header("x-tollgate-response-cost", &whole.charged.to_string()));
    if let Some(m) = whole.served_model.as_deref() {
        headers.extend(header("x-tollgate-served-model", m));
    }
    Ok(Reply::Full { status: StatusCode::OK, content_type, headers, body: whole.body })
}

/// The call to the request's model through the router (retries, fallbacks), owning what it
/// needs: it may outlive the client's request (policy `finish_upstream`).
async fn routed_call(
    state: web::Data<AppState>,
    request: Arc<ProxyRequest>,
    principal: Principal,
    attempt: Arc<Attempt>,
) -> Result<retry::RoutedAnswer, RoutedFailure> {
    let body_for = |d: &crate::providers::Deployment| crate::providers::request_body(d, &request);
    // A fallback is a model like any other: the key's allow-lists apply to it too.
    let allowed = |m: &str| check_model(&state, &principal, m).is_ok();
    let prompt_tokens = || request.prompt_tokens_estimate();
    let content_type = request.content_type();
    let spec = retry::Call {
        content_type: &content_type,
        prompt_bytes: u64::try_from(request.body_len).unwrap_or(u64::MAX),
        prompt_tokens: &prompt_tokens,
        model: &request.model,
        endpoint: request.endpoint,
        stream: request.stream,
        body_for: &body_for,
        allowed: &allowed,
        attempt: &attempt,
        via: retry::Via::Endpoint,
    };
    retry::call(&state.router, &state.client, spec).await
}

/// Meters a call that ended without an answer to relay: an upstream error (passed through to
/// the client: SDKs map its status to their exceptions), a transport failure or a request the
/// gateway could not build.
pub(crate) fn meter_failure(
    failure: RoutedFailure,
    recorder: UsageRecorder,
    model: &str,
    limit_headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<Reply, GatewayError> {
    match failure {
        RoutedFailure::Gateway(e) => {
            recorder.abandon();
            Err(e)
        }
        RoutedFailure::Transport { picked, error, attempts } => {
            let err = transport_error(error, model, &picked.deployment, attempts);
            recorder.fail(&err, &picked.deployment);
            Err(err)
        }
        RoutedFailure::Upstream { picked, status, content_type, body, attempts } => {
            recorder.finish(Outcome {
                status,
                error_type: Some("upstream_error"),
                deployment: Some(&picked.deployment),
                ..Outcome::default()
            });
            Ok(Reply::Full {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                content_type: content_type.unwrap_or_else(|| "application/json".to_owned()),
                headers: header("x-tollgate-attempts", &attempts.to_string())
                    .into_iter()
                    .chain(limit_headers)
                    .collect(),
                body,
            })
        }
    }
}

/// The error a client gets when no attempt at `model` got an answer.
pub(crate) fn transport_error(
    error: UpstreamError,
    model: &str,
    last: &crate::providers::Deployment,
    attempts: u32,
) -> GatewayError {
    match error {
        UpstreamError::Timeout => GatewayError::UpstreamTimeout {
            model: model.to_owned(),
            timeout_ms: u64::try_from(last.timeout.as_millis()).unwrap_or(u64::MAX),
        },
        UpstreamError::Unavailable(reason) => {
            tracing::warn!(deployment = %last.id, %reason, attempts, "upstream unavailable");
            GatewayError::UpstreamUnavailable { model: model.to_owned() }
        }
    }
}

/// A streamed answer, metered as it passes (and kept in the response cache by `capture`: as
/// the provider sent it when guardrails look at the answer).
fn metered_stream(
    state: &web::Data<AppState>,
    request: &Arc<ProxyRequest>,
    answer: retry::RoutedAnswer,
    recorder: UsageRecorder,
    label: &str,
    applied: &Arc<crate::guardrails::Applied>,
    mut capture: Option<crate::cache::assemble::Capture>,
) -> MeteredStream {
    let upstream = crate::providers::response_stream(&answer.picked.deployment, answer.response);
    let upstream = match capture.as_mut() {
        Some(c) if applied.touches_answer() => c.tap(upstream),
        _ => upstream,
    };
    let upstream = crate::guardrails::guard_stream(applied.clone(), &state.client, upstream);
    MeteredStream::new(
        upstream,
        recorder,
        state.router.clone(),
        answer.picked,
        request.injects_usage() && !request.client_wants_usage,
        request.clone(),
        answer.sent_at,
        label.to_owned(),
    )
    .finish_in(state.background.clone())
    .drained_on(&state.background)
    .cached_by(capture)
}

/// A whole answer, read and metered.
struct WholeAnswer {
    body: web::Bytes,
    /// The provider's answer, before the post-call guardrails (what the response cache keeps).
    provider_body: web::Bytes,
    charged: tollgate_schemas::NanoUsd,
    tokens: Tokens,
    served_model: Option<String>,
    /// The client hung up while the answer was read (it was metered all the same).
    client_gone: bool,
}

/// Reads a non-streamed answer (bounded in size and time) and meters it. When `client_gone`
/// resolves first, the answer is still read to its end, the provider having already made it,
/// and the event is marked `reading_answer`.
async fn meter_whole_answer(
    state: &AppState,
    request: &ProxyRequest,
    answer: retry::RoutedAnswer,
    mut recorder: UsageRecorder,
    client_gone: impl std::future::Future<Output = ()>,
    applied: &crate::guardrails::Applied,
) -> Result<WholeAnswer, GatewayError> {
    let deployment = answer.picked.deployment.clone();
    let remaining = deployment.timeout.saturating_sub(answer.sent_at.elapsed());
    let read =
        tokio::time::timeout(remaining, crate::providers::read_answer(answer.response, state.max_response_bytes));
    tokio::pin!(read);
    let mut gone = false;
    let read = tokio::select! {
        read = &mut read => read,
        _ = client_gone => {
            gone = true;
            recorder.mark_disconnected("reading_answer");
            read.await
        }
    };
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(AnswerError::Transport(e))) => {
            tracing::warn!(deployment = %deployment.id, error = %crate::providers::classify(&e), "upstream body failed");
            let err = GatewayError::UpstreamUnavailable { model: request.model.clone() };
            recorder.fail(&err, &deployment);
            return Err(err);
        }
        Ok(Err(AnswerError::TooLarge { limit })) => {
            tracing::warn!(deployment = %deployment.id, limit, "upstream answer too large");
            let err = GatewayError::UpstreamResponseTooLarge { model: request.model.clone(), limit };
            recorder.fail(&err, &deployment);
            return Err(err);
        }
        Err(_) => {
            let err = GatewayError::UpstreamTimeout {
                model: request.model.clone(),
                timeout_ms: u64::try_from(deployment.timeout.as_millis()).unwrap_or(u64::MAX),
            };
            recorder.fail(&err, &deployment);
            return Err(err);
        }
    };
    let body = deployment.api.response_body(&deployment, body);
    let parsed: ResponseUsage = serde_json::from_slice(&body).unwrap_or_default();
    let (mut tokens, mut estimated) = match parsed.usage() {
        Some(u) => (u.tokens(), false),
        // No usage from the provider: count it ourselves and say so.
        None => {
            let mut generated = crate::metering::tokens::TextTally::default();
            // Audio and scores are not text to count.
            if request.endpoint.generates() {
                crate::metering::tokens::answer_text(&body, &mut generated);
            }
            (
                Tokens {
                    prompt: request.prompt_tokens_estimate(),
                    completion: generated.tokens(),
                    ..Tokens::default()
                },
                true,
            )
        }
    };
    let units = request.units(parsed.search_units(), Some(&body));
    (tokens.search_units, tokens.characters) = (units.search_units, units.characters);
    (tokens.images, tokens.pixels, tokens.seconds) = (units.images, units.pixels, units.seconds);
    if request.upload.is_some() && units.seconds > 0 {
        // The seconds are what an upload is charged: reported, so not an estimate.
        estimated = false;
    }
    if request.endpoint == crate::providers::Endpoint::ImageGenerations {
        // gpt-image models report their output as image tokens (`output_tokens`), priced as such.
        tokens.image_output = tokens.completion;
    }
    state.router.record_success(&answer.picked, answer.sent_at.elapsed(), tokens.prompt + tokens.completion);
    let served_model = parsed.model().map(str::to_owned).or_else(|| Some(deployment.upstream_model.clone()));
    // The post-call hook: a block still charges what the provider generated.
    let span = if applied.touches_answer() { crate::traces::child("guardrails") } else { Child::none() };
    let provider_body = body.clone();
    let guarded = applied.after_call(&state.client, body).await;
    drop(span);
    let blocked = guarded.as_ref().err();
    let (charged, written) = recorder.finish_answer(Outcome {
        status: blocked.map_or(200, |e| actix_web::ResponseError::status_code(e).as_u16()),
        error_type: blocked.map(|e| e.kind_and_code().1),
        tokens,
        served_model: served_model.clone(),
        partial: false,
        estimated,
        deployment: Some(&deployment),
    });
    // The answer goes once its event is durable as `spool.answer_after` asks.
    written.wait().await;
    Ok(WholeAnswer { body: guarded?, provider_body, charged, tokens, served_model, client_gone: gone })
}

/// Policy `finish_upstream`: the client is gone; let the call end, read its answer (a stream
/// to its end) and charge what the provider reports. Runs on the gateway's background tracker,
/// which shutdown waits for.
async fn finish_upstream(
    state: web::Data<AppState>,
    request: Arc<ProxyRequest>,
    call: std::pin::Pin<Box<impl std::future::Future<Output = Result<retry::RoutedAnswer, RoutedFailure>> + Send>>,
    recorder: UsageRecorder,
    applied: Arc<crate::guardrails::Applied>,
) {
    match call.await {
        Ok(answer) if request.stream => {
            let mut rest = metered_stream(&state, &request, answer, recorder, &request.model, &applied, None);
            while rest.next().await.is_some() {}
        }
        Ok(answer) => {
            let _ = meter_whole_answer(&state, &request, answer, recorder, std::future::pending(), &applied).await;
        }
        Err(failure) => {
            let _ = meter_failure(failure, recorder, &request.model, Vec::new());
        }
    }
}
