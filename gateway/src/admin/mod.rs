//! The admin API: keys, teams, internal users, customers, organizations and reusable budgets,
//! with LiteLLM's paths and field names so existing admin scripts keep working. One file per
//! resource; this module holds what they share: who may call, reading and writing records,
//! announcing changes and showing records. The routes are in `crate::http::routes`.
//!
//! Callers: the master key (`general_settings.master_key`), or a key whose user has
//! `user_role: proxy_admin` (`proxy_admin_viewer` may read); team admins and internal users
//! within their reach (`roles`, docs/console.md "Roles"). Any other key gets 403.
//!
//! Every change is one conditional write of one record (nothing half-written), validated in
//! full first; then an invalidation goes out on the control topic so every gateway drops its
//! cached copy. Money is USD on the wire, read exactly into nano-USD (`max_budget: 0.1` is
//! 100,000,000 nano-USD) and shown both ways. `openapi/admin.yaml` documents every route.

/// `Resource::created` and `Resource::touch` of a record named by its field `$id`, with
/// `created_at` and `updated_at`.
macro_rules! timestamps {
    ($record:ident, $id:ident) => {
        fn created($id: String, now: DateTime<Utc>) -> Self {
            $record { $id, created_at: Some(now), updated_at: Some(now), ..$record::default() }
        }

        fn touch(&mut self, now: DateTime<Utc>) {
            self.updated_at = Some(now);
        }
    };
}

pub(crate) mod budgets;
pub(crate) mod customers;
mod fields;
pub(crate) mod key_list;
pub(crate) mod keys;
pub(crate) mod ledger_health;
pub(crate) mod lists;
pub(crate) mod model_health;
pub(crate) mod organizations;
pub(crate) mod roles;
pub mod statements;
pub(crate) mod teams;
pub(crate) mod users;

pub(crate) use keys::key_identity;
pub(crate) use roles::{admin, caller, Caller};

use crate::error::GatewayError;
use crate::http::routes::Api;
use crate::tenancy::auth::hash_key;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use fields::Fields;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_schemas::ledger::ALL_TIME;
use tollgate_schemas::limits;
use tollgate_schemas::store::{get_record, list_records, SpendTotal, TenancyStore};
use tollgate_schemas::tenancy::{budget_window, Invalidation, Kind, Limits, Record};
use tollgate_schemas::NanoUsd;

/// Every admin route as (method, path), read from the gateway's route table: exactly these are
/// served, and `openapi/admin.yaml` documents exactly these (`tests/tests/admin_openapi.rs`).
pub fn routes() -> Vec<(&'static str, &'static str)> {
    crate::http::routes::of(Api::Admin).map(|e| (e.method.as_str(), e.path)).collect()
}

/// What an admin or spend handler answers: a JSON body, or the error in the OpenAI envelope.
pub(crate) type Answer = Result<HttpResponse, GatewayError>;

// === Who may call: see `roles` ===

/// Whether `raw` is the master key (`general_settings.master_key`).
pub(crate) fn is_master_key(state: &AppState, raw: &str) -> bool {
    state.master_key_hash.as_deref().is_some_and(|m| constant_time_eq(m, &hash_key(raw)))
}

pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// === Finding records ===

async fn find<R: Record>(store: &dyn TenancyStore, id: &str) -> Result<Option<(R, i64)>, GatewayError> {
    // No record has a longer id (they are bounded when created): not worth a database read.
    if id.is_empty() || id.len() > limits::MAX_NAME_BYTES {
        return Ok(None);
    }
    get_record::<R>(store, id).await.map_err(internal)
}

/// The record a query names: 404 when it does not exist.
async fn must_find<R: Record>(store: &dyn TenancyStore, id: &str) -> Result<(R, i64), GatewayError> {
    find::<R>(store, id).await?.ok_or_else(|| GatewayError::NotFound { kind: R::KIND.as_str(), id: id.to_owned() })
}

/// The record a body names in `field`: 400 naming the field when it does not exist.
async fn referenced<R: Record>(store: &dyn TenancyStore, field: &str, id: &str) -> Result<(R, i64), GatewayError> {
    find::<R>(store, id)
        .await?
        .ok_or_else(|| GatewayError::field(field, format!("{} {id:?} does not exist", R::KIND.as_str())))
}

/// A record named in `field`, if any, must exist: 400 naming the field otherwise.
async fn must_exist<R: Record>(store: &dyn TenancyStore, field: &str, id: Option<&str>) -> Result<(), GatewayError> {
    match id {
        Some(id) => referenced::<R>(store, field, id).await.map(drop),
        None => Ok(()),
    }
}

/// For `GET /<kind>/info`: the store and the record the query names in the first of `params`
/// given (404 when it does not exist, or when it is beyond a user's reach: `roles::sees`).
async fn queried<R: Record>(
    req: &HttpRequest,
    state: &AppState,
    params: &[&str],
) -> Result<(Arc<dyn TenancyStore>, R), GatewayError> {
    let (store, user) = roles::admin_or_user(req, state, false).await?;
    if user.is_some() && !matches!(R::KIND, Kind::Team | Kind::User) {
        return Err(roles::not_for_role());
    }
    let q = query(req);
    let first = params.first().copied().unwrap_or_default();
    let id = params.iter().find_map(|p| q.get(*p)).ok_or_else(|| fields::required(first))?;
    if user.as_ref().is_some_and(|u| !u.sees(R::KIND, id)) {
        return Err(GatewayError::NotFound { kind: R::KIND.as_str(), id: id.to_owned() });
    }
    let (record, _) = must_find::<R>(store.as_ref(), id).await?;
    Ok((store, record))
}

pub(crate) fn query(req: &HttpRequest) -> BTreeMap<String, String> {
    web::Query::<BTreeMap<String, String>>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default()
}

/// A database failure, as answered: the database's own message can quote stored values, so
/// only its kind is logged and counted, and the client is told to retry.
pub(crate) fn internal(e: tollgate_schemas::store::StoreError) -> GatewayError {
    tracing::warn!(failure = e.kind(), "database request of the admin or spend API failed");
    metrics::counter!("tollgate_database_errors_total", "failure" => e.kind()).increment(1);
    GatewayError::DatabaseUnavailable
}

// === Writing records and announcing changes ===

fn doc<R: Record>(record: &R) -> Result<String, GatewayError> {
    serde_json::to_string(record).map_err(|e| GatewayError::Internal(e.to_string()))
}

async fn insert<R: Record>(state: &AppState, store: &dyn TenancyStore, record: &R) -> Result<(), GatewayError> {
    let created = store.create(R::KIND, record.id(), &doc(record)?).await.map_err(internal)?;
    announce_written::<R>(state, created, record.id(), "already exists").await
}

/// Reads of records in flight at once for one admin call.
const READS_IN_FLIGHT: usize = 16;

/// The records stored under `ids`, in that order, with their versions, [`READS_IN_FLIGHT`] at
/// a time; any deleted meanwhile are left out.
async fn read_records<R: Record>(
    store: &dyn TenancyStore,
    ids: impl IntoIterator<Item = String>,
) -> Result<Vec<(R, i64)>, GatewayError> {
    let found: Vec<Option<(R, i64)>> = futures::stream::iter(ids)
        .map(|id| async move { get_record::<R>(store, &id).await })
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(internal)?;
    Ok(found.into_iter().flatten().collect())
}

async fn save<R: Record>(
    state: &AppState,
    store: &dyn TenancyStore,
    record: &R,
    version: i64,
) -> Result<(), GatewayError> {
    let saved = store.update(R::KIND, record.id(), &doc(record)?, version).await.map_err(internal)?;
    let refused = "was changed or deleted meanwhile; read it again and retry";
    announce_written::<R>(state, saved, record.id(), refused).await
}

async fn remove<R: Record>(
    state: &AppState,
    store: &dyn TenancyStore,
    id: &str,
    version: i64,
) -> Result<(), GatewayError> {
    let deleted = store.delete(R::KIND, id, version).await.map_err(internal)?;
    announce_written::<R>(state, deleted, id, "was changed meanwhile; read it again and retry").await
}

/// Announces a conditional write that happened; one that did not is a 409 saying why.
async fn announce_written<R: Record>(
    state: &AppState,
    written: bool,
    id: &str,
    refused: &str,
) -> Result<(), GatewayError> {
    if !written {
        return Err(GatewayError::Conflict(format!("{} {id:?} {refused}", R::KIND.as_str())));
    }
    announce(state, R::KIND, id).await
}

/// Tells every gateway (this one included) to drop its copy.
/// The change is stored: this gateway drops its copy at once, the change log makes every other
/// gateway do so within about a second (docs/security.md), and the control topic within tens of
/// milliseconds. Neither a failed log write nor an unreachable Kafka makes a stored change fail:
/// an unpublished change is published from the log later (an outbox).
async fn announce(state: &AppState, kind: Kind, id: &str) -> Result<(), GatewayError> {
    state.tenancy.invalidate(kind, id).await;
    if kind == Kind::Key {
        state.tenancy.reindex_key(id).await;
    }
    state.tenancy.reindex(kind, id).await;
    let logged = match &state.changes {
        Some(log) => match log.record(kind, id).await {
            Ok(change) => Some(change),
            Err(e) => {
                metrics::counter!("tollgate_tenancy_change_log_errors_total").increment(1);
                tracing::warn!(failure = e.kind(), "a stored tenancy change could not be logged; caches expire it");
                None
            }
        },
        None => None,
    };
    // The control topic is told in the background: while Kafka is down that waits seconds, and
    // the admin call must not (the change log carries the change meanwhile).
    let (changes, control) = (state.changes.clone(), state.control.clone());
    let (id, at_ms) = (id.to_owned(), Utc::now().timestamp_millis());
    state.background.spawn(async move {
        match (changes, logged) {
            (Some(log), Some(change)) => {
                if !crate::tenancy::changes::publish(&log, control.as_deref(), &change).await {
                    tracing::warn!(
                        "a tenancy change is not on the control topic yet; it is published from the change log"
                    );
                }
            }
            _ => {
                let Some(control) = control else { return };
                if control.publish(&Invalidation { kind, id, at_ms }).await.is_err() {
                    metrics::counter!("tollgate_control_publish_failures_total").increment(1);
                    tracing::warn!("a tenancy change could not be announced; other gateways' caches expire it");
                }
            }
        }
    });
    Ok(())
}

// === Showing records: money as USD (and exact nano-USD), spend from the ledger ===

pub(crate) fn usd_value(n: NanoUsd) -> Value {
    json!(n.as_usd_display())
}

/// A record as the admin API shows it.
pub(crate) fn present<R: Record>(record: &R) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        // Where a rehashed key is stored is nobody's business but the store's.
        o.remove("stored_id");
        let limits = record.limits();
        for (name, amount) in [("max_budget", limits.max_budget), ("soft_budget", limits.soft_budget)] {
            o.insert(name.into(), amount.map_or(Value::Null, usd_value));
            o.insert(format!("{name}_nano_usd"), amount.map_or(Value::Null, |a| json!(a.0)));
        }
        if !limits.model_max_budget.is_empty() {
            let m: Map<String, Value> =
                limits.model_max_budget.iter().map(|(k, v)| (k.clone(), usd_value(*v))).collect();
            o.insert("model_max_budget".into(), Value::Object(m));
        }
        if let Some(d) = limits.budget_duration {
            o.insert("budget_reset_at".into(), json!(d.window_end(Utc::now())));
        }
    }
    v
}

/// The answer showing `record`.
fn shown<R: Record>(record: &R) -> Answer {
    Ok(HttpResponse::Ok().json(present(record)))
}

/// Adds `spend` (all time) and, with a budget duration, the current window's spend.
pub(crate) async fn with_spend(state: &AppState, mut v: Value, scope: &str, limits: &Limits) -> Value {
    let Some(reader) = &state.spend else { return v };
    let window = budget_window(limits.budget_duration, Utc::now());
    // The two windows read at once; one read when the budget's window is all time.
    let (all, current) = if window == ALL_TIME {
        let all = reader.total(scope, ALL_TIME).await.unwrap_or_default();
        (all, all)
    } else {
        let (all, current) = futures::join!(reader.total(scope, ALL_TIME), reader.total(scope, &window));
        (all.unwrap_or_default(), current.unwrap_or_default())
    };
    // The ledger lags by the consumer's batch; this gateway may know more already.
    let current = current.spent.max(state.budget_view.spent(scope, &window));
    put_spend(&mut v, current, &window, &all);
    v
}

/// Adds the spend fields `with_spend` adds: `current` in `window`, and `all` (all time).
pub(crate) fn put_spend(v: &mut Value, current: NanoUsd, window: &str, all: &SpendTotal) {
    if let Value::Object(o) = v {
        // As in LiteLLM, `spend` is what counts against the budget: the current window's.
        o.insert("spend".into(), usd_value(current));
        o.insert("spend_nano_usd".into(), json!(current.0));
        o.insert("budget_window".into(), json!(window));
        o.insert("spend_all_time".into(), usd_value(all.spent));
        o.insert("spend_all_time_nano_usd".into(), json!(all.spent.0));
        o.insert("requests".into(), json!(all.events));
    }
}

/// The ledger's totals of many `(scope, window)` pairs, in order: one `SpendSource::totals`
/// call per distinct window (a few queries for a page of keys, not one or two per key).
/// `None` without a spend reader (no ledger).
pub(crate) async fn totals_of(
    state: &AppState,
    pairs: &[(String, String)],
) -> Option<Result<Vec<SpendTotal>, tollgate_schemas::store::StoreError>> {
    let reader = state.spend.as_ref()?;
    let mut by_window: BTreeMap<&str, (Vec<String>, Vec<usize>)> = BTreeMap::new();
    for (i, (scope, window)) in pairs.iter().enumerate() {
        let (scopes, at) = by_window.entry(window.as_str()).or_default();
        scopes.push(scope.clone());
        at.push(i);
    }
    let reads = by_window.iter().map(|(window, (scopes, _))| reader.totals(scopes, window));
    let read = match futures::future::try_join_all(reads).await {
        Ok(read) => read,
        Err(e) => return Some(Err(e)),
    };
    let mut out = vec![SpendTotal::default(); pairs.len()];
    for ((_, (_, at)), totals) in by_window.iter().zip(read) {
        for (i, t) in at.iter().zip(totals) {
            if let Some(slot) = out.get_mut(*i) {
                *slot = t;
            }
        }
    }
    Some(Ok(out))
}

// === What /new, /update, /delete and /list share ===

/// A kind of record the admin API creates and updates from the fields of a request body
/// (keys have their own paths: see `keys`).
pub(crate) trait Resource: Record {
    /// The body field that names the record (`team_id`).
    const ID_FIELD: &'static str;
    /// Whether /new must be given the id; otherwise a new one is made when none is.
    const ID_REQUIRED: bool = false;
    /// A record with nothing set but its id, created at `now`.
    fn created(id: String, now: DateTime<Utc>) -> Self;
    /// Marks the record changed at `now`.
    fn touch(&mut self, now: DateTime<Utc>);
    /// Applies the body's fields (of /new and /update alike), then checks that the records
    /// they name exist.
    async fn apply(&mut self, f: &mut Fields, state: &AppState, store: &dyn TenancyStore) -> Result<(), GatewayError>;
}

/// The record a /new body describes, not yet stored.
async fn from_body<R: Resource>(
    f: &mut Fields,
    state: &AppState,
    store: &dyn TenancyStore,
    now: DateTime<Utc>,
) -> Result<R, GatewayError> {
    let id =
        if R::ID_REQUIRED { f.required_id(R::ID_FIELD)? } else { f.id(R::ID_FIELD)?.flatten().unwrap_or_else(new_id) };
    let mut record = R::created(id, now);
    record.apply(f, state, store).await?;
    Ok(record)
}

/// `POST /<kind>/new`.
pub(crate) async fn create<R: Resource>(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    let store = admin(&req, &state, true).await?;
    let mut f = Fields::parse(&body)?;
    let record = from_body::<R>(&mut f, &state, store.as_ref(), Utc::now()).await?;
    f.finish()?;
    insert(&state, store.as_ref(), &record).await?;
    shown(&record)
}

/// `POST /<kind>/update`: the body's fields applied to the record its id field names.
pub(crate) async fn update<R: Resource>(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Answer {
    let store = admin(&req, &state, true).await?;
    let mut f = Fields::parse(&body)?;
    let id = f.required_id(R::ID_FIELD)?;
    let (mut record, version) = referenced::<R>(store.as_ref(), R::ID_FIELD, &id).await?;
    record.apply(&mut f, &state, store.as_ref()).await?;
    f.finish()?;
    record.touch(Utc::now());
    save(&state, store.as_ref(), &record, version).await?;
    shown(&record)
}

/// Who may make a change: admins only, or also the users who may read the record (team admins
/// of their teams).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Changer {
    Admins,
    AdminsAndUsers,
}

/// A change to the record a body names in its id field: `read` takes the body's other fields,
/// `apply` applies them to the stored record, which is then saved and shown.
async fn change<R: Resource, T>(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
    who: Changer,
    read: impl FnOnce(&mut Fields) -> Result<T, GatewayError>,
    apply: impl FnOnce(&mut R, T) -> Result<(), GatewayError>,
) -> Answer {
    let (store, user) = match who {
        Changer::Admins => (admin(req, state, true).await?, None),
        Changer::AdminsAndUsers => roles::admin_or_user(req, state, true).await?,
    };
    let mut f = Fields::parse(body)?;
    let id = f.required_id(R::ID_FIELD)?;
    let given = read(&mut f)?;
    f.finish()?;
    // Beyond the user's reach is answered as absent.
    if user.as_ref().is_some_and(|u| !u.sees(R::KIND, &id)) {
        return Err(GatewayError::NotFound { kind: R::KIND.as_str(), id });
    }
    let (mut record, version) = referenced::<R>(store.as_ref(), R::ID_FIELD, &id).await?;
    apply(&mut record, given)?;
    record.touch(Utc::now());
    save(state, store.as_ref(), &record, version).await?;
    shown(&record)
}

/// The ids a body listed in `field`, each once (the first of each kept): at least one.
fn named_once<R: Record>(mut ids: Vec<String>, field: &str) -> Result<Vec<String>, GatewayError> {
    if ids.is_empty() {
        return Err(GatewayError::field(field, format!("`{field}` must name at least one {}", R::KIND.as_str())));
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(ids)
}

/// `POST /<kind>/delete`: deletes every record named in `field` (all must exist first).
async fn delete_many<R: Record>(req: &HttpRequest, body: &[u8], state: &AppState, field: &str) -> Answer {
    let store = admin(req, state, true).await?;
    let mut f = Fields::parse(body)?;
    let ids = f.strings(field)?.unwrap_or_default();
    f.finish()?;
    let ids = named_once::<R>(ids, field)?;
    let mut found = Vec::new();
    for id in &ids {
        found.push((id, referenced::<R>(store.as_ref(), field, id).await?.1));
    }
    for (id, version) in found {
        remove::<R>(state, store.as_ref(), id, version).await?;
    }
    Ok(HttpResponse::Ok().json(json!({"deleted": ids})))
}

/// `GET /<kind>/list` of the kinds the directory does not index (reusable budgets): every
/// record, ordered by id; for a user, those within its reach, and 403 for kinds it may never
/// read. Teams, users, customers and organizations are paged: `lists`.
pub(crate) async fn list<R: Record>(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let (store, user) = roles::admin_or_user(&req, &state, false).await?;
    if user.is_some() && !matches!(R::KIND, Kind::Team | Kind::User) {
        return Err(roles::not_for_role());
    }
    let mut records = list_records::<R>(store.as_ref()).await.map_err(internal)?;
    if let Some(user) = &user {
        records.retain(|(r, _)| user.sees(R::KIND, r.id()));
    }
    records.sort_by(|a, b| a.0.id().cmp(b.0.id()));
    Ok(HttpResponse::Ok().json(records.iter().map(|(r, _)| present(r)).collect::<Vec<_>>()))
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The `models` allow-list of a body, if given: each entry a configured model, an access group
/// or a wildcard.
fn models(f: &mut Fields, state: &AppState) -> Result<Option<Vec<String>>, GatewayError> {
    let models = f.strings("models")?;
    for m in models.iter().flatten() {
        let known = m == "*" || m == "all-proxy-models" || state.router.knows(m) || state.router.is_access_group(m);
        if !known {
            return Err(GatewayError::field("models", format!("model or access group {m:?} is not configured")));
        }
    }
    Ok(models)
}
