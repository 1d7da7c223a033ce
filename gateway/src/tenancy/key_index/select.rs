//! What a filtered listing walks: the keys of one team, one user or one metadata value (each set
//! kept in creation order beside the index), instead of every key; and a search prepared once
//! per listing, so the walk of every key that a search needs costs little per key.

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
    /// The keys a user reaches (its own and its teams'), in creation order, once each.
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
/// whether belonging to it is all the filter asks (then every key of it matches).
pub(super) fn narrowest<'a>(keys: &'a Keys, filter: &KeyFilter) -> (Walk<'a>, bool) {
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
    best
}

/// Whether the filter asks nothing but what `clear` takes out of it.
fn is_only(filter: &KeyFilter, clear: impl FnOnce(&mut KeyFilter)) -> bool {
    let mut rest = filter.clone();
    clear(&mut rest);
    rest.is_empty()
}

/// A search, prepared once for a listing: part of the alias or team (any case), or the start of
/// the token or of the shown name. The entry's first bytes of token and shown name, held in the
/// entry itself, rule most keys out before their texts are read.
pub(super) struct Search {
    lower: String,
    finder: Finder<'static>,
    /// The search's first bytes, as an entry's heads are compared with them.
    head: Head,
    /// Whether it could begin a token (hex digits only).
    hex: bool,
    /// The team ids (by address of the index's one copy) that hold the search.
    teams: HashSet<usize>,
}

/// How many first bytes of the token and of the shown name an entry holds.
const HEAD: usize = 8;

/// The first [`HEAD`] bytes of a text (lower case), zeros after a shorter one, as one word so
/// that comparing heads is one instruction, not a call.
pub(super) type Head = u64;

pub(super) fn head_of(text: &str) -> Head {
    let mut head = [0; HEAD];
    for (h, b) in head.iter_mut().zip(text.bytes()) {
        *h = b.to_ascii_lowercase();
    }
    u64::from_le_bytes(head)
}

/// Whether two heads agree in their first `n` bytes (at most [`HEAD`]).
fn same_head(a: Head, b: Head, n: usize) -> bool {
    let mask = if n >= HEAD { u64::MAX } else { (1_u64 << (8 * n)) - 1 };
    (a ^ b) & mask == 0
}

impl Search {
    pub(super) fn new(keys: &Keys, search: &str) -> Search {
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
        Search { head: head_of(&lower), lower, finder, hex, teams }
    }

    pub(super) fn finds(&self, at: &Position, e: &Entry) -> bool {
        let n = self.lower.len().min(HEAD);
        let begins_token = self.hex && same_head(e.id_head, self.head, n) && at.key_id.starts_with(self.lower.as_str());
        let name_may = !self.lower.is_ascii() || same_head(e.name_head, self.head, n);
        begins_token
            || (name_may && e.key_name.get(..self.lower.len()).is_some_and(|head| self.begins(head)))
            || (!self.teams.is_empty() && e.team.as_ref().is_some_and(|t| self.teams.contains(&address(t))))
            || e.alias_folded.as_ref().is_some_and(|a| self.finder.find(a.bytes()).is_some())
    }

    /// Whether `head` (as long as the search) is the search, in any case.
    fn begins(&self, head: &str) -> bool {
        if self.lower.is_ascii() {
            head.eq_ignore_ascii_case(&self.lower)
        } else {
            head.to_lowercase() == self.lower
        }
    }
}

/// A text a search looks in (an alias in lower case), held in the entry itself when short, so
/// the walk of every key reads no other memory for it.
#[derive(Debug)]
pub(super) enum Folded {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

/// The longest text held inline: 22 bytes and a length keep [`Folded`] at 24 bytes.
const INLINE: usize = 22;

impl Folded {
    pub(super) fn new(text: &str) -> Folded {
        let lower = text.to_lowercase();
        match u8::try_from(lower.len()) {
            Ok(len) if lower.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..lower.len()].copy_from_slice(lower.as_bytes());
                Folded::Inline { len, bytes }
            }
            _ => Folded::Heap(lower.into_boxed_str()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Folded::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Folded::Heap(text) => text.as_bytes(),
        }
    }
}

/// The address of an interned id: the same id is the same copy in the index.
fn address(name: &Arc<str>) -> usize {
    Arc::as_ptr(name).cast::<u8>() as usize
}
