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
    fn aliases_within_the_bound_read_as_before() {
        let text = "a: &x {k: [1, 2]}\nb: *x\nc: !!str 5\nd: !tag [1]\n";
        let ours = from_str::<serde_yaml::Value>(text).expect("read");
        assert_eq!(ours, serde_yaml::from_str::<serde_yaml::Value>(text).expect("read"));
        assert_eq!(ours["b"]["k"][1], serde_yaml::Value::from(2));
        assert!(from_str::<serde_yaml::Value>("a: [").is_err());
        assert!(from_str::<serde_yaml::Value>("a: 1\n---\nb: 2\n").is_err(), "one document per file");
    }
}
