//! Identifiers of spend-ledger rows (docs/design.md §4.2, §4.4), shared by the consumer that writes
//! them and every reader (spend API, reconcile, tests). A row is
//! `(scope_id, window_id, partition)`.
//!
//! Scopes: the key, each tenant the key belongs to (team, user, customer, organization), the
//! platform as a whole ([`GLOBAL_SCOPE`]), each tag of the event ([`tag_scopes_of`]), and the requested model (the `model_name` the client
//! asked for) within each of them. Windows: all time, the UTC calendar day and the UTC calendar
//! month of the event.

use crate::UsageEvent;
use chrono::{DateTime, Datelike, Utc};

/// The window that never resets.
pub const ALL_TIME: &str = "all";

/// Buckets of a Kafka partition's rows in the authoritative ledger (`partition_spend`, CQL
/// partition `(partition, bucket)`). Pinned: changing it moves rows to other buckets, whose fences
/// know nothing of them, so it may only change together with a rebuild of `partition_spend`.
pub const LEDGER_BUCKETS: i32 = 64;

/// The bucket of a `(scope, window)` row: FNV-1a (64-bit) of the scope, a 0 byte and the window,
/// modulo [`LEDGER_BUCKETS`]. Written out (not `std`'s hasher, which may change between builds)
/// so every consumer of every version puts a row in the same bucket.
pub fn ledger_bucket(scope_id: &str, window_id: &str) -> i32 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for byte in scope_id.bytes().chain([0]).chain(window_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    // LEDGER_BUCKETS is positive and small, so the remainder fits an i32.
    i32::try_from(hash % LEDGER_BUCKETS.unsigned_abs() as u64).unwrap_or(0)
}

/// The scope every event counts in, whoever's it is: the platform's totals, and with
/// [`model_scope_id`] each requested model's (`global/all/model/gpt-4o`). "Spend today" or
/// "spend per model and day" read these few rows instead of every key's. No budget names it.
pub const GLOBAL_SCOPE: &str = "global/all";

/// `kind/id`, e.g. `team/payments`.
pub fn scope_id(kind: &str, id: &str) -> String {
    format!("{kind}/{id}")
}

/// The per-model scope inside `scope`, e.g. `team/payments/model/gpt-4o`.
pub fn model_scope_id(scope: &str, model: &str) -> String {
    format!("{scope}/model/{model}")
}

/// The tenant scopes an event's spend counts towards (without the per-model ones).
pub fn tenant_scopes_of(event: &UsageEvent) -> Vec<String> {
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

/// The tag scopes of an event (`tag/<tag>`, one per tag; without the per-model ones). They
/// overlap the tenant scopes and each other (an event with two tags counts in both): unlike
/// the tenant scopes of one kind, the tag scopes do not partition spend. No budget names them.
pub fn tag_scopes_of(event: &UsageEvent) -> Vec<String> {
    event.tags.iter().map(|t| scope_id("tag", t)).collect()
}

/// Every scope an event counts towards: each tenant scope, the global one and each tag scope
/// and, within each, the requested model.
pub fn scopes_of(event: &UsageEvent) -> Vec<String> {
    let mut tenants = tenant_scopes_of(event);
    tenants.push(GLOBAL_SCOPE.to_owned());
    tenants.extend(tag_scopes_of(event));
    let mut scopes = Vec::with_capacity(tenants.len() * 2);
    for t in tenants {
        scopes.push(model_scope_id(&t, &event.requested_model));
        scopes.push(t);
    }
    scopes
}

/// `d:YYYY-MM-DD`, the UTC day.
pub fn day_window(at: DateTime<Utc>) -> String {
    day_window_of(at.date_naive())
}

/// `d:YYYY-MM-DD`, the window of a UTC day.
pub fn day_window_of(day: chrono::NaiveDate) -> String {
    format!("d:{}", day.format("%Y-%m-%d"))
}

/// `m:YYYY-MM`, the UTC calendar month.
pub fn month_window(at: DateTime<Utc>) -> String {
    format!("m:{:04}-{:02}", at.year(), at.month())
}

/// The windows every scope of an event counts in.
pub fn windows_of(event: &UsageEvent) -> Vec<String> {
    vec![ALL_TIME.to_owned(), day_window(event.occurred_at), month_window(event.occurred_at)]
}

/// The windows of `scope` beyond [`windows_of`]: those of the budgets the event names for it
/// (`budget_windows`). Durations that do not parse are skipped (the gateway only writes valid
/// ones); `1d`, `1mo` and `all` are already among the common windows.
pub fn budget_windows_of(event: &UsageEvent, scope: &str) -> Vec<String> {
    let Some(durations) = event.budget_windows.get(scope) else { return Vec::new() };
    let mut windows: Vec<String> = durations
        .iter()
        .filter_map(|d| crate::tenancy::BudgetDuration::parse(d).ok())
        .map(|d| d.window_of(event.occurred_at))
        .filter(|w| w != ALL_TIME && !w.starts_with("d:") && !w.starts_with("m:"))
        .collect();
    windows.sort();
    windows.dedup();
    windows
}

/// The budgeted `(scope, window)` pairs of an event: each scope of `budget_windows` with the
/// window of each of its durations at `occurred_at` (`all` for a budget that never resets).
/// These are the totals budget push-back publishes; durations that do not parse are skipped.
pub fn budgeted_rows_of(event: &UsageEvent) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for (scope, durations) in &event.budget_windows {
        for d in durations {
            let window = if d == ALL_TIME {
                Some(ALL_TIME.to_owned())
            } else {
                crate::tenancy::BudgetDuration::parse(d).ok().map(|d| d.window_of(event.occurred_at))
            };
            if let Some(w) = window {
                rows.push((scope.clone(), w));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_utc_calendar_periods() {
        let at = DateTime::parse_from_rfc3339("2026-11-30T23:59:59.999-01:00").unwrap().with_timezone(&Utc);
        assert_eq!(day_window(at), "d:2026-12-01");
        assert_eq!(month_window(at), "m:2026-12");
    }

    #[test]
    fn buckets_are_pinned() {
        // These values are part of the stored data: if this test fails, rows would move to
        // buckets whose fences do not cover them. Do not update it; revert the change.
        assert_eq!(ledger_bucket("", ""), 31);
        assert_eq!(ledger_bucket("key/k1", "all"), 42);
        assert_eq!(ledger_bucket("team/payments", "d:2026-11-23"), 17);
        assert_eq!(ledger_bucket("team/payments/model/gpt-4o", "m:2026-11"), 50);
        let spread: std::collections::BTreeSet<i32> =
            (0..1000).map(|i| ledger_bucket(&format!("key/k{i}"), ALL_TIME)).collect();
        assert_eq!(spread.len(), LEDGER_BUCKETS as usize, "1,000 scopes reach every bucket");
        assert!(spread.iter().all(|b| (0..LEDGER_BUCKETS).contains(b)));
    }

    #[test]
    fn every_event_counts_in_the_global_scope_and_its_model() {
        let mut event: UsageEvent = serde_json::from_str(include_str!("../fixtures/usage_event_v1.json")).unwrap();
        event.team_id = None;
        event.user_id = None;
        event.customer_id = None;
        event.organization_id = None;
        event.tags.clear();
        let model = model_scope_id(GLOBAL_SCOPE, &event.requested_model);
        let key = scope_id("key", &event.key_id);
        assert_eq!(
            scopes_of(&event),
            [model_scope_id(&key, &event.requested_model), key, model, GLOBAL_SCOPE.to_owned()]
        );
        assert!(!tenant_scopes_of(&event).iter().any(|s| s == GLOBAL_SCOPE), "no budget is the platform's");
    }

    #[test]
    fn each_tag_is_a_scope_and_no_tenant() {
        let mut event: UsageEvent = serde_json::from_str(include_str!("../fixtures/usage_event_v1.json")).unwrap();
        event.tags = vec!["prod".to_owned(), "team-a".to_owned()];
        let scopes = scopes_of(&event);
        for tag in ["tag/prod", "tag/team-a"] {
            assert!(scopes.iter().any(|s| s == tag), "{tag}");
            assert!(scopes.contains(&model_scope_id(tag, &event.requested_model)), "{tag} per model");
            assert!(!tenant_scopes_of(&event).iter().any(|s| s == tag), "a tag is no tenant");
        }
        assert_eq!(scopes.len(), 2 * (tenant_scopes_of(&event).len() + 1 + 2));
    }

    #[test]
    fn budgeted_rows_name_ledger_windows() {
        let mut event: UsageEvent = serde_json::from_str(include_str!("../fixtures/usage_event_v1.json")).unwrap();
        event.budget_windows =
            [("team/t".to_owned(), vec!["all".to_owned(), "1mo".to_owned(), "1d".to_owned(), "nonsense".to_owned()])]
                .into_iter()
                .collect();
        let rows = budgeted_rows_of(&event);
        let windows: Vec<&str> = rows.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(windows, ["all", "m:2026-11", "d:2026-11-23"]);
    }
}
