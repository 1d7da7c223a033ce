//! The admin API: keys, teams, internal users, customers, organizations and reusable budgets,
//! with LiteLLM's paths and field names so existing admin scripts keep working.
//!
//! Callers: the master key (`general_settings.master_key`), or a key whose user has
//! `user_role: proxy_admin` (`proxy_admin_viewer` may read). Any other key gets 403.
//!
//! Every change is one conditional write of one record (nothing half-written), validated in
//! full first; then an invalidation goes out on the control topic so every gateway drops its
//! cached copy. Money is USD on the wire, read exactly into nano-USD (`max_budget: 0.1` is
//! 100,000,000 nano-USD) and shown both ways. `openapi/admin.yaml` documents every route.

use crate::auth::{hash_key, key_name, raw_key};
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_schemas::limits;
use tollgate_schemas::store::{get_record, list_records, TenancyStore};
use tollgate_schemas::tenancy::{
    budget_window, BudgetDuration, BudgetRecord, CustomerRecord, Invalidation, KeyRecord, Kind, Limits, Member,
    OrganizationRecord, Record, TeamRecord, UserRecord,
};
use tollgate_schemas::NanoUsd;

/// Every admin route as (method, path), in registration order: [`routes`] registers exactly these,
/// and `openapi/admin.yaml` documents exactly these (`tests/tests/admin_openapi.rs` checks both).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/key/generate"),
    ("POST", "/key/update"),
    ("POST", "/key/delete"),
    ("GET", "/key/info"),
    ("GET", "/key/list"),
    ("POST", "/key/block"),
    ("POST", "/key/unblock"),
    ("POST", "/key/regenerate"),
    ("POST", "/key/{key}/regenerate"),
    ("POST", "/team/new"),
    ("POST", "/team/update"),
    ("POST", "/team/delete"),
    ("GET", "/team/info"),
    ("GET", "/team/list"),
    ("POST", "/team/member_add"),
    ("POST", "/team/member_delete"),
    ("POST", "/team/block"),
    ("POST", "/team/unblock"),
    ("POST", "/user/new"),
    ("POST", "/user/update"),
    ("POST", "/user/delete"),
    ("GET", "/user/info"),
    ("POST", "/customer/new"),
    ("POST", "/customer/update"),
    ("POST", "/customer/delete"),
    ("GET", "/customer/info"),
    ("GET", "/customer/list"),
    ("POST", "/customer/block"),
    ("POST", "/customer/unblock"),
    ("POST", "/organization/new"),
    ("POST", "/organization/update"),
    ("POST", "/organization/delete"),
    ("GET", "/organization/info"),
    ("GET", "/organization/list"),
    ("POST", "/budget/new"),
    ("POST", "/budget/update"),
    ("POST", "/budget/delete"),
    ("POST", "/budget/info"),
    ("GET", "/budget/list"),
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    for &(method, path) in ROUTES {
        let route = if method == "GET" { web::get() } else { web::post() };
        let route = match path {
            "/key/generate" => route.to(key_generate),
            "/key/update" => route.to(key_update),
            "/key/delete" => route.to(key_delete),
            "/key/info" => route.to(key_info),
            "/key/list" => route.to(key_list),
            "/key/block" => route.to(key_block),
            "/key/unblock" => route.to(key_unblock),
            "/key/regenerate" => route.to(key_regenerate),
            "/key/{key}/regenerate" => route.to(key_regenerate_path),
            "/team/new" => route.to(team_new),
            "/team/update" => route.to(team_update),
            "/team/delete" => route.to(team_delete),
            "/team/info" => route.to(team_info),
            "/team/list" => route.to(team_list),
            "/team/member_add" => route.to(team_member_add),
            "/team/member_delete" => route.to(team_member_delete),
            "/team/block" => route.to(team_block),
            "/team/unblock" => route.to(team_unblock),
            "/user/new" => route.to(user_new),
            "/user/update" => route.to(user_update),
            "/user/delete" => route.to(user_delete),
            "/user/info" => route.to(user_info),
            "/customer/new" => route.to(customer_new),
            "/customer/update" => route.to(customer_update),
            "/customer/delete" => route.to(customer_delete),
            "/customer/info" => route.to(customer_info),
            "/customer/list" => route.to(customer_list),
            "/customer/block" => route.to(customer_block),
            "/customer/unblock" => route.to(customer_unblock),
            "/organization/new" => route.to(organization_new),
            "/organization/update" => route.to(organization_update),
            "/organization/delete" => route.to(organization_delete),
            "/organization/info" => route.to(organization_info),
            "/organization/list" => route.to(organization_list),
            "/budget/new" => route.to(budget_new),
            "/budget/update" => route.to(budget_update),
            "/budget/delete" => route.to(budget_delete),
            "/budget/info" => route.to(budget_info),
            "/budget/list" => route.to(budget_list),
            // Unreachable while every path above has a handler (the end-to-end test calls each).
            _ => continue,
        };
        cfg.route(path, route);
    }
}

pub(crate) type Answer = Result<HttpResponse, GatewayError>;

pub(crate) fn answer(result: Answer) -> HttpResponse {
    result.unwrap_or_else(|e| e.error_response())
}

// ---------------------------------------------------------------------------------------------
// Who may call

/// The caller of an admin route.
pub(crate) enum Caller {
    Admin,
    /// A key that is not an admin's: may only read its own key.
    Own(String),
}

pub(crate) async fn caller(req: &HttpRequest, state: &AppState, write: bool) -> Result<Caller, GatewayError> {
    let raw = raw_key(req.headers()).ok_or(GatewayError::MissingKey)?;
    if is_master_key(state, raw) {
        return Ok(Caller::Admin);
    }
    let principal = state.tenancy.authenticate(raw, Utc::now()).await?;
    match principal.admin_access() {
        Some(true) => Ok(Caller::Admin),
        Some(false) if !write => Ok(Caller::Admin),
        _ if !write => Ok(Caller::Own(principal.key.key_id.clone())),
        _ => Err(GatewayError::Forbidden("this key may not use the admin API".into())),
    }
}

/// Only admins; a plain key gets 403.
async fn admin(req: &HttpRequest, state: &AppState, write: bool) -> Result<Arc<dyn TenancyStore>, GatewayError> {
    match caller(req, state, write).await? {
        Caller::Admin => store(state),
        Caller::Own(_) => Err(GatewayError::Forbidden("this key may not use the admin API".into())),
    }
}

fn store(state: &AppState) -> Result<Arc<dyn TenancyStore>, GatewayError> {
    state.tenancy.store().cloned().ok_or(GatewayError::AdminUnavailable)
}

/// Whether `raw` is the master key (`general_settings.master_key`).
fn is_master_key(state: &AppState, raw: &str) -> bool {
    state.master_key_hash.as_deref().is_some_and(|m| constant_time_eq(m, &hash_key(raw)))
}

pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// Request bodies: every field is taken by name; what is left over is an unknown field.

struct Fields(Map<String, Value>);

/// A field that may be absent (`None`), null (`Some(None)`: clear it) or set.
type Nullable<T> = Option<Option<T>>;

impl Fields {
    fn parse(body: &[u8]) -> Result<Fields, GatewayError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields(Map::new()));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            Ok(_) => Err(GatewayError::invalid("the request body must be a JSON object", None)),
            Err(e) => Err(GatewayError::invalid(format!("request body is not valid JSON: {e}"), None)),
        }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    fn nullable<T>(
        &mut self,
        name: &str,
        convert: impl FnOnce(Value) -> Result<T, String>,
    ) -> Result<Nullable<T>, GatewayError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => {
                convert(v).map(|t| Some(Some(t))).map_err(|m| GatewayError::field(name, format!("`{name}` {m}")))
            }
        }
    }

    /// Free text (an alias, an email): 1 to 256 bytes without control characters.
    fn string(&mut self, name: &str) -> Result<Nullable<String>, GatewayError> {
        let value = self.nullable(name, |v| match v {
            Value::String(s) => Ok(s),
            _ => Err("must be a non-empty string of at most 256 bytes".into()),
        })?;
        if let Some(Some(v)) = &value {
            limits::check_name(name, v, limits::MAX_NAME_BYTES).map_err(bounded)?;
        }
        Ok(value)
    }

    /// An id that becomes part of a ledger scope (team, user, customer, organization, budget):
    /// see `tollgate_schemas::limits::check_id`.
    fn id(&mut self, name: &str) -> Result<Nullable<String>, GatewayError> {
        let value = self.string(name)?;
        if let Some(Some(v)) = &value {
            limits::check_id(name, v).map_err(bounded)?;
        }
        Ok(value)
    }

    fn required_id(&mut self, name: &str) -> Result<String, GatewayError> {
        self.id(name)?.flatten().ok_or_else(|| GatewayError::field(name, format!("`{name}` is required")))
    }

    fn strings(&mut self, name: &str) -> Result<Option<Vec<String>>, GatewayError> {
        Ok(self
            .nullable(name, |v| {
                serde_json::from_value::<Vec<String>>(v).map_err(|_| "must be an array of strings".to_owned())
            })?
            .map(Option::unwrap_or_default))
    }

    /// Tags: at most 64 names of at most 128 bytes.
    fn tags(&mut self, name: &str) -> Result<Option<Vec<String>>, GatewayError> {
        let tags = self.strings(name)?;
        if let Some(t) = &tags {
            limits::check_tags(name, t).map_err(bounded)?;
        }
        Ok(tags)
    }

    fn bool(&mut self, name: &str) -> Result<Option<bool>, GatewayError> {
        Ok(self.nullable(name, |v| v.as_bool().ok_or_else(|| "must be true or false".to_owned()))?.flatten())
    }

    fn count(&mut self, name: &str) -> Result<Nullable<u64>, GatewayError> {
        self.nullable(name, |v| v.as_u64().ok_or_else(|| "must be a whole number, 0 or more".to_owned()))
    }

    fn usd(&mut self, name: &str) -> Result<Nullable<NanoUsd>, GatewayError> {
        self.nullable(name, usd)
    }

    fn duration(&mut self, name: &str) -> Result<Nullable<BudgetDuration>, GatewayError> {
        self.nullable(name, |v| match v {
            Value::String(s) => BudgetDuration::parse(&s).map_err(|e| format!("is invalid: {e}")),
            _ => Err("must be a duration such as \"30d\"".into()),
        })
    }

    fn map<T>(
        &mut self,
        name: &str,
        each: impl Fn(Value) -> Result<T, String>,
    ) -> Result<Option<BTreeMap<String, T>>, GatewayError> {
        Ok(self
            .nullable(name, |v| {
                let Value::Object(m) = v else { return Err("must be an object keyed by model name".into()) };
                m.into_iter().map(|(k, v)| each(v).map(|t| (k.clone(), t)).map_err(|e| format!("[{k}] {e}"))).collect()
            })?
            .map(Option::unwrap_or_default))
    }

    fn metadata(&mut self, name: &str) -> Result<Option<Map<String, Value>>, GatewayError> {
        let metadata = self
            .nullable(name, |v| match v {
                Value::Object(m) => Ok(m),
                _ => Err("must be an object".into()),
            })?
            .map(Option::unwrap_or_default);
        if let Some(m) = &metadata {
            // Serialising a map of JSON values cannot fail; an error would only overestimate.
            let len = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
            if len > limits::MAX_METADATA_BYTES {
                return Err(GatewayError::field(
                    name,
                    format!("`{name}` is larger than {} bytes", limits::MAX_METADATA_BYTES),
                ));
            }
        }
        Ok(metadata)
    }

    /// Fails on the first field nobody took.
    fn finish(self) -> Result<(), GatewayError> {
        match self.0.keys().next() {
            Some(k) => Err(GatewayError::field(k.clone(), format!("unknown field `{k}`"))),
            None => Ok(()),
        }
    }

    fn required_string(&mut self, name: &str) -> Result<String, GatewayError> {
        self.string(name)?.flatten().ok_or_else(|| GatewayError::field(name, format!("`{name}` is required")))
    }
}

/// A broken bound as a 400 naming the field.
fn bounded(e: limits::BoundError) -> GatewayError {
    GatewayError::field(e.field().to_owned(), e.to_string())
}

fn usd(v: Value) -> Result<NanoUsd, String> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s,
        _ => return Err("must be an amount of USD".into()),
    };
    let amount = NanoUsd::parse_usd(&text).map_err(|e| e.to_string())?;
    if amount.0 < 0 {
        return Err("cannot be negative".into());
    }
    Ok(amount)
}

fn set<T>(target: &mut Option<T>, value: Nullable<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

/// The limit fields every record accepts (LiteLLM names), applied to `limits`.
fn take_limits(f: &mut Fields, limits: &mut Limits) -> Result<(), GatewayError> {
    set(&mut limits.max_budget, f.usd("max_budget")?);
    set(&mut limits.soft_budget, f.usd("soft_budget")?);
    set(&mut limits.budget_duration, f.duration("budget_duration")?);
    set(&mut limits.tpm_limit, f.count("tpm_limit")?);
    set(&mut limits.rpm_limit, f.count("rpm_limit")?);
    if let Some(v) = f.count("max_parallel_requests")? {
        limits.max_parallel_requests = v
            .map(|n| u32::try_from(n).map_err(|_| GatewayError::field("max_parallel_requests", "too large")))
            .transpose()?;
    }
    if let Some(m) = f.map("model_max_budget", |v| {
        // LiteLLM also accepts {"gpt-4o": {"max_budget": 10}}.
        match v {
            Value::Object(mut o) => usd(o.remove("max_budget").unwrap_or(Value::Null)),
            other => usd(other),
        }
    })? {
        limits.model_max_budget = m;
    }
    if let Some(m) =
        f.map("model_rpm_limit", |v| v.as_u64().ok_or_else(|| "must be a whole number, 0 or more".to_owned()))?
    {
        limits.model_rpm_limit = m;
    }
    if let Some(m) =
        f.map("model_tpm_limit", |v| v.as_u64().ok_or_else(|| "must be a whole number, 0 or more".to_owned()))?
    {
        limits.model_tpm_limit = m;
    }
    if let Some(v) = f.nullable("alert_thresholds", |v| {
        let list: Vec<u64> = serde_json::from_value(v).map_err(|_| "must be an array of percentages".to_owned())?;
        list.into_iter()
            .map(|p| u8::try_from(p).ok().filter(|p| (1..=100).contains(p)).ok_or("values must be 1 to 100".to_owned()))
            .collect::<Result<Vec<u8>, String>>()
    })? {
        limits.alert_thresholds = v.unwrap_or_default();
        limits.alert_thresholds.sort_unstable();
        limits.alert_thresholds.dedup();
    }
    set(&mut limits.budget_id, f.id("budget_id")?);
    if let (Some(soft), Some(max)) = (limits.soft_budget, limits.max_budget) {
        if soft > max {
            return Err(GatewayError::field("soft_budget", "`soft_budget` cannot be above `max_budget`"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Storage helpers

async fn find<R: Record>(store: &dyn TenancyStore, id: &str) -> Result<Option<(R, i64)>, GatewayError> {
    // No record has a longer id (they are bounded when created): not worth a database read.
    if id.is_empty() || id.len() > limits::MAX_NAME_BYTES {
        return Ok(None);
    }
    get_record::<R>(store, id).await.map_err(internal)
}

async fn must_find<R: Record>(store: &dyn TenancyStore, id: &str) -> Result<(R, i64), GatewayError> {
    find::<R>(store, id).await?.ok_or_else(|| GatewayError::NotFound { kind: R::KIND.as_str(), id: id.to_owned() })
}

/// A referenced record must exist: 400 naming the field otherwise.
async fn must_exist<R: Record>(store: &dyn TenancyStore, field: &str, id: Option<&str>) -> Result<(), GatewayError> {
    let Some(id) = id else { return Ok(()) };
    match find::<R>(store, id).await? {
        Some(_) => Ok(()),
        None => Err(GatewayError::field(field, format!("{} {id:?} does not exist", R::KIND.as_str()))),
    }
}

fn doc<R: Record>(record: &R) -> Result<String, GatewayError> {
    serde_json::to_string(record).map_err(|e| GatewayError::Internal(e.to_string()))
}

async fn insert<R: Record>(state: &AppState, store: &dyn TenancyStore, record: &R) -> Result<(), GatewayError> {
    let created = store.create(R::KIND, record.id(), &doc(record)?).await.map_err(internal)?;
    if !created {
        return Err(GatewayError::Conflict(format!("{} {:?} already exists", R::KIND.as_str(), record.id())));
    }
    announce(state, R::KIND, record.id()).await
}

async fn save<R: Record>(
    state: &AppState,
    store: &dyn TenancyStore,
    record: &R,
    version: i64,
) -> Result<(), GatewayError> {
    let saved = store.update(R::KIND, record.id(), &doc(record)?, version).await.map_err(internal)?;
    if !saved {
        return Err(GatewayError::Conflict(format!(
            "{} {:?} was changed or deleted meanwhile; read it again and retry",
            R::KIND.as_str(),
            record.id()
        )));
    }
    announce(state, R::KIND, record.id()).await
}

async fn remove<R: Record>(
    state: &AppState,
    store: &dyn TenancyStore,
    id: &str,
    version: i64,
) -> Result<(), GatewayError> {
    if !store.delete(R::KIND, id, version).await.map_err(internal)? {
        return Err(GatewayError::Conflict(format!(
            "{} {id:?} was changed meanwhile; read it again and retry",
            R::KIND.as_str()
        )));
    }
    announce(state, R::KIND, id).await
}

/// A database failure, as answered: the database's own message can quote stored values, so
/// only its kind is logged and counted, and the client is told to retry.
pub(crate) fn internal(e: tollgate_schemas::store::StoreError) -> GatewayError {
    tracing::warn!(failure = e.kind(), "database request of the admin or spend API failed");
    metrics::counter!("tollgate_database_errors_total", "failure" => e.kind()).increment(1);
    GatewayError::DatabaseUnavailable
}

/// Tells every gateway (this one included) to drop its copy.
/// The change is stored: this gateway drops its copy at once, the change log makes every other
/// gateway do so within about a second (docs/security.md), and the control topic within tens of
/// milliseconds. Neither a failed log write nor an unreachable Kafka makes a stored change fail:
/// an unpublished change is published from the log later (an outbox).
async fn announce(state: &AppState, kind: Kind, id: &str) -> Result<(), GatewayError> {
    state.tenancy.invalidate(kind, id).await;
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
                if !crate::changes::publish(&log, control.as_deref(), &change).await {
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

// ---------------------------------------------------------------------------------------------
// Presentation: money as USD (and exact nano-USD), spend from the ledger.

pub(crate) fn usd_value(n: NanoUsd) -> Value {
    json!(n.as_usd_display())
}

/// A record as the admin API shows it.
fn present<R: Record>(record: &R) -> Value {
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

/// Adds `spend` (all time) and, with a budget duration, the current window's spend.
async fn with_spend(state: &AppState, mut v: Value, scope: &str, limits: &Limits) -> Value {
    let Some(reader) = &state.spend else { return v };
    let now = Utc::now();
    let all = reader.total(scope, "all").await.unwrap_or_default();
    let window = budget_window(limits.budget_duration, now);
    let current = reader.total(scope, &window).await.unwrap_or_default();
    // The ledger lags by the consumer's batch; this gateway may know more already.
    let current = current.spent.max(state.budget_view.spent(scope, &window));
    if let Value::Object(o) = &mut v {
        // As in LiteLLM, `spend` is what counts against the budget: the current window's.
        o.insert("spend".into(), usd_value(current));
        o.insert("spend_nano_usd".into(), json!(current.0));
        o.insert("budget_window".into(), json!(window));
        o.insert("spend_all_time".into(), usd_value(all.spent));
        o.insert("spend_all_time_nano_usd".into(), json!(all.spent.0));
        o.insert("requests".into(), json!(all.events));
    }
    v
}

pub(crate) fn query(req: &HttpRequest) -> BTreeMap<String, String> {
    web::Query::<BTreeMap<String, String>>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default()
}

/// Removes repeated ids, keeping the first of each.
fn dedup(ids: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The hash of a key given raw (`sk-...`) or already hashed (64 hex characters).
/// Whether `given` is a key's hash (64 hex digits) rather than the key itself.
fn is_key_hash(given: &str) -> bool {
    given.len() == 64 && given.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The stored key `given` names: the key itself, or its `token` (`key_id`). A key stored under
/// its SHA-256 is found by it too, before and after it is rehashed on first use.
pub(crate) async fn find_key(
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
    // Never echo a key: name it by its hash.
    let shown = if is_key_hash(given) { given.to_ascii_lowercase() } else { hash_key(given) };
    find_key(state, store, given).await?.ok_or(GatewayError::NotFound { kind: "key", id: shown })
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

/// After a change to a key stored apart from its identity (a rehashed key), the identity is
/// announced too: gateways may hold the key cached under either.
async fn announce_identity(state: &AppState, key: &KeyRecord) -> Result<(), GatewayError> {
    if key.id() != key.key_id {
        announce(state, Kind::Key, &key.key_id).await?;
    }
    Ok(())
}

/// A new key: 64 hex characters from the OS's random source (two v4 UUIDs' worth).
fn new_raw_key() -> String {
    format!("sk-{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn expires_after(duration: BudgetDuration, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match duration {
        BudgetDuration::Seconds(s) => now.checked_add_signed(chrono::Duration::try_seconds(i64::try_from(s).ok()?)?),
        BudgetDuration::Months(m) => now.checked_add_months(chrono::Months::new(m)),
    }
}

/// Checks each entry of a model allow-list names a model, an access group or a wildcard.
fn check_models(state: &AppState, field: &str, models: &[String]) -> Result<(), GatewayError> {
    for m in models {
        let known = m == "*" || m == "all-proxy-models" || state.router.knows(m) || state.router.is_access_group(m);
        if !known {
            return Err(GatewayError::field(field, format!("model or access group {m:?} is not configured")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Keys

/// The fields of /key/generate and /key/update.
async fn take_key_fields(
    f: &mut Fields,
    state: &AppState,
    store: &dyn TenancyStore,
    key: &mut KeyRecord,
    now: DateTime<Utc>,
) -> Result<(), GatewayError> {
    set(&mut key.key_alias, f.string("key_alias")?);
    set(&mut key.team_id, f.id("team_id")?);
    set(&mut key.user_id, f.id("user_id")?);
    set(&mut key.organization_id, f.id("organization_id")?);
    if let Some(models) = f.strings("models")? {
        check_models(state, "models", &models)?;
        key.models = models;
    }
    if let Some(d) = f.duration("duration")? {
        key.expires = d.and_then(|d| expires_after(d, now));
    }
    if let Some(e) = f.nullable("expires", |v| {
        serde_json::from_value::<DateTime<Utc>>(v).map_err(|_| "must be an RFC 3339 time".to_owned())
    })? {
        key.expires = e;
    }
    if let Some(b) = f.bool("blocked")? {
        key.blocked = b;
    }
    if let Some(m) = f.metadata("metadata")? {
        key.metadata = m;
    }
    if let Some(t) = f.tags("tags")? {
        key.tags = t;
    }
    take_limits(f, &mut key.limits)?;
    must_exist::<TeamRecord>(store, "team_id", key.team_id.as_deref()).await?;
    must_exist::<OrganizationRecord>(store, "organization_id", key.organization_id.as_deref()).await?;
    must_exist::<BudgetRecord>(store, "budget_id", key.limits.budget_id.as_deref()).await?;
    // As in LiteLLM, a key names a user that exists: a new user id makes a user record, so a
    // key whose user is later deleted stops working (see `Tenancy::authenticate`).
    if let Some(user_id) = &key.user_id {
        if find::<UserRecord>(store, user_id).await?.is_none() {
            let user = UserRecord {
                user_id: user_id.clone(),
                organization_id: key.organization_id.clone(),
                created_at: Some(now),
                updated_at: Some(now),
                ..UserRecord::default()
            };
            match insert(state, store, &user).await {
                // Created meanwhile by another admin call: it exists, which is all we need.
                Ok(()) | Err(GatewayError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

async fn key_generate(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let raw = match f.string("key")?.flatten() {
                Some(k) if k.len() >= 12 => k,
                Some(_) => return Err(GatewayError::field("key", "a custom key needs at least 12 characters")),
                None => new_raw_key(),
            };
            let now = Utc::now();
            let mut key = new_key_record(&state, &raw, now);
            take_key_fields(&mut f, &state, store.as_ref(), &mut key, now).await?;
            f.finish()?;
            insert(&state, store.as_ref(), &key).await?;
            let mut v = present(&key);
            show_new_key(&mut v, &raw, &key);
            Ok(HttpResponse::Ok().json(v))
        }
        .await,
    )
}

/// A key record for the new key `raw`: stored only as its lookup hash, named by its ends.
fn new_key_record(state: &AppState, raw: &str, now: chrono::DateTime<Utc>) -> KeyRecord {
    KeyRecord {
        key_id: state.tenancy.hasher().lookup(raw),
        key_name: key_name(raw),
        created_at: Some(now),
        updated_at: Some(now),
        ..KeyRecord::default()
    }
}

/// Adds the new key itself (shown this once) and its id to an answer.
fn show_new_key(answer: &mut Value, raw: &str, key: &KeyRecord) {
    if let Value::Object(o) = answer {
        o.insert("key".into(), json!(raw));
        o.insert("token".into(), json!(key.key_id));
    }
}

async fn key_update(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let given = f.required_string("key")?;
            let (mut key, version) = must_find_key(&state, store.as_ref(), &given).await?;
            let now = Utc::now();
            take_key_fields(&mut f, &state, store.as_ref(), &mut key, now).await?;
            f.finish()?;
            key.updated_at = Some(now);
            save(&state, store.as_ref(), &key, version).await?;
            announce_identity(&state, &key).await?;
            Ok(HttpResponse::Ok().json(present(&key)))
        }
        .await,
    )
}

async fn key_delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let keys = f.strings("keys")?.unwrap_or_default();
            let aliases = f.strings("key_aliases")?.unwrap_or_default();
            f.finish()?;
            if keys.is_empty() && aliases.is_empty() {
                return Err(GatewayError::field("keys", "give `keys` or `key_aliases`"));
            }
            let mut targets = Vec::new();
            for k in &keys {
                targets.push(must_find_key(&state, store.as_ref(), k).await?);
            }
            if !aliases.is_empty() {
                for (k, v) in list_records::<KeyRecord>(store.as_ref()).await.map_err(internal)? {
                    if k.key_alias.as_ref().is_some_and(|a| aliases.contains(a)) {
                        targets.push((k, v));
                    }
                }
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
        .await,
    )
}

async fn key_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let q = query(&req);
            let wanted = match q.get("key") {
                Some(k) => Some(key_identity(&state, k).await?),
                None => None,
            };
            let id = match caller(&req, &state, false).await? {
                Caller::Admin => match wanted {
                    Some(w) => w,
                    // An admin's virtual key without `key` reads itself; the master key must
                    // name one.
                    None => match raw_key(req.headers()).filter(|raw| !is_master_key(&state, raw)) {
                        Some(raw) => key_identity(&state, raw).await?,
                        None => return Err(GatewayError::field("key", "`key` is required")),
                    },
                },
                // Any key may read itself.
                Caller::Own(own) if wanted.as_ref().is_none_or(|w| *w == own) => own,
                Caller::Own(_) => return Err(GatewayError::Forbidden("a key may only read its own info".into())),
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
        .await,
    )
}

fn page_of(q: &BTreeMap<String, String>) -> Result<(usize, usize), GatewayError> {
    let page = match q.get("page") {
        Some(p) => p
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| GatewayError::field("page", "`page` must be 1 or more"))?,
        None => 1,
    };
    let size = match q.get("size") {
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|s| (1..=1000).contains(s))
            .ok_or_else(|| GatewayError::field("size", "`size` must be 1 to 1000"))?,
        None => 10,
    };
    Ok((page, size))
}

async fn key_list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, false).await?;
            let q = query(&req);
            let (page, size) = page_of(&q)?;
            let matches = |want: Option<&String>, have: &Option<String>| want.is_none_or(|w| have.as_ref() == Some(w));
            let mut keys: Vec<KeyRecord> = list_records::<KeyRecord>(store.as_ref())
                .await
                .map_err(internal)?
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| {
                    matches(q.get("team_id"), &k.team_id)
                        && matches(q.get("user_id"), &k.user_id)
                        && matches(q.get("key_alias"), &k.key_alias)
                        && matches(q.get("organization_id"), &k.organization_id)
                })
                .collect();
            keys.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
            let total = keys.len();
            let full = q.get("return_full_object").is_some_and(|v| v == "true");
            let items: Vec<Value> = keys
                .iter()
                .skip((page - 1).saturating_mul(size))
                .take(size)
                .map(|k| if full { present(k) } else { json!(k.key_id) })
                .collect();
            Ok(HttpResponse::Ok().json(json!({
                "keys": items,
                "total_count": total,
                "current_page": page,
                "total_pages": total.div_ceil(size),
            })))
        }
        .await,
    )
}

async fn set_key_blocked(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    blocked: bool,
) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let given = f.required_string("key")?;
            f.finish()?;
            let (mut key, version) = must_find_key(&state, store.as_ref(), &given).await?;
            key.blocked = blocked;
            key.updated_at = Some(Utc::now());
            save(&state, store.as_ref(), &key, version).await?;
            announce_identity(&state, &key).await?;
            Ok(HttpResponse::Ok().json(present(&key)))
        }
        .await,
    )
}

async fn key_block(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    set_key_blocked(req, body, state, true).await
}
async fn key_unblock(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    set_key_blocked(req, body, state, false).await
}

async fn key_regenerate(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(regenerate(&req, &body, &state, None).await)
}
async fn key_regenerate_path(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    answer(regenerate(&req, &body, &state, Some(path.into_inner())).await)
}

/// Rotation: a new key with the old one's settings; the old key is deleted, or with
/// `grace_period` (e.g. `"24h"`) keeps working until then.
async fn regenerate(req: &HttpRequest, body: &[u8], state: &AppState, from_path: Option<String>) -> Answer {
    let store = admin(req, state, true).await?;
    let mut f = Fields::parse(body)?;
    let given = match from_path {
        Some(k) => k,
        None => f.required_string("key")?,
    };
    let grace = f.duration("grace_period")?.flatten();
    let new_raw = match f.string("new_key")?.flatten() {
        Some(k) if k.len() >= 12 => k,
        Some(_) => return Err(GatewayError::field("new_key", "a custom key needs at least 12 characters")),
        None => new_raw_key(),
    };
    let (old, version) = must_find_key(state, store.as_ref(), &given).await?;
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
    take_key_fields(&mut f, state, store.as_ref(), &mut key, now).await?;
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

// ---------------------------------------------------------------------------------------------
// Teams

async fn take_team_fields(
    f: &mut Fields,
    state: &AppState,
    store: &dyn TenancyStore,
    team: &mut TeamRecord,
) -> Result<(), GatewayError> {
    set(&mut team.team_alias, f.string("team_alias")?);
    set(&mut team.organization_id, f.id("organization_id")?);
    if let Some(models) = f.strings("models")? {
        check_models(state, "models", &models)?;
        team.models = models;
    }
    if let Some(members) = f.nullable("members_with_roles", members)? {
        team.members = members.unwrap_or_default();
    }
    if let Some(b) = f.bool("blocked")? {
        team.blocked = b;
    }
    if let Some(m) = f.metadata("metadata")? {
        team.metadata = m;
    }
    if let Some(t) = f.tags("tags")? {
        team.tags = t;
    }
    take_limits(f, &mut team.limits)?;
    must_exist::<OrganizationRecord>(store, "organization_id", team.organization_id.as_deref()).await?;
    must_exist::<BudgetRecord>(store, "budget_id", team.limits.budget_id.as_deref()).await
}

fn members(v: Value) -> Result<Vec<Member>, String> {
    let list = match v {
        Value::Array(a) => a,
        one @ Value::Object(_) => vec![one],
        _ => return Err("must be a member object or an array of them".into()),
    };
    list.into_iter()
        .map(|m| {
            let mut m = match m {
                Value::Object(o) => o,
                _ => return Err("each member must be an object".to_owned()),
            };
            let user_id = match m.remove("user_id") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => return Err("each member needs a `user_id`".to_owned()),
            };
            let role = match m.remove("role") {
                None | Some(Value::Null) => "user".to_owned(),
                Some(Value::String(r)) if r == "admin" || r == "user" => r,
                Some(_) => return Err("`role` must be \"admin\" or \"user\"".to_owned()),
            };
            // LiteLLM sends user_email too; it names the same user.
            m.remove("user_email");
            match m.keys().next() {
                Some(k) => Err(format!("unknown member field `{k}`")),
                None => Ok(Member { user_id, role }),
            }
        })
        .collect()
}

async fn team_new(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let now = Utc::now();
            let mut team = TeamRecord {
                team_id: f.id("team_id")?.flatten().unwrap_or_else(new_id),
                created_at: Some(now),
                updated_at: Some(now),
                ..TeamRecord::default()
            };
            take_team_fields(&mut f, &state, store.as_ref(), &mut team).await?;
            f.finish()?;
            insert(&state, store.as_ref(), &team).await?;
            Ok(HttpResponse::Ok().json(present(&team)))
        }
        .await,
    )
}

async fn team_update(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let id = f.required_id("team_id")?;
            let (mut team, version) = referenced::<TeamRecord>(store.as_ref(), "team_id", &id).await?;
            take_team_fields(&mut f, &state, store.as_ref(), &mut team).await?;
            f.finish()?;
            team.updated_at = Some(Utc::now());
            save(&state, store.as_ref(), &team, version).await?;
            Ok(HttpResponse::Ok().json(present(&team)))
        }
        .await,
    )
}

/// The record an update names in its body: 400 naming the field when it does not exist.
async fn referenced<R: Record>(store: &dyn TenancyStore, field: &str, id: &str) -> Result<(R, i64), GatewayError> {
    find::<R>(store, id)
        .await?
        .ok_or_else(|| GatewayError::field(field, format!("{} {id:?} does not exist", R::KIND.as_str())))
}

/// Deletes every record named in `field` (all must exist first).
async fn delete_many<R: Record>(req: &HttpRequest, body: &[u8], state: &AppState, field: &str) -> Answer {
    let store = admin(req, state, true).await?;
    let mut f = Fields::parse(body)?;
    let mut ids = f.strings(field)?.unwrap_or_default();
    f.finish()?;
    if ids.is_empty() {
        return Err(GatewayError::field(field, format!("`{field}` must name at least one {}", R::KIND.as_str())));
    }
    dedup(&mut ids);
    let mut found = Vec::new();
    for id in &ids {
        found.push((id, referenced::<R>(store.as_ref(), field, id).await?.1));
    }
    for (id, version) in found {
        remove::<R>(state, store.as_ref(), id, version).await?;
    }
    Ok(HttpResponse::Ok().json(json!({"deleted": ids})))
}

async fn team_delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(delete_many::<TeamRecord>(&req, &body, &state, "team_ids").await)
}

async fn team_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, false).await?;
            let q = query(&req);
            let id = q.get("team_id").ok_or_else(|| GatewayError::field("team_id", "`team_id` is required"))?;
            let (team, _) = must_find::<TeamRecord>(store.as_ref(), id).await?;
            let keys: Vec<Value> = list_records::<KeyRecord>(store.as_ref())
                .await
                .map_err(internal)?
                .into_iter()
                .filter(|(k, _)| k.team_id.as_ref() == Some(id))
                .map(|(k, _)| present(&k))
                .collect();
            let info = with_spend(&state, present(&team), &format!("team/{id}"), &team.limits).await;
            Ok(HttpResponse::Ok().json(json!({"team_id": id, "team_info": info, "keys": keys})))
        }
        .await,
    )
}

async fn list_all<R: Record>(req: &HttpRequest, state: &AppState) -> Answer {
    let store = admin(req, state, false).await?;
    let mut records = list_records::<R>(store.as_ref()).await.map_err(internal)?;
    records.sort_by(|a, b| a.0.id().cmp(b.0.id()));
    Ok(HttpResponse::Ok().json(records.iter().map(|(r, _)| present(r)).collect::<Vec<_>>()))
}

async fn team_list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(list_all::<TeamRecord>(&req, &state).await)
}

async fn team_member_add(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let id = f.required_id("team_id")?;
            let added = f
                .nullable("member", members)?
                .flatten()
                .ok_or_else(|| GatewayError::field("member", "`member` is required"))?;
            f.finish()?;
            let (mut team, version) = referenced::<TeamRecord>(store.as_ref(), "team_id", &id).await?;
            for m in added {
                team.members.retain(|old| old.user_id != m.user_id);
                team.members.push(m);
            }
            team.updated_at = Some(Utc::now());
            save(&state, store.as_ref(), &team, version).await?;
            Ok(HttpResponse::Ok().json(present(&team)))
        }
        .await,
    )
}

async fn team_member_delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let id = f.required_id("team_id")?;
            let user = f.required_id("user_id")?;
            f.finish()?;
            let (mut team, version) = referenced::<TeamRecord>(store.as_ref(), "team_id", &id).await?;
            if !team.members.iter().any(|m| m.user_id == user) {
                return Err(GatewayError::field("user_id", format!("user {user:?} is not a member of team {id:?}")));
            }
            team.members.retain(|m| m.user_id != user);
            team.updated_at = Some(Utc::now());
            save(&state, store.as_ref(), &team, version).await?;
            Ok(HttpResponse::Ok().json(present(&team)))
        }
        .await,
    )
}

async fn set_team_blocked(req: &HttpRequest, body: &[u8], state: &AppState, blocked: bool) -> Answer {
    let store = admin(req, state, true).await?;
    let mut f = Fields::parse(body)?;
    let id = f.required_id("team_id")?;
    f.finish()?;
    let (mut team, version) = referenced::<TeamRecord>(store.as_ref(), "team_id", &id).await?;
    team.blocked = blocked;
    team.updated_at = Some(Utc::now());
    save(state, store.as_ref(), &team, version).await?;
    Ok(HttpResponse::Ok().json(present(&team)))
}

async fn team_block(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(set_team_blocked(&req, &body, &state, true).await)
}
async fn team_unblock(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(set_team_blocked(&req, &body, &state, false).await)
}

// ---------------------------------------------------------------------------------------------
// Internal users

const USER_ROLES: [&str; 3] = ["proxy_admin", "proxy_admin_viewer", "internal_user"];

async fn take_user_fields(
    f: &mut Fields,
    state: &AppState,
    store: &dyn TenancyStore,
    user: &mut UserRecord,
) -> Result<(), GatewayError> {
    set(&mut user.user_email, f.string("user_email")?);
    set(&mut user.user_alias, f.string("user_alias")?);
    if let Some(role) = f.string("user_role")? {
        if let Some(r) = &role {
            if !USER_ROLES.contains(&r.as_str()) {
                return Err(GatewayError::field("user_role", format!("`user_role` must be one of {USER_ROLES:?}")));
            }
        }
        user.user_role = role;
    }
    set(&mut user.organization_id, f.id("organization_id")?);
    if let Some(models) = f.strings("models")? {
        check_models(state, "models", &models)?;
        user.models = models;
    }
    if let Some(b) = f.bool("blocked")? {
        user.blocked = b;
    }
    if let Some(m) = f.metadata("metadata")? {
        user.metadata = m;
    }
    take_limits(f, &mut user.limits)?;
    must_exist::<OrganizationRecord>(store, "organization_id", user.organization_id.as_deref()).await?;
    must_exist::<BudgetRecord>(store, "budget_id", user.limits.budget_id.as_deref()).await
}

async fn user_new(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let now = Utc::now();
            let mut user = UserRecord {
                user_id: f.id("user_id")?.flatten().unwrap_or_else(new_id),
                created_at: Some(now),
                updated_at: Some(now),
                ..UserRecord::default()
            };
            take_user_fields(&mut f, &state, store.as_ref(), &mut user).await?;
            // As in LiteLLM, a new user gets a key of their own unless asked not to.
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
        .await,
    )
}

async fn user_update(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let id = f.required_id("user_id")?;
            let (mut user, version) = referenced::<UserRecord>(store.as_ref(), "user_id", &id).await?;
            take_user_fields(&mut f, &state, store.as_ref(), &mut user).await?;
            f.finish()?;
            user.updated_at = Some(Utc::now());
            save(&state, store.as_ref(), &user, version).await?;
            Ok(HttpResponse::Ok().json(present(&user)))
        }
        .await,
    )
}

async fn user_delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(delete_many::<UserRecord>(&req, &body, &state, "user_ids").await)
}

async fn user_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, false).await?;
            let q = query(&req);
            let id = q.get("user_id").ok_or_else(|| GatewayError::field("user_id", "`user_id` is required"))?;
            let (user, _) = must_find::<UserRecord>(store.as_ref(), id).await?;
            let keys: Vec<Value> = list_records::<KeyRecord>(store.as_ref())
                .await
                .map_err(internal)?
                .into_iter()
                .filter(|(k, _)| k.user_id.as_ref() == Some(id))
                .map(|(k, _)| present(&k))
                .collect();
            let teams: Vec<Value> = list_records::<TeamRecord>(store.as_ref())
                .await
                .map_err(internal)?
                .into_iter()
                .filter(|(t, _)| t.members.iter().any(|m| &m.user_id == id))
                .map(|(t, _)| json!(t.team_id))
                .collect();
            let info = with_spend(&state, present(&user), &format!("user/{id}"), &user.limits).await;
            Ok(HttpResponse::Ok().json(json!({"user_id": id, "user_info": info, "keys": keys, "teams": teams})))
        }
        .await,
    )
}

// ---------------------------------------------------------------------------------------------
// Customers (end users)

async fn take_customer_fields(
    f: &mut Fields,
    store: &dyn TenancyStore,
    customer: &mut CustomerRecord,
) -> Result<(), GatewayError> {
    set(&mut customer.alias, f.string("alias")?);
    set(&mut customer.team_id, f.id("team_id")?);
    set(&mut customer.organization_id, f.id("organization_id")?);
    must_exist::<TeamRecord>(store, "team_id", customer.team_id.as_deref()).await?;
    must_exist::<OrganizationRecord>(store, "organization_id", customer.organization_id.as_deref()).await?;
    if let Some(b) = f.bool("blocked")? {
        customer.blocked = b;
    }
    if let Some(m) = f.metadata("metadata")? {
        customer.metadata = m;
    }
    take_limits(f, &mut customer.limits)?;
    must_exist::<BudgetRecord>(store, "budget_id", customer.limits.budget_id.as_deref()).await
}

async fn customer_new(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let now = Utc::now();
            let mut customer = CustomerRecord {
                user_id: f.required_id("user_id")?,
                created_at: Some(now),
                updated_at: Some(now),
                ..CustomerRecord::default()
            };
            take_customer_fields(&mut f, store.as_ref(), &mut customer).await?;
            f.finish()?;
            insert(&state, store.as_ref(), &customer).await?;
            Ok(HttpResponse::Ok().json(present(&customer)))
        }
        .await,
    )
}

async fn customer_update(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let id = f.required_id("user_id")?;
            let (mut customer, version) = referenced::<CustomerRecord>(store.as_ref(), "user_id", &id).await?;
            take_customer_fields(&mut f, store.as_ref(), &mut customer).await?;
            f.finish()?;
            customer.updated_at = Some(Utc::now());
            save(&state, store.as_ref(), &customer, version).await?;
            Ok(HttpResponse::Ok().json(present(&customer)))
        }
        .await,
    )
}

async fn customer_delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(delete_many::<CustomerRecord>(&req, &body, &state, "user_ids").await)
}

async fn customer_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, false).await?;
            let q = query(&req);
            let id = q
                .get("end_user_id")
                .or_else(|| q.get("user_id"))
                .ok_or_else(|| GatewayError::field("end_user_id", "`end_user_id` is required"))?;
            let (customer, _) = must_find::<CustomerRecord>(store.as_ref(), id).await?;
            Ok(HttpResponse::Ok()
                .json(with_spend(&state, present(&customer), &format!("customer/{id}"), &customer.limits).await))
        }
        .await,
    )
}

async fn customer_list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(list_all::<CustomerRecord>(&req, &state).await)
}

async fn set_customers_blocked(req: &HttpRequest, body: &[u8], state: &AppState, blocked: bool) -> Answer {
    let store = admin(req, state, true).await?;
    let mut f = Fields::parse(body)?;
    let mut ids = f.strings("user_ids")?.unwrap_or_default();
    f.finish()?;
    if ids.is_empty() {
        return Err(GatewayError::field("user_ids", "`user_ids` must name at least one customer"));
    }
    dedup(&mut ids);
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

async fn customer_block(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(set_customers_blocked(&req, &body, &state, true).await)
}
async fn customer_unblock(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(set_customers_blocked(&req, &body, &state, false).await)
}

// ---------------------------------------------------------------------------------------------
// Organizations

async fn take_organization_fields(
    f: &mut Fields,
    state: &AppState,
    store: &dyn TenancyStore,
    org: &mut OrganizationRecord,
) -> Result<(), GatewayError> {
    set(&mut org.organization_alias, f.string("organization_alias")?);
    if let Some(models) = f.strings("models")? {
        check_models(state, "models", &models)?;
        org.models = models;
    }
    if let Some(b) = f.bool("blocked")? {
        org.blocked = b;
    }
    if let Some(m) = f.metadata("metadata")? {
        org.metadata = m;
    }
    take_limits(f, &mut org.limits)?;
    must_exist::<BudgetRecord>(store, "budget_id", org.limits.budget_id.as_deref()).await
}

async fn organization_new(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let now = Utc::now();
            let mut org = OrganizationRecord {
                organization_id: f.id("organization_id")?.flatten().unwrap_or_else(new_id),
                created_at: Some(now),
                updated_at: Some(now),
                ..OrganizationRecord::default()
            };
            take_organization_fields(&mut f, &state, store.as_ref(), &mut org).await?;
            f.finish()?;
            insert(&state, store.as_ref(), &org).await?;
            Ok(HttpResponse::Ok().json(present(&org)))
        }
        .await,
    )
}

async fn organization_update(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let id = f.required_id("organization_id")?;
            let (mut org, version) = referenced::<OrganizationRecord>(store.as_ref(), "organization_id", &id).await?;
            take_organization_fields(&mut f, &state, store.as_ref(), &mut org).await?;
            f.finish()?;
            org.updated_at = Some(Utc::now());
            save(&state, store.as_ref(), &org, version).await?;
            Ok(HttpResponse::Ok().json(present(&org)))
        }
        .await,
    )
}

async fn organization_delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(delete_many::<OrganizationRecord>(&req, &body, &state, "organization_ids").await)
}

async fn organization_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, false).await?;
            let q = query(&req);
            let id = q
                .get("organization_id")
                .ok_or_else(|| GatewayError::field("organization_id", "`organization_id` is required"))?;
            let (org, _) = must_find::<OrganizationRecord>(store.as_ref(), id).await?;
            Ok(HttpResponse::Ok().json(with_spend(&state, present(&org), &format!("org/{id}"), &org.limits).await))
        }
        .await,
    )
}

async fn organization_list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(list_all::<OrganizationRecord>(&req, &state).await)
}

// ---------------------------------------------------------------------------------------------
// Reusable budgets

async fn budget_new(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let now = Utc::now();
            let mut budget = BudgetRecord {
                budget_id: f.id("budget_id")?.flatten().unwrap_or_else(new_id),
                created_at: Some(now),
                updated_at: Some(now),
                ..BudgetRecord::default()
            };
            take_limits(&mut f, &mut budget.limits)?;
            f.finish()?;
            if budget.limits.budget_id.is_some() {
                return Err(GatewayError::field("budget_id", "a budget cannot name another budget"));
            }
            insert(&state, store.as_ref(), &budget).await?;
            Ok(HttpResponse::Ok().json(present(&budget)))
        }
        .await,
    )
}

async fn budget_update(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let id = f.required_id("budget_id")?;
            let (mut budget, version) = referenced::<BudgetRecord>(store.as_ref(), "budget_id", &id).await?;
            take_limits(&mut f, &mut budget.limits)?;
            f.finish()?;
            budget.limits.budget_id = None;
            budget.budget_id = id;
            budget.updated_at = Some(Utc::now());
            save(&state, store.as_ref(), &budget, version).await?;
            Ok(HttpResponse::Ok().json(present(&budget)))
        }
        .await,
    )
}

async fn budget_delete(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let store = admin(&req, &state, true).await?;
            let mut f = Fields::parse(&body)?;
            let id = f.required_string("id")?;
            f.finish()?;
            let (_, version) = referenced::<BudgetRecord>(store.as_ref(), "id", &id).await?;
            remove::<BudgetRecord>(&state, store.as_ref(), &id, version).await?;
            Ok(HttpResponse::Ok().json(json!({"deleted": [id]})))
        }
        .await,
    )
}

async fn budget_info(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
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
        .await,
    )
}

async fn budget_list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(list_all::<BudgetRecord>(&req, &state).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_the_bad_field() {
        let mut f = Fields::parse(br#"{"max_budget": -1}"#).unwrap();
        let err = take_limits(&mut f, &mut Limits::default()).err().unwrap();
        assert!(matches!(&err, GatewayError::InvalidField { field, .. } if field == "max_budget"), "{err:?}");

        let mut f = Fields::parse(br#"{"budget_duration": "3 weeks"}"#).unwrap();
        let err = take_limits(&mut f, &mut Limits::default()).err().unwrap();
        assert!(matches!(&err, GatewayError::InvalidField { field, .. } if field == "budget_duration"));

        let mut f = Fields::parse(br#"{"rpm_limit": 10, "colour": "red"}"#).unwrap();
        let mut limits = Limits::default();
        take_limits(&mut f, &mut limits).unwrap();
        assert_eq!(limits.rpm_limit, Some(10));
        let err = f.finish().err().unwrap();
        assert!(matches!(&err, GatewayError::InvalidField { field, .. } if field == "colour"));
    }

    #[test]
    fn dollars_are_read_exactly_and_null_clears() {
        let mut f = Fields::parse(
            br#"{"max_budget": 0.1, "soft_budget": "0.05", "model_max_budget": {"m": {"max_budget": 2}}}"#,
        )
        .unwrap();
        let mut limits = Limits { tpm_limit: Some(5), ..Limits::default() };
        take_limits(&mut f, &mut limits).unwrap();
        assert_eq!(limits.max_budget, Some(NanoUsd(100_000_000)));
        assert_eq!(limits.soft_budget, Some(NanoUsd(50_000_000)));
        assert_eq!(limits.model_max_budget.get("m"), Some(&NanoUsd(2_000_000_000)));
        assert_eq!(limits.tpm_limit, Some(5), "absent fields are kept");
        let mut f = Fields::parse(br#"{"max_budget": null}"#).unwrap();
        take_limits(&mut f, &mut limits).unwrap();
        assert_eq!(limits.max_budget, None);
    }

    #[test]
    fn soft_budget_above_max_is_refused() {
        let mut f = Fields::parse(br#"{"max_budget": 1, "soft_budget": 2}"#).unwrap();
        assert!(take_limits(&mut f, &mut Limits::default()).is_err());
    }

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
