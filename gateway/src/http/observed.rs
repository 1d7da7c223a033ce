//! The span and the metrics of the Files and Batch API routes (`files.rs`, `batches.rs`): each
//! request is traced as a model request is (its span, a root when sampled, `x-request-id` and
//! `x-tollgate-trace-id` on the answer) and counted in `tollgate_requests_total` and
//! `tollgate_request_duration_seconds` with `endpoint` `files` or `batches` and the model group
//! once it is known (`unknown` before). It never records an id, a key or a file's content.

use super::{identify, observe, request_id};
use crate::error::GatewayError;
use crate::tenancy::auth::Principal;
use crate::AppState;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use std::cell::RefCell;
use std::time::Instant;

/// Which API a route is of: its `endpoint` label and its span's operation.
#[derive(Clone, Copy)]
pub(crate) enum Api {
    Files,
    Batches,
}

impl Api {
    fn endpoint(self) -> &'static str {
        match self {
            Api::Files => "files",
            Api::Batches => "batches",
        }
    }

    fn operation(self) -> &'static str {
        match self {
            Api::Files => "files",
            Api::Batches => "batch",
        }
    }
}

/// What a handler learnt of its request, for the span and the metrics.
pub(crate) struct Seen {
    api: Api,
    model: RefCell<Option<String>>,
}

impl Seen {
    pub(crate) fn new(api: Api) -> Seen {
        Seen { api, model: RefCell::new(None) }
    }

    /// The caller, once authenticated: its alias, team and customer on the span.
    pub(crate) fn principal(&self, principal: &Principal) {
        crate::traces::record_principal(principal);
    }

    /// The model group the request is for: on the span, and as the metrics' `model` label.
    pub(crate) fn model(&self, state: &AppState, model: &str) {
        crate::traces::record_model(self.api.operation(), model);
        *self.model.borrow_mut() = Some(state.router.metric_label(model));
    }
}

/// Serves `serve` within the request's span and counts its answer.
pub(crate) async fn observed(
    req: &HttpRequest,
    seen: &Seen,
    serve: impl std::future::Future<Output = Result<HttpResponse, GatewayError>>,
) -> HttpResponse {
    let started = Instant::now();
    let (request_id, bad_id) = request_id(req);
    let trace = crate::traces::RequestTrace::start(req, seen.api.operation(), &request_id);
    let answer = async {
        let result = match bad_id {
            Some(e) => Err(e),
            None => serve.await,
        };
        let response = result.unwrap_or_else(|e| e.error_response());
        crate::traces::record_status(response.status().as_u16());
        let model = seen.model.borrow_mut().take().unwrap_or_else(|| "unknown".to_owned());
        observe(seen.api.endpoint(), &model, response.status(), started);
        response
    };
    let mut response = trace.within(answer).await;
    identify(&mut response, &request_id, trace.trace_id.as_deref());
    response
}
