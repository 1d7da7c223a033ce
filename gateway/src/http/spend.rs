//! The spend API, served from the ledgers: request logs from the event ledger (Layer 1) a page
//! at a time, and reports and daily activity from the spend aggregates (Layer 2). Admin keys see
//! everything; a team admin or internal user its own and its teams' logs and daily spend
//! (`admin::roles`); any other key sees its own logs, and its reads touch only its own events.

use crate::admin::roles::SpendReach;
use crate::admin::{caller, internal, key_identity, query, usd_value, Answer, Caller};
use crate::error::GatewayError;
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{NaiveDate, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_schemas::ledger::{day_window_of, model_scope_id, scope_id};
use tollgate_schemas::limits::check_scope_tag;
use tollgate_schemas::logs::{LogCursor, LogFilter, LogQuery, MAX_PAGE_SIZE, MAX_SKIP};
use tollgate_schemas::store::{DailyQuery, RangeTotals, SpendSource, SpendTotal, StoreError};
use tollgate_schemas::UsageEvent;

/// The kind of the platform's own ledger scope (`ledger::GLOBAL_SCOPE`), whose per-model rows
/// give spend by model.
const GLOBAL_KIND: &str = "global";

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
        "cache_write_tokens": e.cache_write_tokens,
        "reasoning_tokens": e.reasoning_tokens,
        // The cost's parts by token type, exact nano-USD; empty when the event was not split.
        "cost_by_token_type": e.cost_by_token_type,
        "unpriced": e.unpriced,
        "deployment": e.deployment,
        "cache_hit": e.cache.as_ref().is_some_and(|c| c.hit),
        "client_disconnected": e.client_disconnected,
        "trace_id": e.trace_id,
        "status": e.status,
        "error_type": e.error_type,
        "stream": e.stream,
        "partial": e.partial,
        "estimated": e.estimated,
        "startTime": start,
        "endTime": e.occurred_at,
        "gateway_id": e.gateway_id,
        "request_tags": e.tags,
        // Each upstream call of a request retried or moved to a fallback; empty for one call.
        "attempts": e.attempts,
        "attempts_omitted": e.attempts_omitted,
    })
}

/// `GET /spend/logs`: one entry per request, newest first, read from the ledger a page at a time
/// (never the whole range). LiteLLM's parameters: filters `api_key` (the key or its hash),
/// `team_id`, `user_id`, `end_user`, `model`, `start_date`, `end_date`; pages `page` and
/// `page_size` (at most 1,000). `page` reaches the first 10,000 entries
/// (`(page - 1) × page_size ≤ 10,000`); beyond, and for paging at any depth at the same cost,
/// pass the answer's `next_cursor` back as `after`, with the same filters. `tag` keeps the
/// entries whose event carries that tag (`tagged_page`): paged by the cursor only, uncounted.
///
/// Answer: `data`, `page`, `page_size`, `has_more` and `next_cursor` (`null` at the end), and
/// `total` / `total_pages`: counted from the spend ledger's day rows (one read per day), not by
/// reading the logs, when the filters name one tenant (a key, team, user or customer, with or
/// without a model); `null` otherwise, where only reading every entry could count them. A
/// plain key reads its own key's entries only: its query is scoped to the key before anything
/// is read. A query naming a key reads the key index; one naming a team, the team's event
/// ledger partitions; one naming neither (admins only) scans the event ledger in its storage
/// order, a bounded number of partitions and rows per call, so a page may come back short (even
/// empty) with `has_more`: see docs/tenancy.md.
pub(crate) async fn spend_logs(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    logs(&req, &state).await
}

async fn logs(req: &HttpRequest, state: &AppState) -> Answer {
    let q = query(req);
    let caller = caller(req, state, false).await?;
    let own = match &caller {
        Caller::Own(own) => Some(own.clone()),
        Caller::Admin | Caller::User(_) => None,
    };
    let source = source(state)?;
    let (from, to) = date_range(&q)?;
    let page = count(&q, "page", 1, usize::MAX)?;
    let page_size = count(&q, "page_size", 50, MAX_PAGE_SIZE)?;
    let skip = (page - 1).saturating_mul(page_size);
    if skip > MAX_SKIP {
        return Err(GatewayError::field(
            "page",
            format!("`page` reaches the first {MAX_SKIP} entries; follow `next_cursor` with `after` to read further"),
        ));
    }
    let after = match q.get("after") {
        None => None,
        Some(_) if page > 1 => {
            return Err(GatewayError::field("page", "`after` and `page` are two ways of paging: use one"));
        }
        Some(text) => Some(LogCursor::decode(text).map_err(|_| invalid_cursor())?),
    };
    let tag = match q.get("tag") {
        None => None,
        Some(_) if page > 1 => {
            return Err(GatewayError::field(
                "page",
                "with `tag`, pages are read by following `next_cursor` as `after`",
            ));
        }
        Some(t) => {
            check_scope_tag("tag", t).map_err(|e| GatewayError::field("tag", e.to_string()))?;
            Some(t.clone())
        }
    };
    // A plain key reads its own logs only: its query names its key before anything is read.
    let key_id = match (own, q.get("api_key")) {
        (Some(own), Some(given)) if key_identity(state, given).await? != own => {
            return Err(GatewayError::Forbidden("a key may only read its own spend logs".into()));
        }
        (Some(own), _) => Some(own),
        (None, Some(given)) => Some(key_identity(state, given).await?),
        (None, None) => None,
    };
    let mut filter = LogFilter {
        key_id,
        team_id: q.get("team_id").cloned(),
        user_id: q.get("user_id").cloned(),
        customer_id: q.get("end_user").cloned(),
        model: q.get("model").cloned(),
    };
    if let Caller::User(user) = &caller {
        crate::admin::roles::scope_logs(state, user, &mut filter).await?;
    }
    let query = LogQuery { filter, from, to, after, skip, limit: page_size };
    let (logs, total) = match &tag {
        Some(tag) => (super::tagged_logs::tagged_page(source.as_ref(), query.clone(), tag).await, Ok(None)),
        None => futures::join!(source.logs(query.clone()), counted_total(source.as_ref(), &query)),
    };
    let logs = logs.map_err(|e| match e {
        StoreError::InvalidCursor => invalid_cursor(),
        e => internal(e),
    })?;
    if logs.missing > 0 {
        // An index row whose event ledger row is gone: `reconcile` names them.
        tracing::warn!(missing = logs.missing, "request log entries without their event ledger row");
    }
    let total = total.map_err(internal)?;
    let data: Vec<Value> = logs.events.iter().map(log_entry).collect();
    Ok(HttpResponse::Ok().json(json!({
        "data": data,
        "total": total,
        "page": page,
        "page_size": page_size,
        "total_pages": total.map(|t| t.div_ceil(page_size as u64)),
        "has_more": logs.next.is_some(),
        "next_cursor": logs.next.map(|c| c.encode()),
    })))
}

fn invalid_cursor() -> GatewayError {
    GatewayError::field("after", "`after` must be a `next_cursor` of an earlier answer to the same query")
}

/// The spend ledger scope whose day rows count exactly the entries `filter` selects: one tenant
/// (key, team, user or customer), within a model when one is named. `None` when the filter
/// names several tenants or none.
fn counted_scope(filter: &LogFilter) -> Option<String> {
    let tenants = [
        ("key", &filter.key_id),
        ("team", &filter.team_id),
        ("user", &filter.user_id),
        ("customer", &filter.customer_id),
    ];
    let mut named = tenants.iter().filter_map(|(kind, id)| id.as_deref().map(|id| scope_id(kind, id)));
    let scope = named.next()?;
    if named.next().is_some() {
        return None;
    }
    Some(match &filter.model {
        Some(model) => model_scope_id(&scope, model),
        None => scope,
    })
}

/// The entries of `query` counted from the spend ledger (its day rows), where it can count them.
async fn counted_total(source: &dyn SpendSource, query: &LogQuery) -> Result<Option<u64>, StoreError> {
    let Some(scope) = counted_scope(&query.filter) else { return Ok(None) };
    let days = query.from.iter_days().take_while(|d| *d <= query.to);
    let totals = futures::future::try_join_all(days.map(|day| source.total(&scope, &day_window_of(day)))).await?;
    Ok(Some(totals.iter().map(|t| u64::try_from(t.events).unwrap_or(0)).sum()))
}

/// The scope kinds a report can group by, and their ledger prefix.
fn group_kind(q: &BTreeMap<String, String>) -> Result<(&'static str, &'static str), GatewayError> {
    match q.get("group_by").map(String::as_str) {
        None | Some("team") => Ok(("team", "team_id")),
        Some("key") => Ok(("key", "api_key")),
        Some("user") => Ok(("user", "user_id")),
        Some("customer") => Ok(("customer", "end_user")),
        Some("organization") => Ok(("org", "organization_id")),
        Some("tag") => Ok(("tag", "tag")),
        Some(_) => {
            Err(GatewayError::field("group_by", "`group_by` must be team, key, user, customer, organization or tag"))
        }
    }
}

/// Splits a ledger scope into (kind, id, model).
pub(super) fn parse_scope(scope: &str) -> Option<(&str, &str, Option<&str>)> {
    let (tenant, model) = match scope.split_once("/model/") {
        Some((t, m)) => (t, Some(m)),
        None => (scope, None),
    };
    let (kind, id) = tenant.split_once('/')?;
    Some((kind, id, model))
}

pub(super) fn totals_json(t: &SpendTotal) -> Value {
    json!({
        "spend": usd_value(t.spent),
        "spend_nano_usd": t.spent.0,
        "requests": t.events,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
    })
}

pub(super) fn merge(into: &mut SpendTotal, t: &SpendTotal) {
    into.spent = tollgate_schemas::NanoUsd(into.spent.0.saturating_add(t.spent.0));
    into.events += t.events;
    into.prompt_tokens += t.prompt_tokens;
    into.completion_tokens += t.completion_tokens;
}

/// Who reads daily spend: admins all of it; a user (for `/spend/daily`, not the global report)
/// the rows of what it reaches (`SpendReach`); anyone else nothing.
async fn daily_reach(req: &HttpRequest, state: &AppState, users: bool) -> Result<Option<SpendReach>, GatewayError> {
    match caller(req, state, false).await? {
        Caller::Admin => Ok(None),
        Caller::User(user) if users => Ok(Some(SpendReach::of(state, user).await?)),
        Caller::User(_) | Caller::Own(_) => Err(GatewayError::Forbidden("this key may not read spend reports".into())),
    }
}

/// A daily read: the query, the scope kind whose rows were read, and the rows.
type DailyRead = (BTreeMap<String, String>, &'static str, Vec<(String, NaiveDate, SpendTotal)>);

/// A range read: the query, the scope kind whose rows were read, and each scope's sum.
pub(super) type RangeRead = (BTreeMap<String, String>, &'static str, RangeTotals);

/// A daily or range read asked for, checked: the query string, the scope kind to read, the
/// read, whose rows the caller sees (`None`: all), and the field that narrows it.
struct DailyAsk {
    q: BTreeMap<String, String>,
    kind: &'static str,
    query: DailyQuery,
    reach: Option<SpendReach>,
    narrow: &'static str,
}

impl DailyAsk {
    fn error(&self, e: StoreError) -> GatewayError {
        match e {
            StoreError::TooManyRows { limit } => GatewayError::field(
                "end_date",
                format!(
                    "more than {limit} ledger rows in this range: ask for fewer days, or for one `{}`",
                    self.narrow
                ),
            ),
            e => internal(e),
        }
    }

    /// Whether the caller sees a ledger scope's rows.
    fn sees(&self, scope: &str) -> bool {
        self.reach.as_ref().is_none_or(|reach| parse_scope(scope).is_some_and(|(kind, id, _)| reach.sees(kind, id)))
    }
}

/// What a caller asks to read: the rows of scope kind `kind`, or, when the query names one
/// (`id_field`, e.g. `team_id=payments`), of that scope and its models; of a user (`users`),
/// only those it reaches. Read from the daily read model: the rows of the range's days and that
/// kind only.
async fn daily_ask(
    req: &HttpRequest,
    state: &AppState,
    users: bool,
    kind: &'static str,
    id_field: Option<&'static str>,
) -> Result<DailyAsk, GatewayError> {
    let reach = daily_reach(req, state, users).await?;
    let q = query(req);
    let (from, to) = date_range(&q)?;
    let scope = match id_field.and_then(|f| q.get(f).map(|id| (f, id))) {
        None => None,
        Some((field, id)) => {
            tollgate_schemas::limits::check_id(field, id).map_err(|e| GatewayError::field(field, e.to_string()))?;
            Some(scope_id(kind, id))
        }
    };
    let narrow = id_field.unwrap_or("group_by");
    // The platform's rows are no user's: a user's spend by model is its keys' per-model rows.
    let kind = if reach.is_some() && kind == GLOBAL_KIND { "key" } else { kind };
    let query = DailyQuery { kind: kind.to_owned(), scope, from, to };
    Ok(DailyAsk { q, kind, query, reach, narrow })
}

/// The daily rows a caller asks for ([`daily_ask`]), one per scope and day.
async fn admin_daily(
    req: &HttpRequest,
    state: &AppState,
    users: bool,
    kind: &'static str,
    id_field: Option<&'static str>,
) -> Result<DailyRead, GatewayError> {
    let ask = daily_ask(req, state, users, kind, id_field).await?;
    let mut rows = source(state)?.daily(ask.query.clone()).await.map_err(|e| ask.error(e))?;
    if ask.reach.is_some() {
        rows.retain(|(scope, _, _)| ask.sees(scope));
    }
    Ok((ask.q, ask.kind, rows))
}

/// As [`admin_daily`], the rows summed over the range's days: one total per scope.
pub(super) async fn admin_range(
    req: &HttpRequest,
    state: &AppState,
    users: bool,
    kind: &'static str,
    id_field: Option<&'static str>,
) -> Result<RangeRead, GatewayError> {
    let ask = daily_ask(req, state, users, kind, id_field).await?;
    let mut rows = source(state)?.range(ask.query.clone()).await.map_err(|e| ask.error(e))?;
    if ask.reach.is_some() {
        rows.retain(|(scope, _)| ask.sees(scope));
    }
    Ok((ask.q, ask.kind, rows))
}

/// A report's groups: each scope of `kind` with its total and its models' totals, largest
/// spend first (then by id). `rows` may hold a scope several times (once a day): they are summed.
type ReportGroup = (String, SpendTotal, BTreeMap<String, SpendTotal>);

fn report_groups<'a>(rows: impl Iterator<Item = (&'a str, &'a SpendTotal)>, kind: &str) -> Vec<ReportGroup> {
    let mut groups: BTreeMap<String, (SpendTotal, BTreeMap<String, SpendTotal>)> = BTreeMap::new();
    for (scope, t) in rows {
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
    let mut out: Vec<ReportGroup> = groups.into_iter().map(|(id, (t, models))| (id, t, models)).collect();
    out.sort_by(|a, b| b.1.spent.cmp(&a.1.spent).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The report's entries (`group_by` named as asked, `team` when not).
fn report_json(groups: &[ReportGroup], group_by: &str, field: &str) -> Vec<Value> {
    groups
        .iter()
        .map(|(id, t, models)| {
            let mut v = totals_json(t);
            if let Value::Object(o) = &mut v {
                o.insert("group_by".into(), json!(group_by));
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
        .collect()
}

/// `GET /global/spend/report`: spend per team (or key, user, customer, organization) over a
/// date range, with each one's models, largest first. `limit` (1 to 1,000) and `offset` answer
/// that part of the list only (all of it without `limit`, as LiteLLM does). Read as sums over
/// the range (`SpendSource::range`): closed days' sums are kept, so a report read again sums
/// only today's rows into them.
pub(crate) async fn spend_report(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let q = query(&req);
    let (kind, field) = group_kind(&q)?;
    let page = super::spend_range::Page::of(&q, None)?;
    let (q, kind, rows) = admin_range(&req, &state, false, kind, Some(field)).await?;
    let groups = report_groups(rows.iter().map(|(s, t)| (s.as_str(), t)), kind);
    let shown = page.map_or(&groups[..], |p| p.slice(&groups));
    Ok(HttpResponse::Ok().json(report_json(shown, q.get("group_by").map_or("team", String::as_str), field)))
}

/// What `/spend/daily` groups by: the ledger scope kind whose per-model rows it reads, and the
/// field naming the group's id (`None` for `model`: the platform's per-model rows, which every
/// event counts in whoever's it is).
fn daily_group(q: &BTreeMap<String, String>) -> Result<(&'static str, Option<&'static str>), GatewayError> {
    match q.get("group_by").map(String::as_str) {
        None | Some("key") => Ok(("key", Some("api_key"))),
        Some("team") => Ok(("team", Some("team_id"))),
        Some("user") => Ok(("user", Some("user_id"))),
        Some("customer") => Ok(("customer", Some("end_user"))),
        Some("organization") => Ok(("org", Some("organization_id"))),
        Some("tag") => Ok(("tag", Some("tag"))),
        Some("model") => Ok((GLOBAL_KIND, None)),
        Some(_) => Err(GatewayError::field(
            "group_by",
            "`group_by` must be key, team, user, customer, organization, tag or model",
        )),
    }
}

/// The rows of `kind`'s per-model scopes, as (day, id, model) → total; with `by_id` false, the
/// ids are dropped and the rows of one day and model summed. Borrows the ids and models from
/// `rows`: a month of every team's rows is some 100,000 entries.
pub(super) fn daily_groups<'a>(
    rows: &'a [(String, NaiveDate, SpendTotal)],
    kind: &str,
    by_id: bool,
) -> BTreeMap<(NaiveDate, &'a str, &'a str), SpendTotal> {
    let mut out: BTreeMap<(NaiveDate, &'a str, &'a str), SpendTotal> = BTreeMap::new();
    for (scope, day, t) in rows {
        let Some((k, id, Some(model))) = parse_scope(scope) else { continue };
        if k != kind {
            continue;
        }
        let id = if by_id { id } else { "" };
        merge(out.entry((*day, id, model)).or_default(), t);
    }
    out
}

/// One result of `/spend/daily`: the fields of [`totals_json`] with `date`, the group's id field
/// and `model`, written straight to the answer rather than built as a `Value` each (a month by
/// team is some 100,000 results). The keys come in the order a `Value` object writes them
/// (sorted), so the answer is byte for byte what building `Value`s gave.
struct DailyResult<'a> {
    date: NaiveDate,
    field: Option<&'static str>,
    id: &'a str,
    model: &'a str,
    total: SpendTotal,
}

/// A value of a [`DailyResult`] field.
enum FieldValue<'a> {
    Text(&'a str),
    Date(NaiveDate),
    Usd(f64),
    Int(i64),
}

impl serde::Serialize for FieldValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Text(v) => s.serialize_str(v),
            FieldValue::Date(v) => v.serialize(s),
            FieldValue::Usd(v) => v.serialize(s),
            FieldValue::Int(v) => s.serialize_i64(*v),
        }
    }
}

impl serde::Serialize for DailyResult<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let t = &self.total;
        let mut fields: [(&str, FieldValue<'_>); 8] = [
            ("completion_tokens", FieldValue::Int(t.completion_tokens)),
            ("date", FieldValue::Date(self.date)),
            ("model", FieldValue::Text(self.model)),
            ("prompt_tokens", FieldValue::Int(t.prompt_tokens)),
            ("requests", FieldValue::Int(t.events)),
            ("spend", FieldValue::Usd(t.spent.as_usd_display())),
            ("spend_nano_usd", FieldValue::Int(t.spent.0)),
            // The group's id field, when there is one; sorted in with the others below.
            (self.field.unwrap_or(""), FieldValue::Text(self.id)),
        ];
        let named = if self.field.is_some() { fields.len() } else { fields.len() - 1 };
        let fields = &mut fields[..named];
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(fields.len()))?;
        for (name, value) in fields.iter() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The answer of `/spend/daily`: `results`, then `totals` (the order a `Value` object writes).
#[derive(serde::Serialize)]
struct DailyAnswer<'a> {
    results: Vec<DailyResult<'a>>,
    totals: Value,
}

/// `GET /spend/daily`: spend by UTC day × model × key (or team, user, customer, organization,
/// tag: `group_by`; one of them with its id field, e.g. `team_id`, `tag`), or by UTC day × model
/// alone (`group_by=model`), from the daily read model. An event counts in each of its tags, so
/// the tag rows overlap and their sum is not the total spend; they span tenants, so a team
/// admin or internal user reads none.
///
/// With `sum=range`, the days are summed instead: one result per group (per model with
/// `group_by=model`) over the whole range, largest spend first, `limit` (1 to 1,000, 100 by
/// default) from `offset`, with the totals of every group and their count (`spend_range`).
pub(crate) async fn spend_daily(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let q = query(&req);
    let (kind, field) = daily_group(&q)?;
    if super::spend_range::sums_range(&q)? {
        return super::spend_range::range_daily(&req, &state, kind, field).await;
    }
    let (_, kind, rows) = admin_daily(&req, &state, true, kind, field).await?;
    Ok(HttpResponse::Ok().json(daily_answer(&rows, kind, field)))
}

/// The `/spend/daily` answer for `rows` of `kind`, grouped by `field`'s id (or by model alone).
fn daily_answer<'a>(
    rows: &'a [(String, NaiveDate, SpendTotal)],
    kind: &str,
    field: Option<&'static str>,
) -> DailyAnswer<'a> {
    let mut total = SpendTotal::default();
    let groups = daily_groups(rows, kind, field.is_some());
    let mut results = Vec::with_capacity(groups.len());
    for ((date, id, model), t) in groups {
        merge(&mut total, &t);
        results.push(DailyResult { date, field, id, model, total: t });
    }
    DailyAnswer { results, totals: totals_json(&total) }
}

/// `GET /spend/tags` (LiteLLM's route): spend per tag over `start_date..=end_date` (at most 31
/// days, today by default), largest first, from the daily read model's tag rows: per tag
/// `individual_request_tag`, `log_count` (requests), `total_spend` (USD) and the exact
/// `spend_nano_usd`. Admin keys only: a tag's spend spans tenants.
pub(crate) async fn spend_tags(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let (_, _, rows) = admin_daily(&req, &state, false, "tag", Some("tag")).await?;
    let mut tags: BTreeMap<String, SpendTotal> = BTreeMap::new();
    for (scope, _, t) in &rows {
        if let Some(("tag", tag, None)) = parse_scope(scope) {
            merge(tags.entry(tag.to_owned()).or_default(), t);
        }
    }
    let mut out: Vec<(String, SpendTotal)> = tags.into_iter().collect();
    out.sort_by(|a, b| b.1.spent.cmp(&a.1.spent).then_with(|| a.0.cmp(&b.0)));
    let spend: Vec<Value> = out
        .iter()
        .map(|(tag, t)| {
            json!({
                "individual_request_tag": tag,
                "log_count": t.events,
                "total_spend": usd_value(t.spent),
                "spend_nano_usd": t.spent.0,
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(spend))
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
    fn a_total_is_counted_only_where_one_ledger_scope_holds_the_entries() {
        let f = |key: Option<&str>, team: Option<&str>, customer: Option<&str>, model: Option<&str>| LogFilter {
            key_id: key.map(str::to_owned),
            team_id: team.map(str::to_owned),
            user_id: None,
            customer_id: customer.map(str::to_owned),
            model: model.map(str::to_owned),
        };
        assert_eq!(counted_scope(&f(Some("k"), None, None, None)).as_deref(), Some("key/k"));
        assert_eq!(counted_scope(&f(None, Some("t"), None, Some("m/x"))).as_deref(), Some("team/t/model/m/x"));
        assert_eq!(counted_scope(&f(None, None, Some("c"), None)).as_deref(), Some("customer/c"));
        assert_eq!(counted_scope(&f(Some("k"), Some("t"), None, None)), None, "two tenants");
        assert_eq!(counted_scope(&f(None, None, None, Some("m"))), None, "no tenant");
    }

    #[test]
    fn scopes_split_into_kind_id_and_model() {
        assert_eq!(parse_scope("team/pay/model/gpt-4o"), Some(("team", "pay", Some("gpt-4o"))));
        assert_eq!(parse_scope("key/abc"), Some(("key", "abc", None)));
        assert_eq!(parse_scope("nonsense"), None);
    }

    fn total(spent: i64, events: i64) -> SpendTotal {
        SpendTotal { spent: tollgate_schemas::NanoUsd(spent), events, prompt_tokens: events, completion_tokens: 0 }
    }

    #[test]
    fn daily_groups_sum_the_keys_rows_per_model_and_keep_each_tenant_apart() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let rows = vec![
            ("key/a/model/m1".to_owned(), d, total(5, 1)),
            ("key/b/model/m1".to_owned(), d, total(7, 2)),
            ("key/b/model/m2".to_owned(), d, total(1, 1)),
            ("key/b".to_owned(), d, total(8, 3)),
            ("customer/c/model/m1".to_owned(), d, total(7, 2)),
        ];
        let by_model = daily_groups(&rows, "key", false);
        assert_eq!(by_model.len(), 2);
        assert_eq!(by_model[&(d, "", "m1")], total(12, 3));
        let by_customer = daily_groups(&rows, "customer", true);
        assert_eq!(by_customer.keys().collect::<Vec<_>>(), [&(d, "c", "m1")]);
    }

    /// The answer as `/spend/daily` built it before it wrote its results directly: a `Value`
    /// per result from `totals_json`, with `date`, the id field and `model` inserted.
    fn daily_answer_as_values(rows: &[(String, NaiveDate, SpendTotal)], kind: &str, field: Option<&str>) -> Value {
        let mut total = SpendTotal::default();
        let mut results = Vec::new();
        for ((day, id, model), t) in daily_groups(rows, kind, field.is_some()) {
            merge(&mut total, &t);
            let mut v = totals_json(&t);
            if let Value::Object(o) = &mut v {
                o.insert("date".into(), json!(day));
                if let Some(field) = field {
                    o.insert(field.into(), json!(id));
                }
                o.insert("model".into(), json!(model));
            }
            results.push(v);
        }
        json!({"results": results, "totals": totals_json(&total)})
    }

    #[test]
    fn daily_answers_are_byte_for_byte_those_built_from_values() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let mut rows = Vec::new();
        for i in 0..40i64 {
            let day = d + chrono::Days::new(u64::try_from(i % 3).unwrap());
            let spent = SpendTotal {
                // Odd amounts: sub-cent, whole dollars and large sums all print the same way.
                spent: tollgate_schemas::NanoUsd(i * 1_234_567_891 + i % 7),
                events: i,
                prompt_tokens: i * 11,
                completion_tokens: i * 5,
            };
            for (kind, id) in
                [("team", "t"), ("key", "k"), ("customer", "c"), ("org", "o"), ("tag", "x"), ("user", "u")]
            {
                rows.push((format!("{kind}/{id}-{}/model/m{}", i % 4, i % 3), day, spent));
                rows.push((format!("{kind}/{id}-{}", i % 4), day, spent));
            }
            rows.push((format!("global/all/model/openai/m{}", i % 2), day, spent));
        }
        rows.push(("team/\"<script>\"/model/m\u{e9}".to_owned(), d, total(i64::MAX / 4, 1)));
        let grouped = ["key", "team", "user", "customer", "organization", "tag", "model"];
        for group in grouped {
            let q = [("group_by".to_owned(), group.to_owned())].into_iter().collect::<BTreeMap<_, _>>();
            let (kind, field) = daily_group(&q).unwrap();
            let written = serde_json::to_vec(&daily_answer(&rows, kind, field)).unwrap();
            let built = serde_json::to_vec(&daily_answer_as_values(&rows, kind, field)).unwrap();
            assert!(written.len() > 100, "{group}: some results");
            assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(built).unwrap(), "group_by={group}");
        }
    }

    #[test]
    fn a_report_from_range_sums_is_the_report_from_day_rows() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let mut rows = Vec::new();
        for i in 0..90i64 {
            let day = d + chrono::Days::new(u64::try_from(i % 9).unwrap());
            let t = total(i * 987_654_321 + i % 5, i % 4 + 1);
            rows.push((format!("team/t{}", i % 7), day, t));
            rows.push((format!("team/t{}/model/m{}", i % 7, i % 2), day, t));
            rows.push((format!("key/k{}", i % 7), day, t));
        }
        let by_day = report_groups(rows.iter().map(|(s, _, t)| (s.as_str(), t)), "team");
        let summed = tollgate_schemas::store::sum_days(rows.clone());
        let by_range = report_groups(summed.iter().map(|(s, t)| (s.as_str(), t)), "team");
        assert_eq!(by_day.len(), 7);
        assert_eq!(report_json(&by_day, "team", "team_id"), report_json(&by_range, "team", "team_id"));
        let spent: i64 = rows
            .iter()
            .filter(|(s, _, _)| !s.contains('/') || s.matches('/').count() == 1)
            .filter(|(s, _, _)| s.starts_with("team/"))
            .map(|(_, _, t)| t.spent.0)
            .sum();
        assert_eq!(by_range.iter().map(|g| g.1.spent.0).sum::<i64>(), spent);
        // A page of it is that part of the whole list.
        let page = crate::http::spend_range::Page { offset: 2, limit: 3 };
        assert_eq!(page.slice(&by_range), &by_range[2..5]);
    }

    #[test]
    fn daily_group_by_is_checked() {
        let q = |v: &str| [("group_by".to_owned(), v.to_owned())].into_iter().collect::<BTreeMap<_, _>>();
        assert_eq!(daily_group(&q("model")).unwrap(), ("global", None));
        assert_eq!(daily_group(&q("organization")).unwrap(), ("org", Some("organization_id")));
        assert_eq!(daily_group(&q("tag")).unwrap(), ("tag", Some("tag")));
        assert!(
            matches!(daily_group(&q("tags")), Err(GatewayError::InvalidField { field, .. }) if field == "group_by")
        );
    }
}
