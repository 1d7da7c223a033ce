//! `GET /customer/statement`, `/team/statement`, `/organization/statement`: one scope's
//! statement for a period (docs/finance.md, "Statements over the API"). A closed period answers
//! the statement its close sealed, with its hashes; an open one, the statement as a close would
//! seal it now (`tollgate_ledger::statements`). Admins only (the master key or an admin key,
//! read-only admin keys included), and a team's admins for its statement; with a database only.

use super::{caller, Answer, Caller};
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use scylla::client::session::Session;
use std::sync::Arc;
use tollgate_ledger::ledger::LedgerError;
use tollgate_ledger::statements::{statement, StatementError};

/// Where statements are read: the production database (the ledger consumer's closes and
/// event ledger).
pub struct StatementReader {
    pub session: Arc<Session>,
    pub keyspace: String,
}

pub(crate) async fn customer_statement(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    answer(&req, &state, "customer", "customer_id").await
}

pub(crate) async fn team_statement(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    answer(&req, &state, "team", "team_id").await
}

pub(crate) async fn organization_statement(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    answer(&req, &state, "org", "organization_id").await
}

/// The statement of scope `<kind>/<id>`, the id from the query parameter `id_param`.
async fn answer(req: &HttpRequest, state: &AppState, kind: &str, id_param: &'static str) -> Answer {
    let reach = match caller(req, state, false).await? {
        Caller::Admin => None,
        // A team admin reads its teams' statements; nothing else is a user's.
        Caller::User(user) if kind == "team" => Some(user),
        Caller::User(_) | Caller::Own(_) => return Err(super::roles::not_for_role()),
    };
    let q = super::query(req);
    let id = q.get(id_param).ok_or_else(|| GatewayError::field(id_param, format!("`{id_param}` is required")))?;
    if reach.is_some_and(|user| !user.administers(id)) {
        return Err(GatewayError::NotFound { kind: "team", id: id.clone() });
    }
    let reader = state.statements.as_ref().ok_or(GatewayError::AdminUnavailable)?;
    tollgate_schemas::limits::check_id(id_param, id).map_err(|e| GatewayError::field(id_param, e.to_string()))?;
    let period = q.get("period").ok_or_else(|| GatewayError::field("period", "`period` is required"))?;
    if period.len() > "YYYY-MM-DD".len() {
        return Err(GatewayError::field("period", "`period` must be a month YYYY-MM or a day YYYY-MM-DD"));
    }
    let scope = format!("{kind}/{id}");
    match statement(&reader.session, &reader.keyspace, &scope, period).await {
        Ok(s) => Ok(HttpResponse::Ok().json(s)),
        Err(StatementError::Period(m)) => Err(GatewayError::field("period", format!("`period`: {m}"))),
        Err(StatementError::Ledger(e)) => Err(unavailable(&e)),
    }
}

/// A ledger failure, as answered: its message may quote stored values, so only its kind is
/// logged and counted.
fn unavailable(e: &LedgerError) -> GatewayError {
    let kind = match e {
        LedgerError::Result(_) => "result",
        _ => "query",
    };
    tracing::warn!(failure = kind, "database request of the statement API failed");
    metrics::counter!("tollgate_database_errors_total", "failure" => kind).increment(1);
    GatewayError::DatabaseUnavailable
}
