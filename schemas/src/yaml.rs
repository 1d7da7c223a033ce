//! Config files (the gateway's and the ledger consumer's) are YAML, read through [`from_str`]:
//! serde_yaml, with a bound on the nodes a document expands to once its aliases are followed.
//!
//! An alias repeats the subtree of its anchor, and an anchor may hold aliases of other anchors
//! ("billion laughs"). serde_yaml bounds the number of alias jumps (100 per event of the
//! document), not what each jump repeats: an anchor of 10,000 scalars and three levels of 30
//! aliases (50 KB) stays within its bound and is 2.7·10⁸ nodes, which it built until memory ran
//! out. Here a first pass counts the nodes and stops at [`MAX_NODES`]; only then is the document
//! read into its type.

use serde::de::{self, DeserializeOwned, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use std::fmt;

/// Most nodes (scalars, sequences, mappings) a config file may hold, aliases expanded. A large
/// real config (a thousand models) holds some tens of thousands.
pub const MAX_NODES: usize = 250_000;

/// Reads `text` into `T`, refusing a document that expands to more than [`MAX_NODES`] nodes.
/// Errors are serde_yaml's, with their line and column.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, serde_yaml::Error> {
    let mut left = MAX_NODES;
    Nodes { left: &mut left }.deserialize(serde_yaml::Deserializer::from_str(text))?;
    serde_yaml::from_str(text)
}

/// Counts the nodes it visits down from `left`; an error when they run out.
struct Nodes<'a> {
    left: &'a mut usize,
}

impl Nodes<'_> {
    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        match self.left.checked_sub(1) {
            Some(left) => {
                *self.left = left;
                Ok(())
            }
            None => {
                Err(E::custom(format!("the document holds more than {MAX_NODES} nodes once its aliases are expanded")))
            }
        }
    }

    fn child(&mut self) -> Nodes<'_> {
        Nodes { left: self.left }
    }
}

impl<'de> DeserializeSeed<'de> for Nodes<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nodes<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(mut self, _: bool) -> Result<(), E> {
        self.count()
    }
    fn visit_i64<E: de::Error>(mut self, _: i64) -> Result<(), E> {
        self.count()
    }
    fn visit_u64<E: de::Error>(mut self, _: u64) -> Result<(), E> {
        self.count()
    }
    fn visit_i128<E: de::Error>(mut self, _: i128) -> Result<(), E> {
        self.count()
    }
    fn visit_u128<E: de::Error>(mut self, _: u128) -> Result<(), E> {
        self.count()
    }
    fn visit_f64<E: de::Error>(mut self, _: f64) -> Result<(), E> {
        self.count()
    }
    fn visit_str<E: de::Error>(mut self, _: &str) -> Result<(), E> {
        self.count()
    }
    fn visit_bytes<E: de::Error>(mut self, _: &[u8]) -> Result<(), E> {
        self.count()
    }
    fn visit_none<E: de::Error>(mut self) -> Result<(), E> {
        self.count()
    }
    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.count()
    }

    fn visit_some<D: de::Deserializer<'de>>(mut self, deserializer: D) -> Result<(), D::Error> {
        self.count()?;
        self.child().deserialize(deserializer)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(mut self, deserializer: D) -> Result<(), D::Error> {
        self.count()?;
        self.child().deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.count()?;
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.count()?;
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }

    /// A tagged node (`!tag value`): the tag, then its value.
    fn visit_enum<A: EnumAccess<'de>>(mut self, data: A) -> Result<(), A::Error> {
        self.count()?;
        let ((), value) = data.variant_seed(self.child())?;
        value.newtype_variant_seed(self.child())
    }
}

/// One step of a path into a document: a mapping's key or a sequence's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Where the key at the end of `path` is written in `text` (for `[Key("router_settings"),
/// Key("timeuot")]`, the line and column of `timeuot`); `None` when the document has no such
/// key. For errors about keys found once the document was read: a map a struct flattens keeps
/// no positions. Call it on a document [`from_str`] read, so the walk is within its bound.
pub fn locate(text: &str, path: &[Step<'_>]) -> Option<serde_yaml::Location> {
    if path.is_empty() {
        return None;
    }
    let walk = Find { path };
    match walk.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location(),
        _ => None,
    }
}

/// The error [`KeyIs`] raises on the key it looks for: raised while that key is read, it
/// carries the key's position.
const FOUND: &str = "tollgate: the key looked for";

/// Walks down `path` (never empty), skipping everything off it.
struct Find<'p> {
    path: &'p [Step<'p>],
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a sequence")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Step::Key(want), rest)) = self.path.split_first() {
            while let Some(hit) = map.next_key_seed(KeyIs { want, last: rest.is_empty() })? {
                if hit {
                    map.next_value_seed(Find { path: rest })?;
                    break;
                }
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        while map.next_key::<de::IgnoredAny>()?.is_some() {
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some((Step::Index(want), rest)) = self.path.split_first() {
            let mut index = 0;
            while index < *want && seq.next_element::<de::IgnoredAny>()?.is_some() {
                index += 1;
            }
            if index == *want && !rest.is_empty() {
                seq.next_element_seed(Find { path: rest })?;
            }
        }
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Reads a mapping's key: whether it is `want`, and the [`FOUND`] error when it is and ends
/// the path.
struct KeyIs<'a> {
    want: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match key == self.want {
            true if self.last => Err(E::custom(FOUND)),
            hit => Ok(hit),
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// An anchor of 10,000 scalars and three levels of 30 aliases: 2.7·10⁸ nodes from 50 KB,
    /// within serde_yaml's own bound on alias jumps. serde_yaml alone (into a
    /// `serde_yaml::Value`, as the gateway reads `litellm_settings`) built them until memory ran
    /// out; two levels (9·10⁶ nodes) took 13 s in a debug build.
    #[test]
    fn yaml_billion_laughs_are_refused_within_the_node_bound() {
        let mut text = format!("l0: &l0 [{}]\n", vec!["lol"; 10_000].join(", "));
        for level in 1..=3 {
            let aliases = vec![format!("*l{}", level - 1); 30].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{aliases}]\n"));
        }
        let started = Instant::now();
        let err = from_str::<serde_yaml::Value>(&text).expect_err("refused");
        assert!(err.to_string().contains("nodes once its aliases are expanded"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        // Ten levels of ten: serde_yaml's own bound on jumps refuses those.
        let mut text = format!("l0: &l0 [{}]\n", ["lol"; 10].join(", "));
        for level in 1..10 {
            text.push_str(&format!("l{level}: &l{level} [{}]\n", vec![format!("*l{}", level - 1); 10].join(", ")));
        }
        assert!(from_str::<serde_yaml::Value>(&text).is_err());
    }

    #[test]
    fn locate_finds_a_key_at_the_end_of_a_path() {
        let text = "a: 1\nlist:\n  - name: x\n    params: {model: m, api_bsae: u}\n  - name: y\n    params:\n      model: n\n      api_bsae: v\n";
        let at = |path: &[Step<'_>]| locate(text, path).map(|l| (l.line(), l.column()));
        let second = [Step::Key("list"), Step::Index(1), Step::Key("params"), Step::Key("api_bsae")];
        assert_eq!(at(&second), Some((8, 7)));
        let first = [Step::Key("list"), Step::Index(0), Step::Key("params"), Step::Key("api_bsae")];
        assert_eq!(at(&first), Some((4, 24)));
        assert_eq!(at(&[Step::Key("a")]), Some((1, 1)));
        assert_eq!(at(&[Step::Key("list"), Step::Index(2), Step::Key("params")]), None);
        assert_eq!(at(&[Step::Key("a"), Step::Key("b")]), None);
        assert_eq!(at(&[Step::Key("nowhere")]), None);
        assert_eq!(at(&[]), None);
    }

    #[test]
    fn aliases_within_the_bound_read_as_before() {
        let text = "a: &x {k: [1, 2]}\nb: *x\nc: !!str 5\nd: !tag [1]\n";
        let ours = from_str::<serde_yaml::Value>(text).expect("read");
        assert_eq!(ours, serde_yaml::from_str::<serde_yaml::Value>(text).expect("read"));
        assert_eq!(ours["b"]["k"][1], serde_yaml::Value::from(2));
        assert!(from_str::<serde_yaml::Value>("a: [").is_err());
        assert!(from_str::<serde_yaml::Value>("a: 1\n---\nb: 2\n").is_err(), "one document per file");
    }
}
