//! The spend API, served from the ledgers: request logs from the event ledger (Layer 1), and
//! reports and daily activity from the spend aggregates (Layer 2). Admin keys see everything;
//! any other key sees its own logs.

use crate::admin::{answer, caller, internal, key_identity, query, usd_value, Answer, Caller};
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{NaiveDate, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tollgate_schemas::store::{EventQuery, SpendSource, SpendTotal};
use tollgate_schemas::UsageEvent;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/spend/logs", web::get().to(spend_logs))
        .route("/global/spend/report", web::get().to(spend_report))
        .route("/spend/daily", web::get().to(spend_daily));
}

/// The longest date range one call may read.
const MAX_DAYS: i64 = 31;

fn source(state: &AppState) -> Result<Arc<dyn SpendSource>, GatewayError> {
    state.spend.clone().ok_or(GatewayError::AdminUnavailable)
}

/// `start_date..=end_date` (UTC days, `YYYY-MM-DD`), today when absent, at most [`MAX_DAYS`].
fn date_range(q: &BTreeMap<String, String>) -> Result<(NaiveDate, NaiveDate), GatewayError> {
    let today = Utc::now().date_naive();
    let parse = |name: &'static str| match q.get(name) {
        None => Ok(None),
        Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| GatewayError::field(name, format!("`{name}` must be a date, YYYY-MM-DD"))),
    };
    let end = parse("end_date")?.unwrap_or(today);
    let start = parse("start_date")?.unwrap_or(end);
    if start > end {
        return Err(GatewayError::field("start_date", "`start_date` is after `end_date`"));
    }
    if (end - start).num_days() >= MAX_DAYS {
        return Err(GatewayError::field("end_date", format!("at most {MAX_DAYS} days per call")));
    }
    Ok((start, end))
}

fn count(q: &BTreeMap<String, String>, name: &'static str, default: usize, max: usize) -> Result<usize, GatewayError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| GatewayError::field(name, format!("`{name}` must be 1 to {max}"))),
    }
}

fn log_entry(e: &UsageEvent) -> Value {
    let start = e.occurred_at - chrono::Duration::milliseconds(i64::try_from(e.latency_ms).unwrap_or(0));
    json!({
        "request_id": e.request_id,
        "event_id": e.event_id,
        "api_key": e.key_id,
        "key_alias": e.key_alias,
        "team_id": e.team_id,
        "user": e.user_id,
        "end_user": e.customer_id,
        "organization_id": e.organization_id,
        "model": e.requested_model,
        "served_model": e.served_model,
        "provider": e.provider,
        "spend": usd_value(e.cost_nano_usd),
        "spend_nano_usd": e.cost_nano_usd.0,
        "prompt_tokens": e.prompt_tokens,
        "completion_tokens": e.completion_tokens,
        "total_tokens": e.prompt_tokens + e.completion_tokens,
        "cached_tokens": e.cached_tokens,
        "status": e.status,
        "error_type": e.error_type,
        "stream": e.stream,
        "partial": e.partial,
        "estimated": e.estimated,
        "startTime": start,
        "endTime": e.occurred_at,
        "gateway_id": e.gateway_id,
    })
}

/// `GET /spend/logs`: one entry per request, newest first. Filters: `api_key` (the key or its
/// hash), `team_id`, `user_id`, `end_user`, `model`, `start_date`, `end_date`; pages: `page`,
/// `page_size`. With a key or a team only their ledger partitions are read.
async fn spend_logs(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(logs(&req, &state).await)
}

async fn logs(req: &HttpRequest, state: &AppState) -> Answer {
    let mut q = query(req);
    if let Caller::Own(own) = caller(req, state, false).await? {
        // A plain key reads its own logs only.
        if let Some(k) = q.get("api_key") {
            if key_identity(state, k).await? != own {
                return Err(GatewayError::Forbidden("a key may only read its own spend logs".into()));
            }
        }
        q.insert("api_key".into(), own);
    }
    let source = source(state)?;
    let (from, to) = date_range(&q)?;
    let page = count(&q, "page", 1, usize::MAX)?;
    let page_size = count(&q, "page_size", 50, 1_000)?;
    let key_id = match q.get("api_key") {
        Some(k) => Some(key_identity(state, k).await?),
        None => None,
    };
    let team = q.get("team_id").cloned();
    // Events are stored by budget owner: the team of the key, else the key.
    let owners = match (&key_id, &team) {
        (_, Some(t)) => Some(vec![format!("team/{t}")]),
        (Some(k), None) => {
            let mut owners = vec![format!("key/{k}")];
            let team = match (state.tenancy.config_key(k), state.tenancy.store()) {
                (Some(key), _) => key.team_id.clone(),
                (None, Some(store)) => {
                    crate::admin::find_key(state, store.as_ref(), k).await?.and_then(|(key, _)| key.team_id)
                }
                (None, None) => None,
            };
            if let Some(t) = team {
                owners.push(format!("team/{t}"));
            }
            Some(owners)
        }
        (None, None) => None,
    };
    let events = source.events(EventQuery { owners, from, to }).await.map_err(internal)?;
    let wanted = |want: Option<&String>, have: &Option<String>| want.is_none_or(|w| have.as_ref() == Some(w));
    let mut seen = BTreeSet::new();
    let mut events: Vec<UsageEvent> = events
        .into_iter()
        .filter(|e| key_id.as_ref().is_none_or(|k| &e.key_id == k))
        .filter(|e| wanted(team.as_ref(), &e.team_id))
        .filter(|e| wanted(q.get("user_id"), &e.user_id))
        .filter(|e| wanted(q.get("end_user"), &e.customer_id))
        .filter(|e| q.get("model").is_none_or(|m| &e.requested_model == m))
        .filter(|e| seen.insert(e.event_id))
        .collect();
    events.sort_by_key(|e| std::cmp::Reverse((e.occurred_at, e.event_id)));
    let total = events.len();
    let data: Vec<Value> =
        events.iter().skip((page - 1).saturating_mul(page_size)).take(page_size).map(log_entry).collect();
    Ok(HttpResponse::Ok().json(json!({
        "data": data,
        "total": total,
        "page": page,
        "page_size": page_size,
        "total_pages": total.div_ceil(page_size),
    })))
}

/// The scope kinds a report can group by, and their ledger prefix.
fn group_kind(q: &BTreeMap<String, String>) -> Result<(&'static str, &'static str), GatewayError> {
    match q.get("group_by").map(String::as_str) {
        None | Some("team") => Ok(("team", "team_id")),
        Some("key") => Ok(("key", "api_key")),
        Some("user") => Ok(("user", "user_id")),
        Some("customer") => Ok(("customer", "end_user")),
        Some("organization") => Ok(("org", "organization_id")),
        Some(_) => Err(GatewayError::field("group_by", "`group_by` must be team, key, user, customer or organization")),
    }
}

/// Splits a ledger scope into (kind, id, model).
fn parse_scope(scope: &str) -> Option<(&str, &str, Option<&str>)> {
    let (tenant, model) = match scope.split_once("/model/") {
        Some((t, m)) => (t, Some(m)),
        None => (scope, None),
    };
    let (kind, id) = tenant.split_once('/')?;
    Some((kind, id, model))
}

fn totals_json(t: &SpendTotal) -> Value {
    json!({
        "spend": usd_value(t.spent),
        "spend_nano_usd": t.spent.0,
        "requests": t.events,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
    })
}

fn merge(into: &mut SpendTotal, t: &SpendTotal) {
    into.spent = tollgate_schemas::NanoUsd(into.spent.0.saturating_add(t.spent.0));
    into.events += t.events;
    into.prompt_tokens += t.prompt_tokens;
    into.completion_tokens += t.completion_tokens;
}

async fn admin_daily(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(BTreeMap<String, String>, Vec<(String, NaiveDate, SpendTotal)>), GatewayError> {
    if let Caller::Own(_) = caller(req, state, false).await? {
        return Err(GatewayError::Forbidden("this key may not read spend reports".into()));
    }
    let q = query(req);
    let (from, to) = date_range(&q)?;
    let rows = source(state)?.daily(from, to).await.map_err(internal)?;
    Ok((q, rows))
}

/// `GET /global/spend/report`: spend per team (or key, user, customer, organization) over a
/// date range, with each one's models, largest first.
async fn spend_report(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let (q, rows) = admin_daily(&req, &state).await?;
            let (kind, field) = group_kind(&q)?;
            let mut groups: BTreeMap<String, (SpendTotal, BTreeMap<String, SpendTotal>)> = BTreeMap::new();
            for (scope, _, t) in &rows {
                let Some((k, id, model)) = parse_scope(scope) else { continue };
                if k != kind {
                    continue;
                }
                let entry = groups.entry(id.to_owned()).or_default();
                match model {
                    None => merge(&mut entry.0, t),
                    Some(m) => merge(entry.1.entry(m.to_owned()).or_default(), t),
                }
            }
            let mut out: Vec<(String, SpendTotal, BTreeMap<String, SpendTotal>)> =
                groups.into_iter().map(|(id, (t, models))| (id, t, models)).collect();
            out.sort_by(|a, b| b.1.spent.cmp(&a.1.spent).then_with(|| a.0.cmp(&b.0)));
            let report: Vec<Value> = out
                .iter()
                .map(|(id, t, models)| {
                    let mut v = totals_json(t);
                    if let Value::Object(o) = &mut v {
                        o.insert("group_by".into(), json!(q.get("group_by").map_or("team", String::as_str)));
                        o.insert(field.into(), json!(id));
                        let models: Vec<Value> = models
                            .iter()
                            .map(|(m, t)| {
                                let mut mv = totals_json(t);
                                if let Value::Object(mo) = &mut mv {
                                    mo.insert("model".into(), json!(m));
                                }
                                mv
                            })
                            .collect();
                        o.insert("models".into(), Value::Array(models));
                    }
                    v
                })
                .collect();
            Ok(HttpResponse::Ok().json(report))
        }
        .await,
    )
}

/// `GET /spend/daily`: spend by UTC day × model × key (or team, `group_by=team`).
async fn spend_daily(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    answer(
        async {
            let (q, rows) = admin_daily(&req, &state).await?;
            let (kind, field) = match q.get("group_by").map(String::as_str) {
                None | Some("key") => ("key", "api_key"),
                Some("team") => ("team", "team_id"),
                Some(_) => return Err(GatewayError::field("group_by", "`group_by` must be key or team")),
            };
            let mut total = SpendTotal::default();
            let mut results = Vec::new();
            for (scope, day, t) in &rows {
                let Some((k, id, Some(model))) = parse_scope(scope) else { continue };
                if k != kind {
                    continue;
                }
                merge(&mut total, t);
                let mut v = totals_json(t);
                if let Value::Object(o) = &mut v {
                    o.insert("date".into(), json!(day));
                    o.insert(field.into(), json!(id));
                    o.insert("model".into(), json!(model));
                }
                results.push(v);
            }
            Ok(HttpResponse::Ok().json(json!({"results": results, "totals": totals_json(&total)})))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_ranges_default_to_today_and_are_bounded() {
        let q = BTreeMap::new();
        let (a, b) = date_range(&q).unwrap();
        assert_eq!(a, b);
        let q: BTreeMap<String, String> =
            [("start_date".to_owned(), "2026-01-01".to_owned()), ("end_date".to_owned(), "2026-03-01".to_owned())]
                .into_iter()
                .collect();
        assert!(matches!(date_range(&q), Err(GatewayError::InvalidField { field, .. }) if field == "end_date"));
        let q: BTreeMap<String, String> = [("start_date".to_owned(), "yesterday".to_owned())].into_iter().collect();
        assert!(matches!(date_range(&q), Err(GatewayError::InvalidField { field, .. }) if field == "start_date"));
    }

    #[test]
    fn scopes_split_into_kind_id_and_model() {
        assert_eq!(parse_scope("team/pay/model/gpt-4o"), Some(("team", "pay", Some("gpt-4o"))));
        assert_eq!(parse_scope("key/abc"), Some(("key", "abc", None)));
        assert_eq!(parse_scope("nonsense"), None);
    }
}
