//! Who a request is made for, once its key is checked: the key and the team, user,
//! organization and customer above it, each with the limits that apply ([`Party`]), and what
//! they allow (models, customers, the admin API). Plain data: resolving it is `resolve`'s work.

use crate::error::{GatewayError, Scope};
use std::sync::Arc;
use tollgate_schemas::tenancy::{CustomerRecord, KeyRecord, Limits, OrganizationRecord, TeamRecord, UserRecord};

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
    pub(super) fn may_charge(&self, c: &CustomerRecord, shared: bool) -> bool {
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

#[cfg(test)]
impl Principal {
    /// A principal of `key` alone: no team, user, organization, customer, party or tag.
    pub(crate) fn of_key(key: KeyRecord) -> Principal {
        Principal {
            key: Arc::new(key),
            team: None,
            user: None,
            organization: None,
            organization_id: None,
            customer_id: None,
            parties: Vec::new(),
            tags: Vec::new(),
        }
    }
}
