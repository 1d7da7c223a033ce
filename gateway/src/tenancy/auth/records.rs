//! The cached view of the tenancy records ([`Tenancy`]): one moka cache per kind, loaded once
//! per miss from the store, dropped on a control-topic notice; keys found by their lookup hash
//! (and moved to it from their SHA-256 on first use); the admin listing's key index kept told.

use super::keys::{config_key_record, KeyHasher};
use super::Tenancy;
use crate::config::VirtualKeyConfig;
use crate::error::GatewayError;
use crate::tenancy::directory::Directory;
use crate::tenancy::key_index::KeyIndex;
use chrono::Utc;
use moka::future::Cache;
use std::sync::Arc;
use std::time::Duration;
use tollgate_schemas::store::{get_record, TenancyStore};
use tollgate_schemas::tenancy::{
    CustomerRecord, KeyRecord, Kind, Limits, OrganizationRecord, Record, TeamRecord, UserRecord,
};

/// A cache of one kind of record; `None` (record absent) is cached too.
pub(super) type RecordCache<R> = Cache<String, Option<Arc<R>>>;

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
        let (key_index, key_changes, directory, directory_changes) = match store {
            Some(_) => {
                let (index, changes) = KeyIndex::new();
                let (directory, directory_changes) = Directory::new();
                (Some(index), Some(changes), Some(directory), Some(directory_changes))
            }
            None => (None, None, None, None),
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
            directory,
            directory_changes: std::sync::Mutex::new(directory_changes),
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
    pub(super) async fn stored_key(&self, raw: &str, legacy: &str) -> Result<Option<Arc<KeyRecord>>, GatewayError> {
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

    pub(super) async fn load<R: Record>(
        &self,
        cache: &RecordCache<R>,
        id: &str,
    ) -> Result<Option<Arc<R>>, GatewayError> {
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
    pub(super) async fn effective(&self, limits: &Limits) -> Result<Limits, GatewayError> {
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

    /// The directory of teams, users, customers and organizations, when this gateway keeps one
    /// (with a store).
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.directory.as_ref()
    }

    /// Puts a team, user, customer or organization in the directory as it is stored now, before
    /// answering the admin call that changed it.
    pub async fn reindex(&self, kind: Kind, id: &str) {
        if let (Some(store), Some(directory)) = (&self.store, &self.directory) {
            if Directory::lists(kind) {
                directory.refresh(store.as_ref(), kind, id).await;
            }
        }
    }

    /// Loads the key index and the directory and keeps them current until `shutdown` (once;
    /// nothing without a store).
    pub async fn maintain_indexes(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let changes = self.key_changes.lock().ok().and_then(|mut c| c.take());
        let listed = self.directory_changes.lock().ok().and_then(|mut c| c.take());
        let keys = async {
            if let (Some(store), Some(index), Some(changes)) = (self.store.clone(), self.key_index.clone(), changes) {
                index.maintain(store, changes, shutdown.clone()).await;
            }
        };
        let directory = async {
            if let (Some(store), Some(d), Some(listed)) = (self.store.clone(), self.directory.clone(), listed) {
                d.maintain(store, listed, shutdown.clone()).await;
            }
        };
        futures::join!(keys, directory);
    }

    /// Drops the cached copy of a record (a control-topic message).
    pub async fn invalidate(&self, kind: Kind, id: &str) {
        if let Some(directory) = &self.directory {
            directory.changed(kind, id);
        }
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
}
