//! A request's cost by token type, for finance's one line per token type (docs/design.md §2.7,
//! "Cost by token type"). The parts come from the same exact atto-USD terms as the total
//! (`cost::terms`), and the one rounding of the total is distributed so that the parts, each a
//! whole number of nano-USD, sum to the total exactly. Pure code: no I/O, no floats.

use super::cost::{self, Price, Term, Tokens};
use super::decimal::AttoUsd;
use crate::event::TokenTypeCost;
use crate::money::MoneyOverflow;
use crate::NanoUsd;

/// The token type each dimension of [`cost::PER_TOKEN_FIELDS`] is billed as, then search units
/// characters, images and pixels ([`cost::SEARCH_UNITS`], [`cost::CHARACTERS`], [`cost::IMAGES`],
/// [`cost::PIXELS`]), seconds ([`cost::SECONDS`]).
const TYPE_OF_DIMENSION: [&str; 14] = [
    "input",
    "output",
    "cached_input",
    "cache_write",
    "reasoning",
    "audio_input",
    "audio_output",
    "image_input",
    "image_output",
    "search_units",
    "characters",
    "images",
    "pixels",
    "seconds",
];

/// The per-request price's token type.
const REQUEST: &str = "request";

/// `cost(price, tokens)` and its parts by token type, in the order of [`cost::terms`]. The
/// parts' costs sum to the total exactly.
pub fn cost_by_token_type(price: &Price, tokens: Tokens) -> Result<(NanoUsd, Vec<TokenTypeCost>), MoneyOverflow> {
    let terms = cost::terms(price, tokens)?;
    let exact: Vec<AttoUsd> = terms.iter().map(|t| t.cost).collect();
    let nanos = apportion(&exact)?;
    let total = nanos.iter().try_fold(0_i64, |sum, n| sum.checked_add(n.0)).ok_or(MoneyOverflow)?;
    let parts = terms.iter().zip(nanos).map(|(term, cost_nano_usd)| part(term, cost_nano_usd)).collect();
    Ok((NanoUsd(total), parts))
}

fn part(term: &Term, cost_nano_usd: NanoUsd) -> TokenTypeCost {
    let token_type = term.dimension.and_then(|d| TYPE_OF_DIMENSION.get(d)).copied().unwrap_or(REQUEST);
    TokenTypeCost { token_type: token_type.to_owned(), tokens: term.units, cost_nano_usd }
}

/// Whole nano-USD parts of exact non-negative amounts, summing to their total rounded up once
/// (`AttoUsd::to_nanos_rounded_up` of the sum), by largest remainder: every part first gets its
/// amount rounded down; the nano-USD still missing to the total (fewer than the number of parts
/// with a remainder) go one each to the parts with the largest remainders, the earlier part
/// first when remainders are equal. Every part is its exact amount rounded down or up.
pub fn apportion(exact: &[AttoUsd]) -> Result<Vec<NanoUsd>, MoneyOverflow> {
    let mut sum = AttoUsd::ZERO;
    for amount in exact {
        sum = sum.checked_add(*amount)?;
    }
    let total = sum.to_nanos_rounded_up()?;
    let mut floors = Vec::with_capacity(exact.len());
    let mut remainders = Vec::with_capacity(exact.len());
    for amount in exact {
        let (floor, remainder) = amount.to_nanos_with_remainder()?;
        floors.push(floor.0);
        remainders.push(remainder);
    }
    let floored: i64 = floors.iter().try_fold(0_i64, |s, f| s.checked_add(*f)).ok_or(MoneyOverflow)?;
    let missing = usize::try_from(total.0 - floored).map_err(|_| MoneyOverflow)?;
    let mut order: Vec<usize> = (0..exact.len()).collect();
    // Stable sort: equal remainders keep the earlier part first.
    order.sort_by(|a, b| remainders[*b].cmp(&remainders[*a]));
    for &i in order.iter().take(missing) {
        floors[i] += 1;
    }
    Ok(floors.into_iter().map(NanoUsd).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::cost;
    use proptest::prelude::*;

    fn atto(n: i128) -> AttoUsd {
        AttoUsd(n)
    }

    #[test]
    fn the_rounding_goes_to_the_largest_remainders() {
        const NANO: i128 = 1_000_000_000;
        // 0.4 + 0.4 + 0.3 nano: total 1.1, rounded up to 2; floors 0, 0, 0; two nano-USD go
        // to the two largest remainders (0.4, 0.4, the earlier first on a tie).
        let parts = apportion(&[atto(4 * NANO / 10), atto(4 * NANO / 10), atto(3 * NANO / 10)]).unwrap();
        assert_eq!(parts, vec![NanoUsd(1), NanoUsd(1), NanoUsd(0)]);
        // Equal remainders: the earlier part first.
        let parts = apportion(&[atto(NANO / 2), atto(NANO / 2 + 5 * NANO)]).unwrap();
        assert_eq!(parts, vec![NanoUsd(1), NanoUsd(5)]);
        // Whole amounts need no rounding.
        assert_eq!(apportion(&[atto(3 * NANO), atto(0)]).unwrap(), vec![NanoUsd(3), NanoUsd(0)]);
        assert_eq!(apportion(&[]).unwrap(), Vec::<NanoUsd>::new());
    }

    #[test]
    fn a_catalogue_price_splits_by_hand() {
        // gpt-4o-mini: input 150 nano-USD, cache read 75, output 600 per token.
        // 600 × 150 = 90 000 (input), 400 × 75 = 30 000 (cached), 100 × 600 = 60 000 (output).
        let t = Tokens { prompt: 1_000, completion: 100, cached: 400, ..Tokens::default() };
        let (total, parts) = cost_by_token_type(&Price::from_nanos(150, 75, 600), t).unwrap();
        assert_eq!(total, NanoUsd(180_000));
        let got: Vec<(&str, u64, i64)> =
            parts.iter().map(|p| (p.token_type.as_str(), p.tokens, p.cost_nano_usd.0)).collect();
        assert_eq!(got, vec![("cached_input", 400, 30_000), ("input", 600, 90_000), ("output", 100, 60_000)]);
    }

    fn tokens() -> impl Strategy<Value = Tokens> {
        let n = || 0u64..2_000_000;
        let units = (0u64..1_000, 0u64..100_000, 0u64..11, 0u64..200_000_000, 0u64..100_000);
        ((n(), n(), n(), n(), n(), n(), n(), n(), n()), units).prop_map(
            |((p, c, ca, cw, r, ai, ao, ii, io), (su, ch, im, px, se))| Tokens {
                prompt: p,
                completion: c,
                cached: ca,
                cache_write: cw,
                reasoning: r,
                audio_input: ai,
                audio_output: ao,
                image_input: ii,
                image_output: io,
                search_units: su,
                characters: ch,
                images: im,
                pixels: px,
                seconds: se,
            },
        )
    }

    proptest! {
        /// Whatever the prices and counts, the parts sum to `cost` exactly, each part is its
        /// exact amount rounded down or up, and the tokens of the parts add up to the request's.
        #[test]
        fn parts_sum_to_the_total_exactly(
            t in tokens(),
            rates in proptest::collection::vec(0i128..5_000_000_000_000, 9),
            per_request in 0i128..3_000_000_000_000,
            per_query in 0i128..3_000_000_000_000_000,
            tier in any::<bool>(),
            per_image in prop::option::of(0i128..1_000_000_000_000_000),
        ) {
            let mut price = crate::pricing::Price::from_nanos(0, 0, 0);
            for (slot, r) in price.base.0.iter_mut().zip(&rates) {
                *slot = AttoUsd(*r);
            }
            price.per_request = AttoUsd(per_request);
            price.per_query = AttoUsd(per_query);
            price.per_character = AttoUsd(per_query / 1000);
            price.per_image = AttoUsd(per_image.unwrap_or(0));
            price.per_pixel = AttoUsd(per_query / 100_000);
            price.per_second = AttoUsd(per_query / 10);
            if tier {
                let mut doubled = price.base;
                doubled.0.iter_mut().for_each(|r| r.0 *= 2);
                price.tiers[0] = Some(crate::pricing::Tier { above: 1_000_000, rates: doubled });
            }
            let (total, parts) = cost_by_token_type(&price, t).unwrap();
            prop_assert_eq!(total, cost(&price, t).unwrap());
            prop_assert_eq!(parts.iter().map(|p| p.cost_nano_usd.0).sum::<i64>(), total.0);
            prop_assert!(crate::event::cost_by_type::check(&parts, total, false).is_ok());
            for (p, term) in parts.iter().zip(cost::terms(&price, t).unwrap()) {
                let floor = term.cost.0 / 1_000_000_000;
                prop_assert!(i128::from(p.cost_nano_usd.0) == floor || i128::from(p.cost_nano_usd.0) == floor + 1);
            }
            let counted = |types: &[&str]| -> u64 {
                parts.iter().filter(|p| types.contains(&p.token_type.as_str())).map(|p| p.tokens).sum()
            };
            prop_assert_eq!(counted(&["input", "cached_input", "cache_write", "audio_input", "image_input"]), t.prompt);
            prop_assert_eq!(counted(&["output", "reasoning", "audio_output", "image_output"]), t.completion);
            let searched = if per_query > 0 { t.search_units } else { 0 };
            prop_assert_eq!(counted(&["search_units"]), searched);
            let spoken = if per_query / 1000 > 0 { t.characters } else { 0 };
            prop_assert_eq!(counted(&["characters"]), spoken);
            // Per image when the model has a per-image price, else per pixel: never both.
            let imaged = if per_image.unwrap_or(0) > 0 { t.images } else { 0 };
            let pixeled = if per_image.unwrap_or(0) == 0 && per_query / 100_000 > 0 { t.pixels } else { 0 };
            prop_assert_eq!((counted(&["images"]), counted(&["pixels"])), (imaged, pixeled));
            prop_assert_eq!(counted(&["seconds"]), if per_query / 10 > 0 { t.seconds } else { 0 });
        }
    }
}
