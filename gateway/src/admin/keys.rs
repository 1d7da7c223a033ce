//! `/key/*`: virtual keys. A key is stored only as its lookup hash (HMAC of the key); the key
//! itself is shown once, when made, and never again, nor echoed in an error. Admins reach every
//! key; a user its own keys (to read, make and delete) and its teams' keys (`roles`).

use super::fields::{set, take_limits, FieldError, Fields};
use super::roles::{admin_or_user, UserScope};
use super::{
    caller, find, insert, internal, is_master_key, models, must_exist, present, query, read_records, remove, save,
    shown, with_spend, Answer, Caller,
};
use crate::error::GatewayError;
use crate::tenancy::auth::{hash_key, key_name};
use crate::tenancy::key_index::{KeyFilter, Start};
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;
use tollgate_schemas::store::{list_records, TenancyStore};
use tollgate_schemas::tenancy::{
    BudgetDuration, BudgetRecord, KeyRecord, Kind, OrganizationRecord, Record, TeamRecord, UserRecord,
};

// === Finding keys ===

/// Whether `given` is a key's hash (64 hex digits) rather than the key itself.
fn is_key_hash(given: &str) -> bool {
    given.len() == 64 && given.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The stored key `given` names: the key itself, or its `token` (`key_id`). A key stored under
/// its SHA-256 is found by it too, before and after it is rehashed on first use.
pub(super) async fn find_key(
    state: &AppState,
    store: &dyn TenancyStore,
    given: &str,
) -> Result<Option<(KeyRecord, i64)>, GatewayError> {
    let hasher = state.tenancy.hasher();
    let candidates = if is_key_hash(given) {
        let hash = given.to_ascii_lowercase();
        let moved = hasher.lookup_of_legacy(&hash);
        [Some(hash), moved]
    } else {
        [Some(hasher.lookup(given)), Some(hash_key(given))]
    };
    for id in candidates.into_iter().flatten() {
        if let Some(found) = find::<KeyRecord>(store, &id).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

async fn must_find_key(
    state: &AppState,
    store: &dyn TenancyStore,
    given: &str,
) -> Result<(KeyRecord, i64), GatewayError> {
    find_key(state, store, given).await?.ok_or_else(|| not_found(given))
}

/// The 404 of a key that does not exist, or is beyond the caller's reach: the same answer.
fn not_found(given: &str) -> GatewayError {
    // Never echo a key: name it by its hash.
    let shown = if is_key_hash(given) { given.to_ascii_lowercase() } else { hash_key(given) };
    GatewayError::NotFound { kind: "key", id: shown }
}

/// The key `given` names, for a change by `user` (none for an admin): a key it cannot see is
/// not found; one it sees but may not change (its own, for an internal user) is a 403.
async fn key_to_change(
    state: &AppState,
    store: &dyn TenancyStore,
    given: &str,
    user: Option<&UserScope>,
) -> Result<(KeyRecord, i64), GatewayError> {
    let (key, version) = must_find_key(state, store, given).await?;
    match user {
        Some(u) if !u.sees_key(&key) => Err(not_found(given)),
        Some(u) if !u.manages_key(&key) => Err(GatewayError::Forbidden(
            "only an admin or the admin of the key's team may change it; you may delete your own keys".into(),
        )),
        _ => Ok((key, version)),
    }
}

/// The identity (`key_id`, the `token`) of the key `given` names: a stored key's, else a
/// config-file key's (its SHA-256), else `given` itself when it is a hash.
pub(crate) async fn key_identity(state: &AppState, given: &str) -> Result<String, GatewayError> {
    if let Some(store) = state.tenancy.store() {
        if let Some((k, _)) = find_key(state, store.as_ref(), given).await? {
            return Ok(k.key_id);
        }
    }
    Ok(if is_key_hash(given) { given.to_ascii_lowercase() } else { hash_key(given) })
}

/// The stored keys `filter` picks (a team's, a user's, those of an alias), with their versions,
/// in creation order. The key index names them, so no call reads every key record; each is
/// read again and kept only when `wanted` holds of the stored record (the index follows other
/// gateways' changes within about a second; the record is the truth). Until the index is loaded
/// after a start, every key record is read.
pub(super) async fn indexed_keys(
    state: &AppState,
    store: &Arc<dyn TenancyStore>,
    filter: KeyFilter,
    wanted: impl Fn(&KeyRecord) -> bool,
) -> Result<Vec<(KeyRecord, i64)>, GatewayError> {
    let read = match state.tenancy.key_index().filter(|i| i.ready()).cloned() {
        Some(index) => {
            let page = tokio::task::spawn_blocking(move || index.page(&filter, &Start::Offset(0), usize::MAX, false))
                .await
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            read_records::<KeyRecord>(store.as_ref(), page.keys.into_iter().map(|(stored, _)| stored)).await?
        }
        None => list_records::<KeyRecord>(store.as_ref()).await.map_err(internal)?,
    };
    Ok(read.into_iter().filter(|(k, _)| wanted(k)).collect())
}

/// The keys of a team or user, as shown (`indexed_keys`).
pub(super) async fn keys_shown(
    state: &AppState,
    store: &Arc<dyn TenancyStore>,
    filter: KeyFilter,
    wanted: impl Fn(&KeyRecord) -> bool,
) -> Result<Vec<Value>, GatewayError> {
    Ok(indexed_keys(state, store, filter, wanted).await?.iter().map(|(k, _)| present(k)).collect())
}

// === Changing keys ===

/// After a change to a key stored apart from its identity (a rehashed key), the identity is
/// announced too: gateways may hold the key cached under either.
async fn announce_identity(state: &AppState, key: &KeyRecord) -> Result<(), GatewayError> {
    if key.id() != key.key_id {
        super::announce(state, Kind::Key, &key.key_id).await?;
    }
    Ok(())
}

/// Stores a changed key and answers it.
async fn save_key(state: &AppState, store: &dyn TenancyStore, key: &KeyRecord, version: i64) -> Answer {
    save(state, store, key, version).await?;
    announce_identity(state, key).await?;
    shown(key)
}

/// A new key: 64 hex characters from the OS's random source (two v4 UUIDs' worth).
pub(super) fn new_raw_key() -> String {
    format!("sk-{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The key a body asks for in `field` (at least 12 characters), else a new random one.
fn custom_or_new_key(f: &mut Fields, field: &str) -> Result<String, GatewayError> {
    match f.string(field)?.flatten() {
        Some(k) if k.len() >= 12 => Ok(k),
        Some(_) => Err(GatewayError::field(field, "a custom key needs at least 12 characters")),
        None => Ok(new_raw_key()),
    }
}

fn expires_after(duration: BudgetDuration, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match duration {
        BudgetDuration::Seconds(s) => now.checked_add_signed(chrono::Duration::try_seconds(i64::try_from(s).ok()?)?),
        BudgetDuration::Months(m) => now.checked_add_months(chrono::Months::new(m)),
    }
}

/// A key record for the new key `raw`: stored only as its lookup hash, named by its ends.
pub(super) fn new_key_record(state: &AppState, raw: &str, now: DateTime<Utc>) -> KeyRecord {
    KeyRecord {
        key_id: state.tenancy.hasher().lookup(raw),
        key_name: key_name(raw),
        created_at: Some(now),
        updated_at: Some(now),
        ..KeyRecord::default()
    }
}

/// Adds the new key itself (shown this once) and its id to an answer.
pub(super) fn show_new_key(answer: &mut Value, raw: &str, key: &KeyRecord) {
    if let Value::Object(o) = answer {
        o.insert("key".into(), json!(raw));
        o.insert("token".into(), json!(key.key_id));
    }
}

/// The fields of /key/generate, /key/update and /key/regenerate, checked against what `user`
/// may make (none for an admin; `before` is the key changed, none for a new one) before any
/// record they name is looked up or made.
async fn take_key_fields(
    f: &mut Fields,
    state: &AppState,
    store: &dyn TenancyStore,
    key: &mut KeyRecord,
    now: DateTime<Utc>,
    user: Option<&UserScope>,
    before: Option<&KeyRecord>,
) -> Result<(), GatewayError> {
    set(&mut key.key_alias, f.string("key_alias")?);
    set(&mut key.team_id, f.id("team_id")?);
    set(&mut key.user_id, f.id("user_id")?);
    set(&mut key.organization_id, f.id("organization_id")?);
    set(&mut key.models, models(f, state)?);
    if let Some(d) = f.duration("duration")? {
        key.expires = d.and_then(|d| expires_after(d, now));
    }
    if let Some(e) = f.nullable("expires", |v| {
        serde_json::from_value::<DateTime<Utc>>(v).map_err(|_| FieldError::Expected("an RFC 3339 time"))
    })? {
        key.expires = e;
    }
    set(&mut key.blocked, f.bool("blocked")?);
    set(&mut key.metadata, f.metadata("metadata")?);
    set(&mut key.tags, f.tags("tags")?);
    take_limits(f, &mut key.limits)?;
    if let Some(u) = user {
        // A user's new key outside the teams it administers is its own.
        let team_key = key.team_id.as_deref().is_some_and(|t| u.administers(t));
        if before.is_none() && key.user_id.is_none() && !team_key {
            key.user_id = Some(u.user_id.clone());
        }
        let team = match key.team_id.as_deref() {
            Some(t) if u.member_of.contains(t) => find::<TeamRecord>(store, t).await?.map(|(t, _)| t),
            _ => None,
        };
        u.check_key(before, key, team.as_ref())?;
    }
    must_exist::<TeamRecord>(store, "team_id", key.team_id.as_deref()).await?;
    must_exist::<OrganizationRecord>(store, "organization_id", key.organization_id.as_deref()).await?;
    must_exist::<BudgetRecord>(store, "budget_id", key.limits.budget_id.as_deref()).await?;
    ensure_user(state, store, key, now).await
}

/// As in LiteLLM, a key names a user that exists: a new user id makes a user record, so a key
/// whose user is later deleted stops working (see `Tenancy::authenticate`).
async fn ensure_user(
    state: &AppState,
    store: &dyn TenancyStore,
    key: &KeyRecord,
    now: DateTime<Utc>,
) -> Result<(), GatewayError> {
    let Some(user_id) = &key.user_id else { return Ok(()) };
    if find::<UserRecord>(store, user_id).await?.is_some() {
        return Ok(());
    }
    let user = UserRecord {
        user_id: user_id.clone(),
        organization_id: key.organization_id.clone(),
        created_at: Some(now),
        updated_at: Some(now),
        ..UserRecord::default()
    };
    match insert(state, store, &user).await {
        // Created meanwhile by another admin call: it exists, which is all we need.
        Ok(()) | Err(GatewayError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

// === Handlers ===

/// `POST /key/generate`.
pub(crate) async fn generate(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    let (store, user) = admin_or_user(&req, &state, true).await?;
    let mut f = Fields::parse(&body)?;
    let raw = custom_or_new_key(&mut f, "key")?;
    let now = Utc::now();
    let mut key = new_key_record(&state, &raw, now);
    take_key_fields(&mut f, &state, store.as_ref(), &mut key, now, user.as_ref(), None).await?;
    f.finish()?;
    insert(&state, store.as_ref(), &key).await?;
    let mut v = present(&key);
    show_new_key(&mut v, &raw, &key);
    Ok(HttpResponse::Ok().json(v))
}

/// `POST /key/update`.
pub(crate) async fn update(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    let (store, user) = admin_or_user(&req, &state, true).await?;
    let mut f = Fields::parse(&body)?;
    let given = f.required_string("key")?;
    let (mut key, version) = key_to_change(&state, store.as_ref(), &given, user.as_ref()).await?;
    let before = key.clone();
    let now = Utc::now();
    take_key_fields(&mut f, &state, store.as_ref(), &mut key, now, user.as_ref(), Some(&before)).await?;
    f.finish()?;
    key.updated_at = Some(now);
    save_key(&state, store.as_ref(), &key, version).await
}

/// `POST /key/delete`: by `keys` (the keys or their tokens) and by `key_aliases`.
pub(crate) async fn delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    let (store, user) = admin_or_user(&req, &state, true).await?;
    let sees = |k: &KeyRecord| user.as_ref().is_none_or(|u| u.sees_key(k));
    let mut f = Fields::parse(&body)?;
    let keys = f.strings("keys")?.unwrap_or_default();
    let aliases = f.strings("key_aliases")?.unwrap_or_default();
    f.finish()?;
    if keys.is_empty() && aliases.is_empty() {
        return Err(GatewayError::field("keys", "give `keys` or `key_aliases`"));
    }
    let mut targets = Vec::new();
    for k in &keys {
        // A key beyond a user's reach is not found, as one that does not exist.
        let found = must_find_key(&state, store.as_ref(), k).await?;
        if !sees(&found.0) {
            return Err(not_found(k));
        }
        targets.push(found);
    }
    for alias in &aliases {
        let filter = KeyFilter { key_alias: Some(alias.clone()), ..KeyFilter::default() };
        let named = |k: &KeyRecord| k.key_alias.as_ref() == Some(alias) && sees(k);
        targets.extend(indexed_keys(&state, &store, filter, named).await?);
    }
    // A key named twice (by value and by alias) is deleted once.
    let mut named = std::collections::HashSet::new();
    targets.retain(|(k, _)| named.insert(k.key_id.clone()));
    let mut deleted = Vec::new();
    for (k, version) in targets {
        remove::<KeyRecord>(&state, store.as_ref(), k.id(), version).await?;
        announce_identity(&state, &k).await?;
        deleted.push(k.key_id);
    }
    Ok(HttpResponse::Ok().json(json!({"deleted_keys": deleted})))
}

/// `GET /key/info`: any key may read itself; admins any key.
pub(crate) async fn info(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let q = query(&req);
    let wanted = match q.get("key") {
        Some(k) => Some(key_identity(&state, k).await?),
        None => None,
    };
    let id = match caller(&req, &state, false).await? {
        Caller::Admin => match wanted {
            Some(w) => w,
            // An admin's virtual key without `key` reads itself; the master key must name one.
            None => match Some(crate::console::key_of(&req, &state)?).filter(|raw| !is_master_key(&state, raw)) {
                Some(raw) => key_identity(&state, &raw).await?,
                None => return Err(GatewayError::field("key", "`key` is required")),
            },
        },
        // Any key may read itself.
        Caller::Own(own) if wanted.as_ref().is_none_or(|w| *w == own) => own,
        Caller::Own(_) => return Err(GatewayError::Forbidden("a key may only read its own info".into())),
        Caller::User(u) => match wanted {
            Some(w) if w != u.key_id => {
                // Another key: one of the user's own or of its teams; any other is not found.
                let store = super::roles::store(&state)?;
                match find_key(&state, store.as_ref(), &w).await? {
                    Some((k, _)) if u.sees_key(&k) => w,
                    _ => return Err(not_found(&w)),
                }
            }
            _ => u.key_id,
        },
    };
    // Keys of the config file first, then the database (read afresh, not from cache).
    let key = match (state.tenancy.config_key(&id), state.tenancy.store()) {
        (Some(k), _) => (*k).clone(),
        (None, Some(store)) => must_find_key(&state, store.as_ref(), &id).await?.0,
        (None, None) => return Err(GatewayError::NotFound { kind: "key", id: id.clone() }),
    };
    let info = with_spend(&state, present(&key), &format!("key/{id}"), &key.limits).await;
    Ok(HttpResponse::Ok().json(json!({"key": id, "info": info})))
}

async fn set_blocked(req: &HttpRequest, body: &[u8], state: &AppState, blocked: bool) -> Answer {
    let (store, user) = admin_or_user(req, state, true).await?;
    let mut f = Fields::parse(body)?;
    let given = f.required_string("key")?;
    f.finish()?;
    let (mut key, version) = key_to_change(state, store.as_ref(), &given, user.as_ref()).await?;
    key.blocked = blocked;
    key.updated_at = Some(Utc::now());
    save_key(state, store.as_ref(), &key, version).await
}

/// `POST /key/block`.
pub(crate) async fn block(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    set_blocked(&req, &body, &state, true).await
}

/// `POST /key/unblock`.
pub(crate) async fn unblock(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    set_blocked(&req, &body, &state, false).await
}

/// `POST /key/regenerate`: the key named in the body.
pub(crate) async fn regenerate(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    rotate(&req, &body, &state, None).await
}

/// `POST /key/{key}/regenerate`: the key named in the path.
pub(crate) async fn regenerate_named(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Answer {
    rotate(&req, &body, &state, Some(path.into_inner())).await
}

/// Rotation: a new key with the old one's settings; the old key is deleted, or with
/// `grace_period` (e.g. `"24h"`) keeps working until then.
async fn rotate(req: &HttpRequest, body: &[u8], state: &AppState, from_path: Option<String>) -> Answer {
    let (store, user) = admin_or_user(req, state, true).await?;
    let mut f = Fields::parse(body)?;
    let given = match from_path {
        Some(k) => k,
        None => f.required_string("key")?,
    };
    let grace = f.duration("grace_period")?.flatten();
    let new_raw = custom_or_new_key(&mut f, "new_key")?;
    let (old, version) = key_to_change(state, store.as_ref(), &given, user.as_ref()).await?;
    let now = Utc::now();
    let mut key = KeyRecord {
        key_id: state.tenancy.hasher().lookup(&new_raw),
        stored_id: None,
        key_name: key_name(&new_raw),
        created_at: Some(now),
        updated_at: Some(now),
        replaced_by: None,
        ..old.clone()
    };
    take_key_fields(&mut f, state, store.as_ref(), &mut key, now, user.as_ref(), Some(&old)).await?;
    f.finish()?;
    // The new key first: whatever fails after this, access is never lost.
    insert(state, store.as_ref(), &key).await?;
    let retired = match grace.and_then(|g| expires_after(g, now)) {
        Some(until) => {
            let mut old = old.clone();
            old.expires = Some(old.expires.map_or(until, |e| e.min(until)));
            old.replaced_by = Some(key.key_id.clone());
            old.updated_at = Some(now);
            save(state, store.as_ref(), &old, version).await
        }
        None => remove::<KeyRecord>(state, store.as_ref(), old.id(), version).await,
    };
    if let Err(e) = retired {
        // The old key changed meanwhile: take the new one back, so nothing is half-done.
        let _ = store.delete(Kind::Key, &key.key_id, 1).await;
        state.tenancy.invalidate(Kind::Key, &key.key_id).await;
        return Err(e);
    }
    announce_identity(state, &old).await?;
    let mut v = present(&key);
    show_new_key(&mut v, &new_raw, &key);
    if let Value::Object(o) = &mut v {
        o.insert("replaced_key".into(), json!(old.key_id));
    }
    Ok(HttpResponse::Ok().json(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_told_from_their_hashes_and_new_keys_are_random() {
        let h = hash_key("sk-abc");
        assert!(is_key_hash(&h) && is_key_hash(&h.to_ascii_uppercase()));
        assert!(!is_key_hash("sk-abc"));
        let raw = new_raw_key();
        assert!(raw.starts_with("sk-") && raw.len() == 67);
        assert_ne!(raw, new_raw_key());
    }
}
