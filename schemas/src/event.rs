//! The usage event: one per request that reached a provider (docs/design.md §3).
//!
//! This is a public contract that finance consumes: fields are only ever added, never renamed or
//! re-typed within a version; unknown fields are ignored on read so newer producers do not break
//! older readers. `cost_nano_usd` is an integer; there is no float anywhere in the event.

use crate::NanoUsd;
pub use adjustment::Adjustment;
pub use attempts::{AttemptKind, AttemptOutcome, UpstreamAttempt};
use chrono::{DateTime, NaiveDate, Timelike, Utc};
pub use cost_by_type::TokenTypeCost;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version this build writes. Readers accept every version up to it.
pub const USAGE_EVENT_VERSION: u32 = 1;

/// Number of shards each (owner, day) of the event ledger is split into, so one busy owner does
/// not make one huge CQL partition.
pub const EVENT_LEDGER_SHARDS: u8 = 8;

/// The event ledger shard of the event `event_id` (its random bits, so shards fill evenly).
pub fn ledger_shard_of(event_id: &Uuid) -> i16 {
    i16::from(event_id.as_bytes()[15] % EVENT_LEDGER_SHARDS)
}

/// The budget owner of a key's event: `team/<team>` when the key belongs to a team, otherwise
/// `key/<key>`. The event ledger's partition key, so whoever knows an event's key and team (the
/// key index does) knows where its row is.
pub fn budget_owner_of(key_id: &str, team_id: Option<&str>) -> String {
    match team_id {
        Some(team) => format!("team/{team}"),
        None => format!("key/{key_id}"),
    }
}

/// `Default` is for building events in code (`..UsageEvent::default()` for the fields a site
/// does not set): every field zero, empty or false; its `version` 0 is not a valid event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// Schema version of this record.
    pub version: u32,
    /// UUIDv7 assigned by the gateway; the deduplication key for consumers.
    pub event_id: Uuid,
    /// When the gateway admitted the request and reserved its budgets, UTC (it finished
    /// `latency_ms` later). Every spend window of the event is the one of this instant.
    pub occurred_at: DateTime<Utc>,
    pub gateway_id: String,
    pub request_id: String,
    /// The virtual key's identity: the hex hash it was first stored under (HMAC-SHA-256 under
    /// the gateway's server secret, or SHA-256 for older keys; kept when a key is rehashed).
    /// Never the key itself.
    pub key_id: String,
    #[serde(default)]
    pub key_alias: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub organization_id: Option<String>,
    /// The model name the client asked for.
    pub requested_model: String,
    /// The model that answered (after routing/fallbacks), if any provider answered.
    #[serde(default)]
    pub served_model: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub deployment: Option<String>,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache (a subset of `prompt_tokens`).
    #[serde(default)]
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (a subset of `prompt_tokens`). This and the
    /// five counts after it were added within version 1: older events lack them, and they are
    /// left out when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Reasoning (thinking) tokens, a subset of `completion_tokens`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// Audio prompt tokens, a subset of `prompt_tokens`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audio_input_tokens: u64,
    /// Audio output tokens, a subset of `completion_tokens`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audio_output_tokens: u64,
    /// Image prompt tokens, a subset of `prompt_tokens`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub image_input_tokens: u64,
    /// Image output tokens, a subset of `completion_tokens`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub image_output_tokens: u64,
    /// Rerank search units (`/v1/rerank`; Cohere's unit, one query over up to 100 documents),
    /// priced per unit (`input_cost_per_query`). Not tokens. Added within version 1, absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub search_units: u64,
    /// Characters of text spoken (`/v1/audio/speech`), priced per character
    /// (`input_cost_per_character`). Not tokens. Added within version 1, absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub characters: u64,
    /// Images generated (`/v1/images/generations`), priced per image
    /// (`output_cost_per_image`, `input_cost_per_image`); not tokens. Added within version 1,
    /// absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub images: u64,
    /// Pixels of the images generated (width × height of each), priced per pixel
    /// (`input_cost_per_pixel`) when the model has no per-image price. Added within version 1,
    /// absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pixels: u64,
    /// Seconds of audio transcribed (`/v1/audio/transcriptions`), whole seconds rounded up,
    /// priced per second (`input_cost_per_second`). Not tokens. Added within version 1, absent
    /// when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audio_seconds: u64,
    /// The model had no price: the request was served at cost zero (`billing.unpriced_models:
    /// serve`). Added within version 1: older events lack it.
    #[serde(default)]
    pub unpriced: bool,
    /// What this request cost, in nano-USD (10⁻⁹ USD).
    pub cost_nano_usd: NanoUsd,
    /// `cost_nano_usd` by token type, parts that sum to it exactly (docs/design.md §2.7, "Cost
    /// by token type"). Added within version 1: older events lack it, and it is left out when
    /// empty (no tokens, no price, or a cost clamped to the per-request bound); such an event is
    /// billed as one `unsplit` line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost_by_token_type: Vec<TokenTypeCost>,
    /// Wall time from request receipt to the end of the response, in milliseconds.
    pub latency_ms: u64,
    /// HTTP status returned to the client.
    pub status: u16,
    /// Error class when the request failed (`upstream_timeout`, `upstream_unavailable`, ...).
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub stream: bool,
    /// The response was cut short (client disconnect, upstream abort); billed for what was sent.
    #[serde(default)]
    pub partial: bool,
    /// Token counts were estimated by Tollgate because the provider reported none.
    #[serde(default)]
    pub estimated: bool,
    /// The client hung up before its answer ended, and when: `waiting_for_provider` (nothing
    /// answered yet), `reading_answer` (a whole answer was being read from the provider), or
    /// `during_stream` (part of a stream was sent). The charge follows the gateway's
    /// `billing.on_client_disconnect` policy. Added within version 1: older events lack it.
    #[serde(default)]
    pub client_disconnected: Option<String>,
    /// The budgets this request counted against: for each ledger scope with a budget (e.g.
    /// `team/payments`, `key/<hash>/model/gpt-4o`), the budget's durations (`30d`, `1mo`, ... or
    /// `all` for a budget that never resets). The consumer keeps a spend row for each such
    /// window, computed from `occurred_at`, so a replay folds into the same rows.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub budget_windows: std::collections::BTreeMap<String, Vec<String>>,
    /// The W3C trace id (32 lower-case hex digits) of the request's trace, when it has one: the
    /// trace Tollgate exported, or the client's `traceparent` when traces are off. Added within
    /// version 1: older events lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The generation of the usage topic the gateway published to when it created the event
    /// (`kafka.usage_generation`; docs/design.md §4.10). Every copy of an event, a spooled one
    /// replayed after the gateway moved on to a newer generation included, goes to this
    /// generation's topic, so all copies land in one partition and are deduplicated there.
    /// Added within version 1: older events lack it (generation 0), and 0 is left out.
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub usage_generation: u8,
    /// Present on a re-rating adjustment only (docs/finance.md, "Re-rating"): the event whose
    /// cost this one corrects, and the run that computed it. Such an event has no tokens, and
    /// its cost and parts are differences, which may be negative. Added within version 1: older
    /// events lack it, and it is left out when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjustment: Option<Adjustment>,
    /// Present when the gateway answered from its response cache (docs/design.md, "Response
    /// cache"): no provider was called, the tokens are zero and `cost_nano_usd` is the configured
    /// price of a hit. Added within version 1: older events lack it, and it is left out when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheHit>,
    /// The request's tags (docs/design.md §4.2, "Tags"): the key's, its team's, then the
    /// request's own (`metadata.tags`, `x-litellm-tags`), each once, in that order; at most
    /// [`crate::limits::MAX_EVENT_TAGS`], each a scope part (no `/`, whitespace or control
    /// characters). Each tag is a ledger scope `tag/<tag>`; tags are not budgets. Added within
    /// version 1: older events lack it, and it is left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The upstream attempts of a request retried or moved to a fallback (docs/design.md,
    /// "Attempts"), in order: at most [`crate::limits::MAX_EVENT_ATTEMPTS`], the first ones;
    /// `attempts_omitted` counts the rest. Empty when the request made one attempt or none.
    /// Added within version 1: older events lack it, and it is left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<UpstreamAttempt>,
    /// Attempts made beyond the [`crate::limits::MAX_EVENT_ATTEMPTS`] that `attempts` lists.
    /// Added within version 1: left out when 0.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempts_omitted: u32,
}

/// A request answered from the response cache: the tokens the stored answer took when a
/// provider made it, which this request did not pay for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheHit {
    pub hit: bool,
    pub saved_input_tokens: u64,
    pub saved_output_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u8(n: &u8) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a usage event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("usage event version {0} is newer than this reader supports ({USAGE_EVENT_VERSION})")]
    UnsupportedVersion(u32),
}

fn supported(version: u32) -> bool {
    (1..=USAGE_EVENT_VERSION).contains(&version)
}

impl UsageEvent {
    /// Decodes a record value, accepting every version this build knows.
    pub fn decode(bytes: &[u8]) -> Result<UsageEvent, DecodeError> {
        let event: UsageEvent = match serde_json::from_slice(bytes) {
            Ok(event) => event,
            Err(e) => {
                // A newer version may not parse as this one: name the version rather than the
                // field that did not parse.
                #[derive(Deserialize)]
                struct Versioned {
                    version: u32,
                }
                return match serde_json::from_slice::<Versioned>(bytes) {
                    Ok(v) if !supported(v.version) => Err(DecodeError::UnsupportedVersion(v.version)),
                    _ => Err(DecodeError::Json(e)),
                };
            }
        };
        if !supported(event.version) {
            return Err(DecodeError::UnsupportedVersion(event.version));
        }
        Ok(event)
    }

    /// The event's JSON: what `serde_json::to_vec` writes for it, written faster (`json`).
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        json::encode(self)
    }

    /// The counts added within version 1 after the three token counts, by field name in field
    /// order: each is left out of the JSON when zero, and bounded as a token count.
    pub fn optional_counts(&self) -> [(&'static str, u64); 11] {
        [
            ("cache_write_tokens", self.cache_write_tokens),
            ("reasoning_tokens", self.reasoning_tokens),
            ("audio_input_tokens", self.audio_input_tokens),
            ("audio_output_tokens", self.audio_output_tokens),
            ("image_input_tokens", self.image_input_tokens),
            ("image_output_tokens", self.image_output_tokens),
            ("search_units", self.search_units),
            ("characters", self.characters),
            ("images", self.images),
            ("pixels", self.pixels),
            ("audio_seconds", self.audio_seconds),
        ]
    }

    /// The budget owner: the team when the key belongs to one, otherwise the key. The Kafka
    /// record key, so one owner's events stay ordered in one partition.
    pub fn budget_owner(&self) -> String {
        budget_owner_of(&self.key_id, self.team_id.as_deref())
    }

    /// UTC day of `occurred_at`: part of the event ledger's partition key.
    pub fn day(&self) -> NaiveDate {
        self.occurred_at.date_naive()
    }

    /// Event ledger shard, from the random bits of the UUIDv7.
    pub fn shard(&self) -> i16 {
        ledger_shard_of(&self.event_id)
    }

    /// UTC hour of `occurred_at` (0-23): the time slice of the key index's partition key.
    pub fn hour(&self) -> i16 {
        i16::try_from(self.occurred_at.hour()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_V1: &str = include_str!("../fixtures/usage_event_v1.json");
    const GOLDEN_V1_MINIMAL: &str = include_str!("../fixtures/usage_event_v1_minimal.json");
    const GOLDEN_V1_ADJUSTMENT: &str = include_str!("../fixtures/usage_event_v1_adjustment.json");
    const GOLDEN_V1_CACHE_HIT: &str = include_str!("../fixtures/usage_event_v1_cache_hit.json");
    const GOLDEN_V1_RETRIED: &str = include_str!("../fixtures/usage_event_v1_retried.json");

    fn part(token_type: &str, tokens: u64, cost: i64) -> TokenTypeCost {
        TokenTypeCost { token_type: token_type.into(), tokens, cost_nano_usd: NanoUsd(cost) }
    }

    fn golden_event() -> UsageEvent {
        UsageEvent {
            version: 1,
            event_id: Uuid::parse_str("019ab0c4-5e3a-7cc2-9d1e-4f6a2b3c4d5e").unwrap(),
            occurred_at: DateTime::parse_from_rfc3339("2026-11-23T12:00:00.123Z").unwrap().with_timezone(&Utc),
            gateway_id: "gw-1".into(),
            request_id: "req_01JDQ".into(),
            key_id: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            key_alias: Some("checkout-service".into()),
            team_id: Some("team-payments".into()),
            user_id: Some("user-42".into()),
            customer_id: Some("cust-7".into()),
            organization_id: Some("org-acme".into()),
            requested_model: "gpt-4o-mini".into(),
            served_model: Some("gpt-4o-mini-2024-07-18".into()),
            provider: Some("openai".into()),
            deployment: Some("openai/gpt-4o-mini#0".into()),
            prompt_tokens: 1200,
            completion_tokens: 300,
            cached_tokens: 200,
            cache_write_tokens: 100,
            reasoning_tokens: 120,
            audio_input_tokens: 10,
            audio_output_tokens: 20,
            image_input_tokens: 30,
            image_output_tokens: 40,
            search_units: 3,
            characters: 5,
            images: 2,
            pixels: 2_097_152,
            audio_seconds: 9,
            unpriced: false,
            cost_nano_usd: NanoUsd(345_000),
            cost_by_token_type: vec![
                part("cached_input", 200, 15000),
                part("cache_write", 100, 18750),
                part("audio_input", 10, 1000),
                part("image_input", 30, 4500),
                part("input", 860, 129000),
                part("reasoning", 120, 72000),
                part("audio_output", 20, 12000),
                part("image_output", 40, 20750),
                part("output", 120, 72000),
            ],
            latency_ms: 812,
            status: 200,
            error_type: None,
            stream: false,
            partial: false,
            estimated: false,
            client_disconnected: None,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            usage_generation: 1,
            adjustment: None,
            cache: None,
            tags: vec!["checkout".to_owned(), "prod".to_owned()],
            attempts: vec![
                UpstreamAttempt {
                    model_group: "gpt-4o-mini".into(),
                    deployment: "openai/gpt-4o-mini#1".into(),
                    provider: "openai".into(),
                    kind: AttemptKind::First,
                    outcome: AttemptOutcome::ErrorStatus,
                    status: Some(429),
                    latency_ms: 41,
                },
                UpstreamAttempt {
                    model_group: "gpt-4o-mini".into(),
                    deployment: "openai/gpt-4o-mini#0".into(),
                    provider: "openai".into(),
                    kind: AttemptKind::Retry,
                    outcome: AttemptOutcome::Ok,
                    status: Some(200),
                    latency_ms: 230,
                },
            ],
            attempts_omitted: 0,
            budget_windows: [
                (
                    "key/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
                    vec!["30d".to_owned()],
                ),
                ("team/team-payments".to_owned(), vec!["1mo".to_owned()]),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn golden_fixture_decodes_to_the_expected_event() {
        assert_eq!(UsageEvent::decode(GOLDEN_V1.as_bytes()).unwrap(), golden_event());
    }

    #[test]
    fn encoding_matches_the_golden_fixture() {
        let encoded: serde_json::Value = serde_json::from_slice(&golden_event().encode().unwrap()).unwrap();
        let golden: serde_json::Value = serde_json::from_str(GOLDEN_V1).unwrap();
        assert_eq!(encoded, golden);
    }

    #[test]
    fn minimal_v1_record_decodes_with_defaults() {
        let event = UsageEvent::decode(GOLDEN_V1_MINIMAL.as_bytes()).unwrap();
        assert_eq!(event.team_id, None);
        assert_eq!(event.cached_tokens, 0);
        assert_eq!(event.budget_owner(), format!("key/{}", event.key_id));
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut value: serde_json::Value = serde_json::from_str(GOLDEN_V1).unwrap();
        value["a_field_from_the_future"] = serde_json::json!({"x": 1});
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(UsageEvent::decode(&bytes).unwrap(), golden_event());
    }

    #[test]
    fn newer_versions_and_garbage_are_rejected() {
        let mut value: serde_json::Value = serde_json::from_str(GOLDEN_V1).unwrap();
        value["version"] = 99.into();
        assert!(matches!(
            UsageEvent::decode(&serde_json::to_vec(&value).unwrap()),
            Err(DecodeError::UnsupportedVersion(99))
        ));
        assert!(UsageEvent::decode(b"{not json").is_err());
        // A newer version whose fields no longer parse as this one's is still named as such.
        assert!(matches!(
            UsageEvent::decode(br#"{"version": 2, "event_id": 7}"#),
            Err(DecodeError::UnsupportedVersion(2))
        ));
        assert!(matches!(UsageEvent::decode(br#"{"version": 1, "event_id": 7}"#), Err(DecodeError::Json(_))));
        let mut value: serde_json::Value = serde_json::from_str(GOLDEN_V1).unwrap();
        value["cost_nano_usd"] = serde_json::json!(0.5);
        assert!(UsageEvent::decode(&serde_json::to_vec(&value).unwrap()).is_err(), "float money must not decode");
    }

    /// The published JSON Schema names exactly the fields the type writes, and requires exactly
    /// those a minimal record carries.
    #[test]
    fn json_schema_matches_the_type() {
        let schema: serde_json::Value = serde_json::from_str(include_str!("../usage_event.v1.schema.json")).unwrap();
        let golden: serde_json::Value = serde_json::from_str(GOLDEN_V1).unwrap();
        let adjustment: serde_json::Value = serde_json::from_str(GOLDEN_V1_ADJUSTMENT).unwrap();
        let mut properties: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let hit: serde_json::Value = serde_json::from_str(GOLDEN_V1_CACHE_HIT).unwrap();
        let retried: serde_json::Value = serde_json::from_str(GOLDEN_V1_RETRIED).unwrap();
        // The golden record sets every field but `adjustment`, `cache` and `attempts_omitted`,
        // which only an adjustment, a cache hit and a request of many attempts have.
        let mut fields: Vec<&String> = golden.as_object().unwrap().keys().collect();
        fields.extend(adjustment.as_object().unwrap().keys().filter(|k| golden.get(k.as_str()).is_none()));
        fields.extend(hit.as_object().unwrap().keys().filter(|k| golden.get(k.as_str()).is_none()));
        fields.extend(retried.as_object().unwrap().keys().filter(|k| golden.get(k.as_str()).is_none()));
        properties.sort();
        fields.sort();
        assert_eq!(properties, fields);
        let minimal: serde_json::Value = serde_json::from_str(GOLDEN_V1_MINIMAL).unwrap();
        let mut required: Vec<&str> =
            schema["required"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        let mut present: Vec<&str> = minimal
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| {
                !matches!(
                    *k,
                    "error_type"
                        | "served_model"
                        | "provider"
                        | "deployment"
                        | "budget_windows"
                        | "client_disconnected"
                )
            })
            .collect();
        required.sort_unstable();
        present.sort_unstable();
        assert_eq!(required, present);
    }

    /// The adjustment fixture decodes, re-encodes to itself and keeps every bound: a negative
    /// difference is allowed there, and only there.
    #[test]
    fn adjustment_fixture_round_trips_and_is_in_bounds() {
        let event = UsageEvent::decode(GOLDEN_V1_ADJUSTMENT.as_bytes()).unwrap();
        let a = event.adjustment.clone().unwrap();
        assert_eq!(a.adjusts_event_id, golden_event().event_id);
        assert_eq!(event.cost_nano_usd, NanoUsd(-25_800));
        let encoded: serde_json::Value = serde_json::from_slice(&event.encode().unwrap()).unwrap();
        assert_eq!(encoded, serde_json::from_str::<serde_json::Value>(GOLDEN_V1_ADJUSTMENT).unwrap());
        assert!(crate::limits::check_event(&event).is_ok());
        let mut not_adjustment = event.clone();
        not_adjustment.adjustment = None;
        assert!(crate::limits::check_event(&not_adjustment).is_err(), "a negative cost without adjustment");
        let mut with_tokens = event.clone();
        with_tokens.prompt_tokens = 1;
        assert!(crate::limits::check_event(&with_tokens).is_err(), "an adjustment has no tokens");
        let mut bad_run = event;
        bad_run.adjustment = Some(Adjustment { rerate_run: "nope".into(), ..a });
        assert!(crate::limits::check_event(&bad_run).is_err());
    }

    /// The cache-hit fixture decodes, re-encodes to itself and keeps every bound.
    #[test]
    fn cache_hit_fixture_round_trips_and_is_in_bounds() {
        let event = UsageEvent::decode(GOLDEN_V1_CACHE_HIT.as_bytes()).unwrap();
        assert_eq!(event.cache, Some(CacheHit { hit: true, saved_input_tokens: 1200, saved_output_tokens: 300 }));
        let encoded: serde_json::Value = serde_json::from_slice(&event.encode().unwrap()).unwrap();
        assert_eq!(encoded, serde_json::from_str::<serde_json::Value>(GOLDEN_V1_CACHE_HIT).unwrap());
        assert!(crate::limits::check_event(&event).is_ok());
        let mut beyond = event;
        beyond.cache = Some(CacheHit { saved_output_tokens: u64::MAX, ..CacheHit::default() });
        assert!(crate::limits::check_event(&beyond).is_err());
    }

    /// The fixture of a request of more attempts than an event lists decodes, re-encodes to
    /// itself and keeps every bound; one attempt more in the list, or an omitted count beside a
    /// list that is not full, does not.
    #[test]
    fn retried_fixture_round_trips_and_is_in_bounds() {
        let event = UsageEvent::decode(GOLDEN_V1_RETRIED.as_bytes()).unwrap();
        assert_eq!(event.attempts.len(), crate::limits::MAX_EVENT_ATTEMPTS);
        assert_eq!(event.attempts_omitted, 4);
        assert_eq!(event.attempts[8].kind, AttemptKind::Fallback);
        let encoded: serde_json::Value = serde_json::from_slice(&event.encode().unwrap()).unwrap();
        assert_eq!(encoded, serde_json::from_str::<serde_json::Value>(GOLDEN_V1_RETRIED).unwrap());
        assert!(crate::limits::check_event(&event).is_ok());
        let mut longer = event.clone();
        longer.attempts.push(longer.attempts[0].clone());
        assert!(crate::limits::check_event(&longer).is_err());
        let mut not_full = event;
        not_full.attempts.pop();
        assert!(crate::limits::check_event(&not_full).is_err());
    }

    #[test]
    fn budget_owner_prefers_the_team() {
        assert_eq!(golden_event().budget_owner(), "team/team-payments");
    }
}

#[cfg(test)]
mod fuzz;
mod json;
#[cfg(test)]
mod schema_tests;

pub mod adjustment;
pub mod attempts;
pub mod cost_by_type;
