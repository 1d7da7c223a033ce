//! `/team/*`: teams, their members (internal users, each an `admin` or a `user` of the team)
//! and their keys.

use super::fields::{required, set, take_limits, FieldError, Fields};
use super::keys::keys_shown;
use super::{change, delete_many, models, must_exist, present, queried, with_spend, Answer, Changer, Resource};
use crate::error::GatewayError;
use crate::tenancy::key_index::KeyFilter;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tollgate_schemas::store::TenancyStore;
use tollgate_schemas::tenancy::{BudgetRecord, Member, OrganizationRecord, TeamRecord};

impl Resource for TeamRecord {
    const ID_FIELD: &'static str = "team_id";

    timestamps!(TeamRecord, team_id);

    async fn apply(&mut self, f: &mut Fields, state: &AppState, store: &dyn TenancyStore) -> Result<(), GatewayError> {
        set(&mut self.team_alias, f.string("team_alias")?);
        set(&mut self.organization_id, f.id("organization_id")?);
        set(&mut self.models, models(f, state)?);
        if let Some(members) = f.nullable("members_with_roles", members)? {
            self.members = members.unwrap_or_default();
        }
        set(&mut self.blocked, f.bool("blocked")?);
        set(&mut self.metadata, f.metadata("metadata")?);
        set(&mut self.tags, f.tags("tags")?);
        take_limits(f, &mut self.limits)?;
        must_exist::<OrganizationRecord>(store, "organization_id", self.organization_id.as_deref()).await?;
        must_exist::<BudgetRecord>(store, "budget_id", self.limits.budget_id.as_deref()).await
    }
}

/// One member object or an array of them: `{"user_id", "role"}`, the role `user` unless given.
fn members(v: Value) -> Result<Vec<Member>, FieldError> {
    let list = match v {
        Value::Array(a) => a,
        one @ Value::Object(_) => vec![one],
        _ => return Err(FieldError::Expected("a member object or an array of them")),
    };
    list.into_iter().map(member).collect()
}

fn member(v: Value) -> Result<Member, FieldError> {
    let Value::Object(mut m) = v else { return Err(FieldError::Member("each member must be an object")) };
    let user_id = match m.remove("user_id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(FieldError::Member("each member needs a `user_id`")),
    };
    let role = match m.remove("role") {
        None | Some(Value::Null) => "user".to_owned(),
        Some(Value::String(r)) if r == "admin" || r == "user" => r,
        Some(_) => return Err(FieldError::Member("`role` must be \"admin\" or \"user\"")),
    };
    // LiteLLM sends user_email too; it names the same user.
    m.remove("user_email");
    match m.keys().next() {
        Some(k) => Err(FieldError::MemberField(k.clone())),
        None => Ok(Member { user_id, role }),
    }
}

/// `POST /team/delete`.
pub(crate) async fn delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    delete_many::<TeamRecord>(&req, &body, &state, "team_ids").await
}

/// `GET /team/info`: the team, its spend and its keys.
pub(crate) async fn info(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let (store, team) = queried::<TeamRecord>(&req, &state, &["team_id"]).await?;
    let id = &team.team_id;
    let filter = KeyFilter { team_id: Some(id.clone()), ..KeyFilter::default() };
    let keys = keys_shown(&state, &store, filter, |k| k.team_id.as_ref() == Some(id)).await?;
    let info = with_spend(&state, present(&team), &format!("team/{id}"), &team.limits).await;
    Ok(HttpResponse::Ok().json(json!({"team_id": id, "team_info": info, "keys": keys})))
}

/// `POST /team/member_add`: adds members, or changes the role of those already in. As in
/// LiteLLM, a team's admins may add and remove its members; only admins change anything else
/// of a team (its budget and models were set over it).
pub(crate) async fn member_add(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    let read = |f: &mut Fields| f.nullable("member", members)?.flatten().ok_or_else(|| required("member"));
    change::<TeamRecord, _>(&req, &body, &state, Changer::AdminsAndUsers, read, |team, added| {
        for m in added {
            team.members.retain(|old| old.user_id != m.user_id);
            team.members.push(m);
        }
        Ok(())
    })
    .await
}

/// `POST /team/member_delete`.
pub(crate) async fn member_delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    change::<TeamRecord, _>(
        &req,
        &body,
        &state,
        Changer::AdminsAndUsers,
        |f| f.required_id("user_id"),
        |team, user| {
            if !team.members.iter().any(|m| m.user_id == user) {
                let message = format!("user {user:?} is not a member of team {:?}", team.team_id);
                return Err(GatewayError::field("user_id", message));
            }
            team.members.retain(|m| m.user_id != user);
            Ok(())
        },
    )
    .await
}

async fn set_blocked(req: &HttpRequest, body: &[u8], state: &AppState, blocked: bool) -> Answer {
    let block = |team: &mut TeamRecord, ()| {
        team.blocked = blocked;
        Ok(())
    };
    change::<TeamRecord, _>(req, body, state, Changer::Admins, |_| Ok(()), block).await
}

/// `POST /team/block`.
pub(crate) async fn block(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    set_blocked(&req, &body, &state, true).await
}

/// `POST /team/unblock`.
pub(crate) async fn unblock(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    set_blocked(&req, &body, &state, false).await
}
