//! The price of each deployment of a config, at load: Tollgate's `prices:`, else LiteLLM's price
//! fields of the deployment over the catalogue entry of its model, field by field.

use super::catalogue;
use crate::config::{Config, ConfigError, ModelEntry, UnpricedModels};
use std::collections::BTreeMap;
use tollgate_schemas::pricing::cost::{
    Price, PER_CHARACTER_FIELD, PER_IMAGE_FIELDS, PER_PIXEL_FIELDS, PER_QUERY_FIELD, PER_REQUEST_FIELD,
    PER_SECOND_FIELD, PER_TOKEN_FIELDS,
};
use tollgate_schemas::pricing::AttoUsd;

/// Highest price per request accepted (1 USD): above it a field is more likely a per-token
/// price in the wrong place than a real price.
const MAX_PRICE_PER_REQUEST: AttoUsd = AttoUsd::from_nanos(1_000_000_000);

/// The price of `model_list[index]`, or `Ok(None)` for a model without one when
/// `billing.unpriced_models` is `serve` (the default): it is then served at cost zero, with a
/// warning at start-up and each of its usage events marked `unpriced`.
pub fn resolve_price(config: &Config, index: usize, origin: &str) -> Result<Option<Price>, ConfigError> {
    let Some(m) = config.model_list.get(index) else { return Ok(None) };
    let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
    let price = price_of(config, index, origin, Catalogue::Consulted)?;
    match price {
        Some(p) => check_bounds(p, m, index, &invalid).map(Some),
        None if config.unpriced_models() == UnpricedModels::Serve => {
            tracing::warn!(
                model = %m.model_name,
                upstream = %m.litellm_params.model,
                "no price for this model: it is served at cost zero and its usage events are marked `unpriced` \
                 (give it LiteLLM's `input_cost_per_token`/`output_cost_per_token`, or set \
                 `billing.unpriced_models: refuse` to refuse to start)"
            );
            Ok(None)
        }
        None => Err(invalid(
            format!("model_list[{index}].model_name"),
            format!(
                "no price for `{}` (`{}` is not in the model catalogue): give it `input_cost_per_token` and \
                 `output_cost_per_token` (USD per token, as LiteLLM writes them) in `litellm_params` or `model_info`, \
                 or `model_info.base_model` naming a catalogued model, or `prices.{}` in nano-USD per token; or \
                 remove `billing.unpriced_models: refuse` to serve it at cost zero",
                m.model_name, m.litellm_params.model, m.model_name
            ),
        )),
    }
}

/// The price the config itself gives `model_list[index]`: `prices.<model_name>`, else the
/// deployment's LiteLLM fields, without the catalogue (a wildcard's deployments are priced per
/// model they serve: [`built_in`]). `Ok(None)` when it gives none.
pub fn configured_price(config: &Config, index: usize, origin: &str) -> Result<Option<Price>, ConfigError> {
    let Some(m) = config.model_list.get(index) else { return Ok(None) };
    let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
    match price_of(config, index, origin, Catalogue::Skipped)? {
        Some(p) => check_bounds(p, m, index, &invalid).map(Some),
        None => Ok(None),
    }
}

/// The catalogue's price of a model by its catalogue name (`gpt-4o`, `gemini/gemini-2.5-pro`):
/// how a model served through a wildcard is priced, at its first request.
pub fn built_in(model: &str) -> Option<Price> {
    let fields: BTreeMap<String, f64> = catalogue::entry(model)?
        .iter()
        .filter(|(k, _)| is_price_field(k))
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect();
    // Every entry of the shipped catalogue builds (`pricing::tests`); one that did not would
    // leave the model unpriced rather than fail a request.
    Price::from_fields(&fields).ok().flatten()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Catalogue {
    Consulted,
    Skipped,
}

fn price_of(config: &Config, index: usize, origin: &str, catalogue: Catalogue) -> Result<Option<Price>, ConfigError> {
    let Some(m) = config.model_list.get(index) else { return Ok(None) };
    if let Some(p) = config.prices.get(&m.model_name) {
        return Ok(Some(Price::from(*p)));
    }
    let (fields, source) = price_fields(m, catalogue);
    Price::from_fields(&fields).map_err(|e| ConfigError::Invalid {
        path: origin.to_owned(),
        field: format!("model_list[{index}].{}", e.field),
        message: format!("{} (from {source})", e.error),
    })
}

/// LiteLLM's price fields of a deployment: those of `litellm_params`, then of `model_info`,
/// then of the catalogue entry found for it; and where the catalogue part came from.
fn price_fields(m: &ModelEntry, catalogue: Catalogue) -> (BTreeMap<String, f64>, String) {
    let (provider, upstream) = crate::providers::split_model(&m.litellm_params.model);
    let info = m.model_info.as_ref();
    let base_model = info.and_then(|i| i.get("base_model")).and_then(|b| b.as_str());
    let found = match catalogue {
        Catalogue::Consulted => self::catalogue::lookup(base_model, provider, upstream, &m.model_name),
        Catalogue::Skipped => None,
    };
    let mut fields: BTreeMap<String, f64> = BTreeMap::new();
    let catalogued = found.iter().flat_map(|(_, entry)| entry.iter());
    for (key, value) in catalogued.chain(info.into_iter().flatten()) {
        if is_price_field(key) {
            if let Some(usd) = value.as_f64() {
                fields.insert(key.clone(), usd);
            }
        }
    }
    fields.extend(m.litellm_params.costs.fields());
    let source = match found {
        Some((name, _)) => format!("the deployment's fields over the catalogue entry `{name}`"),
        None => "the deployment's fields".to_owned(),
    };
    (fields, source)
}

/// A per-token or per-request field of a dimension Tollgate prices, or one of its tiers.
fn is_price_field(key: &str) -> bool {
    let stem = key.split_once("_above_").map_or(key, |(stem, _)| stem);
    let stem = stem.strip_suffix("_batches").unwrap_or(stem);
    [PER_REQUEST_FIELD, PER_QUERY_FIELD, PER_CHARACTER_FIELD, PER_SECOND_FIELD].contains(&stem)
        || PER_IMAGE_FIELDS.contains(&stem)
        || PER_PIXEL_FIELDS.contains(&stem)
        || PER_TOKEN_FIELDS.iter().any(|(f, _)| *f == stem)
}

fn check_bounds(
    price: Price,
    m: &ModelEntry,
    index: usize,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<Price, ConfigError> {
    let max = tollgate_schemas::limits::MAX_PRICE_PER_TOKEN;
    if price.all_rates().any(|r| r > AttoUsd::from_nanos(max.0)) {
        return Err(invalid(
            format!("model_list[{index}]"),
            format!(
                "a price of `{}` is above the highest Tollgate accepts, {} nano-USD per token",
                m.model_name, max.0
            ),
        ));
    }
    let per_token = AttoUsd::from_nanos(max.0);
    for (rate, ceiling, field, unit) in [
        (price.per_request, MAX_PRICE_PER_REQUEST, PER_REQUEST_FIELD, "request"),
        (price.per_character, per_token, PER_CHARACTER_FIELD, "character"),
        (price.per_query, MAX_PRICE_PER_REQUEST, PER_QUERY_FIELD, "search unit"),
        (price.per_image, MAX_PRICE_PER_REQUEST, PER_IMAGE_FIELDS[0], "image"),
        (price.per_pixel, per_token, PER_PIXEL_FIELDS[0], "pixel"),
        (price.per_second, MAX_PRICE_PER_REQUEST, PER_SECOND_FIELD, "second"),
    ] {
        if rate > ceiling {
            let nanos = ceiling.to_nanos_rounded_up().map_or(i64::MAX, |n| n.0);
            return Err(invalid(
                format!("model_list[{index}].{field}"),
                format!(
                    "the price per {unit} of `{}` is above the highest Tollgate accepts, {nanos} nano-USD",
                    m.model_name
                ),
            ));
        }
    }
    Ok(price)
}

impl From<crate::config::PriceConfig> for Price {
    fn from(p: crate::config::PriceConfig) -> Self {
        let cached = p.cached_input_nano_usd_per_token.unwrap_or(p.input_nano_usd_per_token);
        Price::from_nanos(p.input_nano_usd_per_token, cached, p.output_nano_usd_per_token)
    }
}
