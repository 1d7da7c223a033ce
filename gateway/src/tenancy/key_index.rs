//! The admin API's index of stored keys (`GET /key/list`, docs/design.md §6, "The key index"):
//! what a listing filters and orders by, one compact entry a key, in creation order, so a page
//! never reads every key record from the database. Loaded by one paged scan when the gateway
//! starts, then kept current by the same notices that drop cached records (`Tenancy::invalidate`:
//! this gateway's changes, the control topic, the change log): each notice re-reads that one
//! record. Never on the request path of model calls; it holds no secret (keys are hashes).
//! Beside the keys in creation order it holds the keys of each team, user and metadata value,
//! so a listing filtered by one of them walks only those (`select`), and what a search looks at
//! of each key in a few contiguous vectors, so a search scans those instead of every entry
//! (`column`).

mod column;
mod select;

use super::mirror::Feed;
use column::SearchColumn;
use select::{narrowest, MetadataPair, Postings, Search, Walk};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tollgate_schemas::store::{Stored, TenancyStore};
use tollgate_schemas::tenancy::{BudgetDuration, KeyRecord, Kind};
use tollgate_schemas::NanoUsd;

/// Where a key sits in creation order: microseconds since 1970 (a key without `created_at`
/// first), then its `key_id`. Also the listing's cursor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub created_us: i64,
    pub key_id: Arc<str>,
}

impl Position {
    /// `<microseconds>.<key_id>`, as the listing hands it out.
    pub fn cursor(&self) -> String {
        format!("{}.{}", self.created_us, self.key_id)
    }

    /// A cursor read back; `None` unless it is one this index could have written.
    pub fn parse(cursor: &str) -> Option<Position> {
        let (us, key_id) = cursor.split_once('.')?;
        let valid_id = !key_id.is_empty() && key_id.len() <= 128 && key_id.bytes().all(|b| b.is_ascii_alphanumeric());
        valid_id.then_some(())?;
        Some(Position { created_us: us.parse().ok()?, key_id: Arc::from(key_id) })
    }
}

/// What a listing may filter on, of one key. Team, user and organization ids are shared
/// between the keys that name them.
#[derive(Debug)]
struct Entry {
    /// Where the record is stored, when that is not `key_id` (a rehashed key).
    stored_id: Option<Box<str>>,
    key_name: Box<str>,
    alias: Option<Box<str>>,
    /// Its slot in the search column, which holds what a search looks at (the alias in lower
    /// case, the first bytes of token and shown name).
    slot: u32,
    team: Option<Arc<str>>,
    user: Option<Arc<str>>,
    organization: Option<Arc<str>>,
    /// Seconds since 1970.
    expires: Option<i64>,
    blocked: bool,
    /// What a listing by spend measures the key's spend against: its budget and the window it
    /// resets in (its spend is read in the current one).
    max_budget: Option<NanoUsd>,
    budget_duration: Option<BudgetDuration>,
    /// The metadata's top-level scalar values, as `(name, value)`; strings as they are, numbers
    /// and booleans as JSON writes them.
    metadata: Box<[(Box<str>, Box<str>)]>,
}

/// A listing's filters; every one given must match.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    pub key_alias: Option<String>,
    /// Part of the alias or team (any case), or the start of the token or of the shown name.
    pub search: Option<String>,
    /// A top-level metadata field and its value.
    pub metadata: Option<(String, String)>,
    pub blocked: Option<bool>,
    /// Expiring after the first time and at or before the second (seconds since 1970).
    pub expiring: Option<(i64, i64)>,
    /// Only what a user's key reaches: the user's keys and its teams' keys.
    pub reach: Option<KeyReach>,
}

/// The keys a user reaches (`admin::roles`): those of its user, and those of the teams it
/// administers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyReach {
    pub user_id: String,
    pub teams: BTreeSet<String>,
}

impl KeyReach {
    fn reaches(&self, e: &Entry) -> bool {
        e.user.as_deref() == Some(self.user_id.as_str()) || e.team.as_deref().is_some_and(|t| self.teams.contains(t))
    }
}

impl KeyFilter {
    fn is_empty(&self) -> bool {
        *self == KeyFilter::default()
    }

    fn matches(&self, at: &Position, e: &Entry, search: Option<&Search>) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        same(&self.team_id, e.team.as_deref())
            && same(&self.user_id, e.user.as_deref())
            && same(&self.organization_id, e.organization.as_deref())
            && same(&self.key_alias, e.alias.as_deref())
            && self.blocked.is_none_or(|b| b == e.blocked)
            && self.expiring.is_none_or(|(now, by)| e.expires.is_some_and(|x| x > now && x <= by))
            && self.metadata.as_ref().is_none_or(|(k, v)| e.metadata.iter().any(|(mk, mv)| **mk == **k && **mv == **v))
            && search.is_none_or(|s| s.finds(at, e))
            && self.reach.as_ref().is_none_or(|r| r.reaches(e))
    }
}

/// A page of keys: where each is stored and its place, how many match in all, and the cursor
/// after the last one when more follow.
#[derive(Debug, Default)]
pub struct Page {
    pub keys: Vec<(String, Position)>,
    pub total: usize,
    pub next: Option<Position>,
}

/// A key a listing by spend picks: where it is stored, its place, and its budget and budget
/// window as the index holds them (so its record need not be read to sort or filter by spend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgeted {
    pub stored: String,
    pub at: Position,
    pub max_budget: Option<NanoUsd>,
    pub budget_duration: Option<BudgetDuration>,
}

/// Where a page starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// Skip this many matching keys.
    Offset(usize),
    /// Just past this key (in the listing's direction).
    After(Position),
}

/// The keys, ordered and found by where they are stored, and by team, user and metadata value.
#[derive(Default)]
struct Keys {
    ordered: BTreeMap<Position, Entry>,
    by_stored: HashMap<Box<str>, Position>,
    /// One copy of each team, user or organization id.
    names: HashSet<Arc<str>>,
    by_team: Postings<Arc<str>>,
    by_user: Postings<Arc<str>>,
    by_metadata: Postings<MetadataPair>,
    column: SearchColumn,
}

impl Keys {
    fn intern(&mut self, v: &Option<String>) -> Option<Arc<str>> {
        let v = v.as_deref()?;
        if let Some(known) = self.names.get(v) {
            return Some(known.clone());
        }
        let shared: Arc<str> = Arc::from(v);
        self.names.insert(shared.clone());
        Some(shared)
    }

    /// Removes the key stored under `stored`. A key moved to another stored id (rehashed) keeps
    /// its place, now held by the entry of its new id: that entry stays.
    fn remove(&mut self, stored: &str) {
        let Some(at) = self.by_stored.remove(stored) else { return };
        if self.ordered.get(&at).is_some_and(|e| stored_of(&at, e) == stored) {
            if let Some(gone) = self.ordered.remove(&at) {
                self.unpost(&at, &gone);
                self.column.kill(gone.slot);
                self.rebuild_column_when_due();
            }
        }
    }

    fn rebuild_column_when_due(&mut self) {
        if self.column.rebuild_due() {
            self.rebuild_column();
        }
    }

    /// The search column again, live keys only, in creation order.
    fn rebuild_column(&mut self) {
        self.column = self.column.rebuilt(self.ordered.iter_mut().map(|(at, e)| (at, &mut e.slot)));
    }

    /// Puts the key at `at` in the sets of its team, user and metadata values.
    fn post(&mut self, at: &Position, e: &Entry) {
        if let Some(team) = &e.team {
            self.by_team.add(team, at);
        }
        if let Some(user) = &e.user {
            self.by_user.add(user, at);
        }
        for pair in e.metadata.iter() {
            self.by_metadata.add(pair, at);
        }
    }

    fn unpost(&mut self, at: &Position, e: &Entry) {
        if let Some(team) = &e.team {
            self.by_team.remove(team, at);
        }
        if let Some(user) = &e.user {
            self.by_user.remove(user, at);
        }
        for pair in e.metadata.iter() {
            self.by_metadata.remove(pair, at);
        }
    }

    fn upsert(&mut self, stored: &str, k: &KeyRecord) {
        self.remove(stored);
        let at = Position {
            created_us: k.created_at.map_or(i64::MIN, |t| t.timestamp_micros()),
            key_id: Arc::from(k.key_id.as_str()),
        };
        let entry = Entry {
            stored_id: (stored != k.key_id).then(|| Box::from(stored)),
            key_name: Box::from(k.key_name.as_str()),
            alias: k.key_alias.as_deref().map(Box::from),
            slot: self.column.push(&at, &k.key_name, k.key_alias.as_deref()),
            team: self.intern(&k.team_id),
            user: self.intern(&k.user_id),
            organization: self.intern(&k.organization_id),
            expires: k.expires.map(|t| t.timestamp()),
            blocked: k.blocked,
            max_budget: k.limits.max_budget,
            budget_duration: k.limits.budget_duration,
            metadata: scalar_metadata(k),
        };
        self.by_stored.insert(Box::from(stored), at.clone());
        if let Some(moved) = self.ordered.remove(&at) {
            // The same key under another stored id (before its move): one entry, the newest.
            let old = stored_of(&at, &moved);
            if old != stored {
                self.by_stored.remove(old.as_str());
            }
            self.unpost(&at, &moved);
            self.column.kill(moved.slot);
        }
        self.post(&at, &entry);
        self.ordered.insert(at, entry);
        self.rebuild_column_when_due();
    }
}

fn scalar_metadata(k: &KeyRecord) -> Box<[(Box<str>, Box<str>)]> {
    k.metadata
        .iter()
        .filter_map(|(name, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => v.to_string(),
                _ => return None,
            };
            Some((Box::from(name.as_str()), text.into_boxed_str()))
        })
        .collect()
}

/// The index; shared by the admin handlers and the task that keeps it current.
pub struct KeyIndex {
    keys: RwLock<Keys>,
    /// Whether it is loaded, and the changed keys queued (`mirror`).
    feed: Feed<String>,
}

/// What [`KeyIndex::maintain`] reads the changes from.
pub struct Changes(mpsc::Receiver<String>);

impl KeyIndex {
    pub fn new() -> (Arc<KeyIndex>, Changes) {
        let (feed, rx) = Feed::new();
        (Arc::new(KeyIndex { keys: RwLock::default(), feed }), Changes(rx))
    }

    /// Whether the first load is done (until then listings are refused, not served partial).
    pub fn ready(&self) -> bool {
        self.feed.ready()
    }

    /// The record stored under `stored_id` changed or went: it is read again soon. Never blocks.
    pub fn changed(&self, stored_id: &str) {
        self.feed.notice(stored_id.to_owned());
    }

    /// How many keys are indexed.
    pub fn len(&self) -> usize {
        self.keys.read().map_or(0, |k| k.ordered.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts the key as `stored_id` holds it now (`None`: deleted).
    pub fn apply(&self, stored_id: &str, record: Option<&KeyRecord>) {
        let Ok(mut keys) = self.keys.write() else { return };
        match record {
            Some(k) => keys.upsert(stored_id, k),
            None => keys.remove(stored_id),
        }
    }

    /// A page of at most `limit` keys matching `filter`, oldest first (or newest first when
    /// `descending`). A filter on a team, user or metadata value walks only that value's keys,
    /// and a search with nothing narrower only the keys it finds in the search column; when it
    /// asks nothing else (or nothing at all), every key walked matches, so the count is
    /// the set's size and a page costs only its own length (plus the offset skipped). Otherwise
    /// every key walked is tested, for the count. Scans in memory: call it off the async
    /// workers (`spawn_blocking`) for big indexes.
    pub fn page(&self, filter: &KeyFilter, start: &Start, limit: usize, descending: bool) -> Page {
        let Ok(keys) = self.keys.read() else { return Page::default() };
        let search = filter.search.as_deref().map(|s| Search::new(&keys, s));
        let (walk, alone) = narrowest(&keys, filter, search.as_ref());
        if alone || filter.is_empty() {
            let total = match &walk {
                Walk::All => keys.ordered.len(),
                w => w.len(),
            };
            let (skip, from) = match start {
                Start::Offset(n) => (*n, None),
                Start::After(at) => (0, Some(at)),
            };
            let mut walked = entries(&keys, &walk, from, descending).skip(skip);
            let page: Vec<(String, Position)> =
                walked.by_ref().take(limit).map(|(at, e)| (stored_of(at, e), at.clone())).collect();
            let next = if walked.next().is_some() { page.last().map(|(_, at)| at.clone()) } else { None };
            return Page { keys: page, total, next };
        }
        // The count needs every key walked tested, and the page is collected on the way.
        let (mut skip, after) = match start {
            Start::Offset(n) => (*n, None),
            Start::After(at) => (0, Some(at)),
        };
        let mut page = Page::default();
        let mut more = false;
        for (at, e) in entries(&keys, &walk, None, descending).filter(|(at, e)| filter.matches(at, e, search.as_ref()))
        {
            page.total += 1;
            let past = after.is_none_or(|c| if descending { at < c } else { at > c });
            if !past || more {
                continue;
            }
            if skip > 0 {
                skip -= 1;
            } else if page.keys.len() < limit {
                page.keys.push((stored_of(at, e), at.clone()));
            } else {
                more = true;
            }
        }
        if more {
            page.next = page.keys.last().map(|(_, at)| at.clone());
        }
        page
    }

    /// Every key matching `filter` with its budget, in creation order, or how many match when
    /// that is more than `max` (a listing by spend reads each one's spend).
    pub fn matching(&self, filter: &KeyFilter, max: usize) -> Result<Vec<Budgeted>, usize> {
        let Ok(keys) = self.keys.read() else { return Ok(Vec::new()) };
        let search = filter.search.as_deref().map(|s| Search::new(&keys, s));
        let (walk, _) = narrowest(&keys, filter, search.as_ref());
        let picked = || entries(&keys, &walk, None, false).filter(|(at, e)| filter.matches(at, e, search.as_ref()));
        let found: Vec<Budgeted> = picked()
            .take(max + 1)
            .map(|(at, e)| Budgeted {
                stored: stored_of(at, e),
                at: at.clone(),
                max_budget: e.max_budget,
                budget_duration: e.budget_duration,
            })
            .collect();
        if found.len() > max {
            return Err(picked().count());
        }
        Ok(found)
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
    pub async fn refresh(&self, store: &dyn TenancyStore, stored_id: &str) {
        match tollgate_schemas::store::get_record::<KeyRecord>(store, stored_id).await {
            Ok(found) => self.apply(stored_id, found.as_ref().map(|(k, _)| k)),
            Err(e) => {
                tracing::warn!(failure = e.kind(), "a changed key could not be read for the key index; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                self.changed(stored_id);
            }
        }
    }

    /// Replaces the index by a scan of the store, a page at a time.
    async fn load(&self, store: &dyn TenancyStore) -> Result<usize, &'static str> {
        let mut fresh = Keys::default();
        let mut corrupt = 0_u64;
        store
            .visit_pages(
                Kind::Key,
                Box::new(|page: Vec<(String, Stored)>| {
                    for (id, stored) in page {
                        match serde_json::from_str::<KeyRecord>(&stored.doc) {
                            Ok(k) => fresh.upsert(&id, &k),
                            Err(_) => corrupt += 1,
                        }
                    }
                }),
            )
            .await
            .map_err(|e| e.kind())?;
        if corrupt > 0 {
            tracing::warn!(records = corrupt, "stored keys that do not decode are left out of the key index");
        }
        // The scan comes in the store's order: the search column is put in creation order once,
        // so that a search's keys need no more than a merge to be listed in order.
        fresh.rebuild_column();
        let n = fresh.ordered.len();
        let Ok(mut keys) = self.keys.write() else { return Err("poisoned") };
        *keys = fresh;
        Ok(n)
    }
}

/// The keys `walk` names with their entries, in creation order (or newest first), starting
/// just past `from` when given.
fn entries<'a>(
    keys: &'a Keys,
    walk: &'a Walk<'a>,
    from: Option<&Position>,
    descending: bool,
) -> Box<dyn Iterator<Item = (&'a Position, &'a Entry)> + 'a> {
    let range = match (from, descending) {
        (None, _) => (Bound::Unbounded, Bound::Unbounded),
        (Some(at), false) => (Bound::Excluded(at.clone()), Bound::Unbounded),
        (Some(at), true) => (Bound::Unbounded, Bound::Excluded(at.clone())),
    };
    let entry = |at: &'a Position| keys.ordered.get_key_value(at);
    let walked: Box<dyn DoubleEndedIterator<Item = (&'a Position, &'a Entry)> + 'a> = match walk {
        Walk::All => Box::new(keys.ordered.range(range)),
        Walk::Set(set) => Box::new(set.range(range).filter_map(entry)),
        Walk::Listed(listed) => Box::new(listed.iter().filter(move |at| range.contains(*at)).filter_map(entry)),
        Walk::Nothing => Box::new(std::iter::empty()),
    };
    if descending {
        Box::new(walked.rev())
    } else {
        walked
    }
}

fn stored_of(at: &Position, e: &Entry) -> String {
    e.stored_id.as_deref().unwrap_or(&at.key_id).to_owned()
}

impl super::mirror::Mirror for KeyIndex {
    type Change = String;
    const NAME: &'static str = "key index";

    fn feed(&self) -> &Feed<String> {
        &self.feed
    }

    async fn load_all(&self, store: &dyn TenancyStore) -> Result<usize, &'static str> {
        self.load(store).await
    }

    async fn apply_change(&self, store: &dyn TenancyStore, stored_id: String) {
        self.refresh(store, &stored_id).await;
    }
}

#[cfg(test)]
mod tests;
