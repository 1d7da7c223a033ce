//! Resolving a request's [`Principal`]: the key authenticated, then its team, user and
//! organization looked up and checked active (blocked, expired or deleted parties refused on
//! every request, cached or not), and the customer it charges checked against the key.

use super::keys::hash_key;
use super::principal::{Party, Principal};
use super::Tenancy;
use crate::error::{GatewayError, Scope};
use chrono::{DateTime, Utc};

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
