//! The query of `GET /key/list`, read and bounded: every value a client sends is checked here,
//! and a bad one is a 400 naming its parameter.

use crate::error::GatewayError;
use crate::tenancy::key_index::{KeyFilter, Position, Start};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;
use tollgate_schemas::limits::MAX_NAME_BYTES;

/// The longest `expires_within_days` (ten years).
const MAX_EXPIRY_DAYS: i64 = 3650;
/// The highest `min_budget_percent`.
const MAX_BUDGET_PERCENT: i64 = 10_000;
/// The longest `metadata` filter, `name=value`.
const MAX_METADATA_FILTER_BYTES: usize = 512;
/// The longest cursor (`after`): microseconds, a dot, a token of at most 128 characters.
const MAX_CURSOR_BYTES: usize = 160;

/// What keys are listed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SortBy {
    CreatedAt,
    Spend,
}

/// The query's checked filters, sort and page.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ListQuery {
    pub page: usize,
    pub size: usize,
    /// Where the page starts after the last key of the previous one (`after`), if given.
    pub after: Option<Position>,
    pub filter: KeyFilter,
    pub min_budget_percent: Option<i64>,
    pub sort: SortBy,
    pub descending: bool,
    pub full: bool,
}

impl ListQuery {
    /// Where the page starts.
    pub fn start(&self) -> Start {
        match &self.after {
            Some(at) => Start::After(at.clone()),
            None => Start::Offset((self.page - 1).saturating_mul(self.size)),
        }
    }

    /// Whether each key's spend must be read (a sort or filter by spend).
    pub fn needs_spend(&self) -> bool {
        self.sort == SortBy::Spend || self.min_budget_percent.is_some()
    }

    /// The parameter that asked for spend (named when the listing is too broad for it).
    pub fn spend_parameter(&self) -> &'static str {
        if self.sort == SortBy::Spend {
            "sort"
        } else {
            "min_budget_percent"
        }
    }
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

/// Text of 1 to `max` bytes without control characters, or a 400 naming `name`.
fn text(q: &BTreeMap<String, String>, name: &str, max: usize) -> Result<Option<String>, GatewayError> {
    let Some(v) = q.get(name) else { return Ok(None) };
    if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(GatewayError::field(
            name,
            format!("`{name}` must be 1 to {max} bytes, without control characters"),
        ));
    }
    Ok(Some(v.clone()))
}

/// `metadata=name=value`: a top-level metadata field and its value (a string, or a number or
/// boolean as JSON writes it).
fn metadata(q: &BTreeMap<String, String>) -> Result<Option<(String, String)>, GatewayError> {
    let Some(v) = text(q, "metadata", MAX_METADATA_FILTER_BYTES)? else { return Ok(None) };
    match v.split_once('=') {
        Some((name, value)) if !name.is_empty() && name.len() <= MAX_NAME_BYTES => {
            Ok(Some((name.to_owned(), value.to_owned())))
        }
        _ => Err(GatewayError::field("metadata", "`metadata` must be `name=value`, the name of 1 to 256 bytes")),
    }
}

fn cursor(q: &BTreeMap<String, String>) -> Result<Option<Position>, GatewayError> {
    let Some(v) = q.get("after") else { return Ok(None) };
    let at = Some(v).filter(|v| v.len() <= MAX_CURSOR_BYTES).and_then(|v| Position::parse(v));
    at.map(Some).ok_or_else(|| GatewayError::field("after", "`after` must be a `next_cursor` of this listing"))
}

fn filter(q: &BTreeMap<String, String>, now: DateTime<Utc>) -> Result<KeyFilter, GatewayError> {
    let expiring = bounded(q, "expires_within_days", 1..=MAX_EXPIRY_DAYS)?
        .map(|d| (now.timestamp(), (now + Duration::days(d)).timestamp()));
    Ok(KeyFilter {
        team_id: text(q, "team_id", MAX_NAME_BYTES)?,
        user_id: text(q, "user_id", MAX_NAME_BYTES)?,
        organization_id: text(q, "organization_id", MAX_NAME_BYTES)?,
        key_alias: text(q, "key_alias", MAX_NAME_BYTES)?,
        search: text(q, "search", MAX_NAME_BYTES)?,
        metadata: metadata(q)?,
        blocked: one_of(q, "blocked", &["true", "false"])?.map(|b| b == "true"),
        expiring,
        reach: None,
    })
}

pub(super) fn parse(q: &BTreeMap<String, String>, now: DateTime<Utc>) -> Result<ListQuery, GatewayError> {
    let page = bounded(q, "page", 1..=i64::from(u32::MAX))?.unwrap_or(1);
    let size = bounded(q, "size", 1..=1000)?.unwrap_or(10);
    let sort = match one_of(q, "sort", &["created_at", "spend"])? {
        Some("spend") => SortBy::Spend,
        _ => SortBy::CreatedAt,
    };
    let lq = ListQuery {
        page: usize::try_from(page).unwrap_or(1),
        size: usize::try_from(size).unwrap_or(10),
        after: cursor(q)?,
        filter: filter(q, now)?,
        min_budget_percent: bounded(q, "min_budget_percent", 0..=MAX_BUDGET_PERCENT)?,
        sort,
        descending: one_of(q, "order", &["asc", "desc"])? == Some("desc"),
        full: one_of(q, "return_full_object", &["true", "false"])? == Some("true"),
    };
    if lq.after.is_some() && (lq.needs_spend() || q.contains_key("page")) {
        return Err(GatewayError::field(
            "after",
            "`after` pages keys in creation order: it cannot be combined with `page`, `sort=spend` or `min_budget_percent`",
        ));
    }
    Ok(lq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn parsed(pairs: &[(&str, &str)]) -> ListQuery {
        match parse(&q(pairs), Utc::now()) {
            Ok(lq) => lq,
            Err(e) => panic!("{pairs:?} was refused: {e:?}"),
        }
    }

    fn refused_field(pairs: &[(&str, &str)]) -> String {
        match parse(&q(pairs), Utc::now()) {
            Err(GatewayError::InvalidField { field, .. }) => field,
            other => panic!("{pairs:?} was not refused by a field: {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_page_one_of_ten_oldest_first() {
        let lq = parsed(&[]);
        assert_eq!((lq.page, lq.size, lq.sort, lq.descending, lq.full), (1, 10, SortBy::CreatedAt, false, false));
        assert_eq!((lq.filter, lq.min_budget_percent, lq.after), (KeyFilter::default(), None, None));
    }

    #[test]
    fn the_bounds_are_taken_and_one_beyond_is_refused_naming_the_field() {
        let lq = parsed(&[("expires_within_days", "3650"), ("min_budget_percent", "0"), ("size", "1000")]);
        assert_eq!((lq.filter.expiring.is_some(), lq.min_budget_percent, lq.size), (true, Some(0), 1000));
        let lq = parsed(&[("user_id", &"u".repeat(256)), ("metadata", &format!("{}=", "n".repeat(256)))]);
        assert_eq!(lq.filter.metadata, Some(("n".repeat(256), String::new())));
        let long_cursor = format!("1.{}", "a".repeat(200));
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
            ("user_id", ""),
            ("user_id", &"u".repeat(257)),
            ("team_id", "a\u{0}b"),
            ("key_alias", "line\nbreak"),
            ("metadata", "env"),
            ("metadata", "=prod"),
            ("metadata", &format!("{}=x", "n".repeat(257))),
            ("metadata", &format!("a={}", "v".repeat(600))),
            ("after", ""),
            ("after", "abc"),
            ("after", "12.key/../x"),
            ("after", &long_cursor),
        ] {
            assert_eq!(refused_field(&[(name, bad)]), name, "{name}={bad}");
        }
    }

    #[test]
    fn filters_are_read() {
        let lq = parsed(&[("user_id", "u1"), ("team_id", "t1"), ("metadata", "env=prod=eu"), ("blocked", "true")]);
        assert_eq!(lq.filter.user_id.as_deref(), Some("u1"));
        assert_eq!(lq.filter.team_id.as_deref(), Some("t1"));
        assert_eq!(lq.filter.metadata, Some(("env".into(), "prod=eu".into())));
        assert_eq!(lq.filter.blocked, Some(true));
    }

    #[test]
    fn a_cursor_is_read_and_not_combined_with_a_page_or_spend() {
        let lq = parsed(&[("after", "1700000000000000.abc123"), ("size", "50")]);
        assert!(matches!(lq.start(), Start::After(at) if at.created_us == 1_700_000_000_000_000));
        for other in [("page", "1"), ("sort", "spend"), ("min_budget_percent", "50")] {
            assert_eq!(refused_field(&[("after", "1.abc"), other]), "after", "{other:?}");
        }
        assert!(matches!(parsed(&[("page", "3"), ("size", "20")]).start(), Start::Offset(40)));
    }

    #[test]
    fn sort_and_order_are_read() {
        let lq = parsed(&[("sort", "spend"), ("order", "desc")]);
        assert_eq!(
            (lq.sort, lq.descending, lq.needs_spend(), lq.spend_parameter()),
            (SortBy::Spend, true, true, "sort")
        );
        let lq = parsed(&[("order", "asc"), ("sort", "created_at"), ("min_budget_percent", "80")]);
        assert_eq!((lq.sort, lq.descending, lq.spend_parameter()), (SortBy::CreatedAt, false, "min_budget_percent"));
    }
}
