//! Tenancy records: virtual keys, teams, internal users, customers, organizations and reusable
//! budgets, as stored (one JSON document per record, see `cql/004_tenancy.cql`) and read by the
//! gateway (enforcement, admin API) and the ledger consumer (budget push-back).
//!
//! Money is nano-USD here; the admin API converts LiteLLM's dollar amounts exactly at its edge.
//! Budget windows are UTC and aligned to the Unix epoch (see [`BudgetDuration`]).

use crate::ledger::{day_window, month_window, ALL_TIME};
use crate::NanoUsd;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The kinds of tenancy record; each has a table of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Key,
    Team,
    User,
    Customer,
    Organization,
    Budget,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::Key, Kind::Team, Kind::User, Kind::Customer, Kind::Organization, Kind::Budget];

    /// The CQL table of this kind.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Key => "tenancy_keys",
            Kind::Team => "tenancy_teams",
            Kind::User => "tenancy_users",
            Kind::Customer => "tenancy_customers",
            Kind::Organization => "tenancy_organizations",
            Kind::Budget => "tenancy_budgets",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Team => "team",
            Kind::User => "user",
            Kind::Customer => "customer",
            Kind::Organization => "organization",
            Kind::Budget => "budget",
        }
    }

    /// The kind named `text` (as [`Kind::as_str`] writes it).
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The ledger scope kind of records of this kind (`org` for organizations, as in the ledger).
    pub fn scope_kind(self) -> &'static str {
        match self {
            Kind::Organization => "org",
            other => other.as_str(),
        }
    }
}

/// How long a budget lasts before it starts again.
///
/// `Ns`, `Nm`, `Nh` and `Nd` are fixed lengths; their windows are aligned to the Unix epoch in
/// UTC (so `1d` is the UTC calendar day). `Nmo` is N UTC calendar months, aligned to January
/// 1970 (so `1mo` is the calendar month). Budgets without a duration never reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BudgetDuration {
    Seconds(u64),
    Months(u32),
}

/// The longest duration accepted: 36,500 days.
const MAX_SECONDS: u64 = 36_500 * 86_400;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a budget duration: use a positive whole number followed by s, m, h, d or mo (e.g. 30s, 30m, 30h, 30d, 1mo)")]
pub struct BadDuration(pub String);

impl BudgetDuration {
    pub fn parse(text: &str) -> Result<BudgetDuration, BadDuration> {
        let bad = || BadDuration(text.to_owned());
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = t.split_at(split);
        let n: u64 = number.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        // At most about a century, so every window end and expiry is a representable time.
        let seconds =
            |per: u64| n.checked_mul(per).filter(|s| *s <= MAX_SECONDS).map(BudgetDuration::Seconds).ok_or_else(bad);
        match unit {
            "s" => seconds(1),
            "m" => seconds(60),
            "h" => seconds(3_600),
            "d" => seconds(86_400),
            "mo" => u32::try_from(n).ok().filter(|n| *n <= 1200).map(BudgetDuration::Months).ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    /// The ledger window (`window_id` of Layer 2) that `at` falls in. `1d` and `1mo` are the
    /// ledger's day and month windows, so they cost no extra rows.
    pub fn window_of(self, at: DateTime<Utc>) -> String {
        match self {
            BudgetDuration::Seconds(86_400) => day_window(at),
            BudgetDuration::Months(1) => month_window(at),
            BudgetDuration::Seconds(s) => {
                let secs = u64::try_from(at.timestamp()).unwrap_or(0);
                format!("p{s}s:{}", secs / s)
            }
            BudgetDuration::Months(n) => format!("p{n}mo:{}", months_since_epoch(at) / n),
        }
    }

    /// When the window containing `at` ends (the budget's next reset).
    pub fn window_end(self, at: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            BudgetDuration::Seconds(s) => {
                let secs = u64::try_from(at.timestamp()).unwrap_or(0);
                let end = (secs / s + 1).saturating_mul(s);
                Utc.timestamp_opt(i64::try_from(end).unwrap_or(i64::MAX), 0).single().unwrap_or(at)
            }
            BudgetDuration::Months(n) => {
                let m = (months_since_epoch(at) / n + 1) * n;
                let (year, month) = (1970 + i32::try_from(m / 12).unwrap_or(0), m % 12 + 1);
                Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().unwrap_or(at)
            }
        }
    }
}

fn months_since_epoch(at: DateTime<Utc>) -> u32 {
    let months = (at.year() - 1970) * 12 + i32::try_from(at.month0()).unwrap_or(0);
    u32::try_from(months).unwrap_or(0)
}

impl fmt::Display for BudgetDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BudgetDuration::Months(n) => write!(f, "{n}mo"),
            BudgetDuration::Seconds(s) if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            BudgetDuration::Seconds(s) if s % 3_600 == 0 => write!(f, "{}h", s / 3_600),
            BudgetDuration::Seconds(s) if s % 60 == 0 => write!(f, "{}m", s / 60),
            BudgetDuration::Seconds(s) => write!(f, "{s}s"),
        }
    }
}

impl Serialize for BudgetDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BudgetDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        BudgetDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The window id of a budget with `duration` (all time when it has none).
pub fn budget_window(duration: Option<BudgetDuration>, at: DateTime<Utc>) -> String {
    duration.map_or_else(|| ALL_TIME.to_owned(), |d| d.window_of(at))
}

/// When the window with this id ends (`None` for all time or an id this build does not know).
pub fn window_end(window_id: &str) -> Option<DateTime<Utc>> {
    if let Some(day) = window_id.strip_prefix("d:") {
        let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
        return Some(date.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc());
    }
    if let Some(month) = window_id.strip_prefix("m:") {
        let start = chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()?;
        return Some(BudgetDuration::Months(1).window_end(start.and_hms_opt(0, 0, 0)?.and_utc()));
    }
    let rest = window_id.strip_prefix('p')?;
    let (len, index) = rest.split_once(':')?;
    let index: u64 = index.parse().ok()?;
    if let Some(secs) = len.strip_suffix("mo") {
        let n: u64 = secs.parse().ok()?;
        let m = (index + 1).checked_mul(n)?;
        return Utc
            .with_ymd_and_hms(1970 + i32::try_from(m / 12).ok()?, u32::try_from(m % 12).ok()? + 1, 1, 0, 0, 0)
            .single();
    }
    let secs: u64 = len.strip_suffix('s')?.parse().ok()?;
    Utc.timestamp_opt(i64::try_from((index + 1).checked_mul(secs)?).ok()?, 0).single()
}

/// Budgets and limits; every tenancy record carries them (LiteLLM field names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Hard budget: requests are refused once spend in the current window reaches it.
    pub max_budget: Option<NanoUsd>,
    /// Soft budget: crossing it only notifies.
    pub soft_budget: Option<NanoUsd>,
    pub budget_duration: Option<BudgetDuration>,
    /// Per-model hard budgets, in the same window as `max_budget`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub model_max_budget: BTreeMap<String, NanoUsd>,
    pub tpm_limit: Option<u64>,
    pub rpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub model_rpm_limit: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub model_tpm_limit: BTreeMap<String, u64>,
    /// Spend thresholds, in percent of `max_budget`, that are announced when crossed
    /// (budget-state topic and webhooks). Empty means the deployment's default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alert_thresholds: Vec<u8>,
    /// A reusable budget whose fields apply where this record sets none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<String>,
}

impl Limits {
    /// These limits with every unset field taken from `budget` (a reusable budget object).
    pub fn with_defaults(&self, budget: &Limits) -> Limits {
        let mut merged = self.clone();
        merged.max_budget = merged.max_budget.or(budget.max_budget);
        merged.soft_budget = merged.soft_budget.or(budget.soft_budget);
        merged.budget_duration = merged.budget_duration.or(budget.budget_duration);
        merged.tpm_limit = merged.tpm_limit.or(budget.tpm_limit);
        merged.rpm_limit = merged.rpm_limit.or(budget.rpm_limit);
        merged.max_parallel_requests = merged.max_parallel_requests.or(budget.max_parallel_requests);
        if merged.model_max_budget.is_empty() {
            merged.model_max_budget = budget.model_max_budget.clone();
        }
        if merged.model_rpm_limit.is_empty() {
            merged.model_rpm_limit = budget.model_rpm_limit.clone();
        }
        if merged.model_tpm_limit.is_empty() {
            merged.model_tpm_limit = budget.model_tpm_limit.clone();
        }
        if merged.alert_thresholds.is_empty() {
            merged.alert_thresholds = budget.alert_thresholds.clone();
        }
        merged
    }

    /// Whether any spend budget is set.
    pub fn has_budget(&self) -> bool {
        self.max_budget.is_some() || self.soft_budget.is_some() || !self.model_max_budget.is_empty()
    }
}

/// A team member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    #[serde(default = "default_role")]
    pub role: String,
}

fn default_role() -> String {
    "user".to_owned()
}

pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A virtual key; the key itself is never stored. It is stored under its lookup hash
/// (HMAC-SHA-256 with the gateways' secret over the key's SHA-256, see the gateway's
/// `auth::KeyHasher`), and known everywhere else by `key_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyRecord {
    /// The key's identity in usage events, ledger scopes (`key/<key_id>`) and the admin API
    /// (LiteLLM's `token`): its lookup hash, or for a key stored before the server secret (or
    /// imported from LiteLLM) the SHA-256 hex it had then, so its spend history continues.
    pub key_id: String,
    /// Where the record is stored when that is not `key_id`: the lookup hash of a key that was
    /// rehashed from its SHA-256 on first use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_id: Option<String>,
    /// The key's first and last characters (`sk-...abcd`), to recognise it.
    pub key_name: String,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    /// Allowed models or access groups; empty means every model the team allows.
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    pub expires: Option<DateTime<Utc>>,
    pub blocked: bool,
    pub metadata: Metadata,
    pub tags: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Set when the key was regenerated: the key that replaced it (it stays valid until
    /// `expires`, the grace period).
    pub replaced_by: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TeamRecord {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub organization_id: Option<String>,
    pub models: Vec<String>,
    pub members: Vec<Member>,
    #[serde(flatten)]
    pub limits: Limits,
    pub blocked: bool,
    pub metadata: Metadata,
    pub tags: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// An internal user (a person or service that owns keys).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserRecord {
    pub user_id: String,
    pub user_email: Option<String>,
    pub user_alias: Option<String>,
    /// `proxy_admin` (may use the admin API), `proxy_admin_viewer` (may read it),
    /// `internal_user` (default).
    pub user_role: Option<String>,
    pub organization_id: Option<String>,
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    pub blocked: bool,
    pub metadata: Metadata,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A customer: the end user a request is made for (the request's `user` field or the
/// `x-tollgate-customer-id` header). LiteLLM calls them end users.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomerRecord {
    pub user_id: String,
    pub alias: Option<String>,
    /// The team whose keys may charge this customer (Tollgate's addition to LiteLLM's record).
    pub team_id: Option<String>,
    /// The organization whose keys may charge this customer. A customer with neither is shared:
    /// any key may charge it only under `gateway.shared_customers`.
    pub organization_id: Option<String>,
    #[serde(flatten)]
    pub limits: Limits,
    pub blocked: bool,
    pub metadata: Metadata,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrganizationRecord {
    pub organization_id: String,
    pub organization_alias: Option<String>,
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    pub blocked: bool,
    pub metadata: Metadata,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A reusable budget object that keys, teams, users, customers and organizations can name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetRecord {
    pub budget_id: String,
    #[serde(flatten)]
    pub limits: Limits,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A record stored as one JSON document in its kind's table.
pub trait Record: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: Kind;
    fn id(&self) -> &str;
    fn limits(&self) -> &Limits;
}

macro_rules! record {
    ($ty:ty, $kind:expr, $id:ident) => {
        impl Record for $ty {
            const KIND: Kind = $kind;
            fn id(&self) -> &str {
                &self.$id
            }
            fn limits(&self) -> &Limits {
                &self.limits
            }
        }
    };
}
impl Record for KeyRecord {
    const KIND: Kind = Kind::Key;
    fn id(&self) -> &str {
        self.stored_id.as_deref().unwrap_or(&self.key_id)
    }
    fn limits(&self) -> &Limits {
        &self.limits
    }
}
record!(TeamRecord, Kind::Team, team_id);
record!(UserRecord, Kind::User, user_id);
record!(CustomerRecord, Kind::Customer, user_id);
record!(OrganizationRecord, Kind::Organization, organization_id);
record!(BudgetRecord, Kind::Budget, budget_id);

/// A change to a tenancy record, published on the control topic so every gateway drops its
/// cached copy (and the ledger consumer its budget view).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    pub kind: Kind,
    /// The record's id (for keys: the key hash).
    pub id: String,
    /// When the change was committed, UTC milliseconds (to measure propagation).
    pub at_ms: i64,
}

/// One message of the `budget-state` topic: a scope's total spend in one window, or a
/// consumer's heartbeat. Keyed by `scope|window` (heartbeats: `heartbeat|<consumer>`), so
/// compaction keeps the latest of each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BudgetState {
    Spend {
        scope: String,
        window: String,
        /// The scope's total spend in the window, all Kafka partitions summed. Only grows within
        /// a window: readers keep the maximum they have seen.
        spent_nano_usd: NanoUsd,
        /// The hard budget that applied when the total was computed, if any.
        max_budget_nano_usd: Option<NanoUsd>,
        exceeded: bool,
        /// Highest alert threshold (percent) crossed, if any.
        threshold_pct: Option<u8>,
        at_ms: i64,
    },
    Heartbeat {
        consumer: String,
        at_ms: i64,
        /// The consumer's lag when it sent the heartbeat: usage records of its partitions not
        /// yet folded, summed (librdkafka's statistics). Absent when not known yet, and from
        /// consumers built before it was added.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lag: Option<i64>,
    },
}

impl BudgetState {
    /// The record key on the `budget-state` topic.
    pub fn topic_key(&self) -> String {
        match self {
            BudgetState::Spend { scope, window, .. } => format!("{scope}|{window}"),
            BudgetState::Heartbeat { consumer, .. } => format!("heartbeat|{consumer}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_litellm_durations() {
        assert_eq!(BudgetDuration::parse("30s"), Ok(BudgetDuration::Seconds(30)));
        assert_eq!(BudgetDuration::parse("30m"), Ok(BudgetDuration::Seconds(1_800)));
        assert_eq!(BudgetDuration::parse("30h"), Ok(BudgetDuration::Seconds(108_000)));
        assert_eq!(BudgetDuration::parse("30d"), Ok(BudgetDuration::Seconds(2_592_000)));
        assert_eq!(BudgetDuration::parse("1mo"), Ok(BudgetDuration::Months(1)));
        for bad in
            ["", "0d", "-1d", "1.5d", "d", "10", "3w", "1 d", "99999999999999999999999s", "9999999999999999s", "36501d"]
        {
            assert!(BudgetDuration::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(BudgetDuration::parse("30d").unwrap().to_string(), "30d");
        assert_eq!(BudgetDuration::parse("90s").unwrap().to_string(), "90s");
    }

    #[test]
    fn windows_are_epoch_aligned_utc() {
        let t = at("2026-11-23T10:00:29Z");
        let d30s = BudgetDuration::Seconds(30);
        assert_eq!(d30s.window_of(t), d30s.window_of(at("2026-11-23T10:00:00Z")));
        assert_ne!(d30s.window_of(t), d30s.window_of(at("2026-11-23T10:00:30Z")));
        assert_eq!(d30s.window_end(t), at("2026-11-23T10:00:30Z"));
        assert_eq!(BudgetDuration::Seconds(86_400).window_of(t), "d:2026-11-23");
        assert_eq!(BudgetDuration::Months(1).window_of(t), "m:2026-11");
        assert_eq!(BudgetDuration::Months(1).window_end(t), at("2026-12-01T00:00:00Z"));
        assert_eq!(BudgetDuration::Months(3).window_end(t), at("2027-01-01T00:00:00Z"));
        assert_eq!(BudgetDuration::Months(12).window_end(t), at("2027-01-01T00:00:00Z"));
        assert_eq!(budget_window(None, t), ALL_TIME);
        for d in [d30s, BudgetDuration::Seconds(86_400), BudgetDuration::Months(1), BudgetDuration::Months(3)] {
            assert_eq!(window_end(&d.window_of(t)), Some(d.window_end(t)), "{d}");
        }
        assert_eq!(window_end(ALL_TIME), None);
    }

    #[test]
    fn limits_take_unset_fields_from_a_budget_object() {
        let own = Limits { max_budget: Some(NanoUsd(5)), ..Limits::default() };
        let shared = Limits { max_budget: Some(NanoUsd(9)), rpm_limit: Some(10), ..Limits::default() };
        let merged = own.with_defaults(&shared);
        assert_eq!(merged.max_budget, Some(NanoUsd(5)));
        assert_eq!(merged.rpm_limit, Some(10));
    }

    #[test]
    fn records_round_trip_as_json_documents() {
        let key = KeyRecord {
            key_id: "ab".into(),
            limits: Limits {
                max_budget: Some(NanoUsd(10)),
                budget_duration: Some(BudgetDuration::Months(1)),
                ..Limits::default()
            },
            ..KeyRecord::default()
        };
        let doc = serde_json::to_string(&key).unwrap();
        assert!(doc.contains(r#""budget_duration":"1mo""#), "{doc}");
        assert_eq!(serde_json::from_str::<KeyRecord>(&doc).unwrap(), key);
        let state = BudgetState::Heartbeat { consumer: "c1".into(), at_ms: 5, lag: None };
        assert_eq!(state.topic_key(), "heartbeat|c1");
    }
}
