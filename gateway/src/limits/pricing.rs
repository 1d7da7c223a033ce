//! Cost of a request from its token counts and an integer price table (nano-USD per token).
//! Pure code: no I/O, no floats.

use crate::config::{Config, ConfigError, ModelEntry, PriceConfig};
use tollgate_schemas::money::MoneyOverflow;
use tollgate_schemas::NanoUsd;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub input: NanoUsd,
    pub cached_input: NanoUsd,
    pub output: NanoUsd,
}

impl From<PriceConfig> for Price {
    fn from(p: PriceConfig) -> Self {
        Price {
            input: NanoUsd(p.input_nano_usd_per_token),
            cached_input: NanoUsd(p.cached_input_nano_usd_per_token.unwrap_or(p.input_nano_usd_per_token)),
            output: NanoUsd(p.output_nano_usd_per_token),
        }
    }
}

/// Token counts as a provider reports them; `cached` is a subset of `prompt`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
}

/// `uncached prompt × input + cached × cached_input + completion × output`.
pub fn cost(price: &Price, tokens: Tokens) -> Result<NanoUsd, MoneyOverflow> {
    let cached = tokens.cached.min(tokens.prompt);
    let uncached = tokens.prompt - cached;
    price
        .input
        .checked_mul_units(uncached)?
        .checked_add(price.cached_input.checked_mul_units(cached)?)?
        .checked_add(price.output.checked_mul_units(tokens.completion)?)
}

/// Built-in list prices of common models, by upstream model name (USD per million tokens × 1000
/// = nano-USD per token). Config `prices:` entries override them.
const BUILT_IN: &[(&str, i64, i64, i64)] = &[
    // (model, input, cached input, output)
    ("gpt-4o", 2_500, 1_250, 10_000),
    ("gpt-4o-mini", 150, 75, 600),
    ("gpt-4.1", 2_000, 500, 8_000),
    ("gpt-4.1-mini", 400, 100, 1_600),
    ("gpt-4.1-nano", 100, 25, 400),
    ("o3-mini", 1_100, 550, 4_400),
    ("o4-mini", 1_100, 275, 4_400),
    ("claude-sonnet-4-20250514", 3_000, 300, 15_000),
    ("claude-3-5-haiku-20241022", 800, 80, 4_000),
    ("gemini-2.0-flash", 100, 25, 400),
    ("gemini-2.5-flash", 300, 75, 2_500),
    ("text-embedding-3-small", 20, 20, 0),
    ("text-embedding-3-large", 130, 130, 0),
];

/// The built-in price of an upstream model.
pub fn built_in(upstream_model: &str) -> Option<Price> {
    BUILT_IN.iter().find(|(name, ..)| *name == upstream_model).map(|&(_, input, cached, output)| Price {
        input: NanoUsd(input),
        cached_input: NanoUsd(cached),
        output: NanoUsd(output),
    })
}

/// USD per token as LiteLLM writes it (`0.00000015`) to exact nano-USD per token. The float's
/// shortest decimal form is what the user typed; more than nine decimals cannot be represented
/// and is an error rather than a silent rounding.
pub fn usd_per_token_to_nanos(usd: f64) -> Result<i64, PriceError> {
    if !usd.is_finite() || usd < 0.0 {
        return Err(PriceError::Negative(usd));
    }
    let text = format!("{usd}");
    let (whole, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
    if frac.len() > 9 {
        return Err(PriceError::TooPrecise(text));
    }
    let too_large = || PriceError::TooLarge(text.clone());
    let whole: i64 = whole.parse().map_err(|_| too_large())?;
    let frac_nanos: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| too_large())? };
    whole.checked_mul(1_000_000_000).and_then(|w| w.checked_add(frac_nanos)).ok_or_else(too_large)
}

/// Why a price in USD cannot be a whole number of nano-USD.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PriceError {
    #[error("{0} is not a non-negative number")]
    Negative(f64),
    #[error("{0} USD has more decimals than nano-USD can hold")]
    TooPrecise(String),
    #[error("{0} is too large")]
    TooLarge(String),
}

fn info_cost(entry: &ModelEntry, key: &str) -> Option<f64> {
    entry.model_info.as_ref()?.get(key)?.as_f64()
}

/// The price of `model_list[index]`: `prices.<model_name>` (nano-USD), else the deployment's
/// LiteLLM-style USD costs (`litellm_params` then `model_info`), else the built-in table by
/// `model_info.base_model`, upstream model or model name.
/// `Ok(None)` only when `gateway.allow_unpriced_models` is set.
pub fn resolve_price(config: &Config, index: usize, origin: &str) -> Result<Option<Price>, ConfigError> {
    let price = find_price(config, index, origin)?;
    let max = tollgate_schemas::limits::MAX_PRICE_PER_TOKEN;
    if let Some(p) = price.filter(|p| p.input > max || p.cached_input > max || p.output > max) {
        let name = config.model_list.get(index).map_or("", |m| m.model_name.as_str());
        return Err(ConfigError::Invalid {
            path: origin.to_owned(),
            field: format!("model_list[{index}]"),
            message: format!(
                "the price of `{name}` ({} / {} / {} nano-USD per input / cached / output token) is above the \
                 highest Tollgate accepts, {} nano-USD per token",
                p.input.0, p.cached_input.0, p.output.0, max.0
            ),
        });
    }
    Ok(price)
}

/// The price the config itself gives `model_list[index]`: `prices.<model_name>`, else the
/// deployment's LiteLLM-style USD costs. `Ok(None)` when it gives none.
pub fn configured_price(config: &Config, index: usize, origin: &str) -> Result<Option<Price>, ConfigError> {
    let Some(m) = config.model_list.get(index) else { return Ok(None) };
    let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
    if let Some(p) = config.prices.get(&m.model_name) {
        return Ok(Some(Price::from(*p)));
    }
    let p = &m.litellm_params;
    let input = p.input_cost_per_token.or_else(|| info_cost(m, "input_cost_per_token"));
    let output = p.output_cost_per_token.or_else(|| info_cost(m, "output_cost_per_token"));
    let cached = p.cache_read_input_token_cost.or_else(|| info_cost(m, "cache_read_input_token_cost"));
    if input.is_some() || output.is_some() {
        let field = |name: &str| format!("model_list[{index}].{name}");
        let input = usd_per_token_to_nanos(input.unwrap_or(0.0))
            .map_err(|e| invalid(field("input_cost_per_token"), e.to_string()))?;
        let output = usd_per_token_to_nanos(output.unwrap_or(0.0))
            .map_err(|e| invalid(field("output_cost_per_token"), e.to_string()))?;
        let cached = match cached {
            Some(c) => {
                usd_per_token_to_nanos(c).map_err(|e| invalid(field("cache_read_input_token_cost"), e.to_string()))?
            }
            None => input,
        };
        return Ok(Some(Price { input: NanoUsd(input), cached_input: NanoUsd(cached), output: NanoUsd(output) }));
    }
    Ok(None)
}

fn find_price(config: &Config, index: usize, origin: &str) -> Result<Option<Price>, ConfigError> {
    if let Some(price) = configured_price(config, index, origin)? {
        return Ok(Some(price));
    }
    let Some(m) = config.model_list.get(index) else { return Ok(None) };
    let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
    let p = &m.litellm_params;
    // The built-in table by `model_info.base_model` (how LiteLLM prices Azure deployments with
    // names of their own), then the upstream model, then the public model name.
    let upstream = p.model.split_once('/').map_or("", |(_, name)| name);
    let base_model = m
        .model_info
        .as_ref()
        .and_then(|i| i.get("base_model"))
        .and_then(|b| b.as_str())
        .map(|b| b.rsplit('/').next().unwrap_or(b));
    let found = base_model.and_then(built_in).or_else(|| built_in(upstream)).or_else(|| built_in(&m.model_name));
    match found {
        Some(price) => Ok(Some(price)),
        None if config.gateway.allow_unpriced_models => Ok(None),
        None => Err(invalid(
            format!("model_list[{index}].model_name"),
            format!(
                "no price for `{}`: Tollgate has no built-in price for `{upstream}`. Give this deployment \
                 `input_cost_per_token` and `output_cost_per_token` (USD per token, as LiteLLM writes them) in \
                 `litellm_params` or `model_info`, or `model_info.base_model` naming a model with a built-in price, \
                 or `prices.{}` in nano-USD per token; or set `gateway.allow_unpriced_models: true` to serve it at \
                 cost zero",
                m.model_name, m.model_name
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: Price = Price { input: NanoUsd(150), cached_input: NanoUsd(75), output: NanoUsd(600) };

    #[test]
    fn prices_cached_prompt_tokens_separately() {
        let c = cost(&P, Tokens { prompt: 1_000, completion: 100, cached: 400 }).unwrap();
        assert_eq!(c, NanoUsd(600 * 150 + 400 * 75 + 100 * 600));
    }

    #[test]
    fn litellm_usd_prices_convert_exactly() {
        assert_eq!(usd_per_token_to_nanos(0.00000015), Ok(150));
        assert_eq!(usd_per_token_to_nanos(0.0000025), Ok(2_500));
        assert_eq!(usd_per_token_to_nanos(0.00001), Ok(10_000));
        assert_eq!(usd_per_token_to_nanos(0.0), Ok(0));
        assert_eq!(usd_per_token_to_nanos(2.0), Ok(2_000_000_000));
        assert!(usd_per_token_to_nanos(0.0000000001).is_err());
        assert!(usd_per_token_to_nanos(-1.0).is_err());
        assert!(usd_per_token_to_nanos(f64::NAN).is_err());
    }

    #[test]
    fn overflow_is_reported() {
        assert!(cost(&P, Tokens { prompt: u64::MAX, completion: 0, cached: 0 }).is_err());
    }

    proptest! {
        #[test]
        fn cost_is_additive_over_completion_tokens(p in 0u64..1_000_000, a in 0u64..1_000_000, b in 0u64..1_000_000) {
            let whole = cost(&P, Tokens { prompt: p, completion: a + b, cached: 0 }).unwrap();
            let first = cost(&P, Tokens { prompt: p, completion: a, cached: 0 }).unwrap();
            let extra = cost(&P, Tokens { prompt: 0, completion: b, cached: 0 }).unwrap();
            prop_assert_eq!(whole, first.checked_add(extra).unwrap());
        }

        #[test]
        fn cached_tokens_never_cost_more_than_uncached(p in 0u64..1_000_000, c in 0u64..1_000_000) {
            let with_cache = cost(&P, Tokens { prompt: p, completion: 0, cached: c }).unwrap();
            let without = cost(&P, Tokens { prompt: p, completion: 0, cached: 0 }).unwrap();
            prop_assert!(with_cache <= without);
        }
    }
}
