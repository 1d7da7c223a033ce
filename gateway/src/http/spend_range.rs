//! Spend summed over a date range, a page of groups at a time: `/spend/daily?sum=range` (one
//! result per team, key, ... over the whole range, as the console's Usage table shows them) and
//! the `limit`/`offset` of `/global/spend/report`. The sums come from `SpendSource::range`,
//! the same ledger rows `/spend/daily` answers day by day, so a group's result equals the sum of
//! its day results to the nano-dollar; `totals` and `total_groups` count every group, not only
//! the page. Never reads events.

use super::spend::{admin_range, merge, parse_scope, totals_json};
use crate::admin::{query, Answer};
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use tollgate_schemas::store::SpendTotal;

/// Most groups one answer holds.
pub(super) const MAX_LIMIT: usize = 1_000;

/// Groups a `sum=range` answer holds when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// The furthest `offset`: past any list of groups a month of the read model holds.
pub(super) const MAX_OFFSET: usize = 1_000_000;

/// A part of a list of groups: `limit` from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// `limit` (1 to [`MAX_LIMIT`]) and `offset` (0 to [`MAX_OFFSET`]) of the query: `None`
    /// when neither is given and there is no `default` limit.
    pub(super) fn of(q: &BTreeMap<String, String>, default: Option<usize>) -> Result<Option<Page>, GatewayError> {
        let number = |name: &'static str, min: usize, max: usize| match q.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(|| GatewayError::field(name, format!("`{name}` must be {min} to {max}"))),
        };
        let limit = number("limit", 1, MAX_LIMIT)?;
        let offset = number("offset", 0, MAX_OFFSET)?;
        Ok(match (limit.or(default), offset) {
            (None, None) => None,
            (limit, offset) => Some(Page { offset: offset.unwrap_or(0), limit: limit.unwrap_or(MAX_LIMIT) }),
        })
    }

    /// This page of `all`: empty past its end.
    pub(super) fn slice<T>(self, all: &[T]) -> &[T] {
        let start = self.offset.min(all.len());
        &all[start..all.len().min(start.saturating_add(self.limit))]
    }
}

/// Whether `/spend/daily` sums its range (`sum=range`) or answers day by day (`sum=day`, the
/// default). `limit` and `offset` page the groups of a summed range only.
pub(super) fn sums_range(q: &BTreeMap<String, String>) -> Result<bool, GatewayError> {
    match q.get("sum").map(String::as_str) {
        Some("range") => Ok(true),
        None | Some("day") => {
            for name in ["limit", "offset"] {
                if q.contains_key(name) {
                    return Err(GatewayError::field(name, format!("`{name}` pages the groups of `sum=range` only")));
                }
            }
            Ok(false)
        }
        Some(_) => Err(GatewayError::field("sum", "`sum` must be day or range")),
    }
}

/// The groups of a range: the per-model rows of `kind` summed per id (per model when `by_id` is
/// false, as `/spend/daily` by model does), largest spend first, then by name.
pub(super) fn range_groups<'a>(
    rows: impl Iterator<Item = (&'a str, &'a SpendTotal)>,
    kind: &str,
    by_id: bool,
) -> Vec<(&'a str, SpendTotal)> {
    let mut groups: HashMap<&'a str, SpendTotal> = HashMap::new();
    for (scope, t) in rows {
        let Some((k, id, Some(model))) = parse_scope(scope) else { continue };
        if k != kind {
            continue;
        }
        merge(groups.entry(if by_id { id } else { model }).or_default(), t);
    }
    let mut out: Vec<(&str, SpendTotal)> = groups.into_iter().collect();
    out.sort_by(|a, b| b.1.spent.cmp(&a.1.spent).then_with(|| a.0.cmp(b.0)));
    out
}

/// The `sum=range` answer: the page's groups, and the totals and count of all of them.
pub(super) fn range_answer(groups: &[(&str, SpendTotal)], field: &str, page: Page) -> Value {
    let mut total = SpendTotal::default();
    for (_, t) in groups {
        merge(&mut total, t);
    }
    let shown = page.slice(groups);
    let results: Vec<Value> = shown
        .iter()
        .map(|(id, t)| {
            let mut v = totals_json(t);
            if let Value::Object(o) = &mut v {
                o.insert(field.into(), json!(id));
            }
            v
        })
        .collect();
    json!({
        "results": results,
        "totals": totals_json(&total),
        "total_groups": groups.len(),
        "offset": page.offset,
        "limit": page.limit,
        "has_more": page.offset.saturating_add(shown.len()) < groups.len(),
    })
}

/// `GET /spend/daily?sum=range`: the range's spend per group, a page at a time.
pub(super) async fn range_daily(
    req: &HttpRequest,
    state: &AppState,
    kind: &'static str,
    field: Option<&'static str>,
) -> Answer {
    let page = Page::of(&query(req), Some(DEFAULT_LIMIT))?.unwrap_or(Page { offset: 0, limit: DEFAULT_LIMIT });
    let (_, kind, rows) = admin_range(req, state, true, kind, field).await?;
    let groups = range_groups(rows.iter().map(|(s, t)| (s.as_str(), t)), kind, field.is_some());
    Ok(HttpResponse::Ok().json(range_answer(&groups, field.unwrap_or("model"), page)))
}

#[cfg(test)]
mod tests;
