//! Resolving a request's [`Principal`]: the key authenticated, then its team, user and
//! organization looked up and checked active (blocked, expired or deleted parties refused on
//! every request, cached or not), and the customer it charges checked against the key.

use super::keys::hash_key;
use super::principal::{Party, Principal};
use super::Tenancy;
use crate::error::{GatewayError, Scope};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tollgate_schemas::tenancy::{CustomerRecord, KeyRecord, Limits, OrganizationRecord, TeamRecord, UserRecord};

/// A party above a key: what resolving it needs to know of its record.
trait Tenant {
    const SCOPE: Scope;
    /// Ledger scope id, e.g. `team/payments`.
    fn scope_id(&self) -> String;
    fn blocked(&self) -> bool;
    fn limits(&self) -> &Limits;
}

macro_rules! tenant {
    ($record:ty, $scope:expr, $prefix:literal, $id:ident) => {
        impl Tenant for $record {
            const SCOPE: Scope = $scope;
            fn scope_id(&self) -> String {
                format!(concat!($prefix, "/{}"), self.$id)
            }
            fn blocked(&self) -> bool {
                self.blocked
            }
            fn limits(&self) -> &Limits {
                &self.limits
            }
        }
    };
}

tenant!(TeamRecord, Scope::Team, "team", team_id);
tenant!(UserRecord, Scope::User, "user", user_id);
tenant!(OrganizationRecord, Scope::Organization, "org", organization_id);
tenant!(CustomerRecord, Scope::Customer, "customer", user_id);

/// What resolving a key's parties does with those that are blocked or missing.
#[derive(Clone, Copy)]
enum Resolve {
    /// For a request: a blocked party is refused, and a missing one too when `strict` (a key
    /// of the store whose team, user or organization was deleted stops working; config-file
    /// keys may name teams that exist nowhere else).
    Admit { strict: bool },
    /// For past usage: everyone charged as they are now, blocked or not; missing ones left out.
    Charge,
}

impl Resolve {
    fn check<T: Tenant>(self, found: Option<Arc<T>>) -> Result<Option<Arc<T>>, GatewayError> {
        match (self, found) {
            (Resolve::Admit { .. }, Some(t)) if t.blocked() => Err(GatewayError::Blocked(T::SCOPE)),
            (_, Some(t)) => Ok(Some(t)),
            (Resolve::Admit { strict: true }, None) => Err(GatewayError::TenantMissing(T::SCOPE)),
            (_, None) => Ok(None),
        }
    }
}

impl Tenancy {
    /// Authenticates a raw key and resolves everyone the request is made for; blocked or
    /// expired parties are refused here, on every request, cached or not.
    pub async fn authenticate(&self, raw: &str, now: DateTime<Utc>) -> Result<Principal, GatewayError> {
        // Config-file keys are known by their SHA-256 (they are in the file anyway).
        let legacy = hash_key(raw);
        let (key, from_config) = match self.config_keys.get(&legacy) {
            Some(k) => (k.clone(), true),
            None => (self.stored_key(raw, &legacy).await?.ok_or(GatewayError::InvalidKey)?, false),
        };
        if key.blocked {
            return Err(GatewayError::KeyBlocked);
        }
        if key.expires.is_some_and(|e| e <= now) {
            return Err(GatewayError::KeyExpired);
        }
        self.parties_of(key, Resolve::Admit { strict: self.store.is_some() && !from_config }).await
    }

    /// The principal past usage of the key `key_id` is charged to, when no request of its is
    /// at hand (a batch billed by a gateway that did not admit it): the key with its team, user
    /// and organization as they are now. Blocked or expired parties are charged all the same
    /// (the usage happened); missing ones are left out. `None` when the key is unknown.
    pub async fn owner(&self, key_id: &str) -> Result<Option<Principal>, GatewayError> {
        let Some(key) = self.key(key_id).await? else { return Ok(None) };
        self.parties_of(key, Resolve::Charge).await.map(Some)
    }

    /// The key's team, user and organization (the key's own, else its team's), looked up in
    /// that order and checked as `resolve` says, each with its party.
    async fn parties_of(&self, key: Arc<KeyRecord>, resolve: Resolve) -> Result<Principal, GatewayError> {
        let mut parties = vec![Party {
            scope: Scope::Key,
            scope_id: format!("key/{}", key.key_id),
            limits: self.effective(&key.limits).await?,
        }];
        let team = match &key.team_id {
            Some(id) => resolve.check(self.team(id).await?)?,
            None => None,
        };
        self.push_party(&mut parties, team.as_deref()).await?;
        // Keys are made only for users and organizations that exist: /key/generate creates the
        // user it names.
        let user = match &key.user_id {
            Some(id) => resolve.check(self.user(id).await?)?,
            None => None,
        };
        self.push_party(&mut parties, user.as_deref()).await?;
        let organization_id =
            key.organization_id.clone().or_else(|| team.as_ref().and_then(|t| t.organization_id.clone()));
        let organization = match &organization_id {
            Some(id) => resolve.check(self.organization(id).await?)?,
            None => None,
        };
        self.push_party(&mut parties, organization.as_deref()).await?;
        Ok(Principal { key, team, user, organization, organization_id, customer_id: None, parties, tags: Vec::new() })
    }

    async fn push_party<T: Tenant>(&self, parties: &mut Vec<Party>, tenant: Option<&T>) -> Result<(), GatewayError> {
        if let Some(t) = tenant {
            parties.push(self.party(t).await?);
        }
        Ok(())
    }

    async fn party<T: Tenant>(&self, tenant: &T) -> Result<Party, GatewayError> {
        Ok(Party { scope: T::SCOPE, scope_id: tenant.scope_id(), limits: self.effective(tenant.limits()).await? })
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
                Some(self.party(c.as_ref()).await?)
            }
            None => None,
        };
        principal.customer_id = Some(id.to_owned());
        Ok(party)
    }
}
