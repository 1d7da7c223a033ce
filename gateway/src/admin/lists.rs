//! `GET /team/list`, `/user/list`, `/customer/list` and `/organization/list`: a page of records
//! picked and ordered by the gateway's directory (`tenancy::directory`), so no listing reads
//! every record: only the page's records are read from the store. The paging is `/key/list`'s
//! (`page` and `size`, or the previous page's `next_cursor` as `after`), and so is the answer.
//!
//! LiteLLM answers `/team/list`, `/customer/list` and `/organization/list` with a bare array,
//! and `/user/list` with `{users, total, page, page_size, total_pages}`: a call without paging
//! parameters gets those shapes still, the array bounded to its first [`LEGACY_PAGE`] records
//! (with `X-Total-Count`, and `X-Next-Cursor` when more follow). A team admin lists only the
//! teams it administers, an internal user only itself; neither lists customers or
//! organizations (`roles`).

use super::roles::{admin_or_user, not_for_role};
use super::{present, query, read_records, Answer};
use crate::error::GatewayError;
use crate::tenancy::directory::{Filter, Start};
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tollgate_schemas::limits::MAX_NAME_BYTES;
use tollgate_schemas::store::TenancyStore;
use tollgate_schemas::tenancy::{Kind, Record};

/// Records per page at most (as `/key/list`).
pub(crate) const MAX_PAGE_SIZE: usize = 1_000;
/// Records per page when `size` is not given.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 25;
/// Records a call without paging parameters answers at most (LiteLLM's bare array).
pub(crate) const LEGACY_PAGE: usize = 1_000;
/// Ids one `ids` filter names at most.
pub(crate) const MAX_IDS: usize = 100;

/// A listing's query, read and bounded.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    page: usize,
    size: usize,
    after: Option<String>,
    filter: Filter,
    /// Whether paging was asked for (`page`, `size`, `page_size` or `after`).
    paged: bool,
}

impl ListQuery {
    fn start(&self) -> Start {
        match &self.after {
            Some(id) => Start::After(id.clone()),
            None => Start::Offset((self.page - 1).saturating_mul(self.size)),
        }
    }
}

/// Text of 1 to `max` bytes without control characters, or a 400 naming `name`.
fn text(q: &BTreeMap<String, String>, name: &str) -> Result<Option<String>, GatewayError> {
    let Some(v) = q.get(name) else { return Ok(None) };
    if v.is_empty() || v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
        return Err(GatewayError::field(
            name,
            format!("`{name}` must be 1 to {MAX_NAME_BYTES} bytes, without control characters"),
        ));
    }
    Ok(Some(v.clone()))
}

fn number(q: &BTreeMap<String, String>, name: &str, max: usize) -> Result<Option<usize>, GatewayError> {
    let Some(v) = q.get(name) else { return Ok(None) };
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .map(Some)
        .ok_or_else(|| GatewayError::field(name, format!("`{name}` must be an integer from 1 to {max}")))
}

/// `ids`: only the records named, comma separated (at most [`MAX_IDS`]), or a 400 naming it.
fn ids(q: &BTreeMap<String, String>) -> Result<Option<BTreeSet<String>>, GatewayError> {
    let Some(v) = q.get("ids") else { return Ok(None) };
    // Counted as given, repeats too: the bound is on what the caller sent.
    let named: Vec<&str> = v.split(',').map(str::trim).filter(|id| !id.is_empty()).collect();
    let fits = |id: &&str| id.len() <= MAX_NAME_BYTES && !id.chars().any(char::is_control);
    if named.is_empty() || named.len() > MAX_IDS || !named.iter().all(fits) {
        let message = format!(
            "`ids` must name 1 to {MAX_IDS} ids, comma separated, each at most {MAX_NAME_BYTES} bytes without control characters"
        );
        return Err(GatewayError::field("ids", message));
    }
    Ok(Some(named.into_iter().map(str::to_owned).collect()))
}

/// The filters each kind takes besides `search` and `ids`.
fn filters_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Team => &["user_id", "organization_id"],
        Kind::User => &["team_id", "organization_id"],
        Kind::Customer => &["team_id", "organization_id"],
        _ => &[],
    }
}

fn parse(kind: Kind, q: &BTreeMap<String, String>) -> Result<ListQuery, GatewayError> {
    let page = number(q, "page", u32::MAX as usize)?;
    if q.contains_key("size") && q.contains_key("page_size") {
        return Err(GatewayError::field("page_size", "`size` and `page_size` are the same: give one"));
    }
    let size = number(q, "size", MAX_PAGE_SIZE)?.or(number(q, "page_size", MAX_PAGE_SIZE)?);
    let after = text(q, "after")?;
    if after.is_some() && page.is_some() {
        return Err(GatewayError::field("after", "`after` and `page` are two ways of paging: use one"));
    }
    let mut filter = Filter { search: text(q, "search")?, within: ids(q)?, ..Filter::default() };
    for name in filters_of(kind) {
        let v = text(q, name)?;
        match *name {
            "user_id" => filter.user_id = v,
            "team_id" => filter.team_id = v,
            _ => filter.organization_id = v,
        }
    }
    let paged = page.is_some() || size.is_some() || after.is_some() || kind == Kind::User;
    Ok(ListQuery {
        page: page.unwrap_or(1),
        size: size.unwrap_or(if paged { DEFAULT_PAGE_SIZE } else { LEGACY_PAGE }),
        after,
        filter,
        paged,
    })
}

/// The field of the paged answer holding the records.
fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Team => "teams",
        Kind::User => "users",
        Kind::Customer => "customers",
        _ => "organizations",
    }
}

/// `GET /<kind>/list`.
pub(crate) async fn list<R: Record>(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    let (store, user) = admin_or_user(&req, &state, false).await?;
    let mut lq = parse(R::KIND, &query(&req))?;
    if let Some(u) = user {
        let reached: BTreeSet<String> = match R::KIND {
            Kind::Team => u.admin_of,
            Kind::User => [u.user_id].into(),
            _ => return Err(not_for_role()),
        };
        // What the role reaches, narrowed further by `ids` when given.
        lq.filter.within = Some(match lq.filter.within.take() {
            Some(named) => reached.intersection(&named).cloned().collect(),
            None => reached,
        });
    }
    // Until the first load is done a listing would be partial: the client is told to retry.
    let directory =
        state.tenancy.directory().filter(|d| d.ready()).cloned().ok_or(GatewayError::DatabaseUnavailable)?;
    let (filter, start, size) = (lq.filter.clone(), lq.start(), lq.size);
    // The directory is walked in memory: off the async workers, which also serve model calls.
    let page = tokio::task::spawn_blocking(move || directory.page(R::KIND, &filter, &start, size))
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    let items: Vec<Value> = records::<R>(store, page.ids).await?.iter().map(present).collect();
    let next = page.next;
    if !lq.paged {
        let mut answer = HttpResponse::Ok();
        answer.insert_header(("x-total-count", page.total.to_string()));
        if let Some(next) = &next {
            answer.insert_header(("x-next-cursor", next.as_str()));
        }
        return Ok(answer.json(items));
    }
    let mut body = json!({
        plural(R::KIND): items,
        "total_count": page.total,
        "current_page": lq.page,
        "page_size": lq.size,
        "total_pages": page.total.div_ceil(lq.size),
        "next_cursor": next,
    });
    if R::KIND == Kind::User {
        // LiteLLM's names for the same.
        body["total"] = json!(page.total);
        body["page"] = json!(lq.page);
    }
    Ok(HttpResponse::Ok().json(body))
}

/// The records named, in that order; any deleted meanwhile are left out.
async fn records<R: Record>(store: Arc<dyn TenancyStore>, ids: Vec<String>) -> Result<Vec<R>, GatewayError> {
    Ok(read_records::<R>(store.as_ref(), ids).await?.into_iter().map(|(r, _)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn refused_field(kind: Kind, pairs: &[(&str, &str)]) -> String {
        match parse(kind, &q(pairs)) {
            Err(GatewayError::InvalidField { field, .. }) => field,
            other => panic!("{pairs:?} was not refused by a field: {other:?}"),
        }
    }

    #[test]
    fn without_paging_parameters_the_answer_is_litellms_and_bounded() {
        let lq = parse(Kind::Team, &q(&[("user_id", "ann")])).unwrap();
        assert_eq!((lq.paged, lq.size, lq.page), (false, LEGACY_PAGE, 1));
        assert_eq!(lq.filter.user_id.as_deref(), Some("ann"));
        // LiteLLM pages /user/list always.
        let lq = parse(Kind::User, &q(&[])).unwrap();
        assert_eq!((lq.paged, lq.size), (true, DEFAULT_PAGE_SIZE));
        for paging in [("page", "2"), ("size", "5"), ("page_size", "5"), ("after", "t1")] {
            assert!(parse(Kind::Organization, &q(&[paging])).unwrap().paged, "{paging:?}");
        }
        assert_eq!(parse(Kind::Customer, &q(&[("page", "3"), ("size", "20")])).unwrap().start(), Start::Offset(40));
        assert_eq!(parse(Kind::Customer, &q(&[("after", "c9")])).unwrap().start(), Start::After("c9".into()));
    }

    #[test]
    fn the_bounds_are_taken_and_one_beyond_is_refused_naming_the_field() {
        assert_eq!(parse(Kind::Team, &q(&[("size", "1000")])).unwrap().size, 1000);
        assert_eq!(parse(Kind::User, &q(&[("page_size", "1000")])).unwrap().size, 1000);
        assert!(parse(Kind::Team, &q(&[("search", &"s".repeat(256))])).is_ok());
        for (name, bad) in [
            ("size", "1001"),
            ("size", "0"),
            ("page_size", "1001"),
            ("page", "0"),
            ("page", "-1"),
            ("page", "x"),
            ("search", ""),
            ("search", &"s".repeat(257)),
            ("after", "a\nb"),
            ("user_id", ""),
            ("organization_id", "\u{0}"),
        ] {
            assert_eq!(refused_field(Kind::Team, &[(name, bad)]), name, "{name}={bad}");
        }
        assert_eq!(refused_field(Kind::User, &[("size", "5"), ("page_size", "5")]), "page_size");
        assert_eq!(refused_field(Kind::User, &[("after", "u1"), ("page", "2")]), "after");
        assert_eq!(refused_field(Kind::Customer, &[("team_id", &"t".repeat(257))]), "team_id");
    }

    #[test]
    fn each_kind_takes_its_own_filters() {
        let lq = parse(Kind::User, &q(&[("team_id", "t1"), ("user_id", "ignored"), ("search", "an")])).unwrap();
        assert_eq!(
            (lq.filter.team_id.as_deref(), lq.filter.user_id, lq.filter.search.as_deref()),
            (Some("t1"), None, Some("an"))
        );
        let lq = parse(Kind::Organization, &q(&[("team_id", "t1"), ("organization_id", "o")])).unwrap();
        assert_eq!(lq.filter, Filter::default());
    }

    #[test]
    fn ids_name_up_to_a_hundred_records() {
        let lq = parse(Kind::Team, &q(&[("ids", "t2, t1,,t2")])).unwrap();
        assert_eq!(lq.filter.within, Some(["t1".to_owned(), "t2".to_owned()].into()));
        let hundred: Vec<String> = (0..MAX_IDS).map(|i| format!("t{i}")).collect();
        assert_eq!(
            parse(Kind::Customer, &q(&[("ids", &hundred.join(","))])).unwrap().filter.within.map(|w| w.len()),
            Some(MAX_IDS)
        );
        let more = format!("{},t{MAX_IDS}", hundred.join(","));
        let long = "t".repeat(MAX_NAME_BYTES + 1);
        for bad in [",", " , ", more.as_str(), "", long.as_str(), "t1,a\u{0}b"] {
            assert_eq!(refused_field(Kind::Organization, &[("ids", bad)]), "ids", "{bad:?}");
        }
    }
}
