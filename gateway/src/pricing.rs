//! Cost of a request from its token counts and an integer price table (nano-USD per token).
//! Pure code: no I/O, no floats.

use crate::config::{Config, ConfigError, PriceConfig};
use std::collections::HashMap;
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

fn built_in(upstream_model: &str) -> Option<Price> {
    BUILT_IN.iter().find(|(name, ..)| *name == upstream_model).map(|&(_, input, cached, output)| Price {
        input: NanoUsd(input),
        cached_input: NanoUsd(cached),
        output: NanoUsd(output),
    })
}

/// Prices of every served `model_name`, resolved at start-up so the hot path does one lookup.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    by_model_name: HashMap<String, Price>,
}

impl PriceTable {
    /// Resolves a price for each model of the config. A model with no price is a config error
    /// unless `gateway.allow_unpriced_models` is set, in which case it is absent here and served
    /// at zero cost, counted by the caller.
    pub fn from_config(config: &Config, origin: &str) -> Result<PriceTable, ConfigError> {
        let mut by_model_name = HashMap::new();
        for (i, m) in config.model_list.iter().enumerate() {
            let upstream = m.litellm_params.model.split_once('/').map_or("", |(_, name)| name);
            let price = config.prices.get(&m.model_name).map(|p| Price::from(*p)).or_else(|| built_in(upstream));
            match price {
                Some(p) => {
                    by_model_name.insert(m.model_name.clone(), p);
                }
                None if config.gateway.allow_unpriced_models => {}
                None => {
                    return Err(ConfigError::Invalid {
                        path: origin.to_owned(),
                        field: format!("model_list[{i}].model_name"),
                        message: format!(
                            "no price for `{}`: add it under `prices:` or set gateway.allow_unpriced_models",
                            m.model_name
                        ),
                    })
                }
            }
        }
        Ok(PriceTable { by_model_name })
    }

    pub fn get(&self, model_name: &str) -> Option<&Price> {
        self.by_model_name.get(model_name)
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
