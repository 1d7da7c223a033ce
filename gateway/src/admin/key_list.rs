//! `GET /key/list`: a page of keys, filtered and ordered by the gateway's key index
//! (`tenancy::key_index`), so no listing reads every key record: only the page's records are
//! read, and only when whole objects are asked for; their spend is read for the whole page at
//! once (`SpendSource::totals`). Listing by spend reads each matching key's spend in its current
//! budget window (as `/key/info` reports it), its budget and window taken from the index, so it
//! is refused when the filters leave more than [`MAX_SPEND_KEYS`] keys. A team admin or
//! internal user lists only the keys it reaches (`roles`).

mod params;

use super::roles::admin_or_user;
use super::{present, put_spend, query, read_records, totals_of, Answer};
use crate::error::GatewayError;
use crate::tenancy::key_index::{Budgeted, KeyIndex, KeyReach, Position, Start};
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use params::{parse, ListQuery, SortBy};
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_schemas::ledger::ALL_TIME;
use tollgate_schemas::store::TenancyStore;
use tollgate_schemas::tenancy::{budget_window, KeyRecord};
use tollgate_schemas::NanoUsd;

/// The most keys a listing by spend reads the spend of ([`tollgate_schemas::store::SCOPES_PER_QUERY`] a ledger query).
pub(crate) const MAX_SPEND_KEYS: usize = 500;

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
        shown_with_spend(&state, &records(store, stored).await?, None).await?
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
/// of every key the other filters pick, at most [`MAX_SPEND_KEYS`] of them. The keys' budgets
/// and windows come from the index; their spend from the ledger, [`tollgate_schemas::store::SCOPES_PER_QUERY`] keys a
/// query; only the page's records are read, and only for whole objects. The spend each key is
/// sorted, filtered and shown by is the one read in this request: exact, and the same figure.
async fn by_spend(state: &AppState, store: Arc<dyn TenancyStore>, index: &Arc<KeyIndex>, lq: &ListQuery) -> Answer {
    let (index, filter) = (index.clone(), lq.filter.clone());
    let picked = tokio::task::spawn_blocking(move || index.matching(&filter, MAX_SPEND_KEYS))
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
    let now = Utc::now();
    let pairs: Vec<(String, String)> =
        picked.iter().map(|b| (scope_of(&b.at.key_id), budget_window(b.budget_duration, now))).collect();
    let spent = current_spends(state, &pairs).await?;
    let mut keys: Vec<(Budgeted, NanoUsd)> = picked
        .into_iter()
        .zip(spent)
        .filter(|(b, s)| lq.min_budget_percent.is_none_or(|p| b.max_budget.is_some_and(|m| over_percent(*s, m, p))))
        .collect();
    keys.sort_by(|(a, sa), (b, sb)| ordered(lq, (&a.at, *sa), (&b.at, *sb)));
    let total = keys.len();
    let skip = match lq.start() {
        Start::Offset(n) => n,
        Start::After(_) => 0, // refused with spend when the query was read
    };
    let page: Vec<(Budgeted, NanoUsd)> = keys.into_iter().skip(skip).take(lq.size).collect();
    let items: Vec<Value> = if lq.full {
        let spent: HashMap<String, NanoUsd> = page.iter().map(|(b, s)| (b.at.key_id.to_string(), *s)).collect();
        let records = records(store, page.into_iter().map(|(b, _)| b.stored).collect()).await?;
        shown_with_spend(state, &records, Some(&spent)).await?
    } else {
        page.iter().map(|(b, _)| json!(b.at.key_id.as_ref())).collect()
    };
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
    Ok(read_records::<KeyRecord>(store.as_ref(), stored).await?.into_iter().map(|(k, _)| k).collect())
}

/// Each key as `/key/info` shows it, with its spend, in order. The ledger is read for all the
/// keys at once (`totals_of`: a few queries, not one or two per key). `known` holds current
/// spend already read in this request (a listing by spend), shown as it was sorted by.
async fn shown_with_spend(
    state: &AppState,
    keys: &[KeyRecord],
    known: Option<&HashMap<String, NanoUsd>>,
) -> Result<Vec<Value>, GatewayError> {
    let now = Utc::now();
    let windows: Vec<String> = keys.iter().map(|k| budget_window(k.limits.budget_duration, now)).collect();
    // All time for each key, and the current window where it is another and not known already.
    let mut pairs: Vec<(String, String)> = keys.iter().map(|k| (scope(k), ALL_TIME.to_owned())).collect();
    let current_read: Vec<Option<usize>> = keys
        .iter()
        .zip(&windows)
        .map(|(k, w)| {
            let known = known.is_some_and(|m| m.contains_key(&k.key_id));
            (w != ALL_TIME && !known).then(|| {
                pairs.push((scope(k), w.clone()));
                pairs.len() - 1
            })
        })
        .collect();
    let Some(read) = totals_of(state, &pairs).await else {
        return Ok(keys.iter().map(present).collect());
    };
    let read = read.map_err(|e| spend_unavailable(&e))?;
    let mut shown = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let all = read.get(i).copied().unwrap_or_default();
        let window = windows.get(i).map_or(ALL_TIME, String::as_str);
        let current = match (known.and_then(|m| m.get(&k.key_id)), current_read.get(i).copied().flatten()) {
            (Some(s), _) => *s,
            (None, Some(j)) => latest(state, &scope(k), window, read.get(j).copied().unwrap_or_default().spent),
            (None, None) => latest(state, &scope(k), window, all.spent),
        };
        let mut v = present(k);
        put_spend(&mut v, current, window, &all);
        shown.push(v);
    }
    Ok(shown)
}

/// The current spend of each `(scope, window)`, read from the ledger in few queries, each at
/// least what this gateway's budget view knows; zero without a ledger.
async fn current_spends(state: &AppState, pairs: &[(String, String)]) -> Result<Vec<NanoUsd>, GatewayError> {
    let Some(read) = totals_of(state, pairs).await else { return Ok(vec![NanoUsd(0); pairs.len()]) };
    let read = read.map_err(|e| spend_unavailable(&e))?;
    Ok(pairs.iter().zip(read).map(|((scope, window), t)| latest(state, scope, window, t.spent)).collect())
}

/// The ledger's figure, or more where this gateway has counted more already (the ledger lags by
/// the consumer's batch), as `current_spend` does.
fn latest(state: &AppState, scope: &str, window: &str, ledger: NanoUsd) -> NanoUsd {
    ledger.max(state.budget_view.spent(scope, window))
}

fn spend_unavailable(e: &tollgate_schemas::store::StoreError) -> GatewayError {
    tracing::warn!(failure = e.kind(), "spend for a key listing could not be read");
    GatewayError::DatabaseUnavailable
}

/// Whether `spent` is at least `percent` % of `budget` (exactly, in integers).
fn over_percent(spent: NanoUsd, budget: NanoUsd, percent: i64) -> bool {
    i128::from(spent.0) * 100 >= i128::from(budget.0) * i128::from(percent)
}

fn scope(k: &KeyRecord) -> String {
    scope_of(&k.key_id)
}

fn scope_of(key_id: &str) -> String {
    format!("key/{key_id}")
}

/// The order of two keys by the query's sort; ties by creation, then token.
fn ordered(lq: &ListQuery, (a, sa): (&Position, NanoUsd), (b, sb): (&Position, NanoUsd)) -> Ordering {
    let first = match lq.sort {
        SortBy::Spend => sa.cmp(&sb),
        SortBy::CreatedAt => Ordering::Equal,
    };
    let o = first.then_with(|| a.cmp(b));
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
        let a = Position { created_us: 1, key_id: "a".into() };
        let b = Position { created_us: 1, key_id: "b".into() };
        assert_eq!(ordered(&lq, (&a, NanoUsd(5)), (&b, NanoUsd(3))), Ordering::Less);
        assert_eq!(ordered(&lq, (&a, NanoUsd(3)), (&b, NanoUsd(3))), Ordering::Greater);
    }
}
