//! The search column (docs/design.md §6, "The key index"): for every key, the bytes a search
//! looks at, packed in a few vectors beside the entries, so that a search over every key reads
//! contiguous memory (the first bytes of the token and shown name, and one text of every alias in
//! lower case scanned by `memchr`) instead of walking the entries one tree node at a time.
//!
//! It is append-only: a key put or changed takes a new slot at the end, and the slot it had is
//! marked dead (a tombstone). When dead slots reach a quarter of all slots the column is built
//! again from the entries, in creation order, copying each live slot's bytes (so the cost of a
//! rebuild is spread over the changes that made it due). Each entry holds its slot, and each
//! slot its key's place, so the two always name each other; a slot never answers for a key
//! unless it is live. It never holds a key's token or anything secret beyond what the entries
//! hold.

use super::Position;

/// How many first bytes of the token and of the shown name a slot holds.
pub(super) const HEAD: usize = 8;

/// The first [`HEAD`] bytes of a text (ASCII letters in lower case), zeros after a shorter one,
/// as one word so that comparing heads is one instruction, not a call.
pub(super) type Head = u64;

pub(super) fn head_of(text: &str) -> Head {
    let mut head = [0; HEAD];
    for (h, b) in head.iter_mut().zip(text.bytes()) {
        *h = b.to_ascii_lowercase();
    }
    u64::from_le_bytes(head)
}

/// A slot's key is current (not replaced or removed).
const LIVE: u8 = 1;
/// The key has an alias (an empty text is then an empty alias, not none).
const ALIASED: u8 = 2;
/// The shown name has a byte outside ASCII, which its head cannot compare in every case.
const NAME_NOT_ASCII: u8 = 4;

/// What follows each alias in the text: it keeps most hits within one alias; a hit that still
/// spans two (a search holding this byte) is told apart by the slots' bounds.
const SEPARATOR: u8 = 0;

/// The slots, all vectors indexed alike.
#[derive(Default)]
pub(super) struct SearchColumn {
    /// Each slot's key: its place among the entries.
    places: Vec<Position>,
    id_heads: Vec<Head>,
    name_heads: Vec<Head>,
    flags: Vec<u8>,
    /// Every slot's alias in lower case (empty when it has none), each followed by
    /// [`SEPARATOR`]; slot `i`'s starts at `starts[i]`.
    aliases: Vec<u8>,
    starts: Vec<usize>,
    dead: usize,
}

impl SearchColumn {
    fn with_capacity(slots: usize, text: usize) -> SearchColumn {
        SearchColumn {
            places: Vec::with_capacity(slots),
            id_heads: Vec::with_capacity(slots),
            name_heads: Vec::with_capacity(slots),
            flags: Vec::with_capacity(slots),
            aliases: Vec::with_capacity(text),
            starts: Vec::with_capacity(slots),
            dead: 0,
        }
    }

    /// Adds a live slot for the key at `at`; returns it.
    pub(super) fn push(&mut self, at: &Position, key_name: &str, alias: Option<&str>) -> u32 {
        let mut flags = LIVE;
        if !key_name.is_ascii() {
            flags |= NAME_NOT_ASCII;
        }
        self.starts.push(self.aliases.len());
        if let Some(alias) = alias {
            flags |= ALIASED;
            self.aliases.extend_from_slice(alias.to_lowercase().as_bytes());
        }
        self.aliases.push(SEPARATOR);
        self.id_heads.push(head_of(&at.key_id));
        self.name_heads.push(head_of(key_name));
        self.flags.push(flags);
        self.places.push(at.clone());
        slot_number(self.places.len() - 1)
    }

    /// Marks a slot dead: its key was replaced or removed.
    pub(super) fn kill(&mut self, slot: u32) {
        if let Some(f) = self.flags.get_mut(slot as usize) {
            if *f & LIVE != 0 {
                *f &= !LIVE;
                self.dead += 1;
            }
        }
    }

    /// Whether dead slots are a quarter of all slots: then a rebuild costs at most three times
    /// the changes since the last one.
    pub(super) fn rebuild_due(&self) -> bool {
        self.dead > 0 && self.dead * 4 >= self.places.len()
    }

    /// The column again, with only the live slots of `entries`, in their order (each entry's
    /// slot is set to its new one), and no spare capacity.
    pub(super) fn rebuilt<'a>(&self, entries: impl Iterator<Item = (&'a Position, &'a mut u32)>) -> SearchColumn {
        let live = self.places.len() - self.dead;
        let text = (0..self.places.len()).filter(|&i| self.live(i)).map(|i| self.text(i).len() + 1).sum();
        let mut fresh = SearchColumn::with_capacity(live, text);
        for (at, slot) in entries {
            let i = *slot as usize;
            fresh.starts.push(fresh.aliases.len());
            fresh.aliases.extend_from_slice(self.text(i));
            fresh.aliases.push(SEPARATOR);
            fresh.id_heads.push(self.id_heads.get(i).copied().unwrap_or_else(|| head_of(&at.key_id)));
            fresh.name_heads.push(self.name_heads.get(i).copied().unwrap_or_default());
            fresh.flags.push(self.flags.get(i).copied().unwrap_or(LIVE) | LIVE);
            fresh.places.push(at.clone());
            *slot = slot_number(fresh.places.len() - 1);
        }
        fresh
    }

    /// How many slots, dead ones included.
    pub(super) fn len(&self) -> usize {
        self.places.len()
    }

    pub(super) fn live(&self, i: usize) -> bool {
        self.flags.get(i).is_some_and(|f| f & LIVE != 0)
    }

    pub(super) fn place(&self, i: usize) -> Option<&Position> {
        self.places.get(i)
    }

    pub(super) fn id_head(&self, i: usize) -> Head {
        self.id_heads.get(i).copied().unwrap_or_default()
    }

    pub(super) fn name_head(&self, i: usize) -> Head {
        self.name_heads.get(i).copied().unwrap_or_default()
    }

    pub(super) fn name_is_ascii(&self, i: usize) -> bool {
        self.flags.get(i).is_some_and(|f| f & NAME_NOT_ASCII == 0)
    }

    /// The slot's alias in lower case, when it has one.
    pub(super) fn alias(&self, i: usize) -> Option<&[u8]> {
        self.flags.get(i).is_some_and(|f| f & ALIASED != 0).then(|| self.text(i))
    }

    /// The slots (live or dead, ascending) whose alias holds `needle`, found by `find` (the
    /// first hit in a text) over the whole text at once.
    pub(super) fn aliases_holding(&self, needle_len: usize, find: impl Fn(&[u8]) -> Option<usize>) -> Vec<usize> {
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(hit) = self.aliases.get(from..).and_then(&find).map(|p| from + p) {
            // The slot the hit begins in: the last whose text starts at or before it.
            let i = self.starts.partition_point(|&s| s <= hit).saturating_sub(1);
            let end = self.end(i);
            if hit + needle_len <= end {
                if self.flags.get(i).is_some_and(|f| f & ALIASED != 0) {
                    found.push(i);
                }
                from = end + 1;
            } else {
                // It spans two aliases (the search holds the separator): look again just after.
                from = hit + 1;
            }
        }
        found
    }

    /// Where slot `i`'s text ends (its separator).
    fn end(&self, i: usize) -> usize {
        self.starts.get(i + 1).map_or(self.aliases.len(), |next| next - 1)
    }

    fn text(&self, i: usize) -> &[u8] {
        let start = self.starts.get(i).copied().unwrap_or_default();
        self.aliases.get(start..self.end(i)).unwrap_or_default()
    }
}

/// A slot's number as entries hold it. A rebuild keeps the slots under 4/3 of the keys, so
/// they fit in 32 bits for any index that fits in memory.
fn slot_number(i: usize) -> u32 {
    i as u32
}
