//! The hand-written JSON against `serde_json::to_vec` of the same event, byte for byte.

use super::*;
use crate::event::fuzz::valid_event;
use crate::event::{Adjustment, AttemptKind, AttemptOutcome, CacheHit, UpstreamAttempt};
use crate::NanoUsd;
use proptest::prelude::*;

fn assert_same(e: &UsageEvent) {
    let ours = encode(e).unwrap();
    let theirs = serde_json::to_vec(e).unwrap();
    assert!(ours == theirs, "ours:   {}\ntheirs: {}", String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
}

/// Text of any kind: plain, or with characters to escape (quotes, backslashes, controls, at any
/// place of an eight-byte word), or not ASCII.
fn text() -> BoxedStrategy<String> {
    let chars = prop::sample::select(vec![
        'a', 'Z', '0', ' ', '/', '"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', 'é', '中', '𝄞',
    ]);
    prop_oneof![2 => "[a-z0-9_./-]{0,40}", 1 => prop::collection::vec(chars, 0..40).prop_map(String::from_iter), 1 => any::<String>()]
        .boxed()
}

/// Zero half of the time: the fields left out when zero are both left out and written.
fn count() -> BoxedStrategy<u64> {
    prop_oneof![Just(0u64), any::<u64>()].boxed()
}

/// Every field of an event, each in its range and beyond: `valid_event`'s, then the fields it
/// leaves at their defaults, and some of its strings replaced by any text.
fn any_event() -> impl Strategy<Value = UsageEvent> {
    let counts = prop::collection::vec(count(), 11);
    let parts = prop::collection::vec((text(), any::<u64>(), any::<i64>()), 0..4);
    let nested = (
        prop::option::of((any::<u128>(), text())),
        prop::option::of((any::<bool>(), any::<u64>(), any::<u64>())),
        prop::collection::vec(text(), 0..4),
        prop::option::of((text(), text(), prop::option::of(any::<u16>()), any::<u64>())),
        prop_oneof![Just(0u32), any::<u32>()],
    );
    let texts = (text(), text(), prop::option::of(text()), prop::option::of(text()), prop::option::of(text()));
    let times = (-62_135_596_800i64..253_402_300_800, prop_oneof![Just(0u32), 0u32..1_000_000_000]);
    (
        valid_event(),
        counts,
        parts,
        nested,
        texts,
        times,
        any::<bool>(),
        prop_oneof![Just(0u8), any::<u8>()],
        any::<i64>(),
    )
        .prop_map(|(mut e, counts, parts, nested, texts, (secs, nanos), unpriced, generation, cost)| {
            [
                e.cache_write_tokens,
                e.reasoning_tokens,
                e.audio_input_tokens,
                e.audio_output_tokens,
                e.image_input_tokens,
                e.image_output_tokens,
                e.search_units,
                e.characters,
                e.images,
                e.pixels,
                e.audio_seconds,
            ] = [
                counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], counts[7], counts[8],
                counts[9], counts[10],
            ];
            e.cost_by_token_type = parts
                .into_iter()
                .map(|(token_type, tokens, cost)| TokenTypeCost { token_type, tokens, cost_nano_usd: NanoUsd(cost) })
                .collect();
            let (adjustment, cache, tags, attempt, omitted) = nested;
            e.adjustment =
                adjustment.map(|(id, rerate_run)| Adjustment { adjusts_event_id: Uuid::from_u128(id), rerate_run });
            e.cache = cache.map(|(hit, saved_input_tokens, saved_output_tokens)| CacheHit {
                hit,
                saved_input_tokens,
                saved_output_tokens,
            });
            e.tags = tags;
            e.attempts = attempt
                .map(|(model_group, deployment, status, latency_ms)| UpstreamAttempt {
                    model_group,
                    deployment,
                    provider: "openai".into(),
                    kind: AttemptKind::Fallback,
                    outcome: AttemptOutcome::ErrorStatus,
                    status,
                    latency_ms,
                })
                .into_iter()
                .collect();
            e.attempts_omitted = omitted;
            let (gateway_id, requested_model, key_alias, error_type, trace_id) = texts;
            (e.gateway_id, e.requested_model, e.key_alias, e.error_type, e.trace_id) =
                (gateway_id, requested_model, key_alias, error_type, trace_id);
            if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                e.occurred_at = t;
            }
            (e.unpriced, e.usage_generation, e.cost_nano_usd) = (unpriced, generation, NanoUsd(cost));
            e
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_event_is_written_as_serde_json_writes_it(e in any_event()) {
        assert_same(&e);
    }

    #[test]
    fn a_valid_event_is_written_as_serde_json_writes_it(e in valid_event()) {
        assert_same(&e);
    }

    #[test]
    fn a_string_is_plain_exactly_when_serde_json_writes_it_as_it_is(s in text()) {
        let as_is = format!("\"{s}\"");
        if plain(s.as_bytes()) {
            prop_assert_eq!(serde_json::to_string(&s).unwrap(), as_is);
        }
    }
}

#[test]
fn the_golden_fixtures_are_written_as_serde_json_writes_them() {
    for fixture in [
        include_str!("../../../fixtures/usage_event_v1.json"),
        include_str!("../../../fixtures/usage_event_v1_minimal.json"),
        include_str!("../../../fixtures/usage_event_v1_adjustment.json"),
        include_str!("../../../fixtures/usage_event_v1_cache_hit.json"),
        include_str!("../../../fixtures/usage_event_v1_retried.json"),
    ] {
        let event = UsageEvent::decode(fixture.as_bytes()).unwrap();
        assert_same(&event);
    }
}

#[test]
fn instants_are_written_as_chrono_writes_them() {
    let mut e = UsageEvent { version: 1, ..UsageEvent::default() };
    let seconds =
        [-62_167_219_200i64, -62_135_596_800, 0, 951_782_400, 1_764_892_800, 253_402_300_799, 253_402_300_800];
    let nanos =
        [0u32, 1, 10, 999, 1_000, 120_000, 123_456, 1_000_000, 123_000_000, 999_999_999, 1_000_000_000, 1_999_999_999];
    for s in seconds {
        for n in nanos {
            if let Some(t) = DateTime::from_timestamp(s, n) {
                e.occurred_at = t;
                assert_same(&e);
            }
        }
    }
}

#[test]
fn a_byte_to_escape_is_found_wherever_it_is() {
    for len in 0..24 {
        for at in 0..len {
            for byte in [0u8, b'\n', 0x1f, b'"', b'\\'] {
                let mut s = vec![b'a'; len];
                s[at] = byte;
                assert!(!plain(&s), "{byte:#x} at {at} of {len}");
            }
            let mut s = vec![b'a'; len];
            for byte in [b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff] {
                s[at] = byte;
                assert!(plain(&s), "{byte:#x} at {at} of {len}");
            }
        }
    }
}

#[test]
fn numbers_are_written_in_full() {
    for n in [0u64, 9, 10, 99, 100, 12_345, u64::MAX] {
        let mut o = Vec::new();
        unsigned(&mut o, n);
        assert_eq!(o, n.to_string().as_bytes());
    }
    for n in [0i64, -1, -10, 42, i64::MIN, i64::MAX] {
        let mut o = Vec::new();
        signed(&mut o, n);
        assert_eq!(o, n.to_string().as_bytes());
    }
}

/// Reads the field names `serde`'s derive gives the event (its `FIELDS`), then stops.
struct FieldNames(Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for &mut FieldNames {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(fields);
        Err(serde::de::Error::custom("fields read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[test]
fn every_field_of_the_event_is_written_here() {
    let mut names = FieldNames(None);
    let _ = <UsageEvent as serde::Deserialize>::deserialize(&mut names);
    let fields = names.0.unwrap();
    assert!(fields.len() >= 40, "{fields:?}");
    // Named in the encoder, or in the list of optional counts it writes.
    let source = include_str!("../json.rs");
    let counts = UsageEvent::default().optional_counts().map(|(name, _)| name);
    let missing: Vec<&&str> = fields
        .iter()
        .filter(|f| !source.contains(&format!("\"{f}\"")) && !source.contains(&format!("\\\"{f}\\\"")))
        .filter(|f| !counts.contains(f))
        .collect();
    assert!(missing.is_empty(), "fields json.rs does not write: {missing:?}");
}
