//! A request's own cache controls, in LiteLLM's shape: the body's `cache` object
//! (`{"no-cache": true, "no-store": true, "ttl": 60, "s-maxage": 30, "namespace": "x"}`). Client input: bounded
//! and checked, an unknown control is a 400 naming it.

use crate::config::MAX_TTL_SECS;
use crate::error::GatewayError;
use serde::Deserialize;

/// The largest `cache` object read, in bytes.
pub const MAX_CONTROLS_BYTES: usize = 1024;

/// What the request asked of the cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    /// Do not answer from the cache (the answer may still be stored).
    pub no_cache: bool,
    /// Do not store the answer.
    pub no_store: bool,
    /// Seconds to keep this answer, instead of `cache_params.ttl`.
    pub ttl: Option<u64>,
    /// Only an entry stored at most this many seconds ago answers (LiteLLM's `s-maxage`).
    pub max_age: Option<u64>,
    /// Entries of another namespace are never served.
    pub namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default, rename = "no-cache")]
    no_cache: bool,
    #[serde(default, rename = "no-store")]
    no_store: bool,
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default, rename = "s-maxage")]
    max_age: Option<u64>,
    #[serde(default)]
    namespace: Option<String>,
}

impl Controls {
    /// The controls of a `cache` field's raw JSON text (`None`: no field).
    pub fn parse(raw: Option<&str>) -> Result<Controls, GatewayError> {
        let Some(raw) = raw.filter(|r| *r != "null") else { return Ok(Controls::default()) };
        if raw.len() > MAX_CONTROLS_BYTES {
            return Err(GatewayError::field("cache", format!("`cache` is larger than {MAX_CONTROLS_BYTES} bytes")));
        }
        let object = if raw.starts_with('{') { Ok(raw) } else { Err("not an object") };
        let parsed: Raw = object
            .map_err(|e| GatewayError::field("cache", format!("`cache` must be an object: {e}")))
            .and_then(|raw| serde_json::from_str(raw).map_err(|e| GatewayError::field("cache", e.to_string()))).map_err(|e| {
            GatewayError::field(
                "cache",
                format!("`cache` must be an object of `no-cache`, `no-store` (booleans), `ttl`, `s-maxage` (seconds), `namespace`: {e}"),
            )
        })?;
        if let Some(ttl) = parsed.ttl.filter(|t| !(1..=MAX_TTL_SECS).contains(t)) {
            return Err(GatewayError::field(
                "cache.ttl",
                format!("`cache.ttl` ({ttl}) must be from 1 to {MAX_TTL_SECS}"),
            ));
        }
        if let Some(age) = parsed.max_age.filter(|a| *a > MAX_TTL_SECS) {
            return Err(GatewayError::field(
                "cache.s-maxage",
                format!("`cache.s-maxage` ({age}) must be from 0 to {MAX_TTL_SECS}"),
            ));
        }
        if let Some(ns) = &parsed.namespace {
            tollgate_schemas::limits::check_id("cache.namespace", ns)
                .map_err(|e| GatewayError::field("cache.namespace", e.to_string()))?;
        }
        Ok(Controls {
            no_cache: parsed.no_cache,
            no_store: parsed.no_store,
            ttl: parsed.ttl,
            max_age: parsed.max_age,
            namespace: parsed.namespace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_litellm_controls() {
        let c = Controls::parse(Some(
            r#"{"no-cache": true, "no-store": false, "ttl": 60, "s-maxage": 0, "namespace": "team-a"}"#,
        ))
        .unwrap();
        let expected = Controls {
            no_cache: true,
            no_store: false,
            ttl: Some(60),
            max_age: Some(0),
            namespace: Some("team-a".into()),
        };
        assert_eq!(c, expected);
        assert_eq!(Controls::parse(None).unwrap(), Controls::default());
        assert_eq!(Controls::parse(Some("null")).unwrap(), Controls::default());
    }

    #[test]
    fn refuses_hostile_controls() {
        for bad in [
            r#"{"no-cache": "yes"}"#,
            r#"{"ttl": 0}"#,
            r#"{"ttl": -5}"#,
            r#"{"ttl": 99999999999}"#,
            r#"{"namespace": "a/b"}"#,
            r#"{"namespace": ""}"#,
            r#"{"s-maxage": -5}"#,
            r#"{"s-maxage": 99999999999}"#,
            r#"{"max-age": 5}"#,
            "[]",
            "7",
        ] {
            assert!(Controls::parse(Some(bad)).is_err(), "{bad}");
        }
        let huge = format!(r#"{{"namespace": "{}"}}"#, "x".repeat(MAX_CONTROLS_BYTES));
        let err = Controls::parse(Some(&huge)).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }
}
