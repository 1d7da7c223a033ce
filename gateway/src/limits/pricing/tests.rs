//! Costs of real catalogue entries against hand arithmetic, one test per dimension; exact
//! conversion of the whole catalogue; the lookup order and overrides of a config.

use super::catalogue::entries;
use super::*;
use crate::config::Config;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tollgate_schemas::NanoUsd;

/// The price the catalogue gives `model`, as a deployment without overrides gets it.
fn catalogued(model: &str) -> Price {
    built_in(model).unwrap_or_else(|| panic!("{model} has no price in the catalogue"))
}

fn nanos(model: &str, tokens: Tokens) -> i64 {
    cost(&catalogued(model), tokens).unwrap().0
}

#[test]
fn text_input_and_output() {
    // gpt-4o-mini: input 1.5e-07 USD = 150 nano-USD, output 6e-07 = 600 nano-USD per token.
    // 1000 × 150 + 100 × 600 = 150 000 + 60 000 = 210 000.
    assert_eq!(nanos("gpt-4o-mini", Tokens { prompt: 1_000, completion: 100, ..Tokens::default() }), 210_000);
}

#[test]
fn cache_reads_are_part_of_the_prompt() {
    // gpt-4o-mini: cache_read_input_token_cost 7.5e-08 = 75 nano-USD.
    // (1000 − 400) × 150 + 400 × 75 + 100 × 600 = 90 000 + 30 000 + 60 000 = 180 000.
    let t = Tokens { prompt: 1_000, completion: 100, cached: 400, ..Tokens::default() };
    assert_eq!(nanos("gpt-4o-mini", t), 180_000);
}

#[test]
fn batch_prices() {
    // gpt-4o-mini through the batch API: input_cost_per_token_batches 7.5e-08 (75 nano-USD),
    // output_cost_per_token_batches 3e-07 (300); no batch price for cache reads, so the usual
    // 7.5e-08 (75). Prompt 1000 of which 400 cached, 100 completion:
    // 600 × 75 + 400 × 75 + 100 × 300 = 45 000 + 30 000 + 30 000 = 105 000.
    let t = Tokens { prompt: 1_000, completion: 100, cached: 400, ..Tokens::default() };
    assert_eq!(batch_cost(&catalogued("gpt-4o-mini"), t).unwrap().0, 105_000);
    // A model the catalogue gives no batch price costs the same either way.
    let p = Price::from_nanos(150, 75, 600);
    assert_eq!(batch_cost(&p, t), cost(&p, t));
}

#[test]
fn cache_writes() {
    // claude-sonnet-4-5-20250929: input 3e-06 (3000 nano), cache read 3e-07 (300),
    // cache creation 3.75e-06 (3750), output 1.5e-05 (15 000). Prompt 10 000 of which 2000
    // read from and 3000 written to the cache:
    // 5000 × 3000 + 2000 × 300 + 3000 × 3750 + 500 × 15 000
    // = 15 000 000 + 600 000 + 11 250 000 + 7 500 000 = 34 350 000.
    let t = Tokens { prompt: 10_000, completion: 500, cached: 2_000, cache_write: 3_000, ..Tokens::default() };
    assert_eq!(nanos("claude-sonnet-4-5-20250929", t), 34_350_000);
}

#[test]
fn reasoning_tokens_at_their_own_price_and_never_twice() {
    // dashscope/qwen-turbo: input 5e-08 (50 nano), output 2e-07 (200), reasoning 5e-07 (500).
    // Completion 1000 of which 800 reasoning: 100 × 50 + 800 × 500 + 200 × 200
    // = 5000 + 400 000 + 40 000 = 445 000.
    let t = Tokens { prompt: 100, completion: 1_000, reasoning: 800, ..Tokens::default() };
    assert_eq!(nanos("dashscope/qwen-turbo", t), 445_000);
    // o3 lists no reasoning price: reasoning is output (8e-06 = 8000 nano), counted once:
    // 1000 × 8000 = 8 000 000, the same as without the detail.
    let t = Tokens { completion: 1_000, reasoning: 800, ..Tokens::default() };
    assert_eq!(nanos("o3", t), 8_000_000);
    assert_eq!(nanos("o3", Tokens { completion: 1_000, ..Tokens::default() }), 8_000_000);
}

#[test]
fn audio_tokens() {
    // gpt-4o-audio-preview-2025-06-03: input 2.5e-06 (2500 nano), audio input 4e-05 (40 000),
    // output 1e-05 (10 000), audio output 8e-05 (80 000).
    // 400 × 2500 + 600 × 40 000 + 200 × 10 000 + 300 × 80 000
    // = 1 000 000 + 24 000 000 + 2 000 000 + 24 000 000 = 51 000 000.
    let t = Tokens { prompt: 1_000, completion: 500, audio_input: 600, audio_output: 300, ..Tokens::default() };
    assert_eq!(nanos("gpt-4o-audio-preview-2025-06-03", t), 51_000_000);
}

#[test]
fn image_tokens() {
    // gpt-image-1: input 5e-06 (5000 nano), image input 1e-05 (10 000), image output 4e-05
    // (40 000). 100 × 5000 + 400 × 10 000 + 4160 × 40 000 = 500 000 + 4 000 000 + 166 400 000
    // = 170 900 000.
    let t = Tokens { prompt: 500, completion: 4_160, image_input: 400, image_output: 4_160, ..Tokens::default() };
    assert_eq!(nanos("gpt-image-1", t), 170_900_000);
}

#[test]
fn per_request_price() {
    // perplexity/pplx-70b-online: 0.005 USD per request (5 000 000 nano), input 0, output
    // 2.8e-06 (2800). 50 × 2800 + 5 000 000 = 5 140 000. A request without tokens (the
    // provider never answered) pays no request price.
    assert_eq!(
        nanos("perplexity/pplx-70b-online", Tokens { prompt: 100, completion: 50, ..Tokens::default() }),
        5_140_000
    );
    assert_eq!(nanos("perplexity/pplx-70b-online", Tokens::default()), 0);
}

#[test]
fn per_search_unit_price() {
    // rerank-english-v3.0: input_cost_per_query 0.002 USD (2 000 000 nano) a search unit,
    // 0 per token: 3 units are 6 000 000 whatever the tokens.
    let t = Tokens { prompt: 900, search_units: 3, ..Tokens::default() };
    assert_eq!(nanos("rerank-english-v3.0", t), 6_000_000);
    assert_eq!(nanos("rerank-english-v3.0", Tokens { prompt: 900, ..Tokens::default() }), 0);
}

#[test]
fn per_character_price() {
    // tts-1: input_cost_per_character 1.5e-05 USD (15 000 nano): 11 characters are 165 000.
    assert_eq!(nanos("tts-1", Tokens { prompt: 3, characters: 11, ..Tokens::default() }), 165_000);
}

#[test]
fn per_image_price_else_per_pixel() {
    // low/1024-x-1024/gpt-image-1: input_cost_per_image 0.011 USD (11 000 000 nano), and the
    // same as input_cost_per_pixel: the per-image price is charged, never both.
    let two = Tokens { prompt: 7, images: 2, pixels: 2 * 1_048_576, ..Tokens::default() };
    assert_eq!(nanos("low/1024-x-1024/gpt-image-1", two), 22_000_000);
    // fal_ai/medium/1024-x-1024/gpt-image-2: output_cost_per_image 0.053 USD.
    assert_eq!(nanos("fal_ai/medium/1024-x-1024/gpt-image-2", two), 106_000_000);
    // azure/standard/1024-x-1024/dall-e-3: input_cost_per_pixel 4.19617e-08 USD, exactly
    // 41.9617 nano: 2 × 1 048 576 pixels are 88 000 063.0784 nano, rounded up once.
    assert_eq!(nanos("azure/standard/1024-x-1024/dall-e-3", two), 88_000_064);
    let price = catalogued("azure/standard/1024-x-1024/dall-e-3");
    assert_eq!(worst_case_cost(&price, 0, 0, two).unwrap().0, 88_000_064);
}

#[test]
fn context_tier_prices_every_token_above_the_threshold() {
    // gemini/gemini-2.5-pro: up to 200k prompt tokens input 1.25e-06 (1250 nano), output 1e-05
    // (10 000); above, input 2.5e-06 (2500), cache read 2.5e-07 (250), output 1.5e-05 (15 000).
    // At exactly 200 000: 200 000 × 1250 + 1000 × 10 000 = 250 000 000 + 10 000 000.
    assert_eq!(
        nanos("gemini/gemini-2.5-pro", Tokens { prompt: 200_000, completion: 1_000, ..Tokens::default() }),
        260_000_000
    );
    // 250 000 of which 50 000 cached: 200 000 × 2500 + 50 000 × 250 + 1000 × 15 000
    // = 500 000 000 + 12 500 000 + 15 000 000 = 527 500 000.
    let t = Tokens { prompt: 250_000, completion: 1_000, cached: 50_000, ..Tokens::default() };
    assert_eq!(nanos("gemini/gemini-2.5-pro", t), 527_500_000);
}

#[test]
fn two_context_tiers() {
    // kyma/qwen3.7-flash: above 32k input 1.35e-07 (135 nano), output 5.4e-07 (540); above
    // 256k input 2.7e-07 (270), output 1.08e-06 (1080).
    // 40 000 × 135 + 100 × 540 = 5 400 000 + 54 000 = 5 454 000.
    assert_eq!(nanos("kyma/qwen3.7-flash", Tokens { prompt: 40_000, completion: 100, ..Tokens::default() }), 5_454_000);
    // 300 000 × 270 + 100 × 1080 = 81 000 000 + 108 000 = 81 108 000.
    assert_eq!(
        nanos("kyma/qwen3.7-flash", Tokens { prompt: 300_000, completion: 100, ..Tokens::default() }),
        81_108_000
    );
}

#[test]
fn fractions_of_a_nano_usd_are_rounded_up_once_per_request() {
    // kyma/qwen3.7-flash: input 4.35e-08 USD = 43.5 nano-USD per token, cache read 8.1e-09 =
    // 8.1 nano-USD. 2 × 43.5 = 87 exactly (not 2 × 44); 1 × 43.5 → 44; 3 × 8.1 = 24.3 → 25.
    assert_eq!(nanos("kyma/qwen3.7-flash", Tokens { prompt: 2, ..Tokens::default() }), 87);
    assert_eq!(nanos("kyma/qwen3.7-flash", Tokens { prompt: 1, ..Tokens::default() }), 44);
    assert_eq!(nanos("kyma/qwen3.7-flash", Tokens { prompt: 3, cached: 3, ..Tokens::default() }), 25);
}

#[test]
fn parts_larger_than_their_whole_are_cut_to_it() {
    // A hostile answer claims 900 cached of 100 prompt tokens: 100 × 75 (all cached), not more.
    assert_eq!(nanos("gpt-4o-mini", Tokens { prompt: 100, cached: 900, ..Tokens::default() }), 7_500);
}

#[test]
fn absurd_counts_overflow_into_an_error_not_a_wrap() {
    let price = Price::from_nanos(1_000_000, 1_000_000, 1_000_000);
    let all = Tokens { prompt: u64::MAX, completion: u64::MAX, ..Tokens::default() };
    assert!(cost(&price, all).is_err());
    assert!(worst_case_cost(&price, u64::MAX, u64::MAX, Tokens::default()).is_err());
}

#[test]
fn every_catalogue_price_converts_exactly_or_to_the_nearest_atto_usd() {
    let (mut checked, mut inexact_covered, mut inexact_other) = (0, 0, 0);
    for (model, fields) in entries() {
        for (key, value) in fields.iter().filter(|(k, _)| k.contains("cost")) {
            let Some(usd) = value.as_f64() else { continue };
            checked += 1;
            let atto = usd_to_atto(usd).unwrap_or_else(|e| panic!("{model}.{key}: {e}"));
            if is_exact_in_atto(usd) {
                // Exact: back to the same float through its decimal text.
                assert_eq!(format!("{}e-18", atto.0).parse::<f64>().unwrap(), usd, "{model}.{key}");
                continue;
            }
            // Rounded: within half an atto-USD of the decimal value.
            let text = format!("{usd}");
            let (whole, frac) = text.split_once('.').unwrap();
            let floor = whole.parse::<i128>().unwrap() * 10_i128.pow(18) + frac[..18].parse::<i128>().unwrap();
            assert!(atto.0 == floor || atto.0 == floor + 1, "{model}.{key}");
            let stem = key.split_once("_above_").map_or(key.as_str(), |(s, _)| s);
            let per_unit = [cost::PER_REQUEST_FIELD, cost::PER_SECOND_FIELD]
                .iter()
                .chain(&cost::PER_PIXEL_FIELDS)
                .any(|f| *f == stem);
            if per_unit || cost::PER_TOKEN_FIELDS.iter().any(|(f, _)| *f == stem) {
                inexact_covered += 1;
            } else {
                inexact_other += 1;
            }
        }
    }
    // litellm 1.110.2: 18 081 prices; 44 of those Tollgate applies have more than 18 decimals
    // (float noise such as 4.0000000000000003e-07, repeating fractions such as
    // 1.1428571428571428e-06) and are rounded to the nearest atto-USD, as are 6 per-pixel prices
    // and some per-second prices (2.833333333333333e-04); the others it does not apply are
    // exact. All others are exact.
    eprintln!("{checked} prices; rounded: {inexact_covered} applied, {inexact_other} not applied");
    assert!(checked > 15_000, "{checked} prices");
    assert!(inexact_covered + inexact_other < 500, "{inexact_covered} + {inexact_other} rounded prices");
}

#[test]
fn every_catalogued_price_builds() {
    let mut priced = 0;
    for (model, fields) in entries() {
        let fields: BTreeMap<String, f64> = fields.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect();
        match Price::from_fields(&fields) {
            Ok(Some(_)) => priced += 1,
            Ok(None) => {}
            Err(e) => panic!("{model}: {e}"),
        }
    }
    assert!(priced > 3_800, "{priced} priced models");
}

#[test]
fn usd_converts_exactly_or_not_at_all() {
    assert_eq!(usd_to_atto(0.00000015), Ok(AttoUsd(150_000_000_000)));
    assert_eq!(usd_to_atto(1.25e-10), Ok(AttoUsd(125_000_000)));
    assert_eq!(usd_to_atto(2.0), Ok(AttoUsd(2_000_000_000_000_000_000)));
    assert_eq!(usd_to_atto(0.0), Ok(AttoUsd(0)));
    assert_eq!(usd_to_atto(1e-18), Ok(AttoUsd(1)));
    // More than 18 decimals: to the nearest atto-USD, half up.
    assert_eq!(usd_to_atto(4e-19), Ok(AttoUsd(0)));
    assert_eq!(usd_to_atto(5e-19), Ok(AttoUsd(1)));
    assert_eq!(usd_to_atto(4.0000000000000003e-07), Ok(AttoUsd(400_000_000_000)));
    assert_eq!(usd_to_atto(1.1428571428571428e-06), Ok(AttoUsd(1_142_857_142_857)));
    assert!(!is_exact_in_atto(1.1428571428571428e-06) && is_exact_in_atto(1.25e-10));
    assert!(usd_to_atto(-1.0).is_err());
    assert!(usd_to_atto(f64::NAN).is_err());
    assert!(usd_to_atto(1e300).is_err());
}

#[test]
fn context_windows_come_from_the_catalogue_unless_model_info_gives_one() {
    assert_eq!(context_window("gpt-4o"), Some(128_000));
    assert_eq!(context_window("gemini/gemini-2.5-pro"), Some(1_048_576));
    assert_eq!(context_window("no-such-model"), None);
    assert_eq!(deployment_context_window(None, "openai", "gpt-4o", "fast"), Some(128_000));
    assert_eq!(deployment_context_window(None, "gemini", "gemini-2.5-pro", "pro"), Some(1_048_576));
    let info: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"max_input_tokens": 32000}"#).unwrap();
    assert_eq!(deployment_context_window(Some(&info), "openai", "gpt-4o", "fast"), Some(32_000));
    let info: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"base_model": "azure/o3"}"#).unwrap();
    assert_eq!(deployment_context_window(Some(&info), "azure", "my-o3", "o3"), Some(200_000));
    assert_eq!(deployment_context_window(None, "hosted_vllm", "llama", "llama"), None);
}

/// `vertex_ai/` deployments are priced: Claude under `vertex_ai/<model>`, Gemini under its bare
/// name (the catalogue lists Vertex AI's Gemini prices so; AI Studio's are `gemini/<model>`).
#[test]
fn vertex_models_are_priced_from_the_catalogue() {
    let (name, _) = super::catalogue::lookup(None, "vertex_ai", "claude-3-5-sonnet@20240620", "m").unwrap();
    assert_eq!(name, "vertex_ai/claude-3-5-sonnet@20240620");
    let (name, entry) = super::catalogue::lookup(None, "vertex_ai", "gemini-2.5-pro", "m").unwrap();
    assert_eq!(name, "gemini-2.5-pro");
    assert_eq!(entry.get("litellm_provider").and_then(|v| v.as_str()), Some("vertex_ai-language-models"));
    // 1000 × 3000 + 100 × 15 000 nano-USD.
    let tokens = Tokens { prompt: 1_000, completion: 100, ..Tokens::default() };
    assert_eq!(nanos("vertex_ai/claude-3-5-sonnet@20240620", tokens), 4_500_000);
}

fn config(models: &str) -> Config {
    Config::parse(&format!("model_list:\n{models}"), "test.yaml").unwrap()
}

fn price_of(config: &Config, index: usize) -> Result<Option<Price>, crate::config::ConfigError> {
    resolve_price(config, index, "test.yaml")
}

#[test]
fn lookup_order_base_model_then_provider_and_upstream_then_upstream_then_name() {
    let c = config(
        r#"
  - {model_name: a, litellm_params: {model: azure/my-deployment, api_base: "http://x"}, model_info: {base_model: azure/gpt-4o-mini}}
  - {model_name: b, litellm_params: {model: gemini/gemini-2.5-pro}}
  - {model_name: c, litellm_params: {model: openai/o3, api_base: "http://x"}}
  - {model_name: gpt-4o-mini, litellm_params: {model: openai/local-name, api_base: "http://x"}}
"#,
    );
    assert_eq!(price_of(&c, 0).unwrap(), Some(catalogued("gpt-4o-mini")));
    assert_eq!(price_of(&c, 1).unwrap(), Some(catalogued("gemini/gemini-2.5-pro")));
    assert_eq!(price_of(&c, 2).unwrap(), Some(catalogued("o3")));
    assert_eq!(price_of(&c, 3).unwrap(), Some(catalogued("gpt-4o-mini")));
}

#[test]
fn deployment_fields_override_the_catalogue_field_by_field() {
    let c = config(
        r#"
  - model_name: a
    litellm_params: {model: openai/gpt-4o-mini, api_base: "http://x", output_cost_per_token: 0.000001, output_cost_per_reasoning_token: 0.000002}
    model_info: {input_cost_per_token: 0.0000002, output_cost_per_token: 0.5, input_cost_per_request: 0.001}
"#,
    );
    let p = price_of(&c, 0).unwrap().unwrap();
    // litellm_params wins over model_info; model_info over the catalogue; the catalogue's cache
    // read price (75 nano-USD) stays.
    assert_eq!(p.base.0[cost::INPUT], AttoUsd::from_nanos(200));
    assert_eq!(p.base.0[cost::OUTPUT], AttoUsd::from_nanos(1_000));
    assert_eq!(p.base.0[cost::REASONING], AttoUsd::from_nanos(2_000));
    assert_eq!(p.base.0[cost::CACHE_READ], AttoUsd::from_nanos(75));
    assert_eq!(p.per_request, AttoUsd::from_nanos(1_000_000));
}

#[test]
fn tollgate_prices_in_nano_usd_win() {
    let c = Config::parse(
        "model_list:\n  - {model_name: a, litellm_params: {model: openai/gpt-4o-mini, api_base: \"http://x\"}}\n\
         prices:\n  a: {input_nano_usd_per_token: 7, output_nano_usd_per_token: 9}\n",
        "test.yaml",
    )
    .unwrap();
    let p = price_of(&c, 0).unwrap().unwrap();
    assert_eq!(cost(&p, Tokens { prompt: 10, completion: 10, cached: 5, ..Tokens::default() }), Ok(NanoUsd(160)));
}

#[test]
fn unpriced_models_are_served_unless_finance_refuses_them() {
    let models = "  - {model_name: llama, litellm_params: {model: hosted_vllm/llama-local, api_base: \"http://x\"}}\n";
    assert_eq!(price_of(&config(models), 0).unwrap(), None);
    let refuse =
        Config::parse(&format!("model_list:\n{models}billing: {{unpriced_models: refuse}}\n"), "t.yaml").unwrap();
    let err = price_of(&refuse, 0).unwrap_err().to_string();
    assert!(err.contains("no price for `llama`"), "{err}");
    // The deprecated switch still works, and `billing.unpriced_models` wins over it.
    let old = Config::parse(&format!("model_list:\n{models}gateway: {{allow_unpriced_models: false}}\n"), "t.yaml");
    assert!(price_of(&old.unwrap(), 0).is_err());
    let both = format!(
        "model_list:\n{models}gateway: {{allow_unpriced_models: false}}\nbilling: {{unpriced_models: serve}}\n"
    );
    assert_eq!(price_of(&Config::parse(&both, "t.yaml").unwrap(), 0).unwrap(), None);
}

#[test]
fn prices_above_the_bound_are_refused() {
    let c = config(
        "  - {model_name: a, litellm_params: {model: openai/x, api_base: \"http://x\", input_cost_per_token: 0.01}}\n",
    );
    assert!(price_of(&c, 0).is_err());
    let c = config(
        "  - {model_name: a, litellm_params: {model: openai/x, api_base: \"http://x\", input_cost_per_request: 2}}\n",
    );
    assert!(price_of(&c, 0).is_err());
    let c = config(
        "  - {model_name: a, litellm_params: {model: openai/x, api_base: \"http://x\", input_cost_per_token: -1}}\n",
    );
    assert!(price_of(&c, 0).is_err());
}

#[test]
fn the_worst_of_two_prices_is_at_least_either_in_every_dimension() {
    let (a, b) = (catalogued("gemini/gemini-2.5-pro"), catalogued("gpt-4o-audio-preview-2025-06-03"));
    let worst = a.worst_of(b);
    for tokens in [
        Tokens { prompt: 300_000, completion: 10, ..Tokens::default() },
        Tokens { prompt: 1_000, completion: 500, audio_input: 600, audio_output: 300, ..Tokens::default() },
    ] {
        let w = cost(&worst, tokens).unwrap();
        assert!(w >= cost(&a, tokens).unwrap() && w >= cost(&b, tokens).unwrap());
        assert!(worst_case_cost(&a, tokens.prompt, tokens.completion, tokens).unwrap() >= cost(&a, tokens).unwrap());
    }
}

proptest! {
    #[test]
    fn cost_is_additive_over_text_output(p in 0u64..1_000_000, a in 0u64..1_000_000, b in 0u64..1_000_000) {
        let price = Price::from_nanos(150, 75, 600);
        let whole = cost(&price, Tokens { prompt: p, completion: a + b, ..Tokens::default() }).unwrap();
        let first = cost(&price, Tokens { prompt: p, completion: a, ..Tokens::default() }).unwrap();
        let extra = cost(&price, Tokens { completion: b, ..Tokens::default() }).unwrap();
        prop_assert_eq!(whole, first.checked_add(extra).unwrap());
    }

    #[test]
    fn details_never_cost_more_than_the_worst_case(
        prompt in 0u64..2_000_000, completion in 0u64..100_000, parts in proptest::array::uniform7(0u64..2_000_000),
    ) {
        let price = catalogued("gemini/gemini-2.5-pro");
        let t = Tokens {
            prompt, completion, cached: parts[0], cache_write: parts[1], audio_input: parts[2], image_input: parts[3],
            reasoning: parts[4], audio_output: parts[5], image_output: parts[6], search_units: 0, characters: 0,
            images: 0, pixels: 0, seconds: 0,
        };
        prop_assert!(cost(&price, t).unwrap() <= worst_case_cost(&price, prompt, completion, t).unwrap());
    }
}
