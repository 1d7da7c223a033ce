//! Property and fuzz tests of the usage-event decoder (`UsageEvent::decode`) and its bounds
//! (`limits::check_event`), which read whatever is on the `usage` topic. Each case runs under the
//! hang detector of `tollgate_fuzzing::run`.

use super::*;
use crate::limits::{self, check_event};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use tollgate_fuzzing::{json as gen, run};

const GOLDEN: &str = include_str!("../../fixtures/usage_event_v1.json");
const MINIMAL: &str = include_str!("../../fixtures/usage_event_v1_minimal.json");

/// The event's own field names and values of its kind.
const WORDS: &[&str] = &[
    "version",
    "event_id",
    "occurred_at",
    "gateway_id",
    "request_id",
    "key_id",
    "key_alias",
    "team_id",
    "user_id",
    "customer_id",
    "organization_id",
    "requested_model",
    "served_model",
    "provider",
    "deployment",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_nano_usd",
    "latency_ms",
    "status",
    "error_type",
    "stream",
    "partial",
    "estimated",
    "budget_windows",
    "019ab0c4-5e3a-7cc2-9d1e-4f6a2b3c4d5e",
    "00000000-0000-0000-0000-000000000000",
    "2026-11-23T12:00:00.123Z",
    "+275760-09-13T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "1999-12-31T23:59:59.999999999Z",
    "2026-02-30T00:00:00Z",
    "2026-11-23T12:00:00+14:00",
    "key/k",
    "team/t/model/m",
    "30d",
    "1mo",
    "all",
];

fn seeds() -> Vec<Value> {
    [GOLDEN, MINIMAL].iter().filter_map(|s| serde_json::from_str(s).ok()).collect()
}

/// What decoding may lead to: an error, or an event whose bounds check does not panic and
/// which writes and reads back as itself.
fn decode_and_round_trip(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(event) = UsageEvent::decode(bytes) else { return Ok(()) };
    let _ = check_event(&event);
    let _ = (event.budget_owner(), event.day(), event.shard());
    let written = event.encode().map_err(|e| TestCaseError::fail(format!("a decoded event does not encode: {e}")))?;
    let read = UsageEvent::decode(&written);
    prop_assert!(read.as_ref().is_ok_and(|r| *r == event), "decode∘encode changed the event: {read:?}");
    Ok(())
}

/// Characters of ids: ASCII, and up to four bytes of UTF-8.
const ID_CHARS: &[char] = &['a', 'Z', '0', '.', '_', '@', ':', '+', '=', '-', 'é', '中', '𝄞'];

/// A tenant id within `limits::check_id`, up to its longest.
fn id() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(ID_CHARS), 1..24).prop_map(String::from_iter),
        1 => prop::sample::select(ID_CHARS).prop_map(|c| {
            let n = limits::MAX_ID_BYTES / c.len_utf8();
            std::iter::repeat_n(c, n).collect()
        }),
    ]
    .boxed()
}

/// A name within `limits::check_name`: spaces and `/` allowed, control characters not.
fn name() -> BoxedStrategy<String> {
    let chars = prop_oneof![4 => prop::sample::select(ID_CHARS), 1 => prop::sample::select(vec![' ', '/', '\u{3000}', '\u{200b}'])];
    prop::collection::vec(chars, 1..=64).prop_map(String::from_iter).boxed()
}

fn time() -> BoxedStrategy<DateTime<Utc>> {
    // 2000-01-01 to 9999-12-31, the years `check_event` accepts.
    (946_684_800i64..253_402_300_799, 0u32..1_000_000_000)
        .prop_filter_map("a valid instant", |(s, n)| DateTime::from_timestamp(s, n))
        .boxed()
}

/// Events within every bound of `check_event` (also what `json`'s tests encode).
pub(super) fn valid_event() -> BoxedStrategy<UsageEvent> {
    let ids = (id(), "[0-9a-f]{64}", prop::option::of(name()), prop::option::of(id()), prop::option::of(id()));
    let more_ids = (prop::option::of(id()), prop::option::of(id()), name(), name());
    let models = (name(), prop::option::of(name()), prop::option::of(name()), prop::option::of(name()));
    let counts =
        (0..=limits::MAX_TOKENS_PER_REQUEST, 0..=limits::MAX_TOKENS_PER_REQUEST, 0..=limits::MAX_TOKENS_PER_REQUEST);
    let outcome = (0..=limits::MAX_COST_PER_REQUEST.0, any::<u64>(), any::<u16>(), prop::option::of("[a-z_]{1,64}"));
    let when = prop::sample::select(vec!["waiting_for_provider", "reading_answer", "during_stream"]);
    let flags = (any::<bool>(), any::<bool>(), any::<bool>(), prop::option::of(when.prop_map(str::to_owned)));
    let windows = prop::collection::btree_map(
        ("[a-z]{1,8}", id()).prop_map(|(kind, id)| format!("{kind}/{id}")),
        prop::collection::vec(
            prop::sample::select(vec!["30s", "1d", "30d", "1mo", "all"]).prop_map(str::to_owned),
            0..=8,
        ),
        0..=limits::MAX_BUDGET_SCOPES,
    );
    (ids, more_ids, models, counts, outcome, flags, windows, any::<u128>(), time())
        .prop_map(
            |(
                (team, key_id, key_alias, user_id, customer_id),
                (organization_id, team_id, gateway_id, request_id),
                (requested_model, served_model, provider, deployment),
                (prompt_tokens, completion_tokens, cached_tokens),
                (cost, latency_ms, status, error_type),
                (stream, partial, estimated, client_disconnected),
                budget_windows,
                event_id,
                occurred_at,
            )| UsageEvent {
                version: USAGE_EVENT_VERSION,
                event_id: Uuid::from_u128(event_id),
                occurred_at,
                gateway_id,
                request_id,
                key_id,
                key_alias,
                team_id: team_id.or(Some(team)),
                user_id,
                customer_id,
                organization_id,
                requested_model,
                served_model,
                provider,
                deployment,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
                cost_nano_usd: crate::NanoUsd(cost),
                latency_ms,
                status,
                error_type,
                stream,
                partial,
                estimated,
                client_disconnected,
                budget_windows,
                ..UsageEvent::default()
            },
        )
        .boxed()
}

/// One bound broken, and the field `check_event` must name.
#[derive(Clone, Debug)]
enum Break {
    IdTooLong(&'static str),
    IdWithSlash(&'static str),
    IdWithSpace(&'static str),
    IdWithControl(&'static str),
    IdEmpty(&'static str),
    NameTooLong(&'static str),
    Tokens(&'static str, u64),
    Cost(i64),
    Year(i64),
    Scopes(usize),
    Durations(usize),
}

fn breaking() -> BoxedStrategy<Break> {
    let ids = prop::sample::select(vec!["team_id", "user_id", "customer_id", "organization_id", "key_id"]);
    let names = prop::sample::select(vec!["gateway_id", "request_id", "key_alias", "requested_model", "served_model"]);
    let counts = prop::sample::select(vec!["prompt_tokens", "completion_tokens", "cached_tokens"]);
    prop_oneof![
        ids.clone().prop_map(Break::IdTooLong),
        ids.clone().prop_map(Break::IdWithSlash),
        ids.clone().prop_map(Break::IdWithSpace),
        ids.clone().prop_map(Break::IdWithControl),
        ids.prop_map(Break::IdEmpty),
        names.prop_map(Break::NameTooLong),
        (counts, limits::MAX_TOKENS_PER_REQUEST + 1..=u64::MAX).prop_map(|(f, n)| Break::Tokens(f, n)),
        prop_oneof![i64::MIN..0, limits::MAX_COST_PER_REQUEST.0 + 1..=i64::MAX].prop_map(Break::Cost),
        // Before 2000 or after 9999 (as far as chrono goes).
        prop_oneof![-8_000_000_000_000i64..946_684_800, 253_402_300_800i64..8_000_000_000_000].prop_map(Break::Year),
        (limits::MAX_BUDGET_SCOPES + 1..80).prop_map(Break::Scopes),
        (limits::MAX_DURATIONS_PER_SCOPE + 1..40).prop_map(Break::Durations),
    ]
    .boxed()
}

impl Break {
    /// Breaks the bound; returns the field to be named.
    fn apply(&self, e: &mut UsageEvent) -> &'static str {
        let slot = |e: &mut UsageEvent, field: &str, value: String| match field {
            "key_id" => e.key_id = value,
            "gateway_id" => e.gateway_id = value,
            "request_id" => e.request_id = value,
            "requested_model" => e.requested_model = value,
            "team_id" => e.team_id = Some(value),
            "user_id" => e.user_id = Some(value),
            "customer_id" => e.customer_id = Some(value),
            "organization_id" => e.organization_id = Some(value),
            "key_alias" => e.key_alias = Some(value),
            "served_model" => e.served_model = Some(value),
            _ => unreachable!("no field {field}"),
        };
        match *self {
            Break::IdTooLong(f) => slot(e, f, "k".repeat(limits::MAX_ID_BYTES + 1)),
            Break::IdWithSlash(f) => slot(e, f, "a/model/b".into()),
            Break::IdWithSpace(f) => slot(e, f, "a\u{3000}b".into()),
            Break::IdWithControl(f) => slot(e, f, "a\u{85}b".into()),
            Break::IdEmpty(f) => slot(e, f, String::new()),
            Break::NameTooLong(f) => slot(e, f, "é".repeat(limits::MAX_NAME_BYTES / 2 + 1)),
            Break::Tokens(f, n) => {
                match f {
                    "prompt_tokens" => e.prompt_tokens = n,
                    "completion_tokens" => e.completion_tokens = n,
                    _ => e.cached_tokens = n,
                }
                return f;
            }
            Break::Cost(c) => {
                e.cost_nano_usd = crate::NanoUsd(c);
                return "cost_nano_usd";
            }
            Break::Year(secs) => {
                e.occurred_at = DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
                return "occurred_at";
            }
            Break::Scopes(n) => {
                e.budget_windows = (0..n).map(|i| (format!("key/k{i}"), vec!["1d".to_owned()])).collect();
                return "budget_windows";
            }
            Break::Durations(n) => {
                e.budget_windows = BTreeMap::from([("key/k".to_owned(), vec!["1d".to_owned(); n])]);
                return "budget_windows";
            }
        }
        match self {
            Break::IdTooLong(f)
            | Break::IdWithSlash(f)
            | Break::IdWithSpace(f)
            | Break::IdWithControl(f)
            | Break::IdEmpty(f)
            | Break::NameTooLong(f) => f,
            _ => unreachable!("returned above"),
        }
    }
}

proptest! {
    #![proptest_config(run::config(1_000))]

    /// Arbitrary bytes, token soup, edited fixtures, deep nesting and mutated fixtures: an
    /// error or an event that round-trips; never a panic.
    #[test]
    fn decode_never_panics_and_what_it_accepts_round_trips(bytes in gen::bytes(seeds(), WORDS)) {
        run::watchdog(move || decode_and_round_trip(&bytes))?;
    }

    /// Fixtures with fields removed, re-typed, added or nested: the same.
    #[test]
    fn mutated_events_decode_or_fail_cleanly(doc in gen::mutated(seeds(), WORDS)) {
        run::watchdog(move || decode_and_round_trip(&serde_json::to_vec(&doc).unwrap_or_default()))?;
    }

}

proptest! {
    // Typed events of many fields each: fewer cases.
    #![proptest_config(run::config(512))]

    /// Every event within the bounds is accepted and round-trips exactly.
    #[test]
    fn events_within_bounds_are_accepted_and_round_trip(event in valid_event()) {
        run::watchdog(move || {
            prop_assert_eq!(check_event(&event), Ok(()));
            let written = event.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(UsageEvent::decode(&written).ok(), Some(event));
            Ok(())
        })?;
    }

    /// An event with one bound broken is refused, naming that field, with a short message.
    #[test]
    fn one_broken_bound_is_refused_by_name(event in valid_event(), broken in breaking()) {
        run::watchdog(move || {
            let mut event = event;
            let field = broken.apply(&mut event);
            // Other optional ids may be absent; the broken one is set, so it is checked.
            match check_event(&event) {
                Err(e) => {
                    prop_assert_eq!(e.field(), field, "{}", e);
                    prop_assert!(e.to_string().len() < 200, "the message repeats the value: {}", e);
                }
                Ok(()) => prop_assert!(false, "{:?} was accepted", broken),
            }
            Ok(())
        })?;
    }

    /// Any event the type can hold writes, and reads back as itself or not at all: never as
    /// another event.
    #[test]
    fn no_event_reads_back_as_another(
        event in valid_event(),
        secs in -8_000_000_000_000i64..8_000_000_000_000,
        cost in any::<i64>(),
        tokens in any::<u64>(),
        version in any::<u32>(),
    ) {
        run::watchdog(move || {
            let mut event = event;
            event.occurred_at = DateTime::from_timestamp(secs, 0).unwrap_or(event.occurred_at);
            event.cost_nano_usd = crate::NanoUsd(cost);
            event.prompt_tokens = tokens;
            event.version = version;
            let written = event.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
            match UsageEvent::decode(&written) {
                Ok(read) => prop_assert_eq!(read, event),
                Err(DecodeError::UnsupportedVersion(v)) => prop_assert_eq!(v, version),
                Err(DecodeError::Json(e)) => prop_assert!(false, "a written event does not read back: {}", e),
            }
            Ok(())
        })?;
    }
}
