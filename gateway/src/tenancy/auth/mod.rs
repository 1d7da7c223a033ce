//! Who is calling: virtual keys and the tenants they belong to, from moka-cached views of the
//! tenancy records (no database call on a warm cache; docs/design.md §2.2).
//!
//! Keys are only ever handled as their SHA-256 hash once they leave the request header; the raw
//! key must never be logged, put in a metric, an event or an error message.
//!
//! - `keys`: raw keys read from headers, hashed, named;
//! - `principal`: who a request is made for ([`Principal`], its [`Party`]s) and what they allow;
//! - `records`: the cached view of the records ([`Tenancy`]), loads and invalidation;
//! - `resolve`: a key authenticated into its [`Principal`], and the customer it charges.

mod keys;
mod principal;
mod records;
mod resolve;
#[cfg(test)]
mod tests;

pub use keys::{config_key_record, hash_key, key_name, raw_key, KeyHasher, MIN_KEY_HASH_SECRET};
pub use principal::{Party, Principal};

use crate::tenancy::directory::{self, Directory};
use crate::tenancy::key_index::{self, KeyIndex};
use records::RecordCache;
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_schemas::store::TenancyStore;
use tollgate_schemas::tenancy::{BudgetRecord, CustomerRecord, KeyRecord, OrganizationRecord, TeamRecord, UserRecord};

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
    /// The admin listings' directory of teams, users, customers and organizations (with a
    /// store), and the changes it has yet to read.
    directory: Option<Arc<Directory>>,
    directory_changes: std::sync::Mutex<Option<directory::Changes>>,
}
