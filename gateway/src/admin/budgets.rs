//! `/budget/*`: reusable budgets, a set of limits that keys, teams, users, customers and
//! organizations name by `budget_id`.

use super::fields::{take_limits, Fields};
use super::{admin, must_find, present, referenced, remove, Answer, Resource};
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::json;
use tollgate_schemas::store::TenancyStore;
use tollgate_schemas::tenancy::BudgetRecord;

impl Resource for BudgetRecord {
    const ID_FIELD: &'static str = "budget_id";

    timestamps!(BudgetRecord, budget_id);

    async fn apply(&mut self, f: &mut Fields, _: &AppState, _: &dyn TenancyStore) -> Result<(), GatewayError> {
        take_limits(f, &mut self.limits)?;
        // `budget_id` is the budget's own id (taken before the limits are): a budget never
        // names another budget.
        self.limits.budget_id = None;
        Ok(())
    }
}

/// `POST /budget/delete`: one budget, named by `id`.
pub(crate) async fn delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    let store = admin(&req, &state, true).await?;
    let mut f = Fields::parse(&body)?;
    let id = f.required_string("id")?;
    f.finish()?;
    let (_, version) = referenced::<BudgetRecord>(store.as_ref(), "id", &id).await?;
    remove::<BudgetRecord>(&state, store.as_ref(), &id, version).await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": [id]})))
}

/// `POST /budget/info`: the budgets named in `budgets`, in that order.
pub(crate) async fn info(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    let store = admin(&req, &state, false).await?;
    let mut f = Fields::parse(&body)?;
    let ids = f.strings("budgets")?.unwrap_or_default();
    f.finish()?;
    if ids.is_empty() {
        return Err(GatewayError::field("budgets", "`budgets` must name at least one budget"));
    }
    let mut out = Vec::new();
    for id in &ids {
        out.push(present(&must_find::<BudgetRecord>(store.as_ref(), id).await?.0));
    }
    Ok(HttpResponse::Ok().json(out))
}
