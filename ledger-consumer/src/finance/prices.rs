//! Price files for re-rating (docs/finance.md, "Re-rating"): every model's prices in versions,
//! each with the instant it takes effect. The price of an event is the model's latest version
//! whose `effective_from` is at or before the event's `occurred_at`.
//!
//! Money is integer: nano-USD per million tokens (10⁻¹⁵ USD a token, 1,000 atto-USD), so a
//! price converts to the gateway's atto-USD rates exactly, and nano-USD per request. The file is
//! decoded strictly (an unknown field, a float or a negative price is an error that names the
//! field), and bounded like the gateway's own prices. Pure code: no I/O.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use tollgate_schemas::limits::{MAX_NAME_BYTES, MAX_PRICE_PER_TOKEN};
use tollgate_schemas::pricing::cost::{Price, PER_TOKEN_FIELDS};
use tollgate_schemas::pricing::AttoUsd;

/// Most models one price file may hold.
pub const MAX_MODELS: usize = 10_000;
/// Most versions one model's price may have.
pub const MAX_VERSIONS: usize = 1_000;
/// Highest price per million tokens: the gateway's bound per token, a million times.
pub const MAX_PER_MILLION: i64 = MAX_PRICE_PER_TOKEN.0 * 1_000_000;
/// Highest price per request, in nano-USD: $1, as the gateway's.
pub const MAX_PER_REQUEST: i64 = 1_000_000_000;
/// Atto-USD per token of one nano-USD per million tokens.
const ATTO_PER_NANO_PER_MILLION: i128 = 1_000;

/// A price file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    /// Model (the `requested_model` of events, as `model_list.model_name`) → its versions.
    models: BTreeMap<String, Vec<PriceVersion>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceVersion {
    effective_from: DateTime<Utc>,
    nano_usd_per_million_tokens: PerMillion,
    #[serde(default)]
    nano_usd_per_request: i64,
}

/// Nano-USD per million tokens of each token type. A type left out costs what text input
/// (`cached_input`, `cache_write`, `audio_input`, `image_input`) or text output (`reasoning`,
/// `audio_output`, `image_output`) costs, as in the gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerMillion {
    input: i64,
    output: i64,
    cached_input: Option<i64>,
    cache_write: Option<i64>,
    reasoning: Option<i64>,
    audio_input: Option<i64>,
    audio_output: Option<i64>,
    image_input: Option<i64>,
    image_output: Option<i64>,
}

impl PerMillion {
    /// The prices in the order of [`PER_TOKEN_FIELDS`], with their field names.
    fn by_dimension(&self) -> [(&'static str, Option<i64>); 9] {
        [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
            ("reasoning", self.reasoning),
            ("audio_input", self.audio_input),
            ("audio_output", self.audio_output),
            ("image_input", self.image_input),
            ("image_output", self.image_output),
        ]
    }
}

/// A price file that cannot be used: the field and why.
#[derive(Debug, thiserror::Error)]
pub enum PriceFileError {
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
}

fn invalid(field: String, detail: impl Into<String>) -> PriceFileError {
    PriceFileError::Invalid { field, detail: detail.into() }
}

/// Every model's price versions, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceBook {
    models: BTreeMap<String, Vec<(DateTime<Utc>, Price)>>,
}

impl PriceBook {
    /// Reads a price file (YAML, bounded as config files are: `tollgate_schemas::yaml`).
    pub fn parse(text: &str) -> Result<PriceBook, PriceFileError> {
        let file: PriceFile = tollgate_schemas::yaml::from_str(text)?;
        if file.models.len() > MAX_MODELS {
            return Err(invalid("models".into(), format!("at most {MAX_MODELS} models")));
        }
        let mut models = BTreeMap::new();
        for (model, versions) in file.models {
            let at = |i: usize, field: &str| format!("models.{model}[{i}].{field}");
            if model.is_empty() || model.len() > MAX_NAME_BYTES {
                return Err(invalid(format!("models.{model}"), format!("a model name of 1 to {MAX_NAME_BYTES} bytes")));
            }
            if versions.is_empty() || versions.len() > MAX_VERSIONS {
                return Err(invalid(format!("models.{model}"), format!("1 to {MAX_VERSIONS} versions")));
            }
            let mut out: Vec<(DateTime<Utc>, Price)> = Vec::with_capacity(versions.len());
            for (i, v) in versions.iter().enumerate() {
                if out.last().is_some_and(|(previous, _)| *previous >= v.effective_from) {
                    return Err(invalid(at(i, "effective_from"), "versions in order, each after the one before"));
                }
                out.push((v.effective_from, price_of(v, &|field| at(i, field))?));
            }
            models.insert(model, out);
        }
        Ok(PriceBook { models })
    }

    /// The price of `model` at `at`: its latest version in effect then. `None` when the file
    /// does not price the model, or not yet at `at`.
    pub fn price_at(&self, model: &str, at: DateTime<Utc>) -> Option<&Price> {
        let versions = self.models.get(model)?;
        versions.iter().rev().find(|(from, _)| *from <= at).map(|(_, p)| p)
    }
}

/// One version as the gateway's `Price`: each rate exactly 1,000 atto-USD per token per nano-USD
/// per million tokens; no context tiers.
fn price_of(v: &PriceVersion, field: &dyn Fn(&str) -> String) -> Result<Price, PriceFileError> {
    let mut price = Price::from_nanos(0, 0, 0);
    let per_million = v.nano_usd_per_million_tokens.by_dimension();
    for (dim, (name, nanos)) in per_million.iter().enumerate() {
        let path = || field(&format!("nano_usd_per_million_tokens.{name}"));
        let nanos = match nanos {
            Some(n) if !(0..=MAX_PER_MILLION).contains(n) => {
                return Err(invalid(path(), format!("0 to {MAX_PER_MILLION} nano-USD per million tokens")));
            }
            Some(n) => *n,
            // The stand-in: text input or output, as `PER_TOKEN_FIELDS` says.
            None => per_million[PER_TOKEN_FIELDS[dim].1].1.unwrap_or(0),
        };
        price.base.0[dim] = AttoUsd(i128::from(nanos) * ATTO_PER_NANO_PER_MILLION);
    }
    if !(0..=MAX_PER_REQUEST).contains(&v.nano_usd_per_request) {
        return Err(invalid(field("nano_usd_per_request"), format!("0 to {MAX_PER_REQUEST} nano-USD")));
    }
    price.per_request = AttoUsd::from_nanos(v.nano_usd_per_request);
    Ok(price)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tollgate_schemas::pricing::{cost, Tokens};
    use tollgate_schemas::NanoUsd;

    const FILE: &str = "
models:
  gpt-4o-mini:
    - effective_from: 2026-11-01T00:00:00Z
      nano_usd_per_million_tokens: {input: 150000000, output: 600000000, cached_input: 75000000}
    - effective_from: 2026-11-15T12:00:00Z
      nano_usd_per_million_tokens: {input: 300000000, output: 1200000000}
      nano_usd_per_request: 7
";

    /// An instant from RFC 3339 text.
    pub(crate) fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_latest_version_in_effect_applies() {
        let book = PriceBook::parse(FILE).unwrap();
        assert!(book.price_at("gpt-4o-mini", at("2026-10-31T23:59:59Z")).is_none(), "before the first version");
        assert!(book.price_at("other", at("2026-11-20T00:00:00Z")).is_none());
        let t = Tokens { prompt: 1_000, completion: 100, cached: 400, ..Tokens::default() };
        // 600 × 150 + 400 × 75 + 100 × 600 nano-USD (per token: the price per million / 10⁶).
        let early = book.price_at("gpt-4o-mini", at("2026-11-15T11:59:59Z")).unwrap();
        assert_eq!(cost(early, t).unwrap(), NanoUsd(180_000));
        // From the second version on: cached input at the input price (no price of its own),
        // and the per-request price.
        let late = book.price_at("gpt-4o-mini", at("2026-11-15T12:00:00Z")).unwrap();
        assert_eq!(cost(late, t).unwrap(), NanoUsd(1_000 * 300 + 100 * 1_200 + 7));
    }

    #[test]
    fn a_fraction_of_a_nano_usd_per_token_is_exact() {
        // 25 nano-USD per million tokens: 0.000025 nano-USD a token; 10⁶ tokens cost 25.
        let book = PriceBook::parse(
            "models: {m: [{effective_from: 2026-01-01T00:00:00Z, nano_usd_per_million_tokens: {input: 25, output: 0}}]}",
        )
        .unwrap();
        let p = book.price_at("m", at("2026-02-01T00:00:00Z")).unwrap();
        assert_eq!(cost(p, Tokens { prompt: 1_000_000, ..Tokens::default() }).unwrap(), NanoUsd(25));
        assert_eq!(cost(p, Tokens { prompt: 1, ..Tokens::default() }).unwrap(), NanoUsd(1), "rounded up once");
    }

    #[test]
    fn bad_files_name_the_field() {
        let version = |body: &str| format!("models: {{m: [{{effective_from: 2026-01-01T00:00:00Z, {body}}}]}}");
        let cases = [
            (version("nano_usd_per_million_tokens: {input: 1, output: 1, bogus: 1}"), "bogus"),
            (version("nano_usd_per_million_tokens: {input: 1.5, output: 1}"), "input"),
            (version("nano_usd_per_million_tokens: {input: -1, output: 1}"), "models.m[0].nano_usd_per_million_tokens.input"),
            (
                version(&format!("nano_usd_per_million_tokens: {{input: 1, output: {}}}", MAX_PER_MILLION + 1)),
                "models.m[0].nano_usd_per_million_tokens.output",
            ),
            (version("nano_usd_per_million_tokens: {input: 1, output: 1}, nano_usd_per_request: -1"), "nano_usd_per_request"),
            (version("nano_usd_per_million_tokens: {input: 1, output: 1}, colour: red"), "colour"),
            (version("nano_usd_per_million_tokens: {output: 1}"), "input"),
            ("models: {m: []}".to_owned(), "models.m"),
            ("prices: {}".to_owned(), "prices"),
            (
                "models: {m: [{effective_from: 2026-02-01T00:00:00Z, nano_usd_per_million_tokens: {input: 1, output: 1}}, \
                 {effective_from: 2026-01-01T00:00:00Z, nano_usd_per_million_tokens: {input: 1, output: 1}}]}"
                    .to_owned(),
                "models.m[1].effective_from",
            ),
        ];
        let version = |i: usize| {
            format!(
                "{{effective_from: {}, nano_usd_per_million_tokens: {{input: 1, output: 1}}}}",
                at("2020-01-01T00:00:00Z") + chrono::Duration::seconds(i as i64)
            )
        };
        let many: Vec<String> = (0..=MAX_VERSIONS).map(version).collect();
        let too_many = (format!("models: {{m: [{}]}}", many.join(", ")), "models.m");
        assert!(PriceBook::parse(&format!("models: {{m: [{}]}}", many[..MAX_VERSIONS].join(", "))).is_ok());
        for (text, field) in cases.into_iter().chain([too_many]) {
            let e = PriceBook::parse(&text).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }
}
