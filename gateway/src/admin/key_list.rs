//! `GET /key/list`: a page of keys, filtered and ordered by the gateway's key index
//! (`tenancy::key_index`), so no listing reads every key record: only the page's records are
//! read, and only when whole objects are asked for. Listing by spend reads each matching key's
//! spend in its current budget window (as `/key/info` reports it), so it is refused when the
//! filters leave more than [`MAX_SPEND_KEYS`] keys. A team admin or internal user lists only
//! the keys it reaches (`roles`).

mod params;

use super::roles::admin_or_user;
use super::{current_spend, internal, present, query, with_spend, Answer};
use crate::error::GatewayError;
use crate::tenancy::key_index::{KeyIndex, KeyReach, Start};
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use params::{parse, ListQuery, SortBy};
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::sync::Arc;
use tollgate_schemas::store::{get_record, TenancyStore};
use tollgate_schemas::tenancy::KeyRecord;
use tollgate_schemas::NanoUsd;

/// The most keys a listing by spend reads the spend of (one ledger read each).
pub(crate) const MAX_SPEND_KEYS: usize = 500;
/// Reads of records or spend in flight at once for one listing.
const READS_IN_FLIGHT: usize = 16;

/// `GET /key/list`: a page of the keys the query's filters pick, in the order it asks for
/// (oldest first unless told otherwise).
pub(crate) async fn list(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let (store, user) = admin_or_user(&req, &state, false).await?;
    let mut lq = parse(&query(&req), Utc::now())?;
    // A user lists what it reaches: its own keys and its teams' keys, within its filters.
    if let Some(u) = user {
        lq.filter.reach = Some(KeyReach { user_id: u.user_id, teams: u.admin_of });
    }
    // Until the first load is done a listing would be partial: the client is told to retry.
    let index = state.tenancy.key_index().filter(|i| i.ready()).cloned().ok_or(GatewayError::DatabaseUnavailable)?;
    if lq.needs_spend() {
        return by_spend(&state, store, &index, &lq).await;
    }
    let (filter, start, size, descending) = (lq.filter.clone(), lq.start(), lq.size, lq.descending);
    // The index is scanned in memory: off the async workers, which also serve model calls.
    let page = tokio::task::spawn_blocking(move || index.page(&filter, &start, size, descending))
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    let items: Vec<Value> = if lq.full {
        let stored = page.keys.into_iter().map(|(id, _)| id).collect();
        shown_with_spend(&state, &records(store, stored).await?).await
    } else {
        page.keys.iter().map(|(_, at)| json!(at.key_id.as_ref())).collect()
    };
    Ok(HttpResponse::Ok().json(json!({
        "keys": items,
        "total_count": page.total,
        "current_page": lq.page,
        "total_pages": page.total.div_ceil(lq.size),
        "next_cursor": page.next.map(|at| at.cursor()),
    })))
}

/// A listing by spend (sorted by it, or filtered by the share of the budget spent): the spend
/// of every key the other filters pick, at most [`MAX_SPEND_KEYS`] of them.
async fn by_spend(state: &AppState, store: Arc<dyn TenancyStore>, index: &Arc<KeyIndex>, lq: &ListQuery) -> Answer {
    let (index, filter) = (index.clone(), lq.filter.clone());
    let stored = tokio::task::spawn_blocking(move || index.matching(&filter, MAX_SPEND_KEYS))
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?
        .map_err(|n| {
            GatewayError::field(
                lq.spend_parameter(),
                format!(
                    "listing by spend reads each key's spend: the filters pick {n} keys, at most {MAX_SPEND_KEYS} can be \
                     listed by spend; narrow with team_id, user_id, key_alias, metadata or search"
                ),
            )
        })?;
    let keys = records(store, stored).await?;
    let spent: Vec<NanoUsd> =
        futures::stream::iter(keys.iter().map(|k| spend_of(state, k))).buffered(READS_IN_FLIGHT).collect().await;
    let mut keys: Vec<(KeyRecord, NanoUsd)> = keys
        .into_iter()
        .zip(spent)
        .filter(|(k, s)| {
            lq.min_budget_percent.is_none_or(|p| k.limits.max_budget.is_some_and(|b| over_percent(*s, b, p)))
        })
        .collect();
    keys.sort_by(|(a, sa), (b, sb)| ordered(lq, (a, *sa), (b, *sb)));
    let total = keys.len();
    let skip = match lq.start() {
        Start::Offset(n) => n,
        Start::After(_) => 0, // refused with spend when the query was read
    };
    let page: Vec<KeyRecord> = keys.into_iter().skip(skip).take(lq.size).map(|(k, _)| k).collect();
    let items: Vec<Value> =
        if lq.full { shown_with_spend(state, &page).await } else { page.iter().map(|k| json!(k.key_id)).collect() };
    Ok(HttpResponse::Ok().json(json!({
        "keys": items,
        "total_count": total,
        "current_page": lq.page,
        "total_pages": total.div_ceil(lq.size),
        "next_cursor": Value::Null,
    })))
}

/// The records stored under `stored`, in that order; any deleted meanwhile are left out.
async fn records(store: Arc<dyn TenancyStore>, stored: Vec<String>) -> Result<Vec<KeyRecord>, GatewayError> {
    let found: Vec<Option<(KeyRecord, i64)>> = futures::stream::iter(stored)
        .map(|id| {
            let store = store.clone();
            async move { get_record::<KeyRecord>(store.as_ref(), &id).await }
        })
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(internal)?;
    Ok(found.into_iter().flatten().map(|(k, _)| k).collect())
}

/// Each key as `/key/info` shows it, with its spend, in order: the reads of several keys at once
/// (a page of 20 keys is 20 to 40 ledger reads).
async fn shown_with_spend(state: &AppState, keys: &[KeyRecord]) -> Vec<Value> {
    futures::stream::iter(keys)
        .map(|k| async move { with_spend(state, present(k), &scope(k), &k.limits).await })
        .buffered(READS_IN_FLIGHT)
        .collect()
        .await
}

/// Whether `spent` is at least `percent` % of `budget` (exactly, in integers).
fn over_percent(spent: NanoUsd, budget: NanoUsd, percent: i64) -> bool {
    i128::from(spent.0) * 100 >= i128::from(budget.0) * i128::from(percent)
}

fn scope(k: &KeyRecord) -> String {
    format!("key/{}", k.key_id)
}

/// The key's spend in its current budget window; nothing without a ledger.
async fn spend_of(state: &AppState, k: &KeyRecord) -> NanoUsd {
    current_spend(state, &scope(k), &k.limits).await.map_or(NanoUsd(0), |(s, _)| s)
}

/// The order of two keys by the query's sort; ties by creation, then token.
fn ordered(lq: &ListQuery, (a, sa): (&KeyRecord, NanoUsd), (b, sb): (&KeyRecord, NanoUsd)) -> Ordering {
    let first = match lq.sort {
        SortBy::Spend => sa.cmp(&sb),
        SortBy::CreatedAt => Ordering::Equal,
    };
    let o = first.then_with(|| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
    if lq.descending {
        o.reverse()
    } else {
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_budget_share_is_compared_exactly() {
        let budget = NanoUsd(1_000_000_000);
        assert!(over_percent(NanoUsd(800_000_000), budget, 80));
        assert!(!over_percent(NanoUsd(799_999_999), budget, 80));
        assert!(over_percent(NanoUsd(0), budget, 0));
        assert!(over_percent(NanoUsd(i64::MAX), NanoUsd(i64::MAX), 100));
    }

    #[test]
    fn spend_sorts_descending_with_ties_by_creation() {
        let q: BTreeMap<String, String> =
            [("sort", "spend"), ("order", "desc")].iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let lq = parse(&q, Utc::now()).unwrap();
        let a = KeyRecord { key_id: "a".into(), ..KeyRecord::default() };
        let b = KeyRecord { key_id: "b".into(), ..KeyRecord::default() };
        assert_eq!(ordered(&lq, (&a, NanoUsd(5)), (&b, NanoUsd(3))), Ordering::Less);
        assert_eq!(ordered(&lq, (&a, NanoUsd(3)), (&b, NanoUsd(3))), Ordering::Greater);
    }
}
