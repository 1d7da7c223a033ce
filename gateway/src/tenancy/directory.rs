//! The admin API's index of teams, internal users, customers and organizations (`GET
//! /team/list`, `/user/list`, `/customer/list`, `/organization/list`, docs/design.md §6, "The
//! directory"): one compact entry a record, ordered by id, with what a listing searches and
//! filters on, and every team membership by user, so a user's teams are found without reading
//! every team. Loaded by one paged scan of each kind when the gateway starts, then kept current
//! by the notices that drop cached records (`Tenancy::invalidate`), as the key index is: each
//! notice re-reads that one record.
//!
//! It only narrows what is read: a listing reads the page's records from the store, and a
//! user's teams are read again from the store before they grant anything (`admin::roles`), so a
//! notice not yet applied can hide a change for a moment but never widen a role.

use super::mirror::{contains_folded, Feed};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tollgate_schemas::store::{get_record, Stored, TenancyStore};
use tollgate_schemas::tenancy::{CustomerRecord, Kind, OrganizationRecord, Record, TeamRecord, UserRecord};

/// The kinds listed, in the order of [`Records::lists`].
const LISTED: [Kind; 4] = [Kind::Team, Kind::User, Kind::Customer, Kind::Organization];

fn slot(kind: Kind) -> Option<usize> {
    LISTED.iter().position(|k| *k == kind)
}

/// What a listing looks at, of one record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Entry {
    /// Names a search finds by any part, in lower case: the alias (and a user's email).
    names: Box<[Box<str>]>,
    organization: Option<Box<str>>,
    /// A customer's team.
    team: Option<Box<str>>,
    /// A team's members: user id, and whether an `admin` of the team.
    members: Box<[(Box<str>, bool)]>,
}

fn lower(v: &Option<String>) -> Option<Box<str>> {
    v.as_deref().map(|s| s.to_lowercase().into_boxed_str())
}

fn boxed(v: &Option<String>) -> Option<Box<str>> {
    v.as_deref().map(Box::from)
}

/// The entry of a stored record of `kind` (`None` when the document is not of that kind).
fn entry_of(kind: Kind, doc: &str) -> Option<(String, Entry)> {
    let names = |v: Vec<Option<Box<str>>>| v.into_iter().flatten().collect::<Box<[_]>>();
    Some(match kind {
        Kind::Team => {
            let t: TeamRecord = serde_json::from_str(doc).ok()?;
            let members = t.members.iter().map(|m| (Box::from(m.user_id.as_str()), m.role == "admin")).collect();
            let e = Entry {
                names: names(vec![lower(&t.team_alias)]),
                organization: boxed(&t.organization_id),
                members,
                ..Entry::default()
            };
            (t.team_id, e)
        }
        Kind::User => {
            let u: UserRecord = serde_json::from_str(doc).ok()?;
            let e = Entry {
                names: names(vec![lower(&u.user_alias), lower(&u.user_email)]),
                organization: boxed(&u.organization_id),
                ..Entry::default()
            };
            (u.user_id, e)
        }
        Kind::Customer => {
            let c: CustomerRecord = serde_json::from_str(doc).ok()?;
            let e = Entry {
                names: names(vec![lower(&c.alias)]),
                organization: boxed(&c.organization_id),
                team: boxed(&c.team_id),
                ..Entry::default()
            };
            (c.user_id, e)
        }
        Kind::Organization => {
            let o: OrganizationRecord = serde_json::from_str(doc).ok()?;
            (o.organization_id, Entry { names: names(vec![lower(&o.organization_alias)]), ..Entry::default() })
        }
        Kind::Key | Kind::Budget => return None,
    })
}

/// A listing's filters; every one given must match.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Part of the id, alias or (a user's) email, in any case (as `/key/list` searches aliases).
    pub search: Option<String>,
    pub organization_id: Option<String>,
    /// Users: members of this team. Customers: of this team.
    pub team_id: Option<String>,
    /// Teams: with this user as a member.
    pub user_id: Option<String>,
    /// Only these ids (what a team admin or internal user reaches).
    pub within: Option<BTreeSet<String>>,
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Skip this many matching records.
    Offset(usize),
    /// Just past this id.
    After(String),
}

/// A page of ids, how many match in all, and the id to go on after when more follow.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub ids: Vec<String>,
    pub total: usize,
    pub next: Option<String>,
}

#[derive(Default)]
struct Records {
    lists: [BTreeMap<String, Entry>; 4],
    /// User id → the teams it is a member of → whether an `admin` there.
    teams_of: HashMap<Box<str>, BTreeMap<String, bool>>,
}

impl Records {
    fn remove(&mut self, kind: Kind, id: &str) {
        let Some(s) = slot(kind) else { return };
        let Some(old) = self.lists[s].remove(id) else { return };
        if kind == Kind::Team {
            for (user, _) in old.members.iter() {
                if let Some(teams) = self.teams_of.get_mut(user) {
                    teams.remove(id);
                    if teams.is_empty() {
                        self.teams_of.remove(user);
                    }
                }
            }
        }
    }

    fn upsert(&mut self, kind: Kind, id: String, e: Entry) {
        let Some(s) = slot(kind) else { return };
        self.remove(kind, &id);
        if kind == Kind::Team {
            for (user, admin) in e.members.iter() {
                let teams = self.teams_of.entry(user.clone()).or_default();
                let was_admin = teams.get(&id).copied().unwrap_or(false);
                teams.insert(id.clone(), was_admin || *admin);
            }
        }
        self.lists[s].insert(id, e);
    }

    fn matches(&self, id: &str, e: &Entry, f: &Filter, search: Option<&str>, members: Option<&BTreeSet<&str>>) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        same(&f.organization_id, e.organization.as_deref())
            && f.within.as_ref().is_none_or(|w| w.contains(id))
            && members.is_none_or(|m| m.contains(id))
            && f.user_id.as_deref().is_none_or(|u| e.members.iter().any(|(m, _)| **m == *u))
            && search.is_none_or(|s| contains_folded(id, s) || e.names.iter().any(|n| n.contains(s)))
    }
}

/// The directory; shared by the admin handlers and the task that keeps it current.
pub struct Directory {
    records: RwLock<Records>,
    /// Whether it is loaded, and the changed records queued (`mirror`).
    feed: Feed<(Kind, String)>,
}

/// What [`Directory::maintain`] reads the changes from.
pub struct Changes(mpsc::Receiver<(Kind, String)>);

impl Directory {
    pub fn new() -> (Arc<Directory>, Changes) {
        let (feed, rx) = Feed::new();
        (Arc::new(Directory { records: RwLock::default(), feed }), Changes(rx))
    }

    /// Whether the first load is done (until then listings are refused, not served partial).
    pub fn ready(&self) -> bool {
        self.feed.ready()
    }

    /// Whether records of `kind` are indexed here.
    pub fn lists(kind: Kind) -> bool {
        slot(kind).is_some()
    }

    /// The record of `kind` named `id` changed or went: it is read again soon. Never blocks.
    pub fn changed(&self, kind: Kind, id: &str) {
        if slot(kind).is_some() {
            self.feed.notice((kind, id.to_owned()));
        }
    }

    /// Puts the record of `kind` named `id` as stored now (`None`: deleted, or not decodable).
    pub fn apply(&self, kind: Kind, id: &str, doc: Option<&str>) {
        let Ok(mut records) = self.records.write() else { return };
        match doc.and_then(|d| entry_of(kind, d)) {
            // A document under another id than its own is not listed under either.
            Some((own, e)) if own == id => records.upsert(kind, own, e),
            _ => records.remove(kind, id),
        }
    }

    /// The teams user `user_id` is a member of, each with whether it is an `admin` there;
    /// `None` until the directory is loaded.
    pub fn teams_of(&self, user_id: &str) -> Option<BTreeMap<String, bool>> {
        if !self.ready() {
            return None;
        }
        let records = self.records.read().ok()?;
        Some(records.teams_of.get(user_id).cloned().unwrap_or_default())
    }

    /// A page of at most `limit` ids of `kind` matching `filter`, in id order. With no filter
    /// only the page is walked (and the offset before it); with one, every record of the kind
    /// (in memory: call it off the async workers for big directories).
    pub fn page(&self, kind: Kind, filter: &Filter, start: &Start, limit: usize) -> Page {
        let (Some(s), Ok(records)) = (slot(kind), self.records.read()) else { return Page::default() };
        let list = &records.lists[s];
        let (skip, bound) = match start {
            Start::Offset(n) => (*n, Bound::Unbounded),
            Start::After(id) => (0, Bound::Excluded(id.clone())),
        };
        if *filter == Filter::default() {
            let mut walk = list.range((bound, Bound::Unbounded)).skip(skip).map(|(id, _)| id);
            let ids: Vec<String> = walk.by_ref().take(limit).cloned().collect();
            let next = if walk.next().is_some() { ids.last().cloned() } else { None };
            return Page { ids, total: list.len(), next };
        }
        let search = filter.search.as_deref().map(str::to_lowercase);
        // Users of a team: the team's members.
        let team_members: Option<BTreeSet<&str>> = match (kind, &filter.team_id) {
            (Kind::User, Some(t)) => {
                Some(records.lists[0].get(t).map(|e| e.members.iter().map(|(m, _)| &**m).collect()).unwrap_or_default())
            }
            _ => None,
        };
        let customer_team = match kind {
            Kind::Customer => filter.team_id.as_deref(),
            _ => None,
        };
        let mut page = Page::default();
        let mut skip = skip;
        let mut more = false;
        // A team admin's teams, an internal user's self, the `ids` named: looked up, in the same
        // order, rather than found by walking every record.
        let candidates: Box<dyn Iterator<Item = (&String, &Entry)>> = match &filter.within {
            Some(w) if w.len() < list.len() => Box::new(w.iter().filter_map(|id| list.get_key_value(id))),
            _ => Box::new(list.iter()),
        };
        for (id, e) in candidates {
            let matched = records.matches(id, e, filter, search.as_deref(), team_members.as_ref())
                && customer_team.is_none_or(|t| e.team.as_deref() == Some(t));
            if !matched {
                continue;
            }
            page.total += 1;
            let past = match &bound {
                Bound::Excluded(after) => id > after,
                _ => true,
            };
            if !past || more {
                continue;
            }
            if skip > 0 {
                skip -= 1;
            } else if page.ids.len() < limit {
                page.ids.push(id.clone());
            } else {
                more = true;
            }
        }
        if more {
            page.next = page.ids.last().cloned();
        }
        page
    }

    /// Loads every record from `store`, then applies each change noticed, until `shutdown`
    /// (`mirror::maintain`).
    pub async fn maintain(
        self: Arc<Self>,
        store: Arc<dyn TenancyStore>,
        changes: Changes,
        shutdown: CancellationToken,
    ) {
        super::mirror::maintain(self.as_ref(), store, changes.0, shutdown).await;
    }

    /// Reads one record again; on a failed read the notice is queued again after a pause.
    pub async fn refresh(&self, store: &dyn TenancyStore, kind: Kind, id: &str) {
        let read = match kind {
            Kind::Team => doc_of::<TeamRecord>(store, id).await,
            Kind::User => doc_of::<UserRecord>(store, id).await,
            Kind::Customer => doc_of::<CustomerRecord>(store, id).await,
            Kind::Organization => doc_of::<OrganizationRecord>(store, id).await,
            Kind::Key | Kind::Budget => return,
        };
        match read {
            Ok(doc) => self.apply(kind, id, doc.as_deref()),
            Err(failure) => {
                tracing::warn!(failure, "a changed record could not be read for the directory; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                self.changed(kind, id);
            }
        }
    }

    /// Replaces the directory by a scan of the store, a page at a time.
    async fn load(&self, store: &dyn TenancyStore) -> Result<usize, &'static str> {
        let mut fresh = Records::default();
        let mut corrupt = 0_u64;
        for kind in LISTED {
            store
                .visit_pages(
                    kind,
                    Box::new(|page: Vec<(String, Stored)>| {
                        for (id, stored) in page {
                            match entry_of(kind, &stored.doc) {
                                Some((own, e)) if own == id => fresh.upsert(kind, own, e),
                                _ => corrupt += 1,
                            }
                        }
                    }),
                )
                .await
                .map_err(|e| e.kind())?;
        }
        if corrupt > 0 {
            tracing::warn!(records = corrupt, "stored records that do not decode are left out of the directory");
        }
        let n = fresh.lists.iter().map(BTreeMap::len).sum();
        let Ok(mut records) = self.records.write() else { return Err("poisoned") };
        *records = fresh;
        Ok(n)
    }
}

/// The stored document of the record of `R` named `id`, re-encoded (`None`: absent).
async fn doc_of<R: Record>(store: &dyn TenancyStore, id: &str) -> Result<Option<String>, &'static str> {
    let found = get_record::<R>(store, id).await.map_err(|e| e.kind())?;
    Ok(found.and_then(|(r, _)| serde_json::to_string(&r).ok()))
}

impl super::mirror::Mirror for Directory {
    type Change = (Kind, String);
    const NAME: &'static str = "directory of teams, users, customers and organizations";

    fn feed(&self) -> &Feed<(Kind, String)> {
        &self.feed
    }

    async fn load_all(&self, store: &dyn TenancyStore) -> Result<usize, &'static str> {
        self.load(store).await
    }

    async fn apply_change(&self, store: &dyn TenancyStore, (kind, id): (Kind, String)) {
        self.refresh(store, kind, &id).await;
    }
}

#[cfg(test)]
mod tests;
