//! Bounds on everything that reaches a usage event, a ledger row or a tenancy record from
//! outside: identifiers from requests and the admin API, model names, token counts reported by
//! providers, costs. The gateway refuses what breaks them at its edge (400 naming the field),
//! and the ledger consumer dead-letters any event that breaks them anyway, so one request can
//! never produce a row the database refuses (docs/security.md).
//!
//! The bounds are deliberately far below what Cassandra and ScyllaDB refuse (a partition key of
//! 64 KiB) and far above what any real tenant, model or request needs.

use crate::event::UsageEvent;
use crate::NanoUsd;

/// Longest tenant identifier (team, user, customer, organization, budget), in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest key id (the hash of a virtual key, hex), in bytes.
pub const MAX_KEY_ID_BYTES: usize = 128;
/// Longest key alias, gateway id, model, provider or deployment name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest request id, in bytes (`x-request-id`).
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Longest error type of an event, in bytes.
pub const MAX_ERROR_TYPE_BYTES: usize = 64;
/// Most tokens of one kind (prompt, completion, cached) one request may report: far beyond any
/// context window. A provider that reports more is not believed.
pub const MAX_TOKENS_PER_REQUEST: u64 = 1_000_000_000;
/// The highest price of one token of any kind, in nano-USD ($1,000 per million tokens): with
/// [`MAX_TOKENS_PER_REQUEST`] it keeps one request's cost within [`MAX_COST_PER_REQUEST`].
pub const MAX_PRICE_PER_TOKEN: NanoUsd = NanoUsd(1_000_000);
/// Most one request may cost: $1,000,000, in nano-USD.
pub const MAX_COST_PER_REQUEST: NanoUsd = NanoUsd(1_000_000_000_000_000);
/// Most budgeted scopes one event may name (key, team, user, organization, customer and the
/// per-model budget of each: 10 in practice).
pub const MAX_BUDGET_SCOPES: usize = 32;
/// Most budget durations per scope.
pub const MAX_DURATIONS_PER_SCOPE: usize = 8;
/// Most tags one record may carry, and the longest tag in bytes.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_BYTES: usize = 128;
/// Most tags one usage event carries (each is a ledger scope, `tag/<tag>`, and its per-model
/// scope: six more rows for each): the key's and team's tags and the request's own, together.
pub const MAX_EVENT_TAGS: usize = 8;
/// Most upstream attempts one usage event lists (`attempts`): the first ones; the event counts
/// the rest (`attempts_omitted`). Far more than `num_retries` and `max_fallbacks` usually allow.
pub const MAX_EVENT_ATTEMPTS: usize = 16;
/// Largest `metadata` object of a record or a request, serialised, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Why a value is refused; the message is safe to show to the client (it never repeats the
/// value, which may be huge or hostile).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    #[error("`{field}` must not be empty")]
    Empty { field: String },
    #[error("`{field}` is longer than {max} bytes")]
    TooLong { field: String, max: usize },
    #[error("`{field}` must not contain control characters")]
    Control { field: String },
    #[error("`{field}` must not contain `/`")]
    Slash { field: String },
    #[error("`{field}` must not contain whitespace")]
    Whitespace { field: String },
    #[error("`{field}` is out of range ({detail})")]
    Range { field: String, detail: String },
}

impl BoundError {
    /// The field at fault.
    pub fn field(&self) -> &str {
        match self {
            BoundError::Empty { field }
            | BoundError::TooLong { field, .. }
            | BoundError::Control { field }
            | BoundError::Slash { field }
            | BoundError::Whitespace { field }
            | BoundError::Range { field, .. } => field,
        }
    }
}

/// A tenant identifier that becomes part of a ledger scope (`team/<id>`, `customer/<id>`):
/// 1 to [`MAX_ID_BYTES`] bytes, no control characters, no whitespace, and no `/` (scopes are
/// `kind/id` and `kind/id/model/<model>`: an id with a `/` could pose as another scope).
pub fn check_id(field: &str, value: &str) -> Result<(), BoundError> {
    check_scope_part(field, value, MAX_ID_BYTES)
}

/// A key id (hash of a virtual key): as [`check_id`], at most [`MAX_KEY_ID_BYTES`].
pub fn check_key_id(field: &str, value: &str) -> Result<(), BoundError> {
    check_scope_part(field, value, MAX_KEY_ID_BYTES)
}

fn check_scope_part(field: &str, value: &str, max: usize) -> Result<(), BoundError> {
    check_name(field, value, max)?;
    if value.contains('/') {
        return Err(BoundError::Slash { field: field.to_owned() });
    }
    if value.chars().any(char::is_whitespace) {
        return Err(BoundError::Whitespace { field: field.to_owned() });
    }
    Ok(())
}

/// A free-text name (key alias, model, gateway id): 1 to `max` bytes, no control characters.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<(), BoundError> {
    if value.is_empty() {
        return Err(BoundError::Empty { field: field.to_owned() });
    }
    if value.len() > max {
        return Err(BoundError::TooLong { field: field.to_owned(), max });
    }
    if value.chars().any(char::is_control) {
        return Err(BoundError::Control { field: field.to_owned() });
    }
    Ok(())
}

/// A request id (`x-request-id`): 1 to [`MAX_REQUEST_ID_BYTES`] visible ASCII characters.
pub fn check_request_id(field: &str, value: &str) -> Result<(), BoundError> {
    check_name(field, value, MAX_REQUEST_ID_BYTES)?;
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BoundError::Range { field: field.to_owned(), detail: "visible ASCII characters only".into() });
    }
    Ok(())
}

/// Tags of a record or request: at most [`MAX_TAGS`], each a name of at most
/// [`MAX_TAG_BYTES`].
pub fn check_tags(field: &str, tags: &[String]) -> Result<(), BoundError> {
    if tags.len() > MAX_TAGS {
        return Err(BoundError::Range { field: field.to_owned(), detail: format!("at most {MAX_TAGS} tags") });
    }
    for (i, t) in tags.iter().enumerate() {
        check_name(&format!("{field}[{i}]"), t, MAX_TAG_BYTES)?;
    }
    Ok(())
}

/// One tag that becomes part of a ledger scope (`tag/<tag>`): 1 to [`MAX_TAG_BYTES`] bytes,
/// no control characters, whitespace or `/`.
pub fn check_scope_tag(field: &str, value: &str) -> Result<(), BoundError> {
    check_scope_part(field, value, MAX_TAG_BYTES)
}

/// The tags of a usage event: at most [`MAX_EVENT_TAGS`], each a scope tag
/// ([`check_scope_tag`]), none twice.
pub fn check_event_tags(field: &str, tags: &[String]) -> Result<(), BoundError> {
    if tags.len() > MAX_EVENT_TAGS {
        return Err(BoundError::Range { field: field.to_owned(), detail: format!("at most {MAX_EVENT_TAGS} tags") });
    }
    for (i, t) in tags.iter().enumerate() {
        check_scope_tag(&format!("{field}[{i}]"), t)?;
        if tags[..i].contains(t) {
            return Err(BoundError::Range { field: format!("{field}[{i}]"), detail: "a tag appears twice".into() });
        }
    }
    Ok(())
}

/// The upstream attempts of a usage event: at most [`MAX_EVENT_ATTEMPTS`], each naming a model
/// group, deployment and provider within the bounds of the event's own, with a status that is
/// an HTTP status; `omitted` only beside a full list.
pub fn check_event_attempts(
    field: &str,
    attempts: &[crate::event::UpstreamAttempt],
    omitted: u32,
) -> Result<(), BoundError> {
    if attempts.len() > MAX_EVENT_ATTEMPTS {
        return Err(BoundError::Range {
            field: field.to_owned(),
            detail: format!("at most {MAX_EVENT_ATTEMPTS} attempts"),
        });
    }
    if omitted > 0 && attempts.len() < MAX_EVENT_ATTEMPTS {
        return Err(BoundError::Range {
            field: format!("{field}_omitted"),
            detail: format!("only beside {MAX_EVENT_ATTEMPTS} attempts"),
        });
    }
    for (i, a) in attempts.iter().enumerate() {
        check_name(&format!("{field}[{i}].model_group"), &a.model_group, MAX_NAME_BYTES)?;
        check_name(&format!("{field}[{i}].deployment"), &a.deployment, 2 * MAX_NAME_BYTES)?;
        check_name(&format!("{field}[{i}].provider"), &a.provider, MAX_NAME_BYTES)?;
        if a.status.is_some_and(|s| !(100..=599).contains(&s)) {
            return Err(BoundError::Range { field: format!("{field}[{i}].status"), detail: "100 to 599".into() });
        }
    }
    Ok(())
}

/// A `metadata` object: at most [`MAX_METADATA_BYTES`] once serialised.
pub fn check_metadata(field: &str, metadata: &serde_json::Value) -> Result<(), BoundError> {
    let len = serde_json::to_vec(metadata).map(|v| v.len()).unwrap_or(usize::MAX);
    if len > MAX_METADATA_BYTES {
        return Err(BoundError::TooLong { field: field.to_owned(), max: MAX_METADATA_BYTES });
    }
    Ok(())
}

fn check_count(field: &str, value: u64, max: u64) -> Result<(), BoundError> {
    if value > max {
        return Err(BoundError::Range { field: field.to_owned(), detail: format!("at most {max}") });
    }
    Ok(())
}

fn check_optional(
    field: &str,
    value: &Option<String>,
    check: impl Fn(&str, &str) -> Result<(), BoundError>,
) -> Result<(), BoundError> {
    value.as_deref().map_or(Ok(()), |v| check(field, v))
}

/// A W3C trace id: 32 lower-case hex digits.
fn check_trace_id(field: &str, v: &str) -> Result<(), BoundError> {
    if v.len() == 32 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(());
    }
    Err(BoundError::Range { field: field.into(), detail: "32 lower-case hex digits".into() })
}

/// A re-rating adjustment names its run by its identity and carries no tokens: the event it
/// adjusts counted them.
fn check_adjustment(e: &UsageEvent, a: &crate::event::Adjustment) -> Result<(), BoundError> {
    if !crate::event::adjustment::is_run_id(&a.rerate_run) {
        return Err(BoundError::Range {
            field: "adjustment.rerate_run".into(),
            detail: "64 lower-case hex digits".into(),
        });
    }
    let mut tokens =
        [e.prompt_tokens, e.completion_tokens, e.cached_tokens].into_iter().chain(e.optional_counts().map(|(_, n)| n));
    if tokens.any(|n| n != 0) || e.cost_by_token_type.iter().any(|p| p.tokens != 0) {
        return Err(BoundError::Range { field: "adjustment".into(), detail: "an adjustment has no tokens".into() });
    }
    Ok(())
}

/// Checks every bound of a decoded usage event. An event that breaks one is a schema violation:
/// the ledger consumer dead-letters it instead of writing it. The gateway never publishes one
/// (its edge checks the same bounds; a test holds it to that).
pub fn check_event(e: &UsageEvent) -> Result<(), BoundError> {
    let name = |field: &str, v: &str| check_name(field, v, MAX_NAME_BYTES);
    name("gateway_id", &e.gateway_id)?;
    check_name("request_id", &e.request_id, MAX_NAME_BYTES)?;
    check_key_id("key_id", &e.key_id)?;
    check_optional("key_alias", &e.key_alias, name)?;
    check_optional("team_id", &e.team_id, check_id)?;
    check_optional("user_id", &e.user_id, check_id)?;
    check_optional("customer_id", &e.customer_id, check_id)?;
    check_optional("organization_id", &e.organization_id, check_id)?;
    name("requested_model", &e.requested_model)?;
    check_optional("served_model", &e.served_model, name)?;
    check_optional("provider", &e.provider, name)?;
    check_optional("deployment", &e.deployment, |f, v| check_name(f, v, 2 * MAX_NAME_BYTES))?;
    check_optional("error_type", &e.error_type, |f, v| check_name(f, v, MAX_ERROR_TYPE_BYTES))?;
    check_optional("client_disconnected", &e.client_disconnected, |f, v| check_name(f, v, MAX_ERROR_TYPE_BYTES))?;
    check_optional("trace_id", &e.trace_id, check_trace_id)?;
    check_event_tags("tags", &e.tags)?;
    check_event_attempts("attempts", &e.attempts, e.attempts_omitted)?;
    check_count("prompt_tokens", e.prompt_tokens, MAX_TOKENS_PER_REQUEST)?;
    check_count("completion_tokens", e.completion_tokens, MAX_TOKENS_PER_REQUEST)?;
    check_count("cached_tokens", e.cached_tokens, MAX_TOKENS_PER_REQUEST)?;
    for (field, n) in e.optional_counts() {
        check_count(field, n, MAX_TOKENS_PER_REQUEST)?;
    }
    if let Some(c) = &e.cache {
        check_count("cache.saved_input_tokens", c.saved_input_tokens, MAX_TOKENS_PER_REQUEST)?;
        check_count("cache.saved_output_tokens", c.saved_output_tokens, MAX_TOKENS_PER_REQUEST)?;
    }
    // A re-rating adjustment carries a difference, which may be negative.
    let lowest = if e.adjustment.is_some() { -MAX_COST_PER_REQUEST.0 } else { 0 };
    if e.cost_nano_usd.0 < lowest || e.cost_nano_usd > MAX_COST_PER_REQUEST {
        return Err(BoundError::Range {
            field: "cost_nano_usd".into(),
            detail: format!("{lowest} to {}", MAX_COST_PER_REQUEST.0),
        });
    }
    if let Some(a) = &e.adjustment {
        check_adjustment(e, a)?;
    }
    let year = chrono::Datelike::year(&e.occurred_at);
    if !(2000..=9999).contains(&year) {
        return Err(BoundError::Range { field: "occurred_at".into(), detail: "years 2000 to 9999".into() });
    }
    if e.budget_windows.len() > MAX_BUDGET_SCOPES {
        return Err(BoundError::Range {
            field: "budget_windows".into(),
            detail: format!("at most {MAX_BUDGET_SCOPES} scopes"),
        });
    }
    for (scope, durations) in &e.budget_windows {
        // A budgeted scope is `kind/id` or `kind/id/model/<model>`.
        check_name("budget_windows", scope, 2 * MAX_ID_BYTES + MAX_NAME_BYTES)?;
        if durations.len() > MAX_DURATIONS_PER_SCOPE {
            return Err(BoundError::Range {
                field: "budget_windows".into(),
                detail: format!("at most {MAX_DURATIONS_PER_SCOPE} durations per scope"),
            });
        }
        for d in durations {
            check_name("budget_windows", d, 16)?;
        }
    }
    crate::event::cost_by_type::check(&e.cost_by_token_type, e.cost_nano_usd, e.adjustment.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> UsageEvent {
        UsageEvent::decode(include_bytes!("../fixtures/usage_event_v1.json")).unwrap()
    }

    #[test]
    fn ids_are_bounded_and_cannot_pose_as_scopes() {
        assert!(check_id("user", "cust-7@example.com").is_ok());
        assert!(check_id("user", "ünïcödé").is_ok());
        assert_eq!(check_id("user", ""), Err(BoundError::Empty { field: "user".into() }));
        assert_eq!(check_id("user", &"x".repeat(257)), Err(BoundError::TooLong { field: "user".into(), max: 256 }));
        assert!(check_id("user", &"x".repeat(256)).is_ok());
        assert_eq!(check_id("user", "a/model/gpt-4o"), Err(BoundError::Slash { field: "user".into() }));
        assert_eq!(check_id("user", "a\nb"), Err(BoundError::Control { field: "user".into() }));
        assert_eq!(check_id("user", "a b"), Err(BoundError::Whitespace { field: "user".into() }));
        assert!(check_name("key_alias", "checkout / eu", MAX_NAME_BYTES).is_ok());
        assert!(check_request_id("x-request-id", "req_01\u{7f}").is_err());
    }

    #[test]
    fn the_golden_event_is_within_bounds() {
        assert_eq!(check_event(&event()), Ok(()));
    }

    #[test]
    fn events_out_of_bounds_are_refused_naming_the_field() {
        type Change = Box<dyn Fn(&mut UsageEvent)>;
        let cases: Vec<(&str, Change)> = vec![
            ("customer_id", Box::new(|e| e.customer_id = Some("c".repeat(65_500)))),
            ("team_id", Box::new(|e| e.team_id = Some("a/model/x".into()))),
            ("key_id", Box::new(|e| e.key_id = String::new())),
            ("requested_model", Box::new(|e| e.requested_model = "m".repeat(70_000))),
            ("prompt_tokens", Box::new(|e| e.prompt_tokens = u64::MAX)),
            ("trace_id", Box::new(|e| e.trace_id = Some("t".repeat(70_000)))),
            ("trace_id", Box::new(|e| e.trace_id = Some("4BF92F3577B34DA6A3CE929D0E0E4736".into()))),
            ("tags", Box::new(|e| e.tags = (0..9).map(|i| format!("t{i}")).collect())),
            ("tags[1]", Box::new(|e| e.tags = vec!["ok".into(), "a/model/x".into()])),
            ("tags[0]", Box::new(|e| e.tags = vec!["t".repeat(129)])),
            ("tags[0]", Box::new(|e| e.tags = vec!["two words".into()])),
            ("tags[0]", Box::new(|e| e.tags = vec!["bell\u{7}".into()])),
            ("tags[0]", Box::new(|e| e.tags = vec![String::new()])),
            ("tags[1]", Box::new(|e| e.tags = vec!["same".into(), "same".into()])),
            ("attempts", Box::new(|e| e.attempts = vec![e.attempts[0].clone(); MAX_EVENT_ATTEMPTS + 1])),
            ("attempts_omitted", Box::new(|e| e.attempts_omitted = 1)),
            ("attempts[1].model_group", Box::new(|e| e.attempts[1].model_group = "m".repeat(257))),
            ("attempts[0].deployment", Box::new(|e| e.attempts[0].deployment = String::new())),
            ("attempts[0].provider", Box::new(|e| e.attempts[0].provider = "bell\u{7}".into())),
            ("attempts[0].status", Box::new(|e| e.attempts[0].status = Some(1000))),
            ("cost_nano_usd", Box::new(|e| e.cost_nano_usd = NanoUsd(-1))),
            ("cost_nano_usd", Box::new(|e| e.cost_nano_usd = NanoUsd(i64::MAX))),
            (
                "budget_windows",
                Box::new(|e| {
                    e.budget_windows.insert("k".repeat(5_000), vec!["1d".into()]);
                }),
            ),
            (
                "budget_windows",
                Box::new(|e| {
                    for i in 0..40 {
                        e.budget_windows.insert(format!("key/k{i}"), vec!["1d".into()]);
                    }
                }),
            ),
        ];
        for (field, change) in cases {
            let mut e = event();
            change(&mut e);
            let err = check_event(&e).expect_err(field);
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().len() < 200, "the message never repeats the value: {err}");
        }
    }
}
