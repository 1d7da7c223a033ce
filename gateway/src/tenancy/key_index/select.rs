//! What a filtered listing walks: the keys of one team, one user or one metadata value (each set
//! kept in creation order beside the index), or the keys a search finds in the search column,
//! instead of every key; and a search prepared once per listing.

use super::column::{head_of, Head, SearchColumn, HEAD};
use super::{Entry, KeyFilter, Keys, Position};
use memchr::memmem::Finder;
use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

/// Keys by a value they hold, each set in creation order.
pub(super) struct Postings<V> {
    sets: HashMap<V, BTreeSet<Position>>,
}

impl<V> Default for Postings<V> {
    fn default() -> Self {
        Postings { sets: HashMap::new() }
    }
}

impl<V: Hash + Eq + Clone> Postings<V> {
    /// Puts `at` in `v`'s set; `v` is copied only for a value no key had.
    pub(super) fn add(&mut self, v: &V, at: &Position) {
        match self.sets.get_mut(v) {
            Some(set) => {
                set.insert(at.clone());
            }
            None => {
                self.sets.insert(v.clone(), BTreeSet::from([at.clone()]));
            }
        }
    }

    pub(super) fn remove(&mut self, v: &V, at: &Position) {
        if let Some(set) = self.sets.get_mut(v) {
            set.remove(at);
            if set.is_empty() {
                self.sets.remove(v);
            }
        }
    }

    /// How many values have keys.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.sets.len()
    }

    pub(super) fn get<Q: Hash + Eq + ?Sized>(&self, v: &Q) -> Walk<'_>
    where
        V: Borrow<Q>,
    {
        self.sets.get(v).map_or(Walk::Nothing, Walk::Set)
    }
}

/// A metadata field and its value, as the index holds it.
pub(super) type MetadataPair = (Box<str>, Box<str>);

/// The keys a filtered listing walks, narrowest first.
pub(super) enum Walk<'a> {
    /// Every key.
    All,
    /// The keys of one team, user or metadata value.
    Set(&'a BTreeSet<Position>),
    /// The keys a user reaches (its own and its teams'), or those a search finds, in creation
    /// order, once each.
    Listed(Vec<Position>),
    /// None can match (a team, user or value no key has).
    Nothing,
}

impl Walk<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Walk::All => usize::MAX,
            Walk::Set(s) => s.len(),
            Walk::Listed(v) => v.len(),
            Walk::Nothing => 0,
        }
    }
}

/// The narrowest set of keys the filter's team, user, metadata value or reach allows, and
/// whether belonging to it is all the filter asks (then every key of it matches). A search
/// (`search`, prepared from the filter's) is looked up in the search column only when nothing
/// else narrows the walk: within a set, testing each key costs less than a scan of every key.
pub(super) fn narrowest<'a>(keys: &'a Keys, filter: &KeyFilter, search: Option<&Search>) -> (Walk<'a>, bool) {
    let mut best = (Walk::All, false);
    let mut consider = |walk: Walk<'a>, alone: bool| {
        if walk.len() < best.0.len() {
            best = (walk, alone);
        }
    };
    if let Some(team) = &filter.team_id {
        consider(keys.by_team.get(team.as_str()), is_only(filter, |f| f.team_id = None));
    }
    if let Some(user) = &filter.user_id {
        consider(keys.by_user.get(user.as_str()), is_only(filter, |f| f.user_id = None));
    }
    if let Some((name, value)) = &filter.metadata {
        let pair: MetadataPair = (name.as_str().into(), value.as_str().into());
        consider(keys.by_metadata.get(&pair), is_only(filter, |f| f.metadata = None));
    }
    if let Some(reach) = &filter.reach {
        let mut listed: Vec<Position> = Vec::new();
        let of = |set: Walk<'_>, into: &mut Vec<Position>| {
            if let Walk::Set(s) = set {
                into.extend(s.iter().cloned());
            }
        };
        of(keys.by_user.get(reach.user_id.as_str()), &mut listed);
        for team in &reach.teams {
            of(keys.by_team.get(team.as_str()), &mut listed);
        }
        listed.sort_unstable();
        listed.dedup();
        consider(Walk::Listed(listed), is_only(filter, |f| f.reach = None));
    }
    if let (Walk::All, Some(search)) = (&best.0, search) {
        best = (Walk::Listed(search.found(keys)), is_only(filter, |f| f.search = None));
    }
    best
}

/// Whether the filter asks nothing but what `clear` takes out of it.
fn is_only(filter: &KeyFilter, clear: impl FnOnce(&mut KeyFilter)) -> bool {
    let mut rest = filter.clone();
    clear(&mut rest);
    rest.is_empty()
}

/// A search, prepared once for a listing: part of the alias or team (any case), or the start of
/// the token or of the shown name. It reads each key's first bytes of token and shown name, and
/// its alias in lower case, in the search column, which rule most keys out before their texts
/// are read.
pub(super) struct Search<'k> {
    column: &'k SearchColumn,
    lower: String,
    finder: Finder<'static>,
    /// The search's first bytes, as a slot's heads are compared with them.
    head: Head,
    /// Whether a shown name's head alone tells whether the name begins with the search: the
    /// search is ASCII, no longer than a head, and holds no 0 (which pads a short head).
    head_decides: bool,
    /// Whether it could begin a token (hex digits only).
    hex: bool,
    /// The team ids (by address of the index's one copy) that hold the search.
    teams: HashSet<usize>,
}

/// Whether two heads agree in their first `n` bytes (at most [`HEAD`]).
fn same_head(a: Head, b: Head, n: usize) -> bool {
    let mask = if n >= HEAD { u64::MAX } else { (1_u64 << (8 * n)) - 1 };
    (a ^ b) & mask == 0
}

impl<'k> Search<'k> {
    pub(super) fn new(keys: &'k Keys, search: &str) -> Search<'k> {
        let lower = search.to_lowercase();
        let finder = Finder::new(lower.as_bytes()).into_owned();
        let mut folded = String::new();
        let teams = keys
            .by_team
            .sets
            .keys()
            .filter(|team| {
                folded.clear();
                folded.push_str(team);
                folded.make_ascii_lowercase();
                let text = if team.is_ascii() { folded.as_str() } else { &team.to_lowercase() };
                finder.find(text.as_bytes()).is_some()
            })
            .map(address)
            .collect();
        let hex = !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_hexdigit());
        let head_decides = lower.is_ascii() && lower.len() <= HEAD && !lower.contains('\0');
        Search { column: &keys.column, head: head_of(&lower), lower, finder, head_decides, hex, teams }
    }

    /// Whether the search finds one key (a walk within a set tests each key so).
    pub(super) fn finds(&self, at: &Position, e: &Entry) -> bool {
        let i = e.slot as usize;
        self.begins(i, at, || Some(&e.key_name))
            || (!self.teams.is_empty() && e.team.as_ref().is_some_and(|t| self.teams.contains(&address(t))))
            || self.column.alias(i).is_some_and(|a| self.finder.find(a).is_some())
    }

    /// Every key the search finds, in creation order: a scan of the column's heads and of its
    /// one text of aliases, then the keys of the teams that hold it. Entries are read only for a
    /// shown name longer than its head that the head does not rule out.
    pub(super) fn found(&self, keys: &Keys) -> Vec<Position> {
        let column = self.column;
        let by_alias = column.aliases_holding(self.lower.len(), |text| self.finder.find(text));
        let mut by_alias = by_alias.into_iter().peekable();
        let mut found: Vec<&Position> = Vec::new();
        for i in 0..column.len() {
            let aliased = by_alias.next_if_eq(&i).is_some();
            let Some(at) = column.place(i) else { break };
            if !column.live(i) {
                continue;
            }
            let name = || keys.ordered.get(at).map(|e| &*e.key_name);
            if aliased || self.begins(i, at, name) {
                found.push(at);
            }
        }
        if !self.teams.is_empty() {
            for (team, set) in &keys.by_team.sets {
                if self.teams.contains(&address(team)) {
                    found.extend(set.iter());
                }
            }
        }
        // The column is in creation order but for the keys put since its last rebuild, and the
        // teams' keys follow: a stable sort merges those runs without sorting the whole again.
        found.sort();
        found.dedup();
        found.into_iter().cloned().collect()
    }

    /// Whether slot `i`'s token or shown name begins with the search; `name` reads the shown
    /// name when the head cannot tell.
    fn begins<'e>(&self, i: usize, at: &Position, name: impl FnOnce() -> Option<&'e str>) -> bool {
        let n = self.lower.len().min(HEAD);
        if self.hex && same_head(self.column.id_head(i), self.head, n) && at.key_id.starts_with(self.lower.as_str()) {
            return true;
        }
        if self.lower.is_ascii() {
            if !same_head(self.column.name_head(i), self.head, n) {
                return false;
            }
            if self.head_decides {
                return true;
            }
        } else if self.column.name_is_ascii(i) {
            // A name in ASCII is in ASCII in lower case too: never a search that is not.
            return false;
        }
        name().and_then(|name| name.get(..self.lower.len())).is_some_and(|head| self.same_text(head))
    }

    /// Whether `head` (as long as the search) is the search, in any case.
    fn same_text(&self, head: &str) -> bool {
        if self.lower.is_ascii() {
            head.eq_ignore_ascii_case(&self.lower)
        } else {
            head.to_lowercase() == self.lower
        }
    }
}

/// The address of an interned id: the same id is the same copy in the index.
fn address(name: &Arc<str>) -> usize {
    Arc::as_ptr(name).cast::<u8>() as usize
}
