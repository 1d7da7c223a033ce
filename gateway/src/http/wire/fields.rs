//! The top-level fields of a request body, kept as spans of the body itself: read without a
//! copy, and forwarded with only the edits a provider needs spliced in (the model name, the
//! request for the usage chunk), so a pass-through provider receives the client's own bytes.
//!
//! A body that names a field twice is never spliced: readers disagree on which of the two
//! counts (this one keeps the last, some the first), so the gateway could meter one model while
//! the provider serves the other. It is written anew from the fields as read instead.

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::ops::Range;

/// A request body and where each of its top-level values is in it.
pub struct Fields {
    /// The body, valid UTF-8 (JSON that parsed).
    body: Bytes,
    spans: HashMap<String, Range<usize>>,
    /// Some field name appears more than once.
    repeated: bool,
}

impl Fields {
    /// Reads the top level of `body`, which must be one JSON object.
    pub fn parse(body: Bytes) -> Result<Fields, serde_json::Error> {
        let text = match std::str::from_utf8(&body) {
            Ok(text) => text,
            // serde_json names the position of the first byte that is not UTF-8.
            Err(_) => {
                return Err(serde_json::from_slice::<serde::de::IgnoredAny>(&body).err().unwrap_or_else(not_utf8))
            }
        };
        let mut reader = serde_json::Deserializer::from_str(text);
        let (spans, repeated) = reader.deserialize_map(TopLevel { body: text })?;
        reader.end()?;
        Ok(Fields { body, spans, repeated })
    }

    /// The raw JSON text of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let span = self.spans.get(name)?;
        self.body.get(span.clone()).and_then(|raw| std::str::from_utf8(raw).ok())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.spans.contains_key(name)
    }

    /// How many fields there are.
    pub fn count(&self) -> usize {
        self.spans.len()
    }

    /// Every field, name and raw JSON text, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.keys().filter_map(|name| Some((name.as_str(), self.get(name)?)))
    }

    /// The body with each `(name, value)` of `edits` set: a value replaced where the field is,
    /// and added before the closing brace where it is not. `value` is JSON text.
    pub fn edited(&self, edits: &[(&str, &[u8])]) -> Result<Vec<u8>, serde_json::Error> {
        if self.repeated {
            return self.rewritten(edits);
        }
        let mut replaced: Vec<(Range<usize>, &[u8])> = Vec::with_capacity(edits.len());
        let mut added: Vec<u8> = Vec::new();
        for (name, value) in edits {
            match self.spans.get(*name) {
                Some(span) => replaced.push((span.clone(), value)),
                None => {
                    if !(self.spans.is_empty() && added.is_empty()) {
                        added.push(b',');
                    }
                    serde_json::to_writer(&mut added, name)?;
                    added.push(b':');
                    added.extend_from_slice(value);
                }
            }
        }
        replaced.sort_by_key(|(span, _)| span.start);
        // The object's closing brace: the last byte that is not white space.
        let close = self.body.iter().rposition(|b| !b.is_ascii_whitespace()).unwrap_or(0);
        let extra: usize = replaced.iter().map(|(_, v)| v.len()).sum::<usize>() + added.len();
        let mut out = Vec::with_capacity(self.body.len() + extra);
        let mut at = 0;
        for (span, value) in replaced {
            out.extend_from_slice(&self.body[at..span.start]);
            out.extend_from_slice(value);
            at = span.end;
        }
        out.extend_from_slice(&self.body[at..close]);
        out.extend_from_slice(&added);
        out.extend_from_slice(&self.body[close..]);
        Ok(out)
    }

    /// The body without the field `name`, the others in their order, written anew.
    pub fn without(&self, name: &str) -> Result<Vec<u8>, serde_json::Error> {
        let mut kept: Vec<(&str, &Range<usize>)> =
            self.spans.iter().filter(|(n, _)| n.as_str() != name).map(|(n, s)| (n.as_str(), s)).collect();
        kept.sort_by_key(|(_, span)| span.start);
        let mut out = Vec::with_capacity(self.body.len());
        out.push(b'{');
        for (i, (field, span)) in kept.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, field)?;
            out.push(b':');
            out.extend_from_slice(&self.body[span.clone()]);
        }
        out.push(b'}');
        Ok(out)
    }

    /// The fields as read (the last of a repeated name), with `edits` set, written anew.
    fn rewritten(&self, edits: &[(&str, &[u8])]) -> Result<Vec<u8>, serde_json::Error> {
        let mut out: HashMap<&str, &RawValue> = HashMap::with_capacity(self.spans.len() + edits.len());
        for (name, raw) in self.iter() {
            out.insert(name, serde_json::from_str(raw)?);
        }
        for (name, value) in edits {
            out.insert(name, serde_json::from_slice(value)?);
        }
        serde_json::to_vec(&out)
    }
}

fn not_utf8() -> serde_json::Error {
    serde::de::Error::custom("the body is not UTF-8")
}

/// Reads one object, recording where each value is in `body`.
struct TopLevel<'a> {
    body: &'a str,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = (HashMap<String, Range<usize>>, bool);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let base = self.body.as_ptr() as usize;
        let mut spans = HashMap::with_capacity(map.size_hint().unwrap_or(8));
        let mut repeated = false;
        while let Some((name, value)) = map.next_entry::<String, &'de RawValue>()? {
            let raw = value.get();
            // `raw` is borrowed from the body: its address says where it is.
            let span = (raw.as_ptr() as usize)
                .checked_sub(base)
                .map(|start| start..start + raw.len())
                .filter(|span| self.body.get(span.clone()) == Some(raw))
                .ok_or_else(|| serde::de::Error::custom("a value is not where it was read"))?;
            repeated |= spans.insert(name, span).is_some();
        }
        Ok((spans, repeated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Fields {
        Fields::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap()
    }

    fn edited(body: &str, edits: &[(&str, &[u8])]) -> String {
        String::from_utf8(fields(body).edited(edits).unwrap()).unwrap()
    }

    #[test]
    fn reads_values_where_they_are() {
        let f = fields(" {\"model\" : \"m\", \"n\":2,\"mod\\u0065l2\":{\"a\":[1, 2]}} \n");
        assert_eq!(f.get("model"), Some("\"m\""));
        assert_eq!(f.get("n"), Some("2"));
        assert_eq!(f.get("model2"), Some("{\"a\":[1, 2]}"));
        assert_eq!(f.get("x"), None);
        assert_eq!(f.count(), 3);
    }

    /// A field removed leaves the others, in their order, with the client's bytes.
    #[test]
    fn removes_a_field() {
        let f = fields("{\"cache\": {\"no-cache\": true}, \"model\":\"m\",\"x\\\"y\":[1, 2],\"cache\":null}");
        let out = String::from_utf8(f.without("cache").unwrap()).unwrap();
        assert_eq!(out, "{\"model\":\"m\",\"x\\\"y\":[1, 2]}");
        assert_eq!(String::from_utf8(fields("{\"cache\":1}").without("cache").unwrap()).unwrap(), "{}");
    }

    /// Edits replace a value in place and leave every other byte of the body as it was.
    #[test]
    fn splices_edits_into_the_clients_bytes() {
        let body = "{\"model\": \"alias\" ,\"messages\":[ {\"role\":\"user\"} ],\n \"stream\":true}\n";
        let out = edited(body, &[("model", b"\"up\""), ("stream_options", b"{\"include_usage\":true}")]);
        assert_eq!(
            out,
            "{\"model\": \"up\" ,\"messages\":[ {\"role\":\"user\"} ],\n \"stream\":true,\"stream_options\":{\"include_usage\":true}}\n"
        );
        assert_eq!(edited("{}", &[("model", b"\"m\"")]), "{\"model\":\"m\"}");
        assert_eq!(edited("{\"a\":1}", &[("a", b"2"), ("b", b"3"), ("c", b"4")]), "{\"a\":2,\"b\":3,\"c\":4}");
    }

    /// A repeated name is not spliced: the body is written anew with one value per name, so
    /// the provider cannot read the other one.
    #[test]
    fn a_repeated_name_is_written_once() {
        let out = edited("{\"model\":\"expensive\",\"model\":\"cheap\",\"x\":1}", &[("model", b"\"up\"")]);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value, serde_json::json!({"model": "up", "x": 1}));
        assert_eq!(out.matches("model").count(), 1, "{out}");
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for body in ["[1]", "{\"a\":1} {}", "{\"a\":", "\"x\"", "{\"a\":1,}"] {
            assert!(Fields::parse(Bytes::copy_from_slice(body.as_bytes())).is_err(), "{body}");
        }
        assert!(Fields::parse(Bytes::from_static(b"{\"a\":\"\xff\"}")).is_err());
    }
}
