//! Who is calling: virtual keys and the tenants they belong to, from moka-cached views of the
//! tenancy records (no database call on a warm cache; docs/design.md §2.2).
//!
//! Keys are only ever handled as their SHA-256 hash once they leave the request header; the raw
//! key must never be logged, put in a metric, an event or an error message.

use crate::config::VirtualKeyConfig;
use crate::error::{GatewayError, Scope};
use crate::tenancy::key_index::{self, KeyIndex};
use actix_web::http::header::HeaderMap;
use chrono::{DateTime, Utc};
use moka::future::Cache;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_schemas::store::{get_record, TenancyStore};
use tollgate_schemas::tenancy::{
    BudgetRecord, CustomerRecord, KeyRecord, Kind, Limits, OrganizationRecord, Record, TeamRecord, UserRecord,
};

/// SHA-256 hex of a raw key: the identity of config-file keys and of keys stored before the
/// server secret (LiteLLM's `token`), and how the master key is compared.
pub fn hash_key(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// The shortest server secret accepted for hashing keys, in bytes.
pub const MIN_KEY_HASH_SECRET: usize = 32;

/// How virtual keys are found: by `HMAC-SHA-256(secret, SHA-256(key))`, hex. Without the
/// secret, a copy of the database or the ledger does not let anyone test guessed keys. Keying
/// the HMAC on the SHA-256 (not the key itself) lets a record stored under its SHA-256 (before
/// the secret, or imported from LiteLLM) be found and rehashed.
#[derive(Clone)]
pub struct KeyHasher {
    /// `None`: no secret (a gateway with only config-file keys); lookup ids are plain SHA-256.
    secret: Option<Arc<[u8]>>,
}

impl KeyHasher {
    pub fn new(secret: Option<&[u8]>) -> KeyHasher {
        KeyHasher { secret: secret.map(Arc::from) }
    }

    /// The id a key is stored and looked up under.
    pub fn lookup(&self, raw: &str) -> String {
        self.lookup_of_digest(&Sha256::digest(raw.as_bytes()))
    }

    /// The lookup id of a key known by its SHA-256 hex (`None` when that is not one).
    pub fn lookup_of_legacy(&self, sha256_hex: &str) -> Option<String> {
        let digest = hex::decode(sha256_hex).ok().filter(|d| d.len() == 32)?;
        Some(self.lookup_of_digest(&digest))
    }

    fn lookup_of_digest(&self, digest: &[u8]) -> String {
        use hmac::Mac;
        match &self.secret {
            Some(secret) => match hmac::Hmac::<Sha256>::new_from_slice(secret) {
                Ok(mut mac) => {
                    mac.update(digest);
                    hex::encode(mac.finalize().into_bytes())
                }
                // HMAC takes keys of any length; this arm cannot be reached.
                Err(_) => hex::encode(digest),
            },
            None => hex::encode(digest),
        }
    }

    /// Whether keys are hashed with a server secret.
    pub fn keyed(&self) -> bool {
        self.secret.is_some()
    }
}

/// `sk-...abcd`: enough of a key to recognise it, too little to use it.
pub fn key_name(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() < 12 {
        return "***".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}...{tail}")
}

/// The raw key from `Authorization: Bearer`, `x-api-key` (Anthropic SDKs) or `api-key` (Azure).
pub fn raw_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    ["x-api-key", "api-key"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()))
}

/// A key declared in the config file, as a record.
pub fn config_key_record(k: &VirtualKeyConfig) -> Option<KeyRecord> {
    let key_id = match (&k.key, &k.key_hash) {
        (Some(raw), _) => hash_key(raw.expose()),
        (None, Some(h)) => h.to_ascii_lowercase(),
        (None, None) => return None, // rejected by config validation
    };
    Some(KeyRecord {
        key_name: k.key.as_ref().map(|raw| key_name(raw.expose())).unwrap_or_default(),
        key_id,
        key_alias: k.key_alias.clone(),
        team_id: k.team_id.clone(),
        user_id: k.user_id.clone(),
        organization_id: k.organization_id.clone(),
        models: k.models.clone(),
        limits: Limits {
            max_budget: k.max_budget,
            soft_budget: k.soft_budget,
            budget_duration: k.budget_duration,
            rpm_limit: k.rpm_limit,
            tpm_limit: k.tpm_limit,
            max_parallel_requests: k.max_parallel_requests,
            ..Limits::default()
        },
        blocked: k.blocked,
        expires: k.expires,
        ..KeyRecord::default()
    })
}

/// One link of a request's tenancy chain: who, and the limits that apply to them (a reusable
/// budget object's fields already merged in).
#[derive(Clone, Debug)]
pub struct Party {
    pub scope: Scope,
    /// Ledger scope id, e.g. `team/payments`.
    pub scope_id: String,
    pub limits: Limits,
}

/// Everyone a request is made on behalf of, checked active.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key: Arc<KeyRecord>,
    pub team: Option<Arc<TeamRecord>>,
    pub user: Option<Arc<UserRecord>>,
    pub organization: Option<Arc<OrganizationRecord>>,
    pub organization_id: Option<String>,
    pub customer_id: Option<String>,
    /// Key, team, user, organization, customer: those that exist, in that order.
    pub parties: Vec<Party>,
    /// The tags of the request's usage event (`tenancy::tags::event_tags`), set at admission.
    pub tags: Vec<String>,
}

impl Principal {
    /// Whether the key, its team, its user and its organization all allow `model` (an empty
    /// list allows every model). An entry of an allow-list may be a model name, an access group
    /// (`model_info.access_groups`), `*` or `all-proxy-models`.
    pub fn check_model(&self, model: &str, groups_of: &dyn Fn(&str) -> Vec<String>) -> Result<(), GatewayError> {
        let allows = |list: &[String]| {
            list.is_empty()
                || list.iter().any(|m| m == model || m == "*" || m == "all-proxy-models")
                || groups_of(model).iter().any(|g| list.contains(g))
        };
        let lists = [
            Some(self.key.models.as_slice()),
            self.team.as_ref().map(|t| t.models.as_slice()),
            self.user.as_ref().map(|u| u.models.as_slice()),
            self.organization.as_ref().map(|o| o.models.as_slice()),
        ];
        if lists.into_iter().flatten().all(allows) {
            Ok(())
        } else {
            Err(GatewayError::ModelNotAllowed(model.to_owned()))
        }
    }

    /// Whether this request may be charged to customer `c`: a customer owned by a team or an
    /// organization is charged only by keys of that team or organization; one owned by neither
    /// only when `shared` (`gateway.shared_customers`, LiteLLM's behaviour).
    fn may_charge(&self, c: &CustomerRecord, shared: bool) -> bool {
        match (&c.team_id, &c.organization_id) {
            (None, None) => shared,
            (team, org) => {
                let my_team = self.key.team_id.as_ref();
                (team.is_some() && team.as_ref() == my_team)
                    || (org.is_some() && org.as_ref() == self.organization_id.as_ref())
            }
        }
    }

    /// Whether the caller may use the admin API: `Some(true)` read and write, `Some(false)`
    /// read only, `None` not at all.
    pub fn admin_access(&self) -> Option<bool> {
        match self.user.as_ref().and_then(|u| u.user_role.as_deref()) {
            Some("proxy_admin") => Some(true),
            Some("proxy_admin_viewer") => Some(false),
            _ => None,
        }
    }
}

/// A cache of one kind of record; `None` (record absent) is cached too.
type RecordCache<R> = Cache<String, Option<Arc<R>>>;

/// The cached tenancy view. A miss loads once from the store (concurrent misses for the same
/// id wait for that one load); every change made through any gateway's admin API arrives on
/// the control topic and drops the cached copy (see [`crate::limits::budget_view::listen`]).
pub struct Tenancy {
    store: Option<Arc<dyn TenancyStore>>,
    hasher: KeyHasher,
    /// Where a key's move to its lookup hash is announced to the other gateways.
    control: Option<Arc<crate::tenancy::changes::ControlPublisher>>,
    config_keys: HashMap<String, Arc<KeyRecord>>,
    keys: RecordCache<KeyRecord>,
    teams: RecordCache<TeamRecord>,
    users: RecordCache<UserRecord>,
    customers: RecordCache<CustomerRecord>,
    organizations: RecordCache<OrganizationRecord>,
    budgets: RecordCache<BudgetRecord>,
    /// The admin listing's index of stored keys (with a store), told of every key change
    /// noticed here, and the changes it has yet to read (until it is maintained).
    key_index: Option<Arc<KeyIndex>>,
    key_changes: std::sync::Mutex<Option<key_index::Changes>>,
}

/// How long a cached record may be served without any change notice: a safety net for a lost
/// control message, not the propagation path.
const RECORD_TTL: Duration = Duration::from_secs(300);
/// Absent records are rechecked sooner (a flood of bad keys is still absorbed).
const ABSENT_TTL: Duration = Duration::from_secs(30);

fn cache<R: Send + Sync + 'static>() -> RecordCache<R> {
    Cache::builder().max_capacity(1_000_000).expire_after(AbsentExpiry).build()
}

struct AbsentExpiry;

impl<R> moka::Expiry<String, Option<Arc<R>>> for AbsentExpiry {
    fn expire_after_create(&self, _: &String, value: &Option<Arc<R>>, _: std::time::Instant) -> Option<Duration> {
        Some(if value.is_some() { RECORD_TTL } else { ABSENT_TTL })
    }
}

impl Tenancy {
    pub fn new(
        store: Option<Arc<dyn TenancyStore>>,
        config_keys: &[VirtualKeyConfig],
        hasher: KeyHasher,
        control: Option<Arc<crate::tenancy::changes::ControlPublisher>>,
    ) -> Tenancy {
        let (key_index, key_changes) = match store {
            Some(_) => {
                let (index, changes) = KeyIndex::new();
                (Some(index), Some(changes))
            }
            None => (None, None),
        };
        Tenancy {
            store,
            hasher,
            control,
            config_keys: config_keys
                .iter()
                .filter_map(config_key_record)
                .map(|r| (r.key_id.clone(), Arc::new(r)))
                .collect(),
            keys: cache(),
            teams: cache(),
            users: cache(),
            customers: cache(),
            organizations: cache(),
            budgets: cache(),
            key_index,
            key_changes: std::sync::Mutex::new(key_changes),
        }
    }

    pub fn store(&self) -> Option<&Arc<dyn TenancyStore>> {
        self.store.as_ref()
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// The stored key `raw` opens: under its lookup hash, or still under its SHA-256 (then
    /// moved to its lookup hash now). `None` for an unknown key (cached as absent).
    async fn stored_key(&self, raw: &str, legacy: &str) -> Result<Option<Arc<KeyRecord>>, GatewayError> {
        let lookup = self.hasher.lookup(raw);
        if let Some(k) = self.key(&lookup).await? {
            return Ok(Some(k));
        }
        if lookup == legacy {
            return Ok(None);
        }
        let Some(k) = self.key(legacy).await? else { return Ok(None) };
        self.rehash(legacy, &lookup).await;
        Ok(Some(k))
    }

    /// Moves the key stored under its SHA-256 `legacy` to its lookup hash, keeping its identity
    /// (`key_id`, so its spend continues). Best effort: on any failure the legacy record stays
    /// and serves, and the move is tried again at a later use.
    async fn rehash(&self, legacy: &str, lookup: &str) {
        let Some(store) = &self.store else { return };
        let moved = async {
            let Some((mut record, version)) = get_record::<KeyRecord>(store.as_ref(), legacy).await? else {
                return Ok(false);
            };
            record.stored_id = Some(lookup.to_owned());
            let doc = serde_json::to_string(&record)
                .map_err(|e| tollgate_schemas::store::StoreError::Query(e.to_string()))?;
            if !store.create(Kind::Key, lookup, &doc).await? {
                return Ok(false); // moved meanwhile by another gateway
            }
            if !store.delete(Kind::Key, legacy, version).await? {
                // Changed meanwhile: take the copy back, it may be stale.
                store.delete(Kind::Key, lookup, 1).await?;
                return Ok(false);
            }
            Ok::<_, tollgate_schemas::store::StoreError>(true)
        };
        match moved.await {
            Ok(true) => {
                metrics::counter!("tollgate_keys_rehashed_total").increment(1);
                for id in [legacy, lookup] {
                    self.invalidate(Kind::Key, id).await;
                    if let Some(control) = &self.control {
                        let change = tollgate_schemas::tenancy::Invalidation {
                            kind: Kind::Key,
                            id: id.to_owned(),
                            at_ms: Utc::now().timestamp_millis(),
                        };
                        if control.publish(&change).await.is_err() {
                            tracing::warn!("a rehashed key's move could not be announced; caches expire it");
                        }
                    }
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(failure = e.kind(), "a key could not be moved to its lookup hash yet"),
        }
    }

    async fn load<R: Record>(&self, cache: &RecordCache<R>, id: &str) -> Result<Option<Arc<R>>, GatewayError> {
        let Some(store) = self.store.clone() else { return Ok(None) };
        let key = id.to_owned();
        cache
            .try_get_with(key.clone(), async move {
                get_record::<R>(store.as_ref(), &key).await.map(|found| found.map(|(r, _)| Arc::new(r)))
            })
            .await
            .map_err(|e| {
                // The database's own message stays out of logs and answers (it can quote values).
                tracing::warn!(kind = R::KIND.as_str(), failure = e.kind(), "tenancy lookup failed");
                metrics::counter!("tollgate_tenancy_lookup_errors_total", "failure" => e.kind()).increment(1);
                GatewayError::DatabaseUnavailable
            })
    }

    /// A key of the config file.
    pub fn config_key(&self, key_id: &str) -> Option<Arc<KeyRecord>> {
        self.config_keys.get(key_id).cloned()
    }

    /// The key with this hash, from the config file or the store.
    pub async fn key(&self, key_id: &str) -> Result<Option<Arc<KeyRecord>>, GatewayError> {
        if let Some(k) = self.config_keys.get(key_id) {
            return Ok(Some(k.clone()));
        }
        self.load(&self.keys, key_id).await
    }

    pub async fn team(&self, id: &str) -> Result<Option<Arc<TeamRecord>>, GatewayError> {
        self.load(&self.teams, id).await
    }
    pub async fn user(&self, id: &str) -> Result<Option<Arc<UserRecord>>, GatewayError> {
        self.load(&self.users, id).await
    }
    pub async fn customer(&self, id: &str) -> Result<Option<Arc<CustomerRecord>>, GatewayError> {
        self.load(&self.customers, id).await
    }
    pub async fn organization(&self, id: &str) -> Result<Option<Arc<OrganizationRecord>>, GatewayError> {
        self.load(&self.organizations, id).await
    }

    /// `limits` with the fields of its reusable budget object (`budget_id`) filled in.
    async fn effective(&self, limits: &Limits) -> Result<Limits, GatewayError> {
        match &limits.budget_id {
            Some(id) => match self.load(&self.budgets, id).await? {
                Some(budget) => Ok(limits.with_defaults(&budget.limits)),
                None => Ok(limits.clone()),
            },
            None => Ok(limits.clone()),
        }
    }

    /// The index of stored keys, when this gateway keeps one (with a store).
    pub fn key_index(&self) -> Option<&Arc<KeyIndex>> {
        self.key_index.as_ref()
    }

    /// Puts the key stored under `stored_id` in the index as it is stored now, before answering
    /// the admin call that changed it (this gateway's listings show its own changes at once).
    pub async fn reindex_key(&self, stored_id: &str) {
        if let (Some(store), Some(index)) = (&self.store, &self.key_index) {
            index.refresh(store.as_ref(), stored_id).await;
        }
    }

    /// Loads the key index and keeps it current until `shutdown` (once; nothing without a store).
    pub async fn maintain_key_index(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let changes = self.key_changes.lock().ok().and_then(|mut c| c.take());
        let (Some(store), Some(index), Some(changes)) = (self.store.clone(), self.key_index.clone(), changes) else {
            return;
        };
        index.maintain(store, changes, shutdown).await;
    }

    /// Drops the cached copy of a record (a control-topic message).
    pub async fn invalidate(&self, kind: Kind, id: &str) {
        match kind {
            Kind::Key => {
                self.keys.invalidate(id).await;
                if let Some(index) = &self.key_index {
                    index.changed(id);
                }
            }
            Kind::Team => self.teams.invalidate(id).await,
            Kind::User => self.users.invalidate(id).await,
            Kind::Customer => self.customers.invalidate(id).await,
            Kind::Organization => self.organizations.invalidate(id).await,
            // Limits are merged with their budget object on every request, so this is enough.
            Kind::Budget => self.budgets.invalidate(id).await,
        }
    }

    /// Authenticates a raw key and resolves everyone the request is made for; blocked or
    /// expired parties are refused here, on every request, cached or not.
    pub async fn authenticate(&self, raw: &str, now: DateTime<Utc>) -> Result<Principal, GatewayError> {
        // Config-file keys are known by their SHA-256 (they are in the file anyway).
        let legacy = hash_key(raw);
        let (key, from_config) = match self.config_keys.get(&legacy) {
            Some(k) => (k.clone(), true),
            None => (self.stored_key(raw, &legacy).await?.ok_or(GatewayError::InvalidKey)?, false),
        };
        let key_id = key.key_id.clone();
        if key.blocked {
            return Err(GatewayError::KeyBlocked);
        }
        if key.expires.is_some_and(|e| e <= now) {
            return Err(GatewayError::KeyExpired);
        }
        let mut parties = vec![Party {
            scope: Scope::Key,
            scope_id: format!("key/{key_id}"),
            limits: self.effective(&key.limits).await?,
        }];
        // A key of the store whose team was deleted stops working; config-file keys may name
        // teams that exist nowhere else.
        let team = match &key.team_id {
            Some(id) => match self.team(id).await? {
                Some(t) => Some(t),
                None if self.store.is_some() && !from_config => return Err(GatewayError::TenantMissing(Scope::Team)),
                None => None,
            },
            None => None,
        };
        if let Some(t) = &team {
            if t.blocked {
                return Err(GatewayError::Blocked(Scope::Team));
            }
            parties.push(Party {
                scope: Scope::Team,
                scope_id: format!("team/{}", t.team_id),
                limits: self.effective(&t.limits).await?,
            });
        }
        // Likewise a key whose user or organization was deleted (keys are made only for users
        // and organizations that exist: /key/generate creates the user it names).
        let user = match &key.user_id {
            Some(id) => match self.user(id).await? {
                Some(u) => Some(u),
                None if self.store.is_some() && !from_config => return Err(GatewayError::TenantMissing(Scope::User)),
                None => None,
            },
            None => None,
        };
        if let Some(u) = &user {
            if u.blocked {
                return Err(GatewayError::Blocked(Scope::User));
            }
            parties.push(Party {
                scope: Scope::User,
                scope_id: format!("user/{}", u.user_id),
                limits: self.effective(&u.limits).await?,
            });
        }
        let organization_id =
            key.organization_id.clone().or_else(|| team.as_ref().and_then(|t| t.organization_id.clone()));
        let organization = match &organization_id {
            Some(id) => match self.organization(id).await? {
                Some(o) => Some(o),
                None if self.store.is_some() && !from_config => {
                    return Err(GatewayError::TenantMissing(Scope::Organization))
                }
                None => None,
            },
            None => None,
        };
        if let Some(o) = &organization {
            if o.blocked {
                return Err(GatewayError::Blocked(Scope::Organization));
            }
            parties.push(Party {
                scope: Scope::Organization,
                scope_id: format!("org/{}", o.organization_id),
                limits: self.effective(&o.limits).await?,
            });
        }
        Ok(Principal { key, team, user, organization, organization_id, customer_id: None, parties, tags: Vec::new() })
    }

    /// The principal past usage of the key `key_id` is charged to, when no request of its is
    /// at hand (a batch billed by a gateway that did not admit it): the key with its team, user
    /// and organization as they are now. Blocked or expired parties are charged all the same
    /// (the usage happened); missing ones are left out. `None` when the key is unknown.
    pub async fn owner(&self, key_id: &str) -> Result<Option<Principal>, GatewayError> {
        let Some(key) = self.key(key_id).await? else { return Ok(None) };
        let mut parties = vec![Party {
            scope: Scope::Key,
            scope_id: format!("key/{key_id}"),
            limits: self.effective(&key.limits).await?,
        }];
        let team = match &key.team_id {
            Some(id) => self.team(id).await?,
            None => None,
        };
        if let Some(t) = &team {
            let limits = self.effective(&t.limits).await?;
            parties.push(Party { scope: Scope::Team, scope_id: format!("team/{}", t.team_id), limits });
        }
        let user = match &key.user_id {
            Some(id) => self.user(id).await?,
            None => None,
        };
        if let Some(u) = &user {
            let limits = self.effective(&u.limits).await?;
            parties.push(Party { scope: Scope::User, scope_id: format!("user/{}", u.user_id), limits });
        }
        let organization_id =
            key.organization_id.clone().or_else(|| team.as_ref().and_then(|t| t.organization_id.clone()));
        let organization = match &organization_id {
            Some(id) => self.organization(id).await?,
            None => None,
        };
        if let Some(o) = &organization {
            let limits = self.effective(&o.limits).await?;
            parties.push(Party { scope: Scope::Organization, scope_id: format!("org/{}", o.organization_id), limits });
        }
        Ok(Some(Principal {
            key,
            team,
            user,
            organization,
            organization_id,
            customer_id: None,
            parties,
            tags: Vec::new(),
        }))
    }

    /// Sets the request's customer (its `user` field or `x-tollgate-customer-id`, already
    /// checked against `tollgate_schemas::limits::check_id`) and returns the customer's party
    /// when it has a record, for admission. A customer this key may not charge (see
    /// [`Principal::may_charge`]) or a blocked one is refused; one with no record is metered
    /// under its id all the same. Unknown ids are cached as absent: a flood of them costs one
    /// database read per id and cache period, and runs after the key's rate limits.
    pub async fn with_customer(
        &self,
        principal: &mut Principal,
        id: &str,
        shared: bool,
    ) -> Result<Option<Party>, GatewayError> {
        let party = match self.customer(id).await? {
            Some(c) => {
                if !principal.may_charge(&c, shared) {
                    return Err(GatewayError::CustomerNotAllowed);
                }
                if c.blocked {
                    return Err(GatewayError::Blocked(Scope::Customer));
                }
                Some(Party {
                    scope: Scope::Customer,
                    scope_id: format!("customer/{id}"),
                    limits: self.effective(&c.limits).await?,
                })
            }
            None => None,
        };
        principal.customer_id = Some(id.to_owned());
        Ok(party)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn key(raw: &str) -> VirtualKeyConfig {
        VirtualKeyConfig {
            key: Some(Secret::new(raw)),
            key_hash: None,
            key_alias: Some("a".into()),
            team_id: Some("t".into()),
            user_id: None,
            organization_id: None,
            models: vec!["gpt-4o-mini".into()],
            blocked: false,
            expires: None,
            max_budget: None,
            soft_budget: None,
            budget_duration: None,
            rpm_limit: Some(5),
            tpm_limit: None,
            max_parallel_requests: None,
        }
    }

    #[tokio::test]
    async fn config_keys_authenticate_and_unknown_do_not() {
        let tenancy = Tenancy::new(None, &[key("sk-test-000001")], KeyHasher::new(None), None);
        let now = Utc::now();
        let p = tenancy.authenticate("sk-test-000001", now).await.unwrap();
        assert_eq!(p.key.key_id, hash_key("sk-test-000001"));
        assert_eq!(p.key.team_id.as_deref(), Some("t"));
        assert_eq!(p.key.key_name, "sk-...0001");
        assert_eq!(p.parties.len(), 1, "no store: the team is not resolved");
        assert_eq!(p.parties[0].limits.rpm_limit, Some(5));
        assert!(matches!(tenancy.authenticate("sk-2", now).await, Err(GatewayError::InvalidKey)));
    }

    #[tokio::test]
    async fn blocked_and_expired_keys_are_refused() {
        let mut blocked = key("sk-blocked-0001");
        blocked.blocked = true;
        let mut expired = key("sk-expired-0001");
        expired.expires = Some(Utc::now() - chrono::Duration::seconds(1));
        let tenancy = Tenancy::new(None, &[blocked, expired], KeyHasher::new(None), None);
        let now = Utc::now();
        assert!(matches!(tenancy.authenticate("sk-blocked-0001", now).await, Err(GatewayError::KeyBlocked)));
        assert!(matches!(tenancy.authenticate("sk-expired-0001", now).await, Err(GatewayError::KeyExpired)));
    }

    #[tokio::test]
    async fn model_allow_lists_accept_names_groups_and_wildcards() {
        let tenancy = Tenancy::new(None, &[key("sk-test-000001")], KeyHasher::new(None), None);
        let mut p = tenancy.authenticate("sk-test-000001", Utc::now()).await.unwrap();
        let groups = |m: &str| if m == "gpt-4o" { vec!["premium".to_owned()] } else { Vec::new() };
        assert!(p.check_model("gpt-4o-mini", &groups).is_ok());
        assert!(matches!(p.check_model("gpt-4o", &groups), Err(GatewayError::ModelNotAllowed(_))));
        let mut k = (*p.key).clone();
        k.models = vec!["premium".into()];
        p.key = Arc::new(k.clone());
        assert!(p.check_model("gpt-4o", &groups).is_ok());
        k.models = vec!["*".into()];
        p.key = Arc::new(k);
        assert!(p.check_model("anything", &groups).is_ok());
    }

    /// A tenancy view on a real (embedded) store holding `records`.
    async fn store_with(records: &[(Kind, &str, serde_json::Value)]) -> (Tenancy, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = tollgate_ledger::embedded::EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        for (kind, id, doc) in records {
            assert!(db.create(*kind, id, &doc.to_string()).await.unwrap());
        }
        let store: Arc<dyn TenancyStore> = db;
        (Tenancy::new(Some(store), &[], KeyHasher::new(None), None), dir)
    }

    #[test]
    fn keys_are_looked_up_by_a_keyed_hash_of_their_sha256() {
        let plain = KeyHasher::new(None);
        assert_eq!(plain.lookup("sk-abc"), hash_key("sk-abc"), "no secret: the SHA-256");
        let keyed = KeyHasher::new(Some(&[7u8; 32]));
        let other = KeyHasher::new(Some(&[8u8; 32]));
        let id = keyed.lookup("sk-abc");
        assert_eq!(id.len(), 64);
        assert_ne!(id, hash_key("sk-abc"));
        assert_ne!(id, other.lookup("sk-abc"), "the secret matters");
        assert_eq!(keyed.lookup_of_legacy(&hash_key("sk-abc")), Some(id), "found from the legacy hash too");
        assert_eq!(keyed.lookup_of_legacy("not-hex"), None);
    }

    #[tokio::test]
    async fn a_key_stored_under_its_sha256_works_and_moves_to_its_keyed_hash_on_first_use() {
        let legacy = hash_key("sk-legacy-00001");
        let dir = tempfile::tempdir().unwrap();
        let db = tollgate_ledger::embedded::EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        let doc = serde_json::json!({"key_id": legacy, "key_alias": "old"}).to_string();
        assert!(db.create(Kind::Key, &legacy, &doc).await.unwrap());
        let store: Arc<dyn TenancyStore> = db.clone();
        let hasher = KeyHasher::new(Some(&[9u8; 32]));
        let lookup = hasher.lookup("sk-legacy-00001");
        let tenancy = Tenancy::new(Some(store), &[], hasher, None);
        for _ in 0..2 {
            let p = tenancy.authenticate("sk-legacy-00001", Utc::now()).await.unwrap();
            assert_eq!(p.key.key_id, legacy, "its identity (and spend) stays");
        }
        assert!(db.get(Kind::Key, &legacy).await.unwrap().is_none(), "the SHA-256 row is gone");
        let (moved, _) = get_record::<KeyRecord>(db.as_ref(), &lookup).await.unwrap().unwrap();
        assert_eq!((moved.key_id.as_str(), moved.id()), (legacy.as_str(), lookup.as_str()));
        assert!(matches!(tenancy.authenticate("sk-other-000001", Utc::now()).await, Err(GatewayError::InvalidKey)));
    }

    /// A store that counts its reads.
    struct Counting(Arc<dyn TenancyStore>, std::sync::atomic::AtomicUsize);

    impl TenancyStore for Counting {
        fn get(
            &self,
            kind: Kind,
            id: &str,
        ) -> futures::future::BoxFuture<
            '_,
            Result<Option<tollgate_schemas::store::Stored>, tollgate_schemas::store::StoreError>,
        > {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.get(kind, id)
        }
        fn create(
            &self,
            kind: Kind,
            id: &str,
            doc: &str,
        ) -> futures::future::BoxFuture<'_, Result<bool, tollgate_schemas::store::StoreError>> {
            self.0.create(kind, id, doc)
        }
        fn update(
            &self,
            kind: Kind,
            id: &str,
            doc: &str,
            expected: i64,
        ) -> futures::future::BoxFuture<'_, Result<bool, tollgate_schemas::store::StoreError>> {
            self.0.update(kind, id, doc, expected)
        }
        fn delete(
            &self,
            kind: Kind,
            id: &str,
            expected: i64,
        ) -> futures::future::BoxFuture<'_, Result<bool, tollgate_schemas::store::StoreError>> {
            self.0.delete(kind, id, expected)
        }
        fn list(
            &self,
            kind: Kind,
        ) -> futures::future::BoxFuture<
            '_,
            Result<Vec<(String, tollgate_schemas::store::Stored)>, tollgate_schemas::store::StoreError>,
        > {
            self.0.list(kind)
        }
    }

    #[tokio::test]
    async fn invalid_keys_and_unknown_customers_are_cached_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let db = tollgate_ledger::embedded::EmbeddedDb::open(&dir.path().join("t.db")).unwrap();
        let counting = Arc::new(Counting(db, std::sync::atomic::AtomicUsize::new(0)));
        let store: Arc<dyn TenancyStore> = counting.clone();
        let tenancy = Tenancy::new(Some(store), &[key("sk-test-000001")], KeyHasher::new(Some(&[1u8; 32])), None);
        for _ in 0..100 {
            assert!(matches!(
                tenancy.authenticate("sk-not-a-key-001", Utc::now()).await,
                Err(GatewayError::InvalidKey)
            ));
        }
        // Its lookup hash and its SHA-256 (a key from before the secret), once each.
        assert_eq!(counting.1.load(std::sync::atomic::Ordering::Relaxed), 2);
        let mut p = tenancy.authenticate("sk-test-000001", Utc::now()).await.unwrap();
        let before = counting.1.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..100 {
            assert!(tenancy.with_customer(&mut p, "nobody-knows-me", false).await.unwrap().is_none());
        }
        let reads = counting.1.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert_eq!(reads, 1, "one read for the unknown customer");
    }

    #[tokio::test]
    async fn keys_of_deleted_users_and_organizations_are_refused() {
        let now = Utc::now();
        let (tenancy, _dir) = store_with(&[
            (
                Kind::Key,
                &hash_key("sk-user-gone-0001"),
                serde_json::json!({"key_id": hash_key("sk-user-gone-0001"), "user_id": "gone"}),
            ),
            (
                Kind::Key,
                &hash_key("sk-org-gone-00001"),
                serde_json::json!({"key_id": hash_key("sk-org-gone-00001"), "organization_id": "gone"}),
            ),
            (
                Kind::Key,
                &hash_key("sk-team-org-gone1"),
                serde_json::json!({"key_id": hash_key("sk-team-org-gone1"), "team_id": "t"}),
            ),
            (Kind::Team, "t", serde_json::json!({"team_id": "t", "organization_id": "gone"})),
        ])
        .await;
        for (raw, scope) in [
            ("sk-user-gone-0001", Scope::User),
            ("sk-org-gone-00001", Scope::Organization),
            ("sk-team-org-gone1", Scope::Organization),
        ] {
            match tenancy.authenticate(raw, now).await {
                Err(GatewayError::TenantMissing(s)) => assert_eq!(s, scope, "{raw}"),
                other => panic!("{raw}: {:?}", other.map(|p| p.key.key_id.clone())),
            }
        }
    }

    #[tokio::test]
    async fn user_and_organization_model_lists_apply() {
        let (tenancy, _dir) = store_with(&[
            (
                Kind::Key,
                &hash_key("sk-listed-000001"),
                serde_json::json!({"key_id": hash_key("sk-listed-000001"), "user_id": "u", "organization_id": "o"}),
            ),
            (Kind::User, "u", serde_json::json!({"user_id": "u", "models": ["a", "b"]})),
            (Kind::Organization, "o", serde_json::json!({"organization_id": "o", "models": ["b", "c"]})),
        ])
        .await;
        let p = tenancy.authenticate("sk-listed-000001", Utc::now()).await.unwrap();
        let no_groups = |_: &str| Vec::new();
        assert!(p.check_model("b", &no_groups).is_ok());
        assert!(
            matches!(p.check_model("a", &no_groups), Err(GatewayError::ModelNotAllowed(_))),
            "not the organization's"
        );
        assert!(matches!(p.check_model("c", &no_groups), Err(GatewayError::ModelNotAllowed(_))), "not the user's");
    }

    #[tokio::test]
    async fn a_key_charges_only_customers_of_its_team_or_organization() {
        let key = |raw: &str, team: &str| {
            (Kind::Key, hash_key(raw), serde_json::json!({"key_id": hash_key(raw), "team_id": team}))
        };
        let (ka, kb) = (key("sk-team-a-000001", "a"), key("sk-team-b-000001", "b"));
        let (tenancy, _dir) = store_with(&[
            (ka.0, &ka.1, ka.2),
            (kb.0, &kb.1, kb.2),
            (Kind::Team, "a", serde_json::json!({"team_id": "a", "organization_id": "o"})),
            (Kind::Team, "b", serde_json::json!({"team_id": "b"})),
            (Kind::Organization, "o", serde_json::json!({"organization_id": "o"})),
            (Kind::Customer, "of-a", serde_json::json!({"user_id": "of-a", "team_id": "a", "max_budget": 5})),
            (Kind::Customer, "of-o", serde_json::json!({"user_id": "of-o", "organization_id": "o"})),
            (Kind::Customer, "shared", serde_json::json!({"user_id": "shared"})),
        ])
        .await;
        let now = Utc::now();
        let charge = |raw: &'static str, customer: &'static str, shared: bool| {
            let tenancy = &tenancy;
            async move {
                let mut p = tenancy.authenticate(raw, now).await.unwrap();
                tenancy.with_customer(&mut p, customer, shared).await.map(|party| (party.is_some(), p.customer_id))
            }
        };
        assert_eq!(charge("sk-team-a-000001", "of-a", false).await.unwrap(), (true, Some("of-a".into())));
        assert!(charge("sk-team-a-000001", "of-o", false).await.unwrap().0, "the team's organization");
        assert!(matches!(charge("sk-team-b-000001", "of-a", false).await, Err(GatewayError::CustomerNotAllowed)));
        assert!(matches!(charge("sk-team-b-000001", "of-o", false).await, Err(GatewayError::CustomerNotAllowed)));
        assert!(matches!(charge("sk-team-b-000001", "shared", false).await, Err(GatewayError::CustomerNotAllowed)));
        assert!(charge("sk-team-b-000001", "shared", true).await.is_ok(), "the documented opt-in");
        // No record: metered under its id, nothing to protect.
        assert_eq!(charge("sk-team-b-000001", "nobody", false).await.unwrap(), (false, Some("nobody".into())));
    }

    #[test]
    fn reads_the_key_from_each_header_style() {
        let mut h = HeaderMap::new();
        h.insert("authorization".parse().unwrap(), "Bearer sk-abc".parse().unwrap());
        assert_eq!(raw_key(&h), Some("sk-abc"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key".parse().unwrap(), "sk-def".parse().unwrap());
        assert_eq!(raw_key(&h), Some("sk-def"));
        assert_eq!(raw_key(&HeaderMap::new()), None);
    }

    #[test]
    fn key_names_hide_the_key() {
        assert_eq!(key_name("sk-1234567890abcdef"), "sk-...cdef");
        assert_eq!(key_name("short"), "***");
    }
}
