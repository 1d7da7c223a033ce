//! LiteLLM's rows → Tollgate's tenancy records: pure functions, one per table.
//!
//! Each takes the record as Tollgate already stores it (or a default one) and overwrites only
//! what LiteLLM's row says, so fields LiteLLM has no column for (tags, alert thresholds, a
//! customer's team) survive a re-run. Every value is checked against the bounds the admin API
//! applies (`tollgate_schemas::limits`); a row that breaks one is refused with the reason,
//! never stored half-valid. Money is converted exactly (see [`usd`]); nothing goes through a
//! float multiplication.

use super::rows::{LiteBudget, LiteEndUser, LiteKey, LiteOrganization, LiteTeam, LiteUser};
use serde_json::Value;
use std::collections::BTreeMap;
use tollgate_schemas::limits;
use tollgate_schemas::tenancy::{
    BudgetDuration, BudgetRecord, CustomerRecord, KeyRecord, Limits, Member, Metadata, OrganizationRecord, TeamRecord,
    UserRecord,
};
use tollgate_schemas::NanoUsd;

/// Why a row is not imported (shown in the report; never holds a key).
pub type Refused = String;

// === Values ===

/// A budget in USD as LiteLLM stores it (a `double precision`) to exact nano-USD: through its
/// shortest decimal text, which is what the admin typed. More than nine decimals is refused.
pub fn usd(field: &str, value: Option<f64>) -> Result<Option<NanoUsd>, Refused> {
    let Some(v) = value else { return Ok(None) };
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{field}: {v} is not a non-negative amount"));
    }
    NanoUsd::parse_usd(&format!("{v}")).map(Some).map_err(|_| format!("{field}: {v} USD is not a whole nano-USD"))
}

/// Spend in USD (a running float sum in LiteLLM, so it often has more than nine decimals) to
/// nano-USD, rounded half up on its shortest decimal text: exact decimal arithmetic, no float
/// multiplication.
pub fn spend_nanos(value: f64) -> Result<NanoUsd, Refused> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!("spend: {value} is not a non-negative amount"));
    }
    decimal_spend_nanos(&format!("{value}"))
}

/// Spend as decimal text (`12.3456789012`, as PostgreSQL writes a `numeric` sum) to nano-USD,
/// rounded half up.
pub fn decimal_spend_nanos(text: &str) -> Result<NanoUsd, Refused> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return Err(format!("spend: {text:?} is not a non-negative decimal amount"));
    }
    let too_large = || format!("spend: {text} USD is too large");
    let whole: i64 = whole.parse().map_err(|_| too_large())?;
    let mut nanos: i64 = format!("{:0<9}", frac.get(..9).unwrap_or(frac)).parse().map_err(|_| too_large())?;
    if frac.as_bytes().get(9).is_some_and(|d| *d >= b'5') {
        nanos += 1;
    }
    whole.checked_mul(1_000_000_000).and_then(|w| w.checked_add(nanos)).map(NanoUsd).ok_or_else(too_large)
}

/// LiteLLM's `budget_duration` (`30s`, `30m`, `30h`, `30d`, `1mo`, and weeks `2w`, which
/// Tollgate writes in days).
pub fn duration(field: &str, text: Option<&str>) -> Result<Option<BudgetDuration>, Refused> {
    let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    let parsed = match t.strip_suffix('w').and_then(|n| n.parse::<u64>().ok()) {
        Some(weeks) => BudgetDuration::parse(&format!("{}d", weeks.saturating_mul(7))),
        None => BudgetDuration::parse(t),
    };
    parsed.map(Some).map_err(|e| format!("{field}: {e}"))
}

fn count(field: &str, value: Option<i64>) -> Result<Option<u64>, Refused> {
    value.map(|v| u64::try_from(v).map_err(|_| format!("{field}: {v} is negative"))).transpose()
}

fn id(field: &str, value: &str) -> Result<String, Refused> {
    limits::check_id(field, value).map_err(|e| e.to_string())?;
    Ok(value.to_owned())
}

fn optional_id(field: &str, value: Option<&str>) -> Result<Option<String>, Refused> {
    value.filter(|v| !v.is_empty()).map(|v| id(field, v)).transpose()
}

fn name(field: &str, value: Option<&str>) -> Result<Option<String>, Refused> {
    let Some(v) = value.filter(|v| !v.is_empty()) else { return Ok(None) };
    limits::check_name(field, v, limits::MAX_NAME_BYTES).map_err(|e| e.to_string())?;
    Ok(Some(v.to_owned()))
}

fn models(field: &str, list: &[String]) -> Result<Vec<String>, Refused> {
    list.iter().filter_map(|m| name(field, Some(m)).transpose()).collect()
}

/// A JSON `metadata` column: an object within the admin API's bound; null is empty.
fn metadata(field: &str, value: Option<&Value>) -> Result<Metadata, Refused> {
    match value {
        None | Some(Value::Null) => Ok(Metadata::new()),
        Some(Value::Object(o)) => {
            limits::check_metadata(field, &Value::Object(o.clone())).map_err(|e| e.to_string())?;
            Ok(o.clone())
        }
        Some(_) => Err(format!("{field}: not a JSON object")),
    }
}

/// `model_max_budget`: `{"model": 10.0}` or LiteLLM's newer `{"model": {"budget_limit": 10.0,
/// "time_period": "1d"}}`. Tollgate's per-model budgets share the record's window, so
/// `time_period` is not carried.
fn model_budgets(value: Option<&Value>) -> Result<BTreeMap<String, NanoUsd>, Refused> {
    let Some(Value::Object(o)) = value else { return Ok(BTreeMap::new()) };
    let mut out = BTreeMap::new();
    for (model, v) in o {
        let model = name("model_max_budget", Some(model))?.unwrap_or_default();
        let amount = match v {
            Value::Number(n) => n.as_f64(),
            Value::Object(b) => b.get("budget_limit").and_then(Value::as_f64),
            _ => None,
        };
        if let Some(a) = usd(&format!("model_max_budget.{model}"), amount)? {
            out.insert(model, a);
        }
    }
    Ok(out)
}

/// The limit columns every table shares.
struct LiteLimits<'a> {
    max_budget: Option<f64>,
    soft_budget: Option<f64>,
    budget_duration: Option<&'a str>,
    model_max_budget: Option<&'a Value>,
    tpm_limit: Option<i64>,
    rpm_limit: Option<i64>,
    max_parallel_requests: Option<i32>,
    budget_id: Option<&'a str>,
}

/// The [`LiteLimits`] of a row with LiteLLM's common limit columns.
macro_rules! lite_limits {
    ($row:expr, soft_budget: $soft:expr, budget_id: $budget_id:expr) => {
        LiteLimits {
            max_budget: $row.max_budget,
            soft_budget: $soft,
            budget_duration: $row.budget_duration.as_deref(),
            model_max_budget: $row.model_max_budget.as_ref(),
            tpm_limit: $row.tpm_limit,
            rpm_limit: $row.rpm_limit,
            max_parallel_requests: $row.max_parallel_requests,
            budget_id: $budget_id,
        }
    };
}

/// `base` with LiteLLM's limit columns written over it (alert thresholds and per-model rate
/// limits, which LiteLLM's tables lack, are kept).
fn limits_of(l: LiteLimits<'_>, base: &Limits) -> Result<Limits, Refused> {
    let max_parallel = l
        .max_parallel_requests
        .map(|v| u32::try_from(v).map_err(|_| format!("max_parallel_requests: {v} is negative")))
        .transpose()?;
    let limits = Limits {
        max_budget: usd("max_budget", l.max_budget)?,
        soft_budget: usd("soft_budget", l.soft_budget)?,
        budget_duration: duration("budget_duration", l.budget_duration)?,
        model_max_budget: model_budgets(l.model_max_budget)?,
        tpm_limit: count("tpm_limit", l.tpm_limit)?,
        rpm_limit: count("rpm_limit", l.rpm_limit)?,
        max_parallel_requests: max_parallel,
        budget_id: optional_id("budget_id", l.budget_id)?,
        ..base.clone()
    };
    Ok(limits)
}

// === The tables ===

pub fn budget(row: &LiteBudget, base: BudgetRecord) -> Result<BudgetRecord, Refused> {
    let limits = limits_of(lite_limits!(row, soft_budget: row.soft_budget, budget_id: None), &base.limits)?;
    Ok(BudgetRecord {
        budget_id: id("budget_id", &row.budget_id)?,
        limits,
        created_at: row.created_at.or(base.created_at),
        updated_at: row.updated_at.or(base.updated_at),
    })
}

pub fn organization(row: &LiteOrganization, base: OrganizationRecord) -> Result<OrganizationRecord, Refused> {
    let limits = Limits { budget_id: optional_id("budget_id", row.budget_id.as_deref())?, ..base.limits.clone() };
    Ok(OrganizationRecord {
        organization_id: id("organization_id", &row.organization_id)?,
        organization_alias: name("organization_alias", row.organization_alias.as_deref())?,
        models: models("models", &row.models)?,
        limits,
        metadata: metadata("metadata", row.metadata.as_ref())?,
        created_at: row.created_at.or(base.created_at),
        updated_at: row.updated_at.or(base.updated_at),
        ..base
    })
}

/// A team's members: `members_with_roles` (`[{"user_id", "role"}]`), else `admins` and
/// `members`.
fn members(row: &LiteTeam) -> Result<Vec<Member>, Refused> {
    let mut out: Vec<Member> = Vec::new();
    if let Some(Value::Array(list)) = &row.members_with_roles {
        for m in list {
            let Some(user) = m.get("user_id").and_then(Value::as_str) else { continue };
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            out.push(Member { user_id: id("members_with_roles.user_id", user)?, role: role.to_owned() });
        }
    }
    if out.is_empty() {
        for (list, role) in [(&row.admins, "admin"), (&row.members, "user")] {
            for user in list {
                out.push(Member { user_id: id("members", user)?, role: role.to_owned() });
            }
        }
    }
    Ok(out)
}

pub fn team(row: &LiteTeam, base: TeamRecord) -> Result<TeamRecord, Refused> {
    let limits = limits_of(lite_limits!(row, soft_budget: row.soft_budget, budget_id: None), &base.limits)?;
    Ok(TeamRecord {
        team_id: id("team_id", &row.team_id)?,
        team_alias: name("team_alias", row.team_alias.as_deref())?,
        organization_id: optional_id("organization_id", row.organization_id.as_deref())?,
        models: models("models", &row.models)?,
        members: members(row)?,
        limits,
        blocked: row.blocked,
        metadata: metadata("metadata", row.metadata.as_ref())?,
        created_at: row.created_at.or(base.created_at),
        updated_at: row.updated_at.or(base.updated_at),
        ..base
    })
}

pub fn user(row: &LiteUser, base: UserRecord) -> Result<UserRecord, Refused> {
    let limits = limits_of(lite_limits!(row, soft_budget: None, budget_id: None), &base.limits)?;
    Ok(UserRecord {
        user_id: id("user_id", &row.user_id)?,
        user_email: name("user_email", row.user_email.as_deref())?,
        user_alias: name("user_alias", row.user_alias.as_deref())?,
        user_role: name("user_role", row.user_role.as_deref())?,
        organization_id: optional_id("organization_id", row.organization_id.as_deref())?,
        models: models("models", &row.models)?,
        limits,
        metadata: metadata("metadata", row.metadata.as_ref())?,
        created_at: row.created_at.or(base.created_at),
        updated_at: row.updated_at.or(base.updated_at),
        ..base
    })
}

/// A LiteLLM end user is a customer owned by no team or organization: any key may charge it
/// only with `gateway.shared_customers` (or once an admin sets its `team_id`, which a re-run
/// keeps).
pub fn customer(row: &LiteEndUser, base: CustomerRecord) -> Result<CustomerRecord, Refused> {
    let limits = Limits { budget_id: optional_id("budget_id", row.budget_id.as_deref())?, ..base.limits.clone() };
    Ok(CustomerRecord {
        user_id: id("user_id", &row.user_id)?,
        alias: name("alias", row.alias.as_deref())?,
        limits,
        blocked: row.blocked,
        ..base
    })
}

/// Whether `token` is what LiteLLM stores for a key: the SHA-256 of the key, 64 hex digits.
pub fn is_sha256_hex(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A key, known by LiteLLM's `token` (the key's SHA-256) as its `key_id`, so the gateway finds
/// it by that hash and moves it to its keyed hash on first use (`Tenancy::rehash`).
pub fn key(row: &LiteKey, base: KeyRecord) -> Result<KeyRecord, Refused> {
    if !is_sha256_hex(&row.token) {
        return Err("token: not the SHA-256 hex of a key (only hashed keys are imported)".into());
    }
    let limits = limits_of(lite_limits!(row, soft_budget: None, budget_id: row.budget_id.as_deref()), &base.limits)?;
    Ok(KeyRecord {
        key_id: row.token.to_ascii_lowercase(),
        key_name: name("key_name", row.key_name.as_deref())?.unwrap_or(base.key_name.clone()),
        key_alias: name("key_alias", row.key_alias.as_deref())?,
        team_id: optional_id("team_id", row.team_id.as_deref())?,
        user_id: optional_id("user_id", row.user_id.as_deref())?,
        organization_id: optional_id("organization_id", row.organization_id.as_deref())?,
        models: models("models", &row.models)?,
        limits,
        expires: row.expires,
        blocked: row.blocked.unwrap_or(false),
        metadata: metadata("metadata", row.metadata.as_ref())?,
        created_at: row.created_at.or(base.created_at),
        updated_at: row.updated_at.or(base.updated_at),
        ..base
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_schemas::tenancy::Record;

    #[test]
    fn budgets_convert_exactly_and_refuse_what_nano_usd_cannot_hold() {
        assert_eq!(usd("max_budget", Some(0.1)), Ok(Some(NanoUsd(100_000_000))));
        assert_eq!(usd("max_budget", Some(10.0)), Ok(Some(NanoUsd(10_000_000_000))));
        assert_eq!(usd("max_budget", Some(0.000000001)), Ok(Some(NanoUsd(1))));
        assert_eq!(usd("max_budget", None), Ok(None));
        for bad in [0.0000000001, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert!(usd("max_budget", Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn spend_rounds_half_up_on_its_shortest_decimal_text() {
        // 0.1 + 0.2 is 0.30000000000000004 as a float: it carries as 0.3 USD, not a nano more.
        assert_eq!(spend_nanos(0.1 + 0.2), Ok(NanoUsd(300_000_000)));
        assert_eq!(spend_nanos(1.0000000005), Ok(NanoUsd(1_000_000_001)));
        assert_eq!(spend_nanos(1.0000000004), Ok(NanoUsd(1_000_000_000)));
        assert_eq!(spend_nanos(0.0), Ok(NanoUsd(0)));
        assert_eq!(spend_nanos(3.5), Ok(NanoUsd(3_500_000_000)));
        for bad in [-0.5, f64::NAN, 1e300] {
            assert!(spend_nanos(bad).is_err(), "{bad}");
        }
        assert_eq!(decimal_spend_nanos("1.50000000049"), Ok(NanoUsd(1_500_000_000)));
        assert_eq!(decimal_spend_nanos("12"), Ok(NanoUsd(12_000_000_000)));
        for bad in ["", "-1", "1e3", "1.2.3", ".5", "NaN", "99999999999999999999"] {
            assert!(decimal_spend_nanos(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_litellm_units_and_weeks_become_days() {
        assert_eq!(duration("d", Some("30d")), Ok(Some(BudgetDuration::Seconds(30 * 86_400))));
        assert_eq!(duration("d", Some("1mo")), Ok(Some(BudgetDuration::Months(1))));
        assert_eq!(duration("d", Some("2w")), Ok(Some(BudgetDuration::Seconds(14 * 86_400))));
        assert_eq!(duration("d", Some("")), Ok(None));
        assert!(duration("d", Some("1y")).is_err());
    }

    fn lite_key() -> LiteKey {
        LiteKey {
            token: "AB".repeat(32),
            key_name: Some("sk-...abcd".into()),
            key_alias: Some("alias".into()),
            team_id: Some("team-a".into()),
            max_budget: Some(2.5),
            budget_duration: Some("30d".into()),
            rpm_limit: Some(10),
            model_max_budget: Some(json!({"gpt-4o": {"budget_limit": 1.5, "time_period": "1d"}, "gpt-4o-mini": 0.5})),
            metadata: Some(json!({"a": 1})),
            blocked: Some(true),
            budget_id: Some("b-1".into()),
            ..LiteKey::default()
        }
    }

    #[test]
    fn a_key_keeps_its_hash_as_identity_and_its_limits() {
        let k = key(&lite_key(), KeyRecord::default()).unwrap();
        assert_eq!(k.key_id, "ab".repeat(32), "lower-case SHA-256 hex, as the gateway computes it");
        assert_eq!(k.id(), k.key_id);
        assert_eq!(k.limits.max_budget, Some(NanoUsd(2_500_000_000)));
        assert_eq!(k.limits.budget_duration, Some(BudgetDuration::Seconds(30 * 86_400)));
        assert_eq!(k.limits.rpm_limit, Some(10));
        assert_eq!(k.limits.budget_id.as_deref(), Some("b-1"));
        assert_eq!(k.limits.model_max_budget.get("gpt-4o"), Some(&NanoUsd(1_500_000_000)));
        assert_eq!(k.limits.model_max_budget.get("gpt-4o-mini"), Some(&NanoUsd(500_000_000)));
        assert!(k.blocked);
        assert_eq!((k.team_id.as_deref(), k.key_name.as_str()), (Some("team-a"), "sk-...abcd"));
    }

    #[test]
    fn what_litellm_lacks_survives_a_re_import() {
        let base = KeyRecord {
            tags: vec!["prod".into()],
            stored_id: Some("moved".into()),
            limits: Limits { alert_thresholds: vec![50], ..Limits::default() },
            ..KeyRecord::default()
        };
        let k = key(&lite_key(), base).unwrap();
        assert_eq!(k.tags, ["prod"]);
        assert_eq!(k.id(), "moved", "a rehashed key is written where it now lives");
        assert_eq!(k.limits.alert_thresholds, [50]);
    }

    #[test]
    fn rows_out_of_bounds_are_refused_with_a_reason() {
        let plain = LiteKey { token: "sk-not-hashed".into(), ..lite_key() };
        assert!(key(&plain, KeyRecord::default()).unwrap_err().contains("SHA-256"));
        let slash = LiteKey { team_id: Some("a/b".into()), ..lite_key() };
        assert!(key(&slash, KeyRecord::default()).is_err());
        let big = LiteKey { metadata: Some(json!({"x": "y".repeat(20_000)})), ..lite_key() };
        assert!(key(&big, KeyRecord::default()).is_err());
        let negative = LiteKey { rpm_limit: Some(-1), ..lite_key() };
        assert!(key(&negative, KeyRecord::default()).unwrap_err().contains("rpm_limit"));
    }

    #[test]
    fn team_members_come_with_their_roles() {
        let t = LiteTeam {
            team_id: "t".into(),
            members_with_roles: Some(json!([{"user_id": "u1", "role": "admin"}, {"user_id": "u2"}])),
            ..LiteTeam::default()
        };
        let team = team(&t, TeamRecord::default()).unwrap();
        let roles: Vec<(&str, &str)> = team.members.iter().map(|m| (m.user_id.as_str(), m.role.as_str())).collect();
        assert_eq!(roles, [("u1", "admin"), ("u2", "user")]);
        let old = LiteTeam { team_id: "t".into(), admins: vec!["a".into()], members: vec!["m".into()], ..t };
        let old = LiteTeam { members_with_roles: None, ..old };
        assert_eq!(team_members(&old), [("a".to_owned(), "admin".to_owned()), ("m".to_owned(), "user".to_owned())]);
    }

    fn team_members(t: &LiteTeam) -> Vec<(String, String)> {
        members(t).unwrap().into_iter().map(|m| (m.user_id, m.role)).collect()
    }
}
