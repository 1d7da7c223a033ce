//! `GET /key/list`: a page of keys, filtered and sorted on the server. Every filter reads the
//! key records; the spend filter and sort also read each remaining key's spend in its current
//! budget window (as `/key/info` reports it).

use super::{admin, current_spend, internal, present, query, with_spend, Answer};
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use tollgate_schemas::store::list_records;
use tollgate_schemas::tenancy::KeyRecord;
use tollgate_schemas::NanoUsd;

/// The longest `expires_within_days` (ten years).
const MAX_EXPIRY_DAYS: i64 = 3650;
/// The highest `min_budget_percent`.
const MAX_BUDGET_PERCENT: i64 = 10_000;

/// What keys are listed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortBy {
    CreatedAt,
    Spend,
}

/// The query's checked filters, sort and page.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    page: usize,
    size: usize,
    expires_within_days: Option<i64>,
    min_budget_percent: Option<i64>,
    sort: SortBy,
    descending: bool,
}

/// An integer in `range`, or a 400 naming `name`.
fn bounded(
    q: &BTreeMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, GatewayError> {
    let Some(v) = q.get(name) else { return Ok(None) };
    v.parse::<i64>().ok().filter(|n| range.contains(n)).map(Some).ok_or_else(|| {
        GatewayError::field(name, format!("`{name}` must be an integer from {} to {}", range.start(), range.end()))
    })
}

/// One of `allowed`, or a 400 naming `name`.
fn one_of<'a>(q: &'a BTreeMap<String, String>, name: &str, allowed: &[&str]) -> Result<Option<&'a str>, GatewayError> {
    match q.get(name) {
        Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
        Some(_) => Err(GatewayError::field(name, format!("`{name}` must be one of {}", allowed.join(", ")))),
        None => Ok(None),
    }
}

fn parse(q: &BTreeMap<String, String>) -> Result<ListQuery, GatewayError> {
    let page = bounded(q, "page", 1..=i64::from(u32::MAX))?.unwrap_or(1);
    let size = bounded(q, "size", 1..=1000)?.unwrap_or(10);
    if q.get("search").is_some_and(|s| s.is_empty() || s.len() > tollgate_schemas::limits::MAX_NAME_BYTES) {
        return Err(GatewayError::field("search", "`search` must be 1 to 256 bytes"));
    }
    one_of(q, "blocked", &["true", "false"])?;
    one_of(q, "return_full_object", &["true", "false"])?;
    let sort = match one_of(q, "sort", &["created_at", "spend"])? {
        Some("spend") => SortBy::Spend,
        _ => SortBy::CreatedAt,
    };
    Ok(ListQuery {
        page: usize::try_from(page).unwrap_or(1),
        size: usize::try_from(size).unwrap_or(10),
        expires_within_days: bounded(q, "expires_within_days", 1..=MAX_EXPIRY_DAYS)?,
        min_budget_percent: bounded(q, "min_budget_percent", 0..=MAX_BUDGET_PERCENT)?,
        sort,
        descending: one_of(q, "order", &["asc", "desc"])? == Some("desc"),
    })
}

/// Whether `search` (case-insensitive) is part of the key's alias or team, or begins its token
/// or its shown name (`sk-...abcd`).
fn found_by(key: &KeyRecord, search: &str) -> bool {
    let s = search.to_lowercase();
    let within = |v: &Option<String>| v.as_ref().is_some_and(|v| v.to_lowercase().contains(&s));
    within(&key.key_alias) || within(&key.team_id) || key.key_id.starts_with(&s) || key.key_name.contains(search)
}

/// Whether the record's fields match the query's exact filters, search, state and expiry.
fn picked(k: &KeyRecord, q: &BTreeMap<String, String>, expiring_by: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    let matches = |want: Option<&String>, have: &Option<String>| want.is_none_or(|w| have.as_ref() == Some(w));
    matches(q.get("team_id"), &k.team_id)
        && matches(q.get("user_id"), &k.user_id)
        && matches(q.get("key_alias"), &k.key_alias)
        && matches(q.get("organization_id"), &k.organization_id)
        && q.get("search").is_none_or(|s| found_by(k, s))
        && q.get("blocked").is_none_or(|b| (b == "true") == k.blocked)
        && expiring_by.is_none_or(|by| k.expires.is_some_and(|e| e > now && e <= by))
}

/// Whether `spent` is at least `percent` % of `budget` (exactly, in integers).
fn over_percent(spent: NanoUsd, budget: NanoUsd, percent: i64) -> bool {
    i128::from(spent.0) * 100 >= i128::from(budget.0) * i128::from(percent)
}

/// `GET /key/list`: a page of the keys the query's filters pick, in the order it asks for
/// (oldest first unless told otherwise).
pub(crate) async fn list(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let store = admin(&req, &state, false).await?;
    let q = query(&req);
    let lq = parse(&q)?;
    let now = Utc::now();
    let expiring_by = lq.expires_within_days.map(|d| now + Duration::days(d));
    let candidates: Vec<KeyRecord> = list_records::<KeyRecord>(store.as_ref())
        .await
        .map_err(internal)?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| picked(k, &q, expiring_by, now))
        .collect();
    let needs_spend = lq.sort == SortBy::Spend || lq.min_budget_percent.is_some();
    let mut keys: Vec<(KeyRecord, NanoUsd)> = Vec::with_capacity(candidates.len());
    for k in candidates {
        let spent = if needs_spend { spend_of(&state, &k).await } else { NanoUsd(0) };
        let keep = lq.min_budget_percent.is_none_or(|p| k.limits.max_budget.is_some_and(|b| over_percent(spent, b, p)));
        if keep {
            keys.push((k, spent));
        }
    }
    keys.sort_by(|(a, sa), (b, sb)| ordered(&lq, (a, *sa), (b, *sb)));
    let total = keys.len();
    let full = q.get("return_full_object").is_some_and(|v| v == "true");
    let mut items: Vec<Value> = Vec::new();
    for (k, _) in keys.iter().skip((lq.page - 1).saturating_mul(lq.size)).take(lq.size) {
        items.push(if full { with_spend(&state, present(k), &scope(k), &k.limits).await } else { json!(k.key_id) });
    }
    Ok(HttpResponse::Ok().json(json!({
        "keys": items,
        "total_count": total,
        "current_page": lq.page,
        "total_pages": total.div_ceil(lq.size),
    })))
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

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn refused_field(pairs: &[(&str, &str)]) -> String {
        match parse(&q(pairs)) {
            Err(GatewayError::InvalidField { field, .. }) => field,
            other => panic!("{pairs:?} was not refused by a field: {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_page_one_of_ten_oldest_first() {
        let lq = parse(&q(&[])).unwrap();
        assert_eq!((lq.page, lq.size, lq.sort, lq.descending), (1, 10, SortBy::CreatedAt, false));
        assert_eq!((lq.expires_within_days, lq.min_budget_percent), (None, None));
    }

    #[test]
    fn the_bounds_are_taken_and_one_beyond_is_refused_naming_the_field() {
        let lq = parse(&q(&[("expires_within_days", "3650"), ("min_budget_percent", "0"), ("size", "1000")])).unwrap();
        assert_eq!((lq.expires_within_days, lq.min_budget_percent, lq.size), (Some(3650), Some(0), 1000));
        let lq = parse(&q(&[("expires_within_days", "1"), ("min_budget_percent", "10000")])).unwrap();
        assert_eq!((lq.expires_within_days, lq.min_budget_percent), (Some(1), Some(10_000)));
        for (name, bad) in [
            ("expires_within_days", "0"),
            ("expires_within_days", "3651"),
            ("expires_within_days", "7.5"),
            ("expires_within_days", ""),
            ("min_budget_percent", "-1"),
            ("min_budget_percent", "10001"),
            ("min_budget_percent", "99999999999999999999"),
            ("size", "1001"),
            ("page", "0"),
            ("sort", "alias"),
            ("sort", "SPEND"),
            ("order", "up"),
            ("blocked", "yes"),
            ("return_full_object", "1"),
            ("search", ""),
        ] {
            assert_eq!(refused_field(&[(name, bad)]), name, "{name}={bad}");
        }
    }

    #[test]
    fn sort_and_order_are_read() {
        let lq = parse(&q(&[("sort", "spend"), ("order", "desc")])).unwrap();
        assert_eq!((lq.sort, lq.descending), (SortBy::Spend, true));
        let lq = parse(&q(&[("order", "asc"), ("sort", "created_at")])).unwrap();
        assert_eq!((lq.sort, lq.descending), (SortBy::CreatedAt, false));
    }

    #[test]
    fn the_budget_share_is_compared_exactly() {
        let budget = NanoUsd(1_000_000_000);
        assert!(over_percent(NanoUsd(800_000_000), budget, 80));
        assert!(!over_percent(NanoUsd(799_999_999), budget, 80));
        assert!(over_percent(NanoUsd(0), budget, 0));
        assert!(over_percent(NanoUsd(i64::MAX), NanoUsd(i64::MAX), 100));
    }

    #[test]
    fn keys_expiring_within_the_window_are_picked_and_others_not() {
        let now = Utc::now();
        let by = Some(now + Duration::days(7));
        let key = |expires| KeyRecord { key_id: "a".into(), expires, ..KeyRecord::default() };
        assert!(picked(&key(Some(now + Duration::days(3))), &q(&[]), by, now));
        assert!(!picked(&key(Some(now + Duration::days(8))), &q(&[]), by, now));
        assert!(!picked(&key(Some(now - Duration::days(1))), &q(&[]), by, now));
        assert!(!picked(&key(None), &q(&[]), by, now));
        assert!(picked(&key(None), &q(&[]), None, now));
    }

    #[test]
    fn spend_sorts_descending_with_ties_by_creation() {
        let lq = parse(&q(&[("sort", "spend"), ("order", "desc")])).unwrap();
        let a = KeyRecord { key_id: "a".into(), ..KeyRecord::default() };
        let b = KeyRecord { key_id: "b".into(), ..KeyRecord::default() };
        assert_eq!(ordered(&lq, (&a, NanoUsd(5)), (&b, NanoUsd(3))), Ordering::Less);
        assert_eq!(ordered(&lq, (&a, NanoUsd(3)), (&b, NanoUsd(3))), Ordering::Greater);
    }
}
