//! `/user/*`: internal users (people who hold keys and may be team members or admins).

use super::fields::{set, take_limits, Fields};
use super::keys::{keys_shown, new_key_record, new_raw_key, show_new_key};
use super::roles::teams_with_member;
use super::{
    admin, delete_many, from_body, insert, models, must_exist, present, queried, with_spend, Answer, Resource,
};
use crate::error::GatewayError;
use crate::tenancy::key_index::KeyFilter;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tollgate_schemas::store::TenancyStore;
use tollgate_schemas::tenancy::{BudgetRecord, KeyRecord, OrganizationRecord, UserRecord};

const USER_ROLES: [&str; 3] = ["proxy_admin", "proxy_admin_viewer", "internal_user"];

impl Resource for UserRecord {
    const ID_FIELD: &'static str = "user_id";

    timestamps!(UserRecord, user_id);

    async fn apply(&mut self, f: &mut Fields, state: &AppState, store: &dyn TenancyStore) -> Result<(), GatewayError> {
        set(&mut self.user_email, f.string("user_email")?);
        set(&mut self.user_alias, f.string("user_alias")?);
        if let Some(role) = f.string("user_role")? {
            if let Some(r) = &role {
                if !USER_ROLES.contains(&r.as_str()) {
                    let message = format!("`user_role` must be one of {USER_ROLES:?}");
                    return Err(GatewayError::field("user_role", message));
                }
            }
            self.user_role = role;
        }
        set(&mut self.organization_id, f.id("organization_id")?);
        set(&mut self.models, models(f, state)?);
        set(&mut self.blocked, f.bool("blocked")?);
        set(&mut self.metadata, f.metadata("metadata")?);
        take_limits(f, &mut self.limits)?;
        must_exist::<OrganizationRecord>(store, "organization_id", self.organization_id.as_deref()).await?;
        must_exist::<BudgetRecord>(store, "budget_id", self.limits.budget_id.as_deref()).await
    }
}

/// `POST /user/new`: as in LiteLLM, a new user gets a key of their own unless
/// `auto_create_key` is false.
pub(crate) async fn new(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    let store = admin(&req, &state, true).await?;
    let mut f = Fields::parse(&body)?;
    let now = Utc::now();
    let user = from_body::<UserRecord>(&mut f, &state, store.as_ref(), now).await?;
    let auto_create_key = f.bool("auto_create_key")?.unwrap_or(true);
    f.finish()?;
    insert(&state, store.as_ref(), &user).await?;
    let mut v = present(&user);
    if auto_create_key {
        let raw = new_raw_key();
        let key = KeyRecord {
            user_id: Some(user.user_id.clone()),
            organization_id: user.organization_id.clone(),
            ..new_key_record(&state, &raw, now)
        };
        insert(&state, store.as_ref(), &key).await?;
        show_new_key(&mut v, &raw, &key);
    }
    Ok(HttpResponse::Ok().json(v))
}

/// `POST /user/delete`.
pub(crate) async fn delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    delete_many::<UserRecord>(&req, &body, &state, "user_ids").await
}

/// `GET /user/info`: the user, their spend, their keys and their teams.
pub(crate) async fn info(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let (store, user) = queried::<UserRecord>(&req, &state, &["user_id"]).await?;
    let id = &user.user_id;
    let filter = KeyFilter { user_id: Some(id.clone()), ..KeyFilter::default() };
    let keys = keys_shown(&state, &store, filter, |k| k.user_id.as_ref() == Some(id)).await?;
    let teams: Vec<Value> =
        teams_with_member(&state, store.as_ref(), id).await?.into_iter().map(|t| json!(t.team_id)).collect();
    let info = with_spend(&state, present(&user), &format!("user/{id}"), &user.limits).await;
    Ok(HttpResponse::Ok().json(json!({"user_id": id, "user_info": info, "keys": keys, "teams": teams})))
}
