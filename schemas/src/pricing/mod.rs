//! Price math both binaries share, in integer money: exact conversion of USD prices to atto-USD
//! (`decimal`), a price in every metered dimension and the cost of token counts under it
//! (`cost`), and a cost split by token type (`split`). The gateway prices requests with it
//! (`gateway/src/limits/pricing/`, which adds the catalogue and each deployment's lookup); the
//! ledger consumer re-prices recorded events with it (`rerate`). No float in any arithmetic, no
//! I/O.

pub mod cost;
pub mod decimal;
pub mod split;

pub use cost::{batch_cost, batch_price, cost, worst_case_cost, Price, Rates, Tier, Tokens};
pub use decimal::{is_exact_in_atto, usd_to_atto, AttoUsd, PriceError};
pub use split::cost_by_token_type;
