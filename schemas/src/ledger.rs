//! Identifiers of spend-ledger rows (DESIGN §3, Layer 2), shared by the consumer that writes them
//! and every reader (spend API, reconcile, tests). A row is `(scope_id, window_id, partition)`.

use crate::UsageEvent;

/// The window that never resets.
pub const ALL_TIME: &str = "all";

/// Every scope an event's spend counts towards: the key, and each tenant the key belongs to.
pub fn scopes_of(event: &UsageEvent) -> Vec<String> {
    let mut scopes = vec![scope_id("key", &event.key_id)];
    let tenants = [
        ("team", &event.team_id),
        ("user", &event.user_id),
        ("customer", &event.customer_id),
        ("org", &event.organization_id),
    ];
    for (kind, id) in tenants {
        if let Some(id) = id {
            scopes.push(scope_id(kind, id));
        }
    }
    scopes
}

/// `kind/id`, e.g. `team/payments`.
pub fn scope_id(kind: &str, id: &str) -> String {
    format!("{kind}/{id}")
}

/// The windows an event counts in. All-time for now; budget windows follow with tenancy.
pub fn windows_of(_event: &UsageEvent) -> Vec<String> {
    vec![ALL_TIME.to_owned()]
}
