//! The HTTP surface: the route table (`routes`), the OpenAI and Anthropic handlers, the spend
//! API, the OpenAI wire types (`wire`), and what every handler shares: reading a body within
//! its bound, the request id, authentication, noticing a client that hung up, health and
//! metrics. Every model route goes through [`authorize`] first: no route reaches a provider
//! unchecked. Handlers hand admitted requests to `crate::pipeline`.

pub mod anthropic;
pub mod batches;
pub mod files;
pub mod listeners;
mod observed;
pub mod openai;
pub mod passthrough;
pub mod routes;
pub mod spend;
mod spend_range;
mod tagged_logs;
pub mod wire;

use crate::error::GatewayError;
use crate::tenancy::auth::{raw_key, Principal};
use crate::AppState;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;
use serde_json::json;
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
        let given = raw_key(req.headers()).map(crate::tenancy::auth::hash_key);
        if !given.is_some_and(|g| crate::admin::constant_time_eq(&g, want)) {
            return GatewayError::Forbidden("/metrics needs its bearer token".into()).error_response();
        }
    }
    crate::observability::scrape::refresh(&state);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// Reads the body up to the configured limit; bigger bodies are refused without reading them.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, GatewayError> {
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
pub(crate) fn request_id(req: &HttpRequest) -> (String, Option<GatewayError>) {
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

/// Authenticates the request's key and resolves its tenants; blocked or expired ones are
/// refused.
pub(crate) async fn authorize(req: &HttpRequest, state: &AppState) -> Result<Principal, GatewayError> {
    let raw = raw_key(req.headers()).ok_or(GatewayError::MissingKey)?;
    state.tenancy.authenticate(raw, chrono::Utc::now()).await
}

/// The request's ids in its answer: `x-request-id`, and `x-tollgate-trace-id` when it is part of
/// a trace.
pub(crate) fn identify(response: &mut HttpResponse, request_id: &str, trace_id: Option<&str>) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    if let Some(v) = trace_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert(HeaderName::from_static("x-tollgate-trace-id"), v);
    }
}

/// Counts an answer of a model route; `endpoint` is its label (`Endpoint::path`, or a
/// pass-through family's `openai/*`).
pub(crate) fn observe(endpoint: &'static str, model: &str, status: StatusCode, started: Instant) {
    let status = status.as_u16().to_string();
    let labels = [("endpoint", endpoint), ("model", model), ("status", &*status)];
    let handles = &crate::observability::policy().handles;
    handles.histogram("tollgate_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    handles.counter("tollgate_requests_total", &labels).increment(1);
}

/// What a model route answers, before it becomes an HTTP response (so `/v1/messages` can
/// translate it).
pub enum Reply {
    /// A whole body: the provider's answer or its error, in OpenAI's format.
    Full { status: StatusCode, content_type: String, headers: Vec<(HeaderName, HeaderValue)>, body: web::Bytes },
    /// A metered stream of OpenAI chunks.
    Stream { headers: Vec<(HeaderName, HeaderValue)>, stream: Box<dyn AnswerStream> },
}

/// The chunks of a streamed answer: a metered provider stream, or one replayed from the cache.
pub trait AnswerStream: futures::Stream<Item = Result<web::Bytes, actix_web::Error>> + Unpin + 'static {}

impl<S: futures::Stream<Item = Result<web::Bytes, actix_web::Error>> + Unpin + 'static> AnswerStream for S {}

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
                r.streaming(crate::traces::in_request(stream))
            }
        }
    }
}

pub(crate) fn header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(value).ok().map(|v| (HeaderName::from_static(name), v))
}
