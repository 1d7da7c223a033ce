//! Opening balances (`import-litellm --spend`): LiteLLM's running `spend` of each key, team,
//! user, organization and end user, carried into Tollgate's ledgers through the metering path
//! itself, as one usage event per owner (docs/design.md §3.7).
//!
//! - **Once.** The event id is a UUIDv5 of the owner and its current budget window, and the
//!   event's `occurred_at` is the start of that window: a re-run within the window publishes
//!   the same event, which the ledger counts once (§4.3). A later window gets a new balance.
//! - **Where it lands.** `occurred_at` lies in the owner's current budget window, so the
//!   balance counts against the budget the owner has now. An owner without a budget duration
//!   has all-time spend: its event is dated at its creation in LiteLLM (or 2000-01-01).
//! - **Only its owner.** A key's balance names only the key; a team's only the team (with the
//!   key id `litellm-import`): LiteLLM keeps each owner's spend apart, and a key event naming
//!   the team would count the key's spend twice in the team's total.
//! - **Told apart from traffic** by `gateway_id` `litellm-import` (CloudEvents source
//!   `/tollgate/gateway/litellm-import`), `requested_model` `litellm-opening-balance` and a
//!   `request_id` starting `litellm-import-`; no tokens, status 200.
//! - **From the logs** (`--spend-logs`): the amount is the owner's `LiteLLM_SpendLogs` since its
//!   window's start instead of its running `spend`.
//! - **Not carried**: spend whose LiteLLM period is over (`budget_reset_at` in the past: LiteLLM
//!   would reset it on its next pass), and `model_spend`.

use super::map::{self, Refused};
use super::report::SpendCounts;
use super::rows::LiteDatabase;
use super::ImportError;
use crate::metering::sink::{SinkError, UsageSink};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tollgate_schemas::tenancy::{budget_window, BudgetDuration, Kind};
use tollgate_schemas::{NanoUsd, UsageEvent, USAGE_EVENT_VERSION};
use uuid::Uuid;

/// The `gateway_id` of opening balances.
pub const GATEWAY_ID: &str = "litellm-import";
/// The key id of opening balances of teams, users, organizations and customers.
pub const IMPORT_KEY_ID: &str = "litellm-import";
/// The `requested_model` of opening balances.
pub const MODEL: &str = "litellm-opening-balance";
/// The namespace of opening balances' event ids (UUIDv5).
const NAMESPACE: Uuid = Uuid::from_u128(0x6c69_7465_6c6c_6d2d_696d_706f_7274_0001);

/// One owner's running spend in LiteLLM.
#[derive(Clone, Debug)]
pub struct Opening {
    pub kind: Kind,
    pub id: String,
    pub spend: f64,
    pub duration: Option<String>,
    pub budget_id: Option<String>,
    pub reset_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

/// Every owner with a running spend, keys first.
pub fn openings(db: &LiteDatabase) -> Vec<Opening> {
    let o =
        |kind, id: &str, spend, duration: &Option<String>, budget_id: &Option<String>, reset_at, created_at| Opening {
            kind,
            id: id.to_owned(),
            spend,
            duration: duration.clone(),
            budget_id: budget_id.clone(),
            reset_at,
            created_at,
        };
    let none = None;
    let mut out = Vec::new();
    for k in &db.keys {
        let id = k.token.to_ascii_lowercase();
        out.push(o(Kind::Key, &id, k.spend, &k.budget_duration, &k.budget_id, k.budget_reset_at, k.created_at));
    }
    for t in &db.teams {
        out.push(o(Kind::Team, &t.team_id, t.spend, &t.budget_duration, &none, t.budget_reset_at, t.created_at));
    }
    for u in &db.users {
        out.push(o(Kind::User, &u.user_id, u.spend, &u.budget_duration, &none, u.budget_reset_at, u.created_at));
    }
    for g in &db.organizations {
        out.push(o(Kind::Organization, &g.organization_id, g.spend, &none, &g.budget_id, None, g.created_at));
    }
    for c in &db.end_users {
        out.push(o(Kind::Customer, &c.user_id, c.spend, &none, &c.budget_id, None, None));
    }
    out
}

/// The first instant of the window of `duration` that contains `at`.
fn window_start(duration: BudgetDuration, at: DateTime<Utc>) -> DateTime<Utc> {
    match duration {
        BudgetDuration::Seconds(s) => {
            let secs = u64::try_from(at.timestamp()).unwrap_or(0);
            let start = i64::try_from(secs / s * s).unwrap_or(0);
            Utc.timestamp_opt(start, 0).single().unwrap_or(at)
        }
        BudgetDuration::Months(n) => {
            let months = u32::try_from((at.year() - 1970) * 12).unwrap_or(0) + at.month0();
            let m = months / n * n;
            let year = 1970 + i32::try_from(m / 12).unwrap_or(0);
            Utc.with_ymd_and_hms(year, m % 12 + 1, 1, 0, 0, 0).single().unwrap_or(at)
        }
    }
}

/// When a balance without a budget window is dated: LiteLLM's creation time, within the years
/// the ledger accepts, else 2000-01-01.
fn all_time_date(created_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    let floor = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().unwrap_or(now);
    created_at.filter(|c| *c >= floor && *c <= now).unwrap_or(floor)
}

/// Where an owner's balance lands: its budget duration (none: all time) and `occurred_at`,
/// the start of its current window (for all time, its creation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub duration: Option<BudgetDuration>,
    pub occurred_at: DateTime<Utc>,
}

impl Window {
    /// `o`'s window at `now`. `budget_durations`: the durations of LiteLLM's budget table, by
    /// `budget_id` (an owner without a duration of its own takes its budget's).
    pub fn of(
        o: &Opening,
        budget_durations: &HashMap<String, Option<String>>,
        now: DateTime<Utc>,
    ) -> Result<Window, Refused> {
        let text =
            o.duration.clone().or_else(|| o.budget_id.as_ref().and_then(|b| budget_durations.get(b).cloned()?));
        let duration = map::duration("budget_duration", text.as_deref())?;
        let occurred_at = duration.map_or_else(|| all_time_date(o.created_at, now), |d| window_start(d, now));
        Ok(Window { duration, occurred_at })
    }

    /// Since when spend logs count in this window: its start, or for all time, ever.
    pub fn since(&self) -> DateTime<Utc> {
        match self.duration {
            Some(_) => self.occurred_at,
            None => DateTime::<Utc>::UNIX_EPOCH,
        }
    }
}

/// The opening balance of `o` from its running `spend` at `now`: `None` when there is nothing
/// to carry (no spend, or its LiteLLM period is over).
pub fn event_of(
    o: &Opening,
    budget_durations: &HashMap<String, Option<String>>,
    now: DateTime<Utc>,
) -> Result<Option<UsageEvent>, Refused> {
    let spent = map::spend_nanos(o.spend)?;
    if o.reset_at.is_some_and(|r| r <= now) {
        return Ok(None);
    }
    event_at(o, Window::of(o, budget_durations, now)?, spent, now)
}

/// The opening balance of `o`: `spent` in `window`, as a usage event; `None` for nothing.
pub fn event_at(
    o: &Opening,
    window: Window,
    spent: NanoUsd,
    now: DateTime<Utc>,
) -> Result<Option<UsageEvent>, Refused> {
    if spent == NanoUsd::ZERO {
        return Ok(None);
    }
    if spent > tollgate_schemas::limits::MAX_COST_PER_REQUEST {
        return Err(format!("spend: {} USD is above what one event may carry", spent.as_usd_display()));
    }
    let Window { duration, occurred_at } = window;
    let scope_kind = o.kind.scope_kind();
    let window_id = budget_window(duration, now);
    let event_id = Uuid::new_v5(&NAMESPACE, format!("{scope_kind}/{}|{window_id}", o.id).as_bytes());
    let named = |kind: Kind| (o.kind == kind).then(|| o.id.clone());
    let key_id = if o.kind == Kind::Key { o.id.clone() } else { IMPORT_KEY_ID.to_owned() };
    let budget_windows: BTreeMap<String, Vec<String>> =
        duration.map(|d| (format!("{scope_kind}/{}", o.id), vec![d.to_string()])).into_iter().collect();
    Ok(Some(UsageEvent {
        version: USAGE_EVENT_VERSION,
        event_id,
        occurred_at,
        gateway_id: GATEWAY_ID.to_owned(),
        request_id: format!("litellm-import-{event_id}"),
        key_id,
        key_alias: None,
        team_id: named(Kind::Team),
        user_id: named(Kind::User),
        customer_id: named(Kind::Customer),
        organization_id: named(Kind::Organization),
        requested_model: MODEL.to_owned(),
        cost_nano_usd: spent,
        status: 200,
        budget_windows,
        ..UsageEvent::default()
    }))
}

/// The opening balances of `db` at `now` from the running `spend` columns, counted, and the
/// events to publish.
pub fn balances(db: &LiteDatabase, now: DateTime<Utc>) -> (SpendCounts, Vec<UsageEvent>) {
    let durations = budget_durations(db);
    tally(openings(db).iter().map(|o| (o, event_of(o, &durations, now))))
}

/// The opening balances of `db` at `now` from `LiteLLM_SpendLogs`: each owner's spend since
/// the start of its current Tollgate window (all of it for an owner without a duration).
pub async fn balances_from_logs(
    db: &LiteDatabase,
    client: &tokio_postgres::Client,
    now: DateTime<Utc>,
) -> Result<(SpendCounts, Vec<UsageEvent>), ImportError> {
    let durations = budget_durations(db);
    let owners = openings(db);
    // One query per (owner column, window start): a handful, whatever the number of owners.
    let mut sums: HashMap<(&'static str, DateTime<Utc>), HashMap<String, String>> = HashMap::new();
    let mut results = Vec::with_capacity(owners.len());
    for o in &owners {
        let window = match Window::of(o, &durations, now) {
            Ok(w) => w,
            Err(why) => {
                results.push((o, Err(why)));
                continue;
            }
        };
        let column = super::postgres::spend_log_column(o.kind);
        let since = window.since();
        let by_owner = match sums.entry((column, since)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(super::postgres::spend_since(client, column, since).await?)
            }
        };
        let text = by_owner.get(&o.id).map_or("0", String::as_str);
        results.push((o, map::decimal_spend_nanos(text).and_then(|spent| event_at(o, window, spent, now))));
    }
    Ok(tally(results.into_iter()))
}

fn budget_durations(db: &LiteDatabase) -> HashMap<String, Option<String>> {
    db.budgets.iter().map(|b| (b.budget_id.clone(), b.budget_duration.clone())).collect()
}

fn tally<'a>(
    results: impl Iterator<Item = (&'a Opening, Result<Option<UsageEvent>, Refused>)>,
) -> (SpendCounts, Vec<UsageEvent>) {
    let mut counts = SpendCounts::default();
    let mut events = Vec::new();
    for (o, result) in results {
        match result {
            Ok(Some(e)) => {
                counts.published += 1;
                counts.carried_nano_usd = counts.carried_nano_usd.saturating_add(e.cost_nano_usd.0);
                events.push(e);
            }
            Ok(None) => counts.nothing_to_carry += 1,
            Err(why) => counts.refused.push((format!("{}/{}", o.kind.scope_kind(), o.id), why)),
        }
    }
    (counts, events)
}

/// Publishes `events` through `sink` (waiting while its backlog is full), then flushes it.
pub async fn publish(
    sink: std::sync::Arc<dyn UsageSink>,
    events: Vec<UsageEvent>,
    timeout: Duration,
) -> Result<(), ImportError> {
    for event in events {
        loop {
            match sink.admit() {
                Ok(permit) => {
                    // Nobody waits for an imported balance (`answer_after: queued`).
                    let _imported = sink.publish(permit, event);
                    break;
                }
                Err(SinkError::Full) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(ImportError::Spend(e.to_string())),
            }
        }
    }
    // The sink's writer thread does the waiting; keep it off the runtime's threads.
    match tokio::task::spawn_blocking(move || sink.flush(timeout)).await {
        Ok(flushed) => flushed.map_err(|e| ImportError::Spend(e.to_string())),
        Err(e) => Err(ImportError::Spend(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn opening(kind: Kind, duration: Option<&str>) -> Opening {
        Opening {
            kind,
            id: "team-a".into(),
            spend: 3.5,
            duration: duration.map(str::to_owned),
            budget_id: None,
            reset_at: None,
            created_at: Some(at("2025-02-03T04:05:06Z")),
        }
    }

    #[test]
    fn a_balance_lands_at_the_start_of_its_owner_s_current_window_once() {
        let none = HashMap::new();
        let now = at("2026-12-06T10:00:00Z");
        let e = event_of(&opening(Kind::Team, Some("1mo")), &none, now).unwrap().unwrap();
        assert_eq!(e.occurred_at, at("2026-12-01T00:00:00Z"));
        assert_eq!((e.team_id.as_deref(), e.key_id.as_str()), (Some("team-a"), IMPORT_KEY_ID));
        assert_eq!((e.user_id.clone(), e.customer_id.clone(), e.organization_id.clone()), (None, None, None));
        assert_eq!(e.cost_nano_usd, NanoUsd(3_500_000_000));
        assert_eq!(e.budget_windows.get("team/team-a"), Some(&vec!["1mo".to_owned()]));
        assert!(tollgate_schemas::limits::check_event(&e).is_ok(), "the consumer must accept it");
        // Later in the same window: the same event. In the next window: a new one.
        let again = event_of(&opening(Kind::Team, Some("1mo")), &none, at("2026-12-30T23:00:00Z")).unwrap().unwrap();
        assert_eq!(again, e);
        let next = event_of(&opening(Kind::Team, Some("1mo")), &none, at("2027-01-01T00:00:00Z")).unwrap().unwrap();
        assert_ne!(next.event_id, e.event_id);
        // 30-day windows are epoch-aligned.
        let e30 = event_of(&opening(Kind::Team, Some("30d")), &none, now).unwrap().unwrap();
        assert_eq!(e30.occurred_at.timestamp() % (30 * 86_400), 0);
        assert!(e30.occurred_at <= now && now.signed_duration_since(e30.occurred_at).num_days() < 30);
    }

    #[test]
    fn all_time_balances_are_dated_at_creation_and_budget_objects_give_the_window() {
        let now = at("2026-12-06T10:00:00Z");
        let e = event_of(&opening(Kind::User, None), &HashMap::new(), now).unwrap().unwrap();
        assert_eq!(e.occurred_at, at("2025-02-03T04:05:06Z"));
        assert!(e.budget_windows.is_empty());
        let old = Opening { created_at: Some(at("1999-01-01T00:00:00Z")), ..opening(Kind::Customer, None) };
        let e = event_of(&old, &HashMap::new(), now).unwrap().unwrap();
        assert_eq!(e.occurred_at, at("2000-01-01T00:00:00Z"), "the ledger accepts years from 2000");
        let durations = HashMap::from([("b".to_owned(), Some("1d".to_owned()))]);
        let via = Opening { budget_id: Some("b".into()), ..opening(Kind::Organization, None) };
        let e = event_of(&via, &durations, now).unwrap().unwrap();
        assert_eq!((e.occurred_at, e.organization_id.as_deref()), (at("2026-12-06T00:00:00Z"), Some("team-a")));
    }

    #[test]
    fn nothing_is_carried_without_spend_or_after_litellm_s_period_ended() {
        let now = at("2026-12-06T10:00:00Z");
        let zero = Opening { spend: 0.0, ..opening(Kind::Key, Some("1d")) };
        assert_eq!(event_of(&zero, &HashMap::new(), now), Ok(None));
        let over = Opening { reset_at: Some(at("2026-12-06T09:00:00Z")), ..opening(Kind::Key, Some("1d")) };
        assert_eq!(event_of(&over, &HashMap::new(), now), Ok(None));
        let huge = Opening { spend: 2e9, ..opening(Kind::Key, Some("1d")) };
        assert!(event_of(&huge, &HashMap::new(), now).is_err());
    }
}
