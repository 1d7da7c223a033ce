//! `/organization/*`: organizations, above teams, users and customers.

use super::fields::{set, take_limits, Fields};
use super::{delete_many, models, must_exist, present, queried, with_spend, Answer, Resource};
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use tollgate_schemas::store::TenancyStore;
use tollgate_schemas::tenancy::{BudgetRecord, OrganizationRecord};

impl Resource for OrganizationRecord {
    const ID_FIELD: &'static str = "organization_id";

    timestamps!(OrganizationRecord, organization_id);

    async fn apply(&mut self, f: &mut Fields, state: &AppState, store: &dyn TenancyStore) -> Result<(), GatewayError> {
        set(&mut self.organization_alias, f.string("organization_alias")?);
        set(&mut self.models, models(f, state)?);
        set(&mut self.blocked, f.bool("blocked")?);
        set(&mut self.metadata, f.metadata("metadata")?);
        take_limits(f, &mut self.limits)?;
        must_exist::<BudgetRecord>(store, "budget_id", self.limits.budget_id.as_deref()).await
    }
}

/// `POST /organization/delete`.
pub(crate) async fn delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    delete_many::<OrganizationRecord>(&req, &body, &state, "organization_ids").await
}

/// `GET /organization/info`: the organization with its spend.
pub(crate) async fn info(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let (_, org) = queried::<OrganizationRecord>(&req, &state, &["organization_id"]).await?;
    let scope = format!("org/{}", org.organization_id);
    Ok(HttpResponse::Ok().json(with_spend(&state, present(&org), &scope, &org.limits).await))
}
