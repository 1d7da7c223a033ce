//! `/customer/*`: customers (LiteLLM's end users), charged by the `user` field of a request.

use super::fields::{set, take_limits, Fields};
use super::{
    admin, delete_many, must_exist, named_once, present, queried, referenced, save, with_spend, Answer, Resource,
};
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::json;
use tollgate_schemas::store::TenancyStore;
use tollgate_schemas::tenancy::{BudgetRecord, CustomerRecord, OrganizationRecord, TeamRecord};

impl Resource for CustomerRecord {
    const ID_FIELD: &'static str = "user_id";
    /// A customer's id is the caller's own name for them: never made up.
    const ID_REQUIRED: bool = true;

    timestamps!(CustomerRecord, user_id);

    async fn apply(&mut self, f: &mut Fields, _: &AppState, store: &dyn TenancyStore) -> Result<(), GatewayError> {
        set(&mut self.alias, f.string("alias")?);
        set(&mut self.team_id, f.id("team_id")?);
        set(&mut self.organization_id, f.id("organization_id")?);
        must_exist::<TeamRecord>(store, "team_id", self.team_id.as_deref()).await?;
        must_exist::<OrganizationRecord>(store, "organization_id", self.organization_id.as_deref()).await?;
        set(&mut self.blocked, f.bool("blocked")?);
        set(&mut self.metadata, f.metadata("metadata")?);
        take_limits(f, &mut self.limits)?;
        must_exist::<BudgetRecord>(store, "budget_id", self.limits.budget_id.as_deref()).await
    }
}

/// `POST /customer/delete`.
pub(crate) async fn delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    delete_many::<CustomerRecord>(&req, &body, &state, "user_ids").await
}

/// `GET /customer/info`: by `end_user_id` (or `user_id`), with its spend.
pub(crate) async fn info(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let (_, customer) = queried::<CustomerRecord>(&req, &state, &["end_user_id", "user_id"]).await?;
    let scope = format!("customer/{}", customer.user_id);
    Ok(HttpResponse::Ok().json(with_spend(&state, present(&customer), &scope, &customer.limits).await))
}

/// Blocks or unblocks every customer named in `user_ids` (all must exist first).
async fn set_blocked(req: &HttpRequest, body: &[u8], state: &AppState, blocked: bool) -> Answer {
    let store = admin(req, state, true).await?;
    let mut f = Fields::parse(body)?;
    let ids = f.strings("user_ids")?.unwrap_or_default();
    f.finish()?;
    let ids = named_once::<CustomerRecord>(ids, "user_ids")?;
    let mut found = Vec::new();
    for id in &ids {
        found.push(referenced::<CustomerRecord>(store.as_ref(), "user_ids", id).await?);
    }
    for (mut c, version) in found {
        c.blocked = blocked;
        c.updated_at = Some(Utc::now());
        save(state, store.as_ref(), &c, version).await?;
    }
    Ok(HttpResponse::Ok()
        .json(json!({"blocked_users": if blocked { ids.clone() } else { Vec::new() }, "user_ids": ids})))
}

/// `POST /customer/block`.
pub(crate) async fn block(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    set_blocked(&req, &body, &state, true).await
}

/// `POST /customer/unblock`.
pub(crate) async fn unblock(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    set_blocked(&req, &body, &state, false).await
}
