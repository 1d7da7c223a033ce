//! An entry as bytes, for a cache outside the process (Redis): a version line, one line of JSON
//! with what the answer cost and served, then the chat completion as the provider sent it.
//!
//! What is read back is hostile (another program may write to the same Redis): it is bounded in
//! size before it is parsed, and anything that is not a well-formed entry holding a chat
//! completion is no entry at all (a miss), never an error to the client.

use super::Entry;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tollgate_schemas::NanoUsd;

/// The first line of every encoded entry; another version is a miss.
const MAGIC: &[u8] = b"tollgate-cache-v1\n";
/// The most the JSON line may take (costs, token counts, a model name).
pub const MAX_META_BYTES: usize = 1024;
/// The longest served model name accepted back.
const MAX_MODEL_BYTES: usize = 256;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    cost: i64,
    prompt_tokens: u64,
    completion_tokens: u64,
    served_model: Option<String>,
    stored_at: u64,
}

/// Why bytes read back are not an entry.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    #[error("the value is larger than an entry may be")]
    TooLarge,
    #[error("the value is not a Tollgate cache entry of this version")]
    NotAnEntry,
    #[error("the entry's fields are malformed or out of bounds")]
    BadMeta,
    #[error("the entry's body is not a chat completion")]
    NotACompletion,
}

/// The most bytes an encoded entry with a body of at most `max_entry_bytes` takes.
pub fn max_encoded_len(max_entry_bytes: u64) -> usize {
    let body = usize::try_from(max_entry_bytes).unwrap_or(usize::MAX);
    body.saturating_add(MAGIC.len() + MAX_META_BYTES + 1)
}

/// `entry` as bytes.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let meta = Meta {
        cost: entry.cost.0,
        prompt_tokens: entry.prompt_tokens,
        completion_tokens: entry.completion_tokens,
        served_model: entry.served_model.clone().filter(|m| m.len() <= MAX_MODEL_BYTES),
        stored_at: entry.stored_at,
    };
    // Serializing integers and a string cannot fail; an empty line would decode as a miss.
    let meta = serde_json::to_vec(&meta).unwrap_or_default();
    let mut out = Vec::with_capacity(MAGIC.len() + meta.len() + 1 + entry.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&meta);
    out.push(b'\n');
    out.extend_from_slice(&entry.body);
    out
}

/// The entry `bytes` hold, whose body may be at most `max_entry_bytes`.
pub fn decode(bytes: &[u8], max_entry_bytes: u64) -> Result<Entry, Undecodable> {
    if bytes.len() > max_encoded_len(max_entry_bytes) {
        return Err(Undecodable::TooLarge);
    }
    let rest = bytes.strip_prefix(MAGIC).ok_or(Undecodable::NotAnEntry)?;
    let end = rest.iter().take(MAX_META_BYTES + 1).position(|&b| b == b'\n').ok_or(Undecodable::BadMeta)?;
    let (meta, body) = (&rest[..end], &rest[end + 1..]);
    if u64::try_from(body.len()).unwrap_or(u64::MAX) > max_entry_bytes {
        return Err(Undecodable::TooLarge);
    }
    let meta: Meta = serde_json::from_slice(meta).map_err(|_| Undecodable::BadMeta)?;
    if meta.cost < 0 || meta.served_model.as_ref().is_some_and(|m| m.len() > MAX_MODEL_BYTES || m.is_empty()) {
        return Err(Undecodable::BadMeta);
    }
    // What is served must replay as a stream: the same check `store` makes.
    if super::replay::chunks(body, false).is_none() {
        return Err(Undecodable::NotACompletion);
    }
    Ok(Entry {
        body: Bytes::copy_from_slice(body),
        cost: NanoUsd(meta.cost),
        prompt_tokens: meta.prompt_tokens,
        completion_tokens: meta.completion_tokens,
        served_model: meta.served_model,
        stored_at: meta.stored_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &[u8] = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m",
        "choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}"#;

    fn entry() -> Entry {
        Entry {
            body: Bytes::from_static(ANSWER),
            cost: NanoUsd(1234),
            prompt_tokens: 10,
            completion_tokens: 5,
            served_model: Some("m-1".into()),
            stored_at: 1_700_000_000,
        }
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let back = decode(&encode(&entry()), 1 << 20).unwrap();
        assert_eq!(back.body.as_ref(), ANSWER);
        assert_eq!((back.cost, back.prompt_tokens, back.completion_tokens), (NanoUsd(1234), 10, 5));
        assert_eq!((back.served_model.as_deref(), back.stored_at), (Some("m-1"), 1_700_000_000));
    }

    #[test]
    fn values_over_the_bound_are_refused_before_parsing() {
        let encoded = encode(&entry());
        assert_eq!(decode(&encoded, ANSWER.len() as u64).map(|_| ()), Ok(()));
        assert_eq!(decode(&encoded, ANSWER.len() as u64 - 1).err(), Some(Undecodable::TooLarge));
        let mut huge = MAGIC.to_vec();
        huge.resize(max_encoded_len(100) + 1, b'x');
        assert_eq!(decode(&huge, 100).err(), Some(Undecodable::TooLarge));
    }

    #[test]
    fn garbage_is_no_entry() {
        let with_meta = |meta: &str, body: &[u8]| [MAGIC, meta.as_bytes(), b"\n", body].concat();
        let good_meta = r#"{"cost":1,"prompt_tokens":1,"completion_tokens":1,"served_model":null,"stored_at":1}"#;
        let cases: Vec<(Vec<u8>, Undecodable)> = vec![
            (b"".to_vec(), Undecodable::NotAnEntry),
            (b"hello".to_vec(), Undecodable::NotAnEntry),
            (b"tollgate-cache-v0\n{}\n{}".to_vec(), Undecodable::NotAnEntry),
            (MAGIC.to_vec(), Undecodable::BadMeta),
            ([MAGIC, &[b' '; MAX_META_BYTES + 1], b"\n{}"].concat(), Undecodable::BadMeta),
            (with_meta("{", ANSWER), Undecodable::BadMeta),
            (
                with_meta(
                    r#"{"cost":-1,"prompt_tokens":1,"completion_tokens":1,"served_model":null,"stored_at":1}"#,
                    ANSWER,
                ),
                Undecodable::BadMeta,
            ),
            (
                with_meta(
                    r#"{"cost":1,"prompt_tokens":-1,"completion_tokens":1,"served_model":null,"stored_at":1}"#,
                    ANSWER,
                ),
                Undecodable::BadMeta,
            ),
            (
                with_meta(
                    r#"{"cost":1,"prompt_tokens":1,"completion_tokens":1,"served_model":null,"stored_at":1,"x":1}"#,
                    ANSWER,
                ),
                Undecodable::BadMeta,
            ),
            (
                with_meta(
                    &format!(
                        r#"{{"cost":1,"prompt_tokens":1,"completion_tokens":1,"served_model":"{}","stored_at":1}}"#,
                        "m".repeat(300)
                    ),
                    ANSWER,
                ),
                Undecodable::BadMeta,
            ),
            (with_meta(good_meta, b"not json"), Undecodable::NotACompletion),
            (with_meta(good_meta, br#"{"choices":[{"index":0}]}"#), Undecodable::NotACompletion),
        ];
        for (bytes, why) in cases {
            assert_eq!(decode(&bytes, 1 << 20).err(), Some(why), "{}", String::from_utf8_lossy(&bytes));
        }
        assert!(decode(&with_meta(good_meta, ANSWER), 1 << 20).is_ok());
    }
}
