//! Who calls the admin and spend APIs, and what each role may see and change (docs/console.md,
//! "Roles"). The API enforces every role here and in the handlers that ask; the console only
//! hides what a role cannot do.
//!
//! - `proxy_admin` (and the master key): everything. `proxy_admin_viewer`: every read.
//! - A team admin (a user who is an `admin` member of teams, as LiteLLM's `members_with_roles`
//!   says): the keys of those teams, and reading those teams and their spend.
//! - `internal_user` (a user with no admin role, the default): its own keys and spend.
//! - A key with no user: reads its own key and its own spend logs.
//!
//! A record outside a caller's reach is answered 404, exactly as one that does not exist, so no
//! role learns what exists beyond it; a route a role may never use, or a field value naming what
//! it may not touch, is 403. Nothing here may widen a role: a user's teams are read afresh from
//! the store on every call (those the directory names as the user's, `user_scope`).

use crate::error::GatewayError;
use crate::tenancy::key_index::{KeyFilter, KeyReach, Start};
use crate::AppState;
use actix_web::HttpRequest;
use chrono::Utc;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use tollgate_schemas::logs::LogFilter;
use tollgate_schemas::store::{list_records, TenancyStore};
use tollgate_schemas::tenancy::{KeyRecord, Kind, TeamRecord};
use tollgate_schemas::NanoUsd;

/// The caller of an admin or spend route.
pub(crate) enum Caller {
    /// The master key or a `proxy_admin` key; a `proxy_admin_viewer` key on reads.
    Admin,
    /// A key of an internal user: its own keys and spend, and those of the teams it administers.
    User(UserScope),
    /// A key that belongs to no user: may only read its own key and its own spend logs.
    Own(String),
}

/// What a user's key reaches: the user's own keys, and those of the teams it is an `admin`
/// member of.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserScope {
    /// The key the call is made with.
    pub key_id: String,
    pub user_id: String,
    /// The teams the user is an `admin` member of.
    pub admin_of: BTreeSet<String>,
    /// Every team the user is a member of (any role).
    pub member_of: BTreeSet<String>,
    /// The user's own budget: no key it makes for itself may have more.
    pub max_budget: Option<NanoUsd>,
}

impl UserScope {
    /// `team_admin` when the user administers a team, else `internal_user`.
    pub fn role(&self) -> &'static str {
        if self.admin_of.is_empty() {
            "internal_user"
        } else {
            "team_admin"
        }
    }

    /// Whether it administers team `id`.
    pub fn administers(&self, id: &str) -> bool {
        self.admin_of.contains(id)
    }

    /// Whether it may read the record of `kind` named `id`: a team it administers, or its own
    /// user. Keys are read by `sees_key`; nothing else is within a user's reach.
    pub fn sees(&self, kind: Kind, id: &str) -> bool {
        match kind {
            Kind::Team => self.administers(id),
            Kind::User => id == self.user_id,
            _ => false,
        }
    }

    /// Whether the key is its own (of its user) or of a team it administers: it may read it and
    /// delete it.
    pub fn sees_key(&self, k: &KeyRecord) -> bool {
        k.user_id.as_deref() == Some(self.user_id.as_str()) || self.manages_key(k)
    }

    /// Whether the key is of a team it administers: it may change it.
    pub fn manages_key(&self, k: &KeyRecord) -> bool {
        k.team_id.as_deref().is_some_and(|t| self.administers(t))
    }

    /// Whether a key it creates or changes may end up as `after` (`before`, for a change): in a
    /// team it administers, or its own (in no team or a team it is a member of); never naming
    /// another user (a key of an admin user would carry that user's role), another
    /// organization or a reusable budget; with no more budget than its team's (a team key) or
    /// its user's (its own key).
    pub fn check_key(
        &self,
        before: Option<&KeyRecord>,
        after: &KeyRecord,
        team: Option<&TeamRecord>,
    ) -> Result<(), GatewayError> {
        let own = after.user_id.as_deref() == Some(self.user_id.as_str());
        let kept = |f: fn(&KeyRecord) -> &Option<String>| f(after) == before.map_or(&None, f);
        match after.team_id.as_deref() {
            Some(t) if self.administers(t) => {}
            Some(t) if own && self.member_of.contains(t) => {}
            Some(_) => {
                return Err(forbidden_field("team_id", "a key may only be put in a team you administer or belong to"))
            }
            None if own => {}
            None => return Err(forbidden_field("user_id", "a key in no team must be your own (`user_id` your user)")),
        }
        if !own && !kept(|k| &k.user_id) && after.user_id.is_some() {
            return Err(forbidden_field("user_id", "a key may only name your own user"));
        }
        if !kept(|k| &k.organization_id) {
            return Err(forbidden_field("organization_id", "only an admin sets a key's organization"));
        }
        if !kept(|k| &k.limits.budget_id) {
            return Err(forbidden_field("budget_id", "only an admin sets a key's reusable budget"));
        }
        let (ceiling, whose) = match (after.team_id.as_deref(), team) {
            (Some(_), Some(team)) => (team.limits.max_budget, "the team's"),
            (Some(_), None) => (None, ""),
            (None, _) => (self.max_budget, "your user's"),
        };
        if let Some(ceiling) = ceiling {
            // A key with no budget of its own is still held to its team's or user's.
            if after.limits.max_budget.is_some_and(|b| b > ceiling) {
                let message = format!("`max_budget` may not exceed {whose} budget, {} USD", ceiling.as_usd_display());
                return Err(forbidden_field("max_budget", message));
            }
        }
        Ok(())
    }
}

// === What a user reads of the spend API ===

/// Narrows a user's `/spend/logs` query to what it reaches: a key it may read (`api_key`), a
/// team it administers (`team_id`), or its own user (`user_id`, and the default). Naming
/// anything else is a 403 naming the parameter, whether or not it exists; a user or customer
/// filter beside a key or team only narrows.
pub(crate) async fn scope_logs(state: &AppState, u: &UserScope, filter: &mut LogFilter) -> Result<(), GatewayError> {
    let mut reached = false;
    if let Some(key_id) = &filter.key_id {
        let key = super::keys::find_key(state, store(state)?.as_ref(), key_id).await?;
        if !key.is_some_and(|(k, _)| u.sees_key(&k)) {
            return Err(forbidden_field("api_key", "you may read the logs of your own keys and your teams' keys"));
        }
        reached = true;
    }
    if let Some(team) = &filter.team_id {
        if !u.administers(team) {
            return Err(forbidden_field("team_id", "you may read the logs of the teams you administer"));
        }
        reached = true;
    }
    match &filter.user_id {
        Some(user) if *user == u.user_id => {}
        Some(_) if reached => {}
        Some(_) => return Err(forbidden_field("user_id", "you may read your own user's logs")),
        None if reached => {}
        None => filter.user_id = Some(u.user_id.clone()),
    }
    Ok(())
}

/// The spend scopes (`<kind>/<id>` of the ledger) a user's `/spend/daily` shows: its teams', its
/// own user's, and its keys' (its own and its teams').
pub(crate) struct SpendReach {
    user: UserScope,
    keys: HashSet<String>,
}

impl SpendReach {
    pub async fn of(state: &AppState, user: UserScope) -> Result<SpendReach, GatewayError> {
        // The key index knows every key's team and user; until it is loaded, retry.
        let index =
            state.tenancy.key_index().filter(|i| i.ready()).cloned().ok_or(GatewayError::DatabaseUnavailable)?;
        let filter = KeyFilter {
            reach: Some(KeyReach { user_id: user.user_id.clone(), teams: user.admin_of.clone() }),
            ..KeyFilter::default()
        };
        let page = tokio::task::spawn_blocking(move || index.page(&filter, &Start::Offset(0), usize::MAX, false))
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let keys = page.keys.into_iter().map(|(_, at)| at.key_id.to_string()).collect();
        Ok(SpendReach { user, keys })
    }

    /// Whether the ledger scope of `kind` and `id` is within reach.
    pub fn sees(&self, kind: &str, id: &str) -> bool {
        match kind {
            "team" => self.user.administers(id),
            "user" => id == self.user.user_id,
            "key" => self.keys.contains(id),
            _ => false,
        }
    }
}

fn forbidden_field(field: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::ForbiddenField { field, message: message.into() }
}

/// A 403 for a route the caller's role may not use.
pub(crate) fn not_for_role() -> GatewayError {
    GatewayError::Forbidden("this key may not use the admin API".into())
}

/// Who calls: `write` for a route that changes something (a viewer is refused those).
pub(crate) async fn caller(req: &HttpRequest, state: &AppState, write: bool) -> Result<Caller, GatewayError> {
    // A Bearer key, or the key behind a console session (with its CSRF token on changes).
    let raw = crate::console::key_of(req, state)?;
    let raw = raw.as_str();
    if super::is_master_key(state, raw) {
        return Ok(Caller::Admin);
    }
    let principal = state.tenancy.authenticate(raw, Utc::now()).await?;
    match principal.admin_access() {
        Some(true) => return Ok(Caller::Admin),
        Some(false) if !write => return Ok(Caller::Admin),
        Some(false) => return Err(not_for_role()),
        None => {}
    }
    match (&principal.user, state.tenancy.store()) {
        (Some(user), Some(store)) => Ok(Caller::User(
            user_scope(state, store.as_ref(), principal.key.key_id.clone(), &user.user_id, user.limits.max_budget)
                .await?,
        )),
        _ if !write => Ok(Caller::Own(principal.key.key_id.clone())),
        _ => Err(not_for_role()),
    }
}

/// Whether the call is an admin's read (the master key, `proxy_admin`, `proxy_admin_viewer`),
/// without reading any user's teams.
pub(crate) async fn is_admin(req: &HttpRequest, state: &AppState) -> bool {
    let Ok(raw) = crate::console::key_of(req, state) else { return false };
    if super::is_master_key(state, &raw) {
        return true;
    }
    state.tenancy.authenticate(&raw, Utc::now()).await.is_ok_and(|p| p.admin_access().is_some())
}

/// The scope of user `user_id`'s key `key_id`: its teams (`teams_with_member`).
async fn user_scope(
    state: &AppState,
    store: &dyn TenancyStore,
    key_id: String,
    user_id: &str,
    max_budget: Option<NanoUsd>,
) -> Result<UserScope, GatewayError> {
    let mut scope = UserScope { key_id, user_id: user_id.to_owned(), max_budget, ..UserScope::default() };
    for team in teams_with_member(state, store, user_id).await? {
        for m in team.members.iter().filter(|m| m.user_id == user_id) {
            if m.role == "admin" {
                scope.admin_of.insert(team.team_id.clone());
            }
            scope.member_of.insert(team.team_id.clone());
        }
    }
    Ok(scope)
}

/// The stored teams user `user_id` is a member of. The directory names the teams the user is a
/// member of, so only those are read; each is read again here, and only what the stored team
/// says counts (a membership the directory has not yet seen removed grants nothing). Before the
/// directory is loaded, every team is read.
pub(super) async fn teams_with_member(
    state: &AppState,
    store: &dyn TenancyStore,
    user_id: &str,
) -> Result<Vec<TeamRecord>, GatewayError> {
    let candidates = state.tenancy.directory().and_then(|d| d.teams_of(user_id));
    let teams: Vec<TeamRecord> = match candidates {
        Some(candidates) => super::read_records::<TeamRecord>(store, candidates.into_keys())
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect(),
        None => list_records::<TeamRecord>(store).await.map_err(super::internal)?.into_iter().map(|(t, _)| t).collect(),
    };
    Ok(teams.into_iter().filter(|t| t.members.iter().any(|m| m.user_id == user_id)).collect())
}

/// Who signs in to the console: the role (`proxy_admin`, `proxy_admin_viewer`, `team_admin` or
/// `internal_user`), and for a user its id and the teams it administers.
pub(crate) struct SignedIn {
    pub role: &'static str,
    pub user_id: Option<String>,
    pub teams: Vec<String>,
}

/// The role a key signs in to the console with. A key of no user may not sign in.
pub(crate) async fn role_of(state: &AppState, raw: &str) -> Result<SignedIn, GatewayError> {
    let admin = |role| SignedIn { role, user_id: None, teams: Vec::new() };
    if super::is_master_key(state, raw) {
        return Ok(admin("proxy_admin"));
    }
    let principal = state.tenancy.authenticate(raw, Utc::now()).await?;
    match principal.admin_access() {
        Some(true) => return Ok(admin("proxy_admin")),
        Some(false) => return Ok(admin("proxy_admin_viewer")),
        None => {}
    }
    match (&principal.user, state.tenancy.store()) {
        (Some(user), Some(store)) => {
            let scope = user_scope(state, store.as_ref(), principal.key.key_id.clone(), &user.user_id, None).await?;
            Ok(SignedIn {
                role: scope.role(),
                user_id: Some(scope.user_id.clone()),
                teams: scope.admin_of.into_iter().collect(),
            })
        }
        _ => Err(GatewayError::Forbidden("only the keys of users may sign in to the console".into())),
    }
}

/// Only admins (a viewer on reads), with or without a database; any other key gets 403.
pub(crate) async fn admins_only(req: &HttpRequest, state: &AppState) -> Result<(), GatewayError> {
    match caller(req, state, false).await? {
        Caller::Admin => Ok(()),
        Caller::User(_) | Caller::Own(_) => Err(not_for_role()),
    }
}

/// Only admins (a viewer on reads); any other key gets 403.
pub(crate) async fn admin(
    req: &HttpRequest,
    state: &AppState,
    write: bool,
) -> Result<Arc<dyn TenancyStore>, GatewayError> {
    match caller(req, state, write).await? {
        Caller::Admin => store(state),
        Caller::User(_) | Caller::Own(_) => Err(not_for_role()),
    }
}

/// The store and the caller, for a route that admins and users may both call (each within its
/// reach); a key of no user gets 403.
pub(crate) async fn admin_or_user(
    req: &HttpRequest,
    state: &AppState,
    write: bool,
) -> Result<(Arc<dyn TenancyStore>, Option<UserScope>), GatewayError> {
    match caller(req, state, write).await? {
        Caller::Admin => Ok((store(state)?, None)),
        Caller::User(scope) => Ok((store(state)?, Some(scope))),
        Caller::Own(_) => Err(not_for_role()),
    }
}

pub(crate) fn store(state: &AppState) -> Result<Arc<dyn TenancyStore>, GatewayError> {
    state.tenancy.store().cloned().ok_or(GatewayError::AdminUnavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_schemas::tenancy::Limits;

    fn scope() -> UserScope {
        UserScope {
            key_id: "k".into(),
            user_id: "ann".into(),
            admin_of: ["a".to_owned()].into(),
            member_of: ["a".to_owned(), "m".to_owned()].into(),
            max_budget: Some(NanoUsd(10)),
        }
    }

    fn key(team: Option<&str>, user: Option<&str>, budget: Option<i64>) -> KeyRecord {
        KeyRecord {
            team_id: team.map(str::to_owned),
            user_id: user.map(str::to_owned),
            limits: Limits { max_budget: budget.map(NanoUsd), ..Limits::default() },
            ..KeyRecord::default()
        }
    }

    fn refused_field(r: Result<(), GatewayError>) -> Option<&'static str> {
        match r {
            Err(GatewayError::ForbiddenField { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn a_user_sees_its_own_keys_and_its_teams_keys_and_changes_only_its_teams() {
        let s = scope();
        assert_eq!(s.role(), "team_admin");
        assert!(s.sees_key(&key(None, Some("ann"), None)) && !s.manages_key(&key(None, Some("ann"), None)));
        assert!(s.sees_key(&key(Some("a"), Some("bob"), None)) && s.manages_key(&key(Some("a"), None, None)));
        assert!(!s.sees_key(&key(Some("b"), Some("bob"), None)) && !s.sees_key(&key(Some("m"), None, None)));
        assert_eq!(UserScope { admin_of: BTreeSet::new(), ..s }.role(), "internal_user");
    }

    #[test]
    fn a_users_keys_stay_within_its_teams_its_user_and_its_budgets() {
        let s = scope();
        let team = TeamRecord {
            limits: Limits { max_budget: Some(NanoUsd(100)), ..Limits::default() },
            ..TeamRecord::default()
        };
        assert!(s.check_key(None, &key(Some("a"), None, Some(100)), Some(&team)).is_ok());
        assert_eq!(refused_field(s.check_key(None, &key(Some("a"), None, Some(101)), Some(&team))), Some("max_budget"));
        assert!(s.check_key(None, &key(None, Some("ann"), Some(10)), None).is_ok());
        assert_eq!(refused_field(s.check_key(None, &key(None, Some("ann"), Some(11)), None)), Some("max_budget"));
        // Its own key in a team it only belongs to; not someone else's there, nor in another team.
        assert!(s.check_key(None, &key(Some("m"), Some("ann"), None), None).is_ok());
        assert_eq!(refused_field(s.check_key(None, &key(Some("m"), None, None), None)), Some("team_id"));
        assert_eq!(refused_field(s.check_key(None, &key(Some("b"), Some("ann"), None), None)), Some("team_id"));
        assert_eq!(refused_field(s.check_key(None, &key(None, Some("bob"), None), None)), Some("user_id"));
        assert_eq!(refused_field(s.check_key(None, &key(Some("a"), Some("root"), None), None)), Some("user_id"));
        // A member's key of its team stays that member's when changed.
        let before = key(Some("a"), Some("bob"), None);
        assert!(s.check_key(Some(&before), &key(Some("a"), Some("bob"), Some(5)), Some(&team)).is_ok());
        let mut org = key(Some("a"), None, None);
        org.organization_id = Some("o".into());
        assert_eq!(refused_field(s.check_key(None, &org, Some(&team))), Some("organization_id"));
        let mut budget = key(None, Some("ann"), None);
        budget.limits.budget_id = Some("big".into());
        assert_eq!(refused_field(s.check_key(None, &budget, None)), Some("budget_id"));
    }
}
