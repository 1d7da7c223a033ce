//! A deployment's price in every dimension Tollgate meters, built from LiteLLM's field names,
//! and the cost of a request under it. Pure code: no I/O, no floats in arithmetic.

use super::decimal::{usd_to_atto, AttoUsd, PriceError};
use crate::money::MoneyOverflow;
use crate::NanoUsd;
use std::collections::BTreeMap;

/// The per-token dimensions, by index into [`Rates`]: LiteLLM's field for each, and the
/// dimension whose price applies when a model has none for it (cache reads, cache writes,
/// audio and image input cost what text input costs; reasoning, audio and image output what
/// text output costs, as at OpenAI, Anthropic and Google when they list no separate price).
pub const PER_TOKEN_FIELDS: [(&str, usize); DIMENSIONS] = [
    ("input_cost_per_token", INPUT),
    ("output_cost_per_token", OUTPUT),
    ("cache_read_input_token_cost", INPUT),
    ("cache_creation_input_token_cost", INPUT),
    ("output_cost_per_reasoning_token", OUTPUT),
    ("input_cost_per_audio_token", INPUT),
    ("output_cost_per_audio_token", OUTPUT),
    ("input_cost_per_image_token", INPUT),
    ("output_cost_per_image_token", OUTPUT),
];
pub const INPUT: usize = 0;
pub const OUTPUT: usize = 1;
pub const CACHE_READ: usize = 2;
pub const CACHE_WRITE: usize = 3;
pub const REASONING: usize = 4;
pub const AUDIO_INPUT: usize = 5;
pub const AUDIO_OUTPUT: usize = 6;
pub const IMAGE_INPUT: usize = 7;
pub const IMAGE_OUTPUT: usize = 8;
const DIMENSIONS: usize = 9;
const INPUT_SIDE: [usize; 5] = [INPUT, CACHE_READ, CACHE_WRITE, AUDIO_INPUT, IMAGE_INPUT];
const OUTPUT_SIDE: [usize; 4] = [OUTPUT, REASONING, AUDIO_OUTPUT, IMAGE_OUTPUT];

/// LiteLLM's price of each call, whatever its tokens.
pub const PER_REQUEST_FIELD: &str = "input_cost_per_request";
/// LiteLLM's price of a rerank search unit (Cohere's unit: one query over up to 100 documents).
pub const PER_QUERY_FIELD: &str = "input_cost_per_query";
/// LiteLLM's price of a character of text to speak (`/v1/audio/speech`).
pub const PER_CHARACTER_FIELD: &str = "input_cost_per_character";
/// LiteLLM's prices of a generated image (`/v1/images/generations`): its catalogue sets one of
/// the pair, per size and quality (`1024-x-1536/gpt-image-1.5`, `fal_ai/...`).
pub const PER_IMAGE_FIELDS: [&str; 2] = ["output_cost_per_image", "input_cost_per_image"];
/// LiteLLM's prices of a pixel of a generated image (`standard/1024-x-1024/dall-e-3`), used
/// when a model has no per-image price.
pub const PER_PIXEL_FIELDS: [&str; 2] = ["input_cost_per_pixel", "output_cost_per_pixel"];
/// LiteLLM's price of a second of audio transcribed (`/v1/audio/transcriptions`).
pub const PER_SECOND_FIELD: &str = "input_cost_per_second";
/// The pseudo-dimensions of search units, characters, images, pixels and seconds in a [`Term`]
/// (beyond the per-token [`Rates`]).
pub const SEARCH_UNITS: usize = DIMENSIONS;
pub const CHARACTERS: usize = DIMENSIONS + 1;
pub const IMAGES: usize = DIMENSIONS + 2;
pub const PIXELS: usize = DIMENSIONS + 3;
pub const SECONDS: usize = DIMENSIONS + 4;
/// Context tiers a model may have (LiteLLM's catalogue has at most two per model).
const MAX_TIERS: usize = 2;

/// Atto-USD per token, one per dimension (see [`PER_TOKEN_FIELDS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates(pub [AttoUsd; DIMENSIONS]);

/// Rates that replace the base rates for every token of a request whose prompt has more than
/// `above` tokens (LiteLLM's `*_above_200k_tokens` fields: Gemini 2.5 Pro, Claude Sonnet 4 at
/// 1M context, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    pub above: u64,
    pub rates: Rates,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub base: Rates,
    /// Lowest threshold first.
    pub tiers: [Option<Tier>; MAX_TIERS],
    pub per_request: AttoUsd,
    /// Per rerank search unit ([`PER_QUERY_FIELD`]).
    pub per_query: AttoUsd,
    /// Per character of text to speak ([`PER_CHARACTER_FIELD`]).
    pub per_character: AttoUsd,
    /// Per generated image (the larger of [`PER_IMAGE_FIELDS`]).
    pub per_image: AttoUsd,
    /// Per pixel of a generated image (the larger of [`PER_PIXEL_FIELDS`]); charged only when
    /// `per_image` is zero.
    pub per_pixel: AttoUsd,
    /// Per second of audio transcribed ([`PER_SECOND_FIELD`]).
    pub per_second: AttoUsd,
    /// The rates of a provider's batch API (LiteLLM's `*_batches` fields), when it lists any;
    /// see [`batch_cost`].
    pub batch: Option<Rates>,
}

/// Token counts as a provider reports them, in OpenAI's terms: `cached` (cache reads),
/// `cache_write`, `audio_input` and `image_input` are parts of `prompt`; `reasoning`,
/// `audio_output` and `image_output` parts of `completion`. A part is charged at its own price
/// instead of, never on top of, the text price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
    pub audio_input: u64,
    pub audio_output: u64,
    pub image_input: u64,
    pub image_output: u64,
    /// Rerank search units (not tokens: counted apart from `prompt` and `completion`).
    pub search_units: u64,
    /// Characters of text to speak (`/v1/audio/speech`; not tokens either).
    pub characters: u64,
    /// Images generated (`/v1/images/generations`), and their pixels (width × height each).
    pub images: u64,
    pub pixels: u64,
    /// Seconds of audio transcribed (`/v1/audio/transcriptions`), whole seconds rounded up.
    pub seconds: u64,
}

impl Tokens {
    /// Every count at most `max`.
    pub fn clamped(self, max: u64) -> Tokens {
        let c = |n: u64| n.min(max);
        Tokens {
            prompt: c(self.prompt),
            completion: c(self.completion),
            cached: c(self.cached),
            cache_write: c(self.cache_write),
            reasoning: c(self.reasoning),
            audio_input: c(self.audio_input),
            audio_output: c(self.audio_output),
            image_input: c(self.image_input),
            image_output: c(self.image_output),
            search_units: c(self.search_units),
            characters: c(self.characters),
            images: c(self.images),
            pixels: c(self.pixels),
            seconds: c(self.seconds),
        }
    }

    pub fn largest(&self) -> u64 {
        [
            self.prompt,
            self.completion,
            self.cached,
            self.cache_write,
            self.reasoning,
            self.audio_input,
            self.audio_output,
            self.image_input,
            self.image_output,
            self.search_units,
            self.characters,
            self.images,
            self.pixels,
            self.seconds,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

/// A price field that cannot be used, and which.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("`{field}`: {error}")]
pub struct FieldError {
    pub field: String,
    pub error: PriceError,
}

impl Price {
    /// A price from LiteLLM's fields (USD). `Ok(None)` when no field prices tokens or requests:
    /// the model is unpriced.
    pub fn from_fields(fields: &BTreeMap<String, f64>) -> Result<Option<Price>, FieldError> {
        let atto = |field: &str| -> Result<Option<AttoUsd>, FieldError> {
            fields
                .get(field)
                .map(|&usd| usd_to_atto(usd).map_err(|error| FieldError { field: field.to_owned(), error }))
                .transpose()
        };
        let per_request = atto(PER_REQUEST_FIELD)?;
        let per_query = atto(PER_QUERY_FIELD)?;
        let per_character = atto(PER_CHARACTER_FIELD)?;
        let larger = |[a, b]: [&str; 2]| -> Result<Option<AttoUsd>, FieldError> {
            Ok(match (atto(a)?, atto(b)?) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            })
        };
        let per_image = larger(PER_IMAGE_FIELDS)?;
        let per_pixel = larger(PER_PIXEL_FIELDS)?;
        let per_second = atto(PER_SECOND_FIELD)?;
        let per_unit =
            [per_request, per_query, per_character, per_image, per_pixel, per_second].iter().any(Option::is_some);
        if !per_unit && PER_TOKEN_FIELDS.iter().all(|(f, _)| !fields.contains_key(*f)) {
            return Ok(None);
        }
        let base = rates(&atto, "", None)?;
        let mut tiers = [None; MAX_TIERS];
        for (slot, above) in tiers.iter_mut().zip(thresholds(fields)?) {
            let suffix = format!("_above_{}k_tokens", above / 1000);
            *slot = Some(Tier { above, rates: rates(&atto, &suffix, Some(&base))? });
        }
        let batched = PER_TOKEN_FIELDS.iter().any(|(f, _)| fields.contains_key(&format!("{f}_batches")));
        let batch = if batched { Some(rates(&atto, "_batches", Some(&base))?) } else { None };
        Ok(Some(Price {
            base,
            tiers,
            per_request: per_request.unwrap_or_default(),
            per_query: per_query.unwrap_or_default(),
            per_character: per_character.unwrap_or_default(),
            per_image: per_image.unwrap_or_default(),
            per_pixel: per_pixel.unwrap_or_default(),
            per_second: per_second.unwrap_or_default(),
            batch,
        }))
    }

    /// Tollgate's own `prices:` entry: text input, cached input and output in nano-USD per
    /// token; the other dimensions cost what text input or output costs.
    pub fn from_nanos(input: i64, cached_input: i64, output: i64) -> Price {
        let mut base = Rates::default();
        for (dim, (_, like)) in PER_TOKEN_FIELDS.iter().enumerate() {
            base.0[dim] = AttoUsd::from_nanos(if *like == INPUT { input } else { output });
        }
        base.0[CACHE_READ] = AttoUsd::from_nanos(cached_input);
        Price {
            base,
            tiers: [None; MAX_TIERS],
            per_request: AttoUsd::ZERO,
            per_query: AttoUsd::ZERO,
            per_character: AttoUsd::ZERO,
            per_image: AttoUsd::ZERO,
            per_pixel: AttoUsd::ZERO,
            per_second: AttoUsd::ZERO,
            batch: None,
        }
    }

    /// The base text input price, per token.
    pub fn input(&self) -> AttoUsd {
        self.base.0[INPUT]
    }

    /// The base text output price, per token.
    pub fn output(&self) -> AttoUsd {
        self.base.0[OUTPUT]
    }

    /// The rates for a request with `prompt` prompt tokens.
    pub fn rates_for(&self, prompt: u64) -> &Rates {
        self.tiers.iter().flatten().filter(|t| prompt > t.above).map(|t| &t.rates).next_back().unwrap_or(&self.base)
    }

    /// Every rate of every tier, and the per-request price.
    pub fn all_rates(&self) -> impl Iterator<Item = AttoUsd> + '_ {
        let tiers = self.tiers.iter().flatten().map(|t| &t.rates);
        std::iter::once(&self.base).chain(tiers).flat_map(|r| r.0)
    }

    /// A price at least as high as both in every dimension, without tiers: for the most a
    /// request can cost whichever of several deployments serves it.
    pub fn worst_of(self, other: Price) -> Price {
        let (a, b) = (self.ceiling(), other.ceiling());
        let mut base = a;
        for (rate, other) in base.0.iter_mut().zip(b.0) {
            *rate = (*rate).max(other);
        }
        Price {
            base,
            tiers: [None; MAX_TIERS],
            per_request: self.per_request.max(other.per_request),
            per_query: self.per_query.max(other.per_query),
            per_character: self.per_character.max(other.per_character),
            per_image: self.per_image.max(other.per_image),
            per_pixel: self.per_pixel.max(other.per_pixel),
            per_second: self.per_second.max(other.per_second),
            batch: None,
        }
    }

    /// Text input plus text output price, in atto-USD, for ranking deployments by price
    /// (cost-based routing); saturates at `i64::MAX`.
    pub fn unit_price(&self) -> i64 {
        let sum = self.base.0[INPUT].0.saturating_add(self.base.0[OUTPUT].0);
        i64::try_from(sum).unwrap_or(i64::MAX)
    }

    /// The base text prices as `/model/info` shows them, in nano-USD per token (rounded up
    /// when a price is a fraction of a nano-USD; costs are computed from the exact prices).
    pub fn public_fields(&self) -> Vec<(String, serde_json::Value)> {
        [("input", INPUT), ("output", OUTPUT), ("cached_input", CACHE_READ)]
            .into_iter()
            .filter_map(|(name, dim)| {
                let nanos = self.base.0[dim].to_nanos_rounded_up().ok()?;
                Some((format!("{name}_nano_usd_per_token"), serde_json::Value::from(nanos.0)))
            })
            .collect()
    }

    /// Each dimension's highest rate over the base and every tier.
    fn ceiling(&self) -> Rates {
        let mut out = self.base;
        for tier in self.tiers.iter().flatten() {
            for (rate, other) in out.0.iter_mut().zip(tier.rates.0) {
                *rate = (*rate).max(other);
            }
        }
        out
    }

    /// The highest input-side and output-side rates, over all tiers: what the worst case
    /// charges every prompt and every completion token.
    fn highest_rates(&self) -> (AttoUsd, AttoUsd) {
        let top = self.ceiling();
        let max = |dims: &[usize]| dims.iter().map(|&d| top.0[d]).max().unwrap_or_default();
        (max(&INPUT_SIDE), max(&OUTPUT_SIDE))
    }
}

/// The rates of one tier (`suffix` `""` is the base). A dimension the tier does not price
/// costs what it costs in the base when the base prices it, else what its stand-in dimension
/// costs in this tier.
fn rates(
    atto: &dyn Fn(&str) -> Result<Option<AttoUsd>, FieldError>,
    suffix: &str,
    base: Option<&Rates>,
) -> Result<Rates, FieldError> {
    let mut out = Rates::default();
    for (dim, (field, like)) in PER_TOKEN_FIELDS.iter().enumerate() {
        let own = atto(&format!("{field}{suffix}"))?;
        let from_base = match base {
            Some(b) if dim <= OUTPUT || atto(field)?.is_some() => Some(b.0[dim]),
            _ => None,
        };
        let stand_in = if dim == *like { AttoUsd::ZERO } else { out.0[*like] };
        out.0[dim] = own.or(from_base).unwrap_or(stand_in);
    }
    Ok(out)
}

/// The context thresholds of `*_above_<n>k_tokens` fields of per-token dimensions, lowest first.
fn thresholds(fields: &BTreeMap<String, f64>) -> Result<Vec<u64>, FieldError> {
    let mut out: Vec<u64> = fields
        .keys()
        .filter_map(|key| {
            let (stem, rest) = key.split_once("_above_")?;
            let thousands: u64 = rest.strip_suffix("k_tokens")?.parse().ok()?;
            PER_TOKEN_FIELDS.iter().any(|(f, _)| *f == stem).then(|| thousands.saturating_mul(1000))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    if out.len() > MAX_TIERS {
        let field = format!("*_above_{}k_tokens", out[MAX_TIERS] / 1000);
        return Err(FieldError { field, error: PriceError::TooLarge(format!("{} context tiers", out.len())) });
    }
    Ok(out)
}

/// The price of a provider's batch API: its `*_batches` rates, each dimension without one at
/// its usual base rate, no context tiers (LiteLLM's batch cost, except that LiteLLM halves the
/// usual rate of a model with no batch rate at all). `/v1/batches` is metered at it.
pub fn batch_price(price: &Price) -> Price {
    Price { base: price.batch.unwrap_or(price.base), tiers: [None; MAX_TIERS], batch: None, ..*price }
}

/// What `tokens` cost when sent through the provider's batch API ([`batch_price`]).
pub fn batch_cost(price: &Price, tokens: Tokens) -> Result<NanoUsd, MoneyOverflow> {
    cost(&batch_price(price), tokens)
}

/// What `tokens` cost under `price`, exactly, rounded up once to nano-USD: the sum of
/// [`terms`].
pub fn cost(price: &Price, tokens: Tokens) -> Result<NanoUsd, MoneyOverflow> {
    let mut total = AttoUsd::ZERO;
    for term in terms(price, tokens)? {
        total = total.checked_add(term.cost)?;
    }
    total.to_nanos_rounded_up()
}

/// One priced part of a request: `units` tokens of one dimension (or the per-request price,
/// `dimension` `None`, one unit) and their exact cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Term {
    pub dimension: Option<usize>,
    pub units: u64,
    pub cost: AttoUsd,
}

/// The exact terms of a request's cost, in a fixed order: cache reads, cache writes, audio and
/// image input, text input, reasoning, audio and image output, text output, the per-request
/// price. Each part of the prompt is taken out of the prompt in that order, never more than is
/// left, and the rest is text; likewise reasoning, audio and image out of the completion.
/// Per-request prices apply to requests with any tokens (a provider answered). Search units,
/// characters, images (else their pixels) and seconds come last ([`SEARCH_UNITS`],
/// [`CHARACTERS`], [`IMAGES`], [`PIXELS`], [`SECONDS`]). Dimensions with no tokens and a zero per-request price are left out.
pub fn terms(price: &Price, tokens: Tokens) -> Result<Vec<Term>, MoneyOverflow> {
    let rates = price.rates_for(tokens.prompt);
    let mut out = Vec::with_capacity(DIMENSIONS + 1);
    for (whole, parts, text_dim) in [
        (
            tokens.prompt,
            [
                (tokens.cached, CACHE_READ),
                (tokens.cache_write, CACHE_WRITE),
                (tokens.audio_input, AUDIO_INPUT),
                (tokens.image_input, IMAGE_INPUT),
            ],
            INPUT,
        ),
        (
            tokens.completion,
            [
                (tokens.reasoning, REASONING),
                (tokens.audio_output, AUDIO_OUTPUT),
                (tokens.image_output, IMAGE_OUTPUT),
                (0, OUTPUT),
            ],
            OUTPUT,
        ),
    ] {
        let mut left = whole;
        for (count, dim) in parts.into_iter().chain([(whole, text_dim)]) {
            let count = count.min(left);
            left -= count;
            if count > 0 {
                out.push(Term { dimension: Some(dim), units: count, cost: rates.0[dim].checked_mul_units(count)? });
            }
        }
    }
    if (tokens.prompt > 0 || tokens.completion > 0) && price.per_request > AttoUsd::ZERO {
        out.push(Term { dimension: None, units: 1, cost: price.per_request });
    }
    if tokens.search_units > 0 && price.per_query > AttoUsd::ZERO {
        let cost = price.per_query.checked_mul_units(tokens.search_units)?;
        out.push(Term { dimension: Some(SEARCH_UNITS), units: tokens.search_units, cost });
    }
    if tokens.characters > 0 && price.per_character > AttoUsd::ZERO {
        let cost = price.per_character.checked_mul_units(tokens.characters)?;
        out.push(Term { dimension: Some(CHARACTERS), units: tokens.characters, cost });
    }
    let (image_dim, image_units, image_price) = image_pricing(price, tokens);
    if image_units > 0 && image_price > AttoUsd::ZERO {
        let cost = image_price.checked_mul_units(image_units)?;
        out.push(Term { dimension: Some(image_dim), units: image_units, cost });
    }
    if tokens.seconds > 0 && price.per_second > AttoUsd::ZERO {
        let cost = price.per_second.checked_mul_units(tokens.seconds)?;
        out.push(Term { dimension: Some(SECONDS), units: tokens.seconds, cost });
    }
    Ok(out)
}

/// How generated images are charged: per image when the model has a per-image price, else
/// per pixel (LiteLLM's order).
fn image_pricing(price: &Price, tokens: Tokens) -> (usize, u64, AttoUsd) {
    if price.per_image > AttoUsd::ZERO {
        (IMAGES, tokens.images, price.per_image)
    } else {
        (PIXELS, tokens.pixels, price.per_pixel)
    }
}

/// The most `prompt` and `completion` tokens and `units` (search units, characters, images)
/// can cost under `price`: each token at the highest rate of its side in any tier, plus the
/// per-request price. Images count at the larger of their per-image and per-pixel costs (a
/// [`Price::worst_of`] may hold both).
pub fn worst_case_cost(price: &Price, prompt: u64, completion: u64, units: Tokens) -> Result<NanoUsd, MoneyOverflow> {
    let (input, output) = price.highest_rates();
    let images = price.per_image.checked_mul_units(units.images)?;
    let pixels = price.per_pixel.checked_mul_units(units.pixels)?;
    input
        .checked_mul_units(prompt)?
        .checked_add(output.checked_mul_units(completion)?)?
        .checked_add(price.per_request)?
        .checked_add(price.per_query.checked_mul_units(units.search_units)?)?
        .checked_add(price.per_character.checked_mul_units(units.characters)?)?
        .checked_add(images.max(pixels))?
        .checked_add(price.per_second.checked_mul_units(units.seconds)?)?
        .to_nanos_rounded_up()
}
