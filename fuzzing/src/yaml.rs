//! YAML generators for config loaders: a known-good config with fields removed, added
//! (unknown keys), re-typed, nested or multiplied, and scalars YAML reads in surprising ways
//! (`.nan`, `.inf`, `1e400`, integers past 64 bits, tags, dates, `os.environ/` of unset
//! variables); anchors and aliases up to billion-laughs shapes; and YAML token soup.

use crate::json::{self, Mutation};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

/// Scalars spelled as YAML reads them, not as JSON would: each replaces a placeholder string
/// after the mutated document is written out.
const HOSTILE_SCALARS: &[&str] = &[
    ".nan",
    ".NaN",
    ".inf",
    "-.inf",
    "+.inf",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551616",
    "-9223372036854775809",
    "340282366920938463463374607431768211456",
    "0x7fffffffffffffff",
    "0o777",
    "1_000",
    "~",
    "null",
    "yes",
    "off",
    "2001-12-14t21:59:43.10-05:00",
    "!!binary aGVsbG8=",
    "!!str 12",
    "!!int 7",
    "!!float 1",
    "!custom 1",
    "!custom {a: 1}",
    "*undefined_alias",
    "&anchor 5",
    "'os.environ/TOLLGATE_FUZZ_SURELY_UNSET'",
    "\"\\0\\a\\x07\\u2028\"",
    "\"\\uD800\"",
    "''",
    "'a\\nb'",
    "{}",
    "[]",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "{a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: 1}}}}}}}}}}}}}}}}",
];

const PLACEHOLDER: &str = "zzfuzzscalar";

/// A value, or a placeholder for one of [`HOSTILE_SCALARS`].
fn replacement(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        3 => json::value(words),
        2 => (0..HOSTILE_SCALARS.len()).prop_map(|i| Value::String(format!("{PLACEHOLDER}{i:03}"))),
    ]
    .boxed()
}

/// Writes `doc` as YAML, with placeholders replaced by their hostile scalars.
fn write(doc: &Value) -> String {
    let mut text = serde_yaml::to_string(doc).unwrap_or_default();
    while let Some(at) = text.find(PLACEHOLDER) {
        let digits = &text[at + PLACEHOLDER.len()..];
        let Some(i) = digits.get(..3).and_then(|d| d.parse::<usize>().ok()) else { break };
        // The writer may have quoted the placeholder: replace the quotes as well.
        let (start, end) = match (text[..at].chars().last(), digits.chars().nth(3)) {
            (Some(q @ ('\'' | '"')), Some(e)) if e == q => (at - 1, at + PLACEHOLDER.len() + 4),
            _ => (at, at + PLACEHOLDER.len() + 3),
        };
        text.replace_range(start..end, HOSTILE_SCALARS.get(i).copied().unwrap_or(""));
    }
    text
}

/// `seed` (a known-good config) read as a document; `Null` if it is not one (then the tests
/// built on it show it).
pub fn document_of(seed: &str) -> Value {
    serde_yaml::from_str(seed).unwrap_or(Value::Null)
}

/// Configs: `seeds` after up to 6 mutations whose new values include hostile scalars, or with one
/// value or a few (up to 6) replaced by hostile ones, written as YAML.
pub fn mutated(seeds: Vec<Value>, words: &'static [&'static str]) -> BoxedStrategy<String> {
    let changed = (select(seeds.clone()), prop::collection::vec(json::mutation_with(words, replacement(words)), 0..6))
        .prop_map(|(mut doc, changes): (Value, Vec<Mutation>)| {
            for change in &changes {
                change.apply(&mut doc);
            }
            doc
        });
    let hostile = prop_oneof![2 => json::hostile(words), 1 => replacement(words)].boxed();
    prop_oneof![
        2 => changed,
        1 => json::perturbed_with(seeds.clone(), 6, hostile.clone()),
        2 => json::one_leaf(seeds, hostile),
    ]
    .prop_map(|doc| write(&doc))
    .boxed()
}

/// A block of anchors at `indent`, each level an alias list of the one before (`l0` holds
/// `width` scalars, `l1` holds `width` aliases of `l0`, ...): up to `width^levels` nodes once
/// expanded, from a few hundred bytes of text.
pub fn laughs(indent: usize) -> BoxedStrategy<String> {
    (1usize..12, 1usize..16, any::<bool>())
        .prop_map(move |(levels, width, flow)| {
            let pad = " ".repeat(indent);
            let mut out = String::new();
            for level in 0..levels {
                let item = if level == 0 { "\"lol\"".to_owned() } else { format!("*l{}", level - 1) };
                let items = vec![item; width];
                if flow {
                    out.push_str(&format!("{pad}l{level}: &l{level} [{}]\n", items.join(", ")));
                } else {
                    out.push_str(&format!("{pad}l{level}: &l{level}\n"));
                    for item in &items {
                        out.push_str(&format!("{pad}  - {item}\n"));
                    }
                }
            }
            out
        })
        .boxed()
}

const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "-",
    "\n",
    "\n  ",
    "\n    ",
    "\t",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: *a",
    "? ",
    "!!",
    "!!map ",
    "!!seq ",
    "!tag ",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "|\n",
    ">-\n",
    "'",
    "\"",
    "#",
    "~",
    "model_list",
    "model_name",
    "litellm_params",
    "model",
    "kafka",
    "cassandra",
    "contact_points",
    "gateway",
    "openai/m",
    ".nan",
    ".inf",
    "1e400",
    "18446744073709551616",
    "os.environ/X",
    "é",
    "\u{feff}",
    "\u{0}",
];

/// YAML token soup, up to a few KiB.
pub fn soup() -> BoxedStrategy<String> {
    prop::collection::vec(prop_oneof![4 => select(TOKENS).prop_map(str::to_owned), 1 => "[a-z0-9_]{0,8}"], 0..128)
        .prop_map(|pieces| pieces.concat())
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_raw_scalars() {
        let doc = serde_json::json!({"a": format!("{PLACEHOLDER}000"), "b": [format!("{PLACEHOLDER}005")]});
        let text = write(&doc);
        assert!(text.contains("a: .nan"), "{text}");
        assert!(text.contains("- 1e400"), "{text}");
        assert!(!text.contains(PLACEHOLDER), "{text}");
    }
}
