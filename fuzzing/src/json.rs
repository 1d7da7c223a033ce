//! JSON generators: hostile numbers and strings, bounded recursive values whose keys and strings
//! come from a protocol's own vocabulary (so objects look like the real thing and reach deep
//! code paths), mutations of known-good documents, and raw bytes around known-good texts.

use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Number, Value};

/// Words every vocabulary shares: JSON-looking, SSE-looking and path-looking strings.
const COMMON_WORDS: &[&str] = &[
    "",
    "type",
    "text",
    "content",
    "data",
    "error",
    "message",
    "model",
    "id",
    "index",
    "usage",
    "null",
    "[DONE]",
    "data: {}\n\n",
    "\r\n",
    "\n\n",
    "\u{0}",
    "\u{7f}",
    "é",
    "𝄞",
    "\u{feff}",
    "\u{200b}",
    "a/model/b",
    "../..",
    "os.environ/TOLLGATE_FUZZ_SURELY_UNSET",
    "#/$defs/a",
    "data:image/png;base64,AAAA",
    "data:,",
    "data:;base64",
    "https://example.com/x.png?y#z",
];

/// Numbers a decoder may not expect: the limits of every integer type, just past Tollgate's own
/// bounds, floats at their extremes, negative zero, fractions where counts are expected.
pub fn number() -> BoxedStrategy<Value> {
    let edges = vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(2),
        json!(127),
        json!(128),
        json!(129),
        json!(1024),
        json!(65_536),
        json!(1_000_000_000),
        json!(1_000_000_001),
        json!(4_294_967_295u64),
        json!(4_294_967_296u64),
        json!(9_007_199_254_740_993u64),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX - 1),
        json!(u64::MAX),
        json!(0.5),
        json!(-0.0),
        json!(1e308),
        json!(-1e308),
        json!(f64::MIN_POSITIVE),
        json!(1.0e9),
    ];
    prop_oneof![
        4 => select(edges),
        2 => any::<u64>().prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        3 => (0u64..2048).prop_map(Value::from),
    ]
    .boxed()
}

/// The words of a vocabulary and [`COMMON_WORDS`].
fn words_of(words: &'static [&'static str]) -> Vec<&'static str> {
    words.iter().chain(COMMON_WORDS).copied().collect()
}

/// Strings: mostly the protocol's words, and arbitrary text (control characters, surrogate-free
/// unicode, escapes), and long runs (up to 4 KiB).
pub fn string(words: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        5 => select(words_of(words)).prop_map(str::to_owned),
        3 => "\\PC{0,24}",
        2 => "[\\x00-\\x1f\"\\\\/\\x7f\u{80}-\u{ff}\u{2028}\u{fffd}]{0,12}",
        1 => (select(vec!['x', ' ', '\n', '"', '\\', 'é', '𝄞']), 0usize..4096)
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect::<String>()),
    ]
    .boxed()
}

fn key(words: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![4 => select(words_of(words)).prop_map(str::to_owned), 1 => string(words)].boxed()
}

/// Scalars: null, booleans, [`number`]s and [`string`]s.
pub fn scalar(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => number(),
        4 => string(words).prop_map(Value::String),
    ]
    .boxed()
}

/// Values up to 5 levels deep and about 100 nodes, objects keyed mostly by the vocabulary.
pub fn value(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    scalar(words)
        .prop_recursive(5, 96, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(words), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
        .boxed()
}

/// One change to a document. A path picks a node by choosing, at each level, the child at the
/// index modulo the number of children; it stops early at a leaf.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// The node becomes another value (often of another type).
    Replace { path: Vec<u16>, with: Value },
    /// The node is taken out of its parent.
    Remove { path: Vec<u16> },
    /// A field is added to an object (an item to an array; a scalar becomes an object).
    Insert { path: Vec<u16>, key: String, with: Value },
    /// An array's item is repeated.
    Duplicate { path: Vec<u16>, times: u8 },
    /// The node is wrapped in arrays and objects, past the JSON reader's depth limit (128) at
    /// times.
    Nest { path: Vec<u16>, levels: u8 },
}

impl Mutation {
    pub fn apply(&self, doc: &mut Value) {
        match self {
            Mutation::Replace { path, with } => *target(doc, path) = with.clone(),
            Mutation::Remove { path } => {
                let Some((&last, parent)) = path.split_last() else { return };
                match target(doc, parent) {
                    Value::Array(items) if !items.is_empty() => {
                        let at = usize::from(last) % items.len();
                        items.remove(at);
                    }
                    Value::Object(fields) if !fields.is_empty() => {
                        let at = usize::from(last) % fields.len();
                        if let Some(k) = fields.keys().nth(at).cloned() {
                            fields.remove(&k);
                        }
                    }
                    _ => {}
                }
            }
            Mutation::Insert { path, key, with } => match target(doc, path) {
                Value::Object(fields) => {
                    fields.insert(key.clone(), with.clone());
                }
                Value::Array(items) => items.push(with.clone()),
                other => *other = json!({ key.clone(): with.clone() }),
            },
            Mutation::Duplicate { path, times } => {
                if let Value::Array(items) = target(doc, path) {
                    if let Some(first) = items.first().cloned() {
                        items.extend(std::iter::repeat_n(first, usize::from(*times)));
                    }
                }
            }
            Mutation::Nest { path, levels } => {
                let node = target(doc, path);
                for level in 0..*levels {
                    let inner = node.take();
                    *node = if level % 2 == 0 { Value::Array(vec![inner]) } else { json!({ "a": inner }) };
                }
            }
        }
    }
}

/// The node `path` leads to.
fn target<'a>(node: &'a mut Value, path: &[u16]) -> &'a mut Value {
    let Some((&step, rest)) = path.split_first() else { return node };
    let children = match node {
        Value::Array(items) => items.len(),
        Value::Object(fields) => fields.len(),
        _ => 0,
    };
    if children == 0 {
        return node;
    }
    let at = usize::from(step) % children;
    match node {
        Value::Array(items) => target(&mut items[at], rest),
        Value::Object(fields) => match fields.values_mut().nth(at) {
            Some(child) => target(child, rest),
            None => unreachable!("{at} is below the number of fields"),
        },
        _ => unreachable!("only arrays and objects have children"),
    }
}

fn path() -> BoxedStrategy<Vec<u16>> {
    prop::collection::vec(any::<u16>(), 0..8).boxed()
}

/// Mutations whose new values come from `with`.
pub fn mutation_with(words: &'static [&'static str], with: BoxedStrategy<Value>) -> BoxedStrategy<Mutation> {
    prop_oneof![
        4 => (path(), with.clone()).prop_map(|(path, with)| Mutation::Replace { path, with }),
        3 => path().prop_map(|path| Mutation::Remove { path }),
        3 => (path(), key(words), with).prop_map(|(path, key, with)| Mutation::Insert { path, key, with }),
        1 => (path(), 1u8..64).prop_map(|(path, times)| Mutation::Duplicate { path, times }),
        1 => (path(), prop_oneof![3 => 1u8..8, 1 => 120u8..140]).prop_map(|(path, levels)| Mutation::Nest { path, levels }),
    ]
    .boxed()
}

/// Mutations with new values from [`value`].
pub fn mutation(words: &'static [&'static str]) -> BoxedStrategy<Mutation> {
    mutation_with(words, value(words))
}

/// One of `seeds` (known-good documents) after up to 6 [`mutation`]s: plausible documents with
/// fields missing, re-typed, added, nested or multiplied.
pub fn mutated(seeds: Vec<Value>, words: &'static [&'static str]) -> BoxedStrategy<Value> {
    (select(seeds), prop::collection::vec(mutation(words), 0..6))
        .prop_map(|(mut doc, changes)| {
            for change in &changes {
                change.apply(&mut doc);
            }
            doc
        })
        .boxed()
}

/// A value of the wrong kind for almost any field: the integer limits, long strings, empty
/// containers.
pub fn hostile(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    let huge = vec![
        json!(u64::MAX),
        json!(u64::MAX - 1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(9_223_372_036_854_775_808u64),
        json!(1_000_000_001),
        json!(-1),
        json!(1e308),
        json!(0.5),
    ];
    prop_oneof![
        3 => select(huge),
        2 => number(),
        2 => string(words).prop_map(Value::String),
        1 => (1000usize..5000).prop_map(|n| Value::String("x".repeat(n))),
        1 => Just(json!({})),
        1 => Just(json!([])),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
    .boxed()
}

/// One of `seeds` with up to 8 of its leaves, chosen uniformly, replaced by [`hostile`] values:
/// plausible documents with several fields wrong at once (both token counts huge, an id too
/// long and a model of the wrong type).
pub fn perturbed(seeds: Vec<Value>, words: &'static [&'static str]) -> BoxedStrategy<Value> {
    perturbed_with(seeds, 8, hostile(words))
}

/// One of `seeds` with exactly one leaf, chosen uniformly, replaced by a value from `with`: a
/// known-good document with one field wrong (a string too long, a number past its type, an
/// object where a name goes).
pub fn one_leaf(seeds: Vec<Value>, with: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    perturbed_with(seeds, 1, with)
}

/// One of `seeds` with 1 to `most` leaves, chosen uniformly, replaced by values from `with`.
pub fn perturbed_with(seeds: Vec<Value>, most: usize, with: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    (select(seeds), prop::collection::vec((any::<Index>(), with), 1..=most.max(1)))
        .prop_map(|(mut doc, swaps)| {
            let leaves = count_leaves(&doc);
            if leaves > 0 {
                let mut at: Vec<Option<Value>> = vec![None; leaves];
                for (index, value) in swaps {
                    at[index.index(leaves)] = Some(value);
                }
                perturb(&mut doc, &at, &mut 0);
            }
            doc
        })
        .boxed()
}

fn count_leaves(node: &Value) -> usize {
    match node {
        Value::Array(items) => items.iter().map(count_leaves).sum(),
        Value::Object(fields) => fields.values().map(count_leaves).sum(),
        _ => 1,
    }
}

/// Replaces the leaves of `node` (in document order, from number `leaf`) that `swaps` holds a
/// value for.
fn perturb(node: &mut Value, swaps: &[Option<Value>], leaf: &mut usize) {
    match node {
        Value::Array(items) => items.iter_mut().for_each(|item| perturb(item, swaps, leaf)),
        Value::Object(fields) => fields.values_mut().for_each(|field| perturb(field, swaps, leaf)),
        scalar => {
            if let Some(Some(swap)) = swaps.get(*leaf) {
                *scalar = swap.clone();
            }
            *leaf += 1;
        }
    }
}

/// Documents of a protocol: mutated and perturbed seeds, and values built from its vocabulary
/// alone.
pub fn document(seeds: Vec<Value>, words: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        3 => mutated(seeds.clone(), words),
        2 => perturbed(seeds.clone(), words),
        2 => one_leaf(seeds, hostile(words)),
        1 => value(words),
    ]
    .boxed()
}

/// `value` as the JSON reader gives it to a decoder: written and read back, so nothing is nested
/// deeper than the reader follows. `None` when the reader refuses it (too deep).
pub fn as_read(value: &Value) -> Option<Value> {
    serde_json::to_vec(value).ok().and_then(|text| serde_json::from_slice(&text).ok())
}

/// Nesting from 1 to 300 levels (the JSON reader stops at 128), as text.
pub fn deep_text() -> BoxedStrategy<String> {
    (1usize..300, any::<bool>())
        .prop_map(|(depth, objects)| {
            if objects {
                format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
            } else {
                format!("{}{}", "[".repeat(depth), "]".repeat(depth))
            }
        })
        .boxed()
}

/// Pieces of JSON (and of the SSE around it) that a byte-level edit inserts: structure, escapes,
/// numbers beyond every type, and bytes that are not UTF-8 or cut a character in two.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"-",
    b"1e999",
    b"-1e999",
    b"18446744073709551616",
    b"-0",
    b"0.0000000000000000000000001",
    b"\n",
    b"\r\n",
    b"\r",
    b"data: ",
    b"[DONE]",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9d\x84",
    b"\xef\xbb\xbf",
];

/// One byte-level edit of a text.
#[derive(Clone, Debug)]
pub enum ByteEdit {
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
    Truncate(Index),
    /// Copies a slice of the text elsewhere in it.
    Splice {
        from: Index,
        len: u8,
        to: Index,
    },
}

impl ByteEdit {
    pub fn apply(&self, text: &mut Vec<u8>) {
        let len = text.len();
        match self {
            ByteEdit::Set(at, byte) if len > 0 => text[at.index(len)] = *byte,
            ByteEdit::Insert(at, bytes) => {
                let at = at.index(len + 1);
                text.splice(at..at, bytes.iter().copied());
            }
            ByteEdit::Delete(at, n) if len > 0 => {
                let at = at.index(len);
                text.drain(at..(at + usize::from(*n)).min(len));
            }
            ByteEdit::Truncate(at) => text.truncate(at.index(len + 1)),
            ByteEdit::Splice { from, len: n, to } if len > 0 => {
                let from = from.index(len);
                let piece = text[from..(from + usize::from(*n)).min(len)].to_vec();
                let to = to.index(len + 1);
                text.splice(to..to, piece);
            }
            _ => {}
        }
    }
}

fn byte_edit() -> BoxedStrategy<ByteEdit> {
    prop_oneof![
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| ByteEdit::Set(at, b)),
        3 => (any::<Index>(), select(TOKENS)).prop_map(|(at, t)| ByteEdit::Insert(at, t.to_vec())),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, n)| ByteEdit::Delete(at, n)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        1 => (any::<Index>(), any::<u8>(), any::<Index>()).prop_map(|(from, len, to)| ByteEdit::Splice { from, len, to }),
    ]
    .boxed()
}

/// One of `seeds` after up to 8 byte-level edits.
pub fn edited(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (select(seeds), prop::collection::vec(byte_edit(), 0..8))
        .prop_map(|(mut text, edits)| {
            for edit in &edits {
                edit.apply(&mut text);
            }
            text
        })
        .boxed()
}

/// Raw bytes for a JSON decoder: arbitrary bytes, JSON tokens strung together, known-good
/// texts after byte-level edits, deep nesting, and (structure-aware) mutated documents written
/// out, compact or pretty.
pub fn bytes(seeds: Vec<Value>, words: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    let texts: Vec<Vec<u8>> = seeds.iter().filter_map(|v| serde_json::to_vec(v).ok()).collect();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => prop::collection::vec(select(TOKENS), 0..64).prop_map(|ts| ts.concat()),
        3 => edited(texts),
        1 => deep_text().prop_map(String::into_bytes),
        3 => (document(seeds, words), any::<bool>()).prop_map(|(v, pretty)| {
            let text = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) };
            text.unwrap_or_default()
        }),
    ]
    .boxed()
}
