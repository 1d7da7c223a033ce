//! Pass-through routes (LiteLLM's `/openai/...`, `/anthropic/...`, `/gemini/...`): the request's
//! bytes sent on unchanged to a deployment of that provider family, with the deployment's
//! credentials in place of the virtual key, after the same authentication and admission as the
//! model routes, and metered by the usage the provider's own answer reports (design.md §2.12).

mod call;
mod path;
mod stream;
mod usage;

use super::{observe, read_body, request_id};
use crate::error::GatewayError;
use crate::limits::pricing::Tokens;
use crate::metering::recorder::UsageRecorder;
use crate::providers::Deployment;
use crate::tenancy::auth::{raw_key, Principal};
use crate::traces::RequestTrace;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use std::sync::Arc;
use std::time::Instant;

/// A provider family served by a pass-through route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Family {
    /// The route's prefix, and the name of the provider family (`Provider::name`) it calls.
    fn prefix(self) -> &'static str {
        match self {
            Family::OpenAi => "/openai",
            Family::Anthropic => "/anthropic",
            Family::Gemini => "/gemini",
        }
    }

    fn provider(self) -> &'static str {
        &self.prefix()[1..]
    }

    /// The `endpoint` label of its request metrics.
    fn metric_endpoint(self) -> &'static str {
        match self {
            Family::OpenAi => "openai/*",
            Family::Anthropic => "anthropic/*",
            Family::Gemini => "gemini/*",
        }
    }

    /// Whether `d` is one of its deployments: of the family, signed by its key alone (not
    /// Vertex AI's service accounts or Bedrock's SigV4, which sign differently).
    fn serves(self, d: &Deployment) -> bool {
        d.api.name() == self.provider() && d.service_account.is_none() && d.aws.is_none()
    }
}

pub(crate) async fn openai(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Family::OpenAi).await
}

pub(crate) async fn anthropic(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Family::Anthropic).await
}

pub(crate) async fn gemini(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    handle(req, payload, state, Family::Gemini).await
}

async fn handle(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>, family: Family) -> HttpResponse {
    let started = Instant::now();
    let (request_id, bad_id) = request_id(&req);
    let operation = operation(req.path());
    let trace = RequestTrace::start(&req, operation, &request_id);
    let answer = async {
        let result = match bad_id {
            Some(e) => Err(("unknown".to_owned(), e)),
            None => forward(&req, payload, &state, (family, operation), (&request_id, &trace), started).await,
        };
        let (label, response) = match result {
            Ok((label, response)) => (label, response),
            Err((label, e)) => (label, e.error_response()),
        };
        crate::traces::record_status(response.status().as_u16());
        observe(family.metric_endpoint(), &label, response.status(), started);
        response
    };
    let mut response = trace.within(answer).await;
    super::identify(&mut response, &request_id, trace.trace_id.as_deref());
    response
}

/// The GenAI operation (`gen_ai.operation.name`) a pass-through path performs, as far as its
/// path says: the conventions' names where one fits, else `pass_through` (a model list, a
/// file, a batch).
fn operation(path: &str) -> &'static str {
    let path = path.to_ascii_lowercase();
    if path.contains("embed") {
        "embeddings"
    } else if ["chat/completions", "/messages", "/responses", "generatecontent"].iter().any(|p| path.contains(p)) {
        "chat"
    } else if path.ends_with("/completions") {
        "text_completion"
    } else {
        "pass_through"
    }
}

/// The virtual key: `Authorization: Bearer`, `x-api-key`, `api-key`, and for Gemini also
/// `x-goog-api-key` or the query's `key`.
fn virtual_key(req: &HttpRequest, family: Family) -> Option<&str> {
    raw_key(req.headers()).or_else(|| {
        (family == Family::Gemini).then_some(())?;
        let header = req.headers().get("x-goog-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
        header.filter(|k| !k.is_empty()).or_else(|| path::query_key(req.query_string()))
    })
}

/// What a request's body and path name: the model (the body's `model`, or for Gemini the
/// path's `models/<model>:`), whether it asks for a stream (the body's `stream`, or Gemini's
/// `:streamGenerateContent`), and its end user (OpenAI's `user`, the customer when no
/// `x-tollgate-customer-id` names one).
#[derive(Debug, Default, PartialEq, Eq)]
struct Named {
    model: Option<String>,
    stream: bool,
    user: Option<String>,
}

fn named(family: Family, tail: &str, body: &[u8]) -> Result<Named, GatewayError> {
    #[derive(serde::Deserialize)]
    struct Fields {
        model: Option<serde_json::Value>,
        stream: Option<serde_json::Value>,
        user: Option<serde_json::Value>,
    }
    let fields = serde_json::from_slice::<Fields>(body).ok();
    let text = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_str).map(str::to_owned);
    let gemini = family == Family::Gemini;
    let stream = fields.as_ref().and_then(|f| f.stream.as_ref()?.as_bool()).unwrap_or(false)
        || (gemini && tail.contains(":streamGenerateContent"));
    let model = text(fields.as_ref().and_then(|f| f.model.as_ref())).or_else(|| {
        let after = tail.split_once("/models/").filter(|_| gemini)?.1;
        Some(after.split([':', '/']).next()?.to_owned()).filter(|m| !m.is_empty())
    });
    // An empty `user` is no customer, as on the model routes.
    let user = text(fields.as_ref().and_then(|f| f.user.as_ref())).filter(|u| !u.is_empty());
    if let Some(u) = &user {
        tollgate_schemas::limits::check_id("user", u).map_err(|e| GatewayError::field("user", e.to_string()))?;
    }
    Ok(Named { model, stream, user })
}

/// The deployment that names the model group: of the family, serving the named model (by
/// `model_name` or the provider's name for it) and allowed to the key; with no model named
/// (a `GET`, a `DELETE`, a body without `model`), the first of the family the key may use, in
/// config order. The router then picks among the group's deployments of the family.
fn pick(
    state: &AppState,
    principal: &Principal,
    family: Family,
    model: Option<&str>,
) -> Result<Arc<Deployment>, GatewayError> {
    let allowed = |d: &&Arc<Deployment>| crate::pipeline::check_model(state, principal, &d.model_name).is_ok();
    let of_family = state.router.deployments().filter(|d| family.serves(d));
    let mut candidates = of_family.filter(|d| model.is_none_or(|m| d.model_name == m || d.upstream_model == m));
    match candidates.find(|d| allowed(d)) {
        Some(d) => Ok(d.clone()),
        None => Err(model.map_or_else(
            || GatewayError::ModelNotFound(format!("any {} model", family.provider())),
            |m| GatewayError::ModelNotFound(m.to_owned()),
        )),
    }
}

/// What the route's handler knows of the request before it is forwarded.
struct Incoming<'a> {
    family: Family,
    tail: &'a str,
    query: String,
    body: web::Bytes,
    named: Named,
}

type Forwarded = Result<(String, HttpResponse), (String, GatewayError)>;

async fn forward(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    (family, operation): (Family, &'static str),
    (request_id, trace): (&str, &RequestTrace),
    started: Instant,
) -> Forwarded {
    let unknown = |e| ("unknown".to_owned(), e);
    let auth = crate::traces::child("auth");
    let raw = virtual_key(req, family).ok_or(GatewayError::MissingKey).map_err(unknown)?;
    let mut principal = state.tenancy.authenticate(raw, chrono::Utc::now()).await.map_err(unknown)?;
    drop(auth);
    let tail = path::check_tail(req.path().strip_prefix(family.prefix()).unwrap_or_default()).map_err(unknown)?;
    let query = path::forwarded_query(req.query_string()).map_err(unknown)?;
    let body = read_body(req, payload, state.max_body_bytes).await.map_err(unknown)?;
    let named = named(family, tail, &body).map_err(unknown)?;
    let deployment = pick(state, &principal, family, named.model.as_deref()).map_err(unknown)?;
    path::upstream_url(&deployment.api_base, tail, &query).map_err(unknown)?;
    let group = deployment.model_name.clone();
    let label = state.router.metric_label(&group);
    let fail = |e| (label.clone(), e);
    crate::traces::record_model(operation, &group);
    let customer = crate::pipeline::customer_id(req, named.user.as_deref()).map_err(fail)?;
    // A provider's own body has no `metadata.tags`: the header's tags, the key's and the team's.
    let header = crate::tenancy::tags::header_tags(req).map_err(fail)?;
    principal.tags =
        crate::tenancy::tags::event_tags(&principal, Vec::new(), header, state.reject_client_tags).map_err(fail)?;
    let now = chrono::Utc::now();
    let generates = *req.method() == actix_web::http::Method::POST;
    let admission = crate::traces::child("admission");
    let (admitted, permit) =
        admit(state, &mut principal, (&deployment, customer.as_deref()), (body.len(), generates), now)
            .await
            .inspect_err(crate::observability::usage::refused)
            .map_err(fail)?;
    drop(admission);
    crate::traces::record_principal(&principal);
    let limit_headers = admitted.reservation.headers.clone();
    let recorder = UsageRecorder::start(
        state.sink.clone(),
        permit,
        &state.gateway_id,
        request_id,
        &principal,
        admitted,
        &group,
        named.stream,
        started,
        now,
    )
    .labelled(&label)
    .traced(trace.outcome_span(), trace.trace_id.clone())
    .operation(operation);
    let incoming = Incoming { family, tail, query, body, named };
    let answer = call::routed(req, state, &principal, &group, incoming, recorder, generates).await.map_err(fail)?;
    let mut answer = answer;
    for h in limit_headers {
        answer.headers_mut().insert(h.0, h.1);
    }
    Ok((label, answer))
}

/// Admission for the deployment's model group: the key's rate limits and budgets, then the
/// customer's (`x-tollgate-customer-id`, else the body's `user`), a hard budget's worst case
/// reserved (every body byte a prompt token and, for a request that can generate (a `POST`),
/// the configured output reserve), and a place for the usage event.
async fn admit(
    state: &AppState,
    principal: &mut Principal,
    (deployment, customer): (&Deployment, Option<&str>),
    (body_len, generates): (usize, bool),
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(crate::limits::admission::Admitted, crate::metering::sink::Permit), GatewayError> {
    let model = &deployment.model_name;
    let mut admitted = crate::limits::admission::admit(
        principal,
        model,
        &state.budget_view,
        &state.limiter,
        &state.budget_settings,
        now,
    )?;
    crate::pipeline::admit_customer(state, principal, &mut admitted, (customer, model), now).await?;
    if let Some(leases) = state.leases.as_ref().filter(|_| admitted.has_hard_budget()) {
        let output = if generates { state.budget_settings.reserve_output_tokens } else { 0 };
        let worst =
            state.router.worst_price(model).or(deployment.price).map_or(tollgate_schemas::NanoUsd::ZERO, |price| {
                let prompt = u64::try_from(body_len).unwrap_or(u64::MAX);
                crate::limits::pricing::worst_case_cost(&price, prompt, output, Tokens::default())
                    .unwrap_or(tollgate_schemas::NanoUsd(i64::MAX))
            });
        let grant = crate::traces::child("lease_grant");
        admitted.reserve(leases, worst, now).await?;
        drop(grant);
    }
    Ok((admitted, crate::pipeline::usage_permit(state)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn gemini_keys_come_from_its_header_or_query_and_others_from_the_usual_headers() {
        let goog = TestRequest::default().insert_header(("x-goog-api-key", "sk-1")).to_http_request();
        assert_eq!(virtual_key(&goog, Family::Gemini), Some("sk-1"));
        assert_eq!(virtual_key(&goog, Family::OpenAi), None);
        let query = TestRequest::default().uri("/gemini/v1beta/models/m:generateContent?key=sk-2").to_http_request();
        assert_eq!(virtual_key(&query, Family::Gemini), Some("sk-2"));
        assert_eq!(virtual_key(&query, Family::Anthropic), None);
        let bearer = TestRequest::default().insert_header(("authorization", "Bearer sk-3")).to_http_request();
        assert_eq!(virtual_key(&bearer, Family::Anthropic), Some("sk-3"));
    }

    #[test]
    fn the_model_and_stream_come_from_the_body_else_gemini_s_path() {
        let body = br#"{"model":"gpt-x","stream":true,"user":"cust-1"}"#;
        let named = |family, tail, body: &[u8]| named(family, tail, body).map(|n| (n.model, n.stream, n.user));
        let want = (Some("gpt-x".into()), true, Some("cust-1".into()));
        assert_eq!(named(Family::OpenAi, "/v1/chat/completions", body).ok(), Some(want));
        let tail = "/v1beta/models/gemini-pt:streamGenerateContent";
        assert_eq!(named(Family::Gemini, tail, b"{}").ok(), Some((Some("gemini-pt".into()), true, None)));
        assert_eq!(named(Family::OpenAi, tail, b"not json").ok(), Some((None, false, None)));
        assert_eq!(named(Family::OpenAi, tail, b"").ok(), Some((None, false, None)));
        // Fields of another type name nothing; an empty user is no customer.
        let odd = br#"{"model":7,"stream":"yes","user":""}"#;
        assert_eq!(named(Family::OpenAi, tail, odd).ok(), Some((None, false, None)));
        // A user id the ledger could not key is refused, naming the field.
        let bad = serde_json::json!({"user": "a/b"}).to_string();
        assert!(named(Family::OpenAi, tail, bad.as_bytes()).is_err());
    }

    #[test]
    fn the_operation_comes_from_the_path() {
        assert_eq!(operation("/openai/v1/chat/completions"), "chat");
        assert_eq!(operation("/anthropic/v1/messages"), "chat");
        assert_eq!(operation("/gemini/v1beta/models/m:streamGenerateContent"), "chat");
        assert_eq!(operation("/gemini/v1beta/models/m:batchEmbedContents"), "embeddings");
        assert_eq!(operation("/openai/v1/completions"), "text_completion");
        assert_eq!(operation("/openai/v1/models"), "pass_through");
    }
}
