//! HTTP handlers of the OpenAI surface (served with and without the `/v1` prefix: see
//! `crate::routes`), health and metrics.
//! Every model route goes through [`authorize`] first: no route reaches a provider unchecked.

use crate::auth::{raw_key, Principal};
use crate::config::DisconnectPolicy;
use crate::error::GatewayError;
use crate::openai::{ProxyRequest, ResponseUsage};
use crate::pricing::Tokens;
use crate::providers::{AnswerError, Endpoint, UpstreamError};
use crate::proxy::{self, RoutedFailure};
use crate::stream::MeteredStream;
use crate::usage::{Attempt, Disconnects, Outcome, UsageRecorder};
use crate::AppState;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;
use metrics::{counter, histogram};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// A second handle on a client's TCP connection, used only to notice that the client hung up
/// while its request waits on a provider (actix-web finishes a handler even when its client is
/// gone; Tollgate cancels the upstream call instead).
pub struct ClientConnection(tokio::net::TcpStream);

/// `HttpServer::on_connect` hook: keeps a duplicate of each connection's socket.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsFd;
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else { return };
    let Ok(fd) = tcp.as_fd().try_clone_to_owned() else { return };
    let std = std::net::TcpStream::from(fd);
    if std.set_nonblocking(true).is_ok() {
        if let Ok(dup) = tokio::net::TcpStream::from_std(std) {
            ext.insert(std::rc::Rc::new(ClientConnection(dup)));
        }
    }
}

/// Resolves when the client has closed its connection; never when that cannot be known.
pub async fn hung_up(req: &HttpRequest) {
    let Some(conn) = req.conn_data::<std::rc::Rc<ClientConnection>>().cloned() else {
        return std::future::pending().await;
    };
    let mut byte = [0u8; 1];
    loop {
        match conn.0.peek(&mut byte).await {
            Ok(0) => return,
            // A pipelined next request is waiting: not a hang-up; look again later.
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Err(_) => return,
        }
    }
}

pub async fn not_found(req: HttpRequest) -> HttpResponse {
    GatewayError::RouteNotFound(format!("{} {}", req.method(), req.path())).error_response()
}

pub(crate) async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready once the budget view has been read to its end (budget-state topic, or the embedded
/// ledger): before that, hard budgets are refused as stale, so a load balancer should wait.
/// Says too whether events an earlier run left in the spool are being replayed (live traffic is
/// served meanwhile, so a replay does not make the gateway unready).
pub(crate) async fn readiness(state: web::Data<AppState>) -> HttpResponse {
    let replay = state.sink.replay().map(
        |(in_progress, replayed, found)| json!({"in_progress": in_progress, "replayed": replayed, "found": found}),
    );
    if state.budget_view.caught_up() {
        HttpResponse::Ok().json(json!({"status": "ok", "spool_replay": replay}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "reading budget state", "spool_replay": replay}))
    }
}

/// Marks the app of the separate `/metrics` listener.
#[derive(Clone, Copy)]
pub struct MetricsListener;

/// `GET /metrics`. Not on the main listener when `gateway.metrics.listen` moves it; behind
/// `gateway.metrics.token` when one is set.
pub async fn prometheus(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let on_its_own_listener = req.app_data::<MetricsListener>().is_some();
    if state.metrics_listen.is_some() && !on_its_own_listener {
        return not_found(req).await;
    }
    if let Some(want) = &state.metrics_token_hash {
        let given = raw_key(req.headers()).map(crate::auth::hash_key);
        if !given.is_some_and(|g| crate::admin::constant_time_eq(&g, want)) {
            return GatewayError::Forbidden("/metrics needs its bearer token".into()).error_response();
        }
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// Reads the body up to the configured limit; bigger bodies are refused without reading them.
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::Bytes, GatewayError> {
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| GatewayError::invalid(format!("could not read request body: {e}"), None))?;
        if body.len() + chunk.len() > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The client's `x-request-id`, or a new one when it sent none. A malformed one (too long, not
/// visible ASCII) is refused with a 400 naming the header, answered under a new id.
fn request_id(req: &HttpRequest) -> (String, Option<GatewayError>) {
    const HEADER: &str = "x-request-id";
    let fresh = || format!("req_{}", uuid::Uuid::now_v7().simple());
    match req.headers().get(HEADER).map(|v| v.to_str()) {
        None => (fresh(), None),
        Some(Ok(id)) => match tollgate_schemas::limits::check_request_id(HEADER, id) {
            Ok(()) => (id.to_owned(), None),
            Err(e) => (fresh(), Some(GatewayError::field(HEADER, e.to_string()))),
        },
        Some(Err(_)) => (fresh(), Some(GatewayError::field(HEADER, format!("`{HEADER}` must be visible ASCII")))),
    }
}

/// The request's customer: `x-tollgate-customer-id`, else the body's `user` (checked by
/// `ProxyRequest::parse`). Ids that are too long, hold control characters, whitespace or `/`
/// are refused with a 400 naming the header.
fn customer_id(req: &HttpRequest, request: &ProxyRequest) -> Result<Option<String>, GatewayError> {
    const HEADER: &str = "x-tollgate-customer-id";
    match req.headers().get(HEADER) {
        Some(v) => {
            let id = v.to_str().map_err(|_| GatewayError::field(HEADER, format!("`{HEADER}` must be text")))?;
            if id.is_empty() {
                return Ok(request.user.clone());
            }
            tollgate_schemas::limits::check_id(HEADER, id).map_err(|e| GatewayError::field(HEADER, e.to_string()))?;
            Ok(Some(id.to_owned()))
        }
        None => Ok(request.user.clone()),
    }
}

/// Authenticates the request's key and resolves its tenants; blocked or expired ones are
/// refused.
async fn authorize(req: &HttpRequest, state: &AppState) -> Result<Principal, GatewayError> {
    let raw = raw_key(req.headers()).ok_or(GatewayError::MissingKey)?;
    state.tenancy.authenticate(raw, chrono::Utc::now()).await
}

/// Whether the principal may use `model` (allow-lists, access groups).
fn check_model(state: &AppState, principal: &Principal, model: &str) -> Result<(), GatewayError> {
    principal.check_model(model, &|m| state.router.groups_of(m))
}

fn observe(endpoint: Endpoint, model: &str, status: StatusCode, started: Instant) {
    let status = status.as_u16().to_string();
    let endpoint = endpoint.path();
    histogram!("tollgate_request_duration_seconds", "endpoint" => endpoint, "model" => model.to_owned(), "status" => status.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("tollgate_requests_total", "endpoint" => endpoint, "model" => model.to_owned(), "status" => status)
        .increment(1);
}

pub(crate) async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(req, payload, state, Endpoint::ChatCompletions).await
}
pub(crate) async fn completions(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Endpoint::Completions).await
}
pub(crate) async fn embeddings(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Endpoint::Embeddings).await
}
pub(crate) async fn responses(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Endpoint::Responses).await
}

/// What a model route answers, before it becomes an HTTP response (so `/v1/messages` can
/// translate it).
pub enum Reply {
    /// A whole body: the provider's answer or its error, in OpenAI's format.
    Full { status: StatusCode, content_type: String, headers: Vec<(HeaderName, HeaderValue)>, body: web::Bytes },
    /// A metered stream of OpenAI chunks.
    Stream { headers: Vec<(HeaderName, HeaderValue)>, stream: Box<MeteredStream> },
}

impl Reply {
    fn into_response(self) -> HttpResponse {
        match self {
            Reply::Full { status, content_type, headers, body } => {
                let mut r = HttpResponse::build(status);
                r.insert_header((CONTENT_TYPE, content_type));
                for h in headers {
                    r.insert_header(h);
                }
                r.body(body)
            }
            Reply::Stream { headers, stream } => {
                let mut r = HttpResponse::Ok();
                r.insert_header((CONTENT_TYPE, "text/event-stream")).insert_header(("cache-control", "no-cache"));
                for h in headers {
                    r.insert_header(h);
                }
                r.streaming(stream)
            }
        }
    }
}

fn header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(value).ok().map(|v| (HeaderName::from_static(name), v))
}

/// The most `request` can cost: every byte of its body a prompt token, `max_tokens` (or the
/// configured reserve) output tokens for each of its `n` choices, at the highest price among
/// the deployments it can reach. Prompts only referenced by the body (files, image URLs,
/// earlier responses) can cost more than their bytes: docs/limits.md says so.
fn worst_case_cost(state: &AppState, request: &ProxyRequest) -> tollgate_schemas::NanoUsd {
    let Some(price) = state.router.worst_price(&request.model) else { return tollgate_schemas::NanoUsd::ZERO };
    // Without a limit the provider decides: at least the configured reserve, and at least
    // the limit an adapter sets by itself (Anthropic's).
    let per_choice = request.max_tokens.unwrap_or_else(|| {
        let reserve = state.budget_settings.reserve_output_tokens;
        state.router.worst_default_output(&request.model).map_or(reserve, |d| d.max(reserve))
    });
    let tokens = crate::pricing::Tokens {
        prompt: u64::try_from(request.body_len).unwrap_or(u64::MAX),
        completion: per_choice.saturating_mul(request.choices),
        cached: 0,
    };
    // Only absurd `max_tokens` overflow: reserve everything that is left.
    crate::pricing::cost(&price, tokens).unwrap_or(tollgate_schemas::NanoUsd(i64::MAX))
}

/// Every OpenAI model endpoint: authenticate, validate, route, meter, answer.
async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    endpoint: Endpoint,
) -> HttpResponse {
    let started = Instant::now();
    let (request_id, bad_id) = request_id(&req);
    let prepared = match bad_id {
        Some(e) => Err(e),
        None => read_request(&req, payload, &state, endpoint).await,
    };
    let result = match prepared {
        Ok((key, request)) => serve(&req, &state, key, request, &request_id, started).await,
        Err(e) => Err(("unknown".to_owned(), e)),
    };
    let (label, mut response) = match result {
        Ok((label, reply)) => (label, reply.into_response()),
        Err((label, e)) => (label, e.error_response()),
    };
    observe(endpoint, &label, response.status(), started);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    response
}

/// Authenticates, then reads and validates the body.
async fn read_request(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    endpoint: Endpoint,
) -> Result<(Principal, ProxyRequest), GatewayError> {
    let key = authorize(req, state).await?;
    let body = read_body(req, payload, state.max_body_bytes).await?;
    ProxyRequest::parse(&body, endpoint).map(|r| (key, r))
}

type Served = Result<(String, Reply), (String, GatewayError)>;

async fn serve(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    mut principal: Principal,
    request: ProxyRequest,
    request_id: &str,
    started: Instant,
) -> Served {
    let request = Arc::new(request);
    let unknown = |e| ("unknown".to_owned(), e);
    if !state.router.knows(&request.model) {
        return Err(unknown(GatewayError::ModelNotFound(request.model.clone())));
    }
    let label = request.model.clone();
    let fail = |e| (label.clone(), e);
    let now = chrono::Utc::now();
    let (admitted, permit) = admit(req, state, &mut principal, &request, now).await.map_err(fail)?;
    let limit_headers = admitted.reservation.headers.clone();

    let attempt = Arc::new(Attempt::default());
    let mut recorder = UsageRecorder::start(
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
    .on_disconnect(Disconnects {
        policy: state.disconnect_policy,
        request: request.clone(),
        attempt: attempt.clone(),
    });
    let mut call = Box::pin(routed_call(state.clone(), request.clone(), principal, attempt));
    let routed = tokio::select! {
        routed = &mut call => routed,
        _ = hung_up(req) => {
            if state.disconnect_policy == DisconnectPolicy::FinishUpstream {
                // The provider finishes its work in the background and the request is charged
                // what it reports.
                recorder.mark_disconnected("waiting_for_provider");
                state.background.spawn(finish_upstream(state.clone(), request.clone(), call, recorder));
            }
            // Otherwise the call is cancelled here, and the recorder's drop charges the request
            // as the policy says.
            return Err(fail(GatewayError::ClientClosed));
        }
    };
    let answer = match routed {
        Ok(answer) => answer,
        Err(failure) => {
            return meter_failure(failure, recorder, &request, limit_headers).map(|r| (label.clone(), r)).map_err(fail)
        }
    };

    respond(req, state, &request, answer, recorder, limit_headers, &label)
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
    request: &ProxyRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(crate::admission::Admitted, crate::events::Permit), GatewayError> {
    check_model(state, principal, &request.model)?;
    let customer = customer_id(req, request)?;
    let mut admitted = crate::admission::admit(
        principal,
        &request.model,
        &state.budget_view,
        &state.limiter,
        &state.budget_settings,
        now,
    )?;
    // The customer is looked up only once the key's own limits admitted the request.
    if let Some(id) = &customer {
        if let Some(party) = state.tenancy.with_customer(principal, id, state.shared_customers).await? {
            admitted.admit_party(&party, &request.model, &state.limiter, &state.budget_settings, now)?;
        }
    }
    if let Some(leases) = state.leases.as_ref().filter(|_| admitted.has_hard_budget()) {
        admitted.reserve(leases, worst_case_cost(state, request), now).await?;
    }
    let permit = state.sink.admit().map_err(|e| match e {
        crate::events::SinkError::Unavailable => GatewayError::MeteringUnavailable,
        _ => GatewayError::MeteringBacklogFull,
    })?;
    Ok((admitted, permit))
}

/// The answer to relay: a metered stream, or the whole answer once read and metered.
async fn respond(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    request: &Arc<ProxyRequest>,
    answer: proxy::RoutedAnswer,
    recorder: UsageRecorder,
    limit_headers: Vec<(HeaderName, HeaderValue)>,
    label: &str,
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
        let stream = metered_stream(state, request, answer, recorder, label);
        return Ok(Reply::Stream { headers, stream: Box::new(stream) });
    }

    let content_type = crate::providers::answer_content_type(&deployment, answer.response.headers());
    let whole = meter_whole_answer(state, request, answer, recorder, hung_up(req)).await?;
    if whole.client_gone {
        return Err(GatewayError::ClientClosed);
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
) -> Result<proxy::RoutedAnswer, RoutedFailure> {
    let body_for = |d: &crate::providers::Deployment| crate::providers::request_body(d, &request);
    // A fallback is a model like any other: the key's allow-lists apply to it too.
    let allowed = |m: &str| check_model(&state, &principal, m).is_ok();
    let spec = proxy::Call {
        model: &request.model,
        endpoint: request.endpoint,
        stream: request.stream,
        body_for: &body_for,
        allowed: &allowed,
        attempt: &attempt,
    };
    proxy::call(&state.router, &state.client, spec).await
}

/// Meters a call that ended without an answer to relay: an upstream error (passed through to
/// the client: SDKs map its status to their exceptions), a transport failure or a request the
/// gateway could not build.
fn meter_failure(
    failure: RoutedFailure,
    recorder: UsageRecorder,
    request: &ProxyRequest,
    limit_headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<Reply, GatewayError> {
    match failure {
        RoutedFailure::Gateway(e) => {
            recorder.abandon();
            Err(e)
        }
        RoutedFailure::Transport { picked, error, attempts } => {
            let err = match error {
                UpstreamError::Timeout => GatewayError::UpstreamTimeout {
                    model: request.model.clone(),
                    timeout_ms: u64::try_from(picked.deployment.timeout.as_millis()).unwrap_or(u64::MAX),
                },
                UpstreamError::Unavailable(reason) => {
                    tracing::warn!(deployment = %picked.deployment.id, %reason, attempts, "upstream unavailable");
                    GatewayError::UpstreamUnavailable { model: request.model.clone() }
                }
            };
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

/// A streamed answer, metered as it passes.
fn metered_stream(
    state: &web::Data<AppState>,
    request: &Arc<ProxyRequest>,
    answer: proxy::RoutedAnswer,
    recorder: UsageRecorder,
    label: &str,
) -> MeteredStream {
    let upstream = crate::providers::response_stream(&answer.picked.deployment, answer.response);
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
}

/// A whole answer, read and metered.
struct WholeAnswer {
    body: web::Bytes,
    charged: tollgate_schemas::NanoUsd,
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
    answer: proxy::RoutedAnswer,
    mut recorder: UsageRecorder,
    client_gone: impl std::future::Future<Output = ()>,
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
    let (tokens, estimated) = match parsed.usage() {
        Some(u) => (u.tokens(), false),
        // No usage from the provider: count it ourselves and say so.
        None => {
            let mut generated = crate::tokens::TextTally::default();
            crate::tokens::answer_text(&body, &mut generated);
            (Tokens { prompt: request.prompt_tokens_estimate(), completion: generated.tokens(), cached: 0 }, true)
        }
    };
    state.router.record_success(&answer.picked, answer.sent_at.elapsed(), tokens.prompt + tokens.completion);
    let served_model = parsed.model().map(str::to_owned).or_else(|| Some(deployment.upstream_model.clone()));
    let charged = recorder.finish(Outcome {
        status: 200,
        error_type: None,
        tokens,
        served_model: served_model.clone(),
        partial: false,
        estimated,
        deployment: Some(&deployment),
    });
    Ok(WholeAnswer { body, charged, served_model, client_gone: gone })
}

/// Policy `finish_upstream`: the client is gone; let the call end, read its answer (a stream
/// to its end) and charge what the provider reports. Runs on the gateway's background tracker,
/// which shutdown waits for.
async fn finish_upstream(
    state: web::Data<AppState>,
    request: Arc<ProxyRequest>,
    call: std::pin::Pin<Box<impl std::future::Future<Output = Result<proxy::RoutedAnswer, RoutedFailure>> + Send>>,
    recorder: UsageRecorder,
) {
    match call.await {
        Ok(answer) if request.stream => {
            let mut rest = metered_stream(&state, &request, answer, recorder, &request.model);
            while rest.next().await.is_some() {}
        }
        Ok(answer) => {
            let _ = meter_whole_answer(&state, &request, answer, recorder, std::future::pending()).await;
        }
        Err(failure) => {
            let _ = meter_failure(failure, recorder, &request, Vec::new());
        }
    }
}

/// `POST /v1/messages`: Anthropic's Messages API, served by any provider through translation
/// to and from OpenAI chat (the same routing, metering and limits as every route).
pub(crate) async fn anthropic_messages(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let (request_id, bad_id) = request_id(&req);
    let anthropic_error = |e: GatewayError| {
        let envelope = serde_json::to_vec(&json!({"error": {"message": e.to_string()}})).unwrap_or_default();
        let status = e.status_code();
        HttpResponse::build(status).json(crate::providers::anthropic::error_to_anthropic(status.as_u16(), &envelope))
    };
    let prepared = async {
        if let Some(e) = bad_id {
            return Err(e);
        }
        let key = authorize(&req, &state).await?;
        let body = read_body(&req, payload, state.max_body_bytes).await?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::invalid(format!("request body is not valid JSON: {e}"), None))?;
        let chat = crate::providers::anthropic::messages_to_chat_request(&value)?;
        let chat = serde_json::to_vec(&chat).map_err(|e| GatewayError::Internal(e.to_string()))?;
        Ok::<_, GatewayError>((key, ProxyRequest::parse(&chat, Endpoint::ChatCompletions)?))
    }
    .await;
    let (key, request) = match prepared {
        Ok(p) => p,
        Err(e) => {
            observe(Endpoint::ChatCompletions, "unknown", e.status_code(), started);
            return anthropic_error(e);
        }
    };
    let model = request.model.clone();
    let (label, mut response) = match serve(&req, &state, key, request, &request_id, started).await {
        Err((label, e)) => (label, anthropic_error(e)),
        Ok((label, Reply::Stream { headers, stream })) => {
            let translated = crate::sse::TranslatedStream::new(
                stream,
                crate::providers::anthropic::ChatToMessagesStream::new(&model),
            );
            let mut r = HttpResponse::Ok();
            r.insert_header((CONTENT_TYPE, "text/event-stream")).insert_header(("cache-control", "no-cache"));
            for h in headers {
                r.insert_header(h);
            }
            (label, r.streaming(translated))
        }
        Ok((label, Reply::Full { status, headers, body, .. })) => {
            let translated = if status.is_success() {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .map(|chat| crate::providers::anthropic::chat_response_to_message(&chat, &model))
                    .unwrap_or_else(|_| crate::providers::anthropic::error_to_anthropic(502, &body))
            } else {
                crate::providers::anthropic::error_to_anthropic(status.as_u16(), &body)
            };
            let mut r = HttpResponse::build(status);
            for h in headers {
                r.insert_header(h);
            }
            (label, r.json(translated))
        }
    };
    observe(Endpoint::ChatCompletions, &label, response.status(), started);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    response
}

fn model_object(name: &str) -> serde_json::Value {
    json!({"id": name, "object": "model", "created": 1_700_000_000u64, "owned_by": "tollgate"})
}

/// `GET /v1/models`: the models this key may use.
pub(crate) async fn list_models(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let principal = match authorize(&req, &state).await {
        Ok(p) => p,
        Err(e) => return e.error_response(),
    };
    let data: Vec<_> = state
        .router
        .model_names()
        .iter()
        .filter(|m| check_model(&state, &principal, m).is_ok())
        .map(|m| model_object(m))
        .collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{model}`.
pub(crate) async fn get_model(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let principal = match authorize(&req, &state).await {
        Ok(p) => p,
        Err(e) => return e.error_response(),
    };
    let model = path.into_inner();
    if !state.router.knows(&model) || check_model(&state, &principal, &model).is_err() {
        return GatewayError::ModelNotFound(model).error_response();
    }
    HttpResponse::Ok().json(model_object(&model))
}

/// `GET /model/info`: LiteLLM's deployment listing, never with provider keys. Where a model is
/// served from (`api_base`, the upstream model and deployment id, its rpm/tpm) is shown to
/// admins only (the master key, `proxy_admin` and `proxy_admin_viewer` keys); other keys see
/// the models they may use, with prices and model information.
pub(crate) async fn model_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let is_admin = matches!(crate::admin::caller(&req, &state, false).await, Ok(crate::admin::Caller::Admin));
    let principal = match authorize(&req, &state).await {
        Ok(p) => p,
        Err(_) if is_admin => return model_info_for_admins(&state),
        Err(e) => return e.error_response(),
    };
    if is_admin {
        return model_info_for_admins(&state);
    }
    let data: Vec<_> = state
        .router
        .deployments()
        .filter(|d| check_model(&state, &principal, &d.model_name).is_ok())
        .map(|d| {
            json!({
                "model_name": d.model_name,
                "litellm_params": {"model": d.model_name},
                "model_info": public_model_info(d),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"data": data}))
}

/// What any key may know of a deployment: its model information and prices.
fn public_model_info(d: &crate::providers::Deployment) -> serde_json::Map<String, serde_json::Value> {
    let mut info = d.model_info.clone().unwrap_or_default();
    // Access groups and base models say how the operator organises providers: admins only.
    for private in ["id", "access_groups", "base_model", "api_base"] {
        info.remove(private);
    }
    if let Some(p) = d.price {
        info.insert("input_nano_usd_per_token".into(), json!(p.input.0));
        info.insert("output_nano_usd_per_token".into(), json!(p.output.0));
        info.insert("cached_input_nano_usd_per_token".into(), json!(p.cached_input.0));
    }
    info
}

/// Every deployment with where it is served from (never its key).
fn model_info_for_admins(state: &AppState) -> HttpResponse {
    let data: Vec<_> = state
        .router
        .deployments()
        .map(|d| {
            let mut info = d.model_info.clone().unwrap_or_default();
            info.insert("id".into(), json!(d.id));
            if let Some(p) = d.price {
                info.insert("input_nano_usd_per_token".into(), json!(p.input.0));
                info.insert("output_nano_usd_per_token".into(), json!(p.output.0));
                info.insert("cached_input_nano_usd_per_token".into(), json!(p.cached_input.0));
            }
            json!({
                "model_name": d.model_name,
                "litellm_params": {"model": format!("{}/{}", d.provider, d.upstream_model), "api_base": d.api_base,
                                   "rpm": d.rpm, "tpm": d.tpm},
                "model_info": info,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"data": data}))
}
