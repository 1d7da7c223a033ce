//! Prices and the cost of a request, in integer money: LiteLLM's model catalogue shipped as
//! data (`catalogue`), exact conversion of its USD prices to atto-USD (`decimal`), a
//! deployment's price in every metered dimension and the cost of its token counts (`cost`), and
//! each deployment's price at config load (`resolve`), and a cost split by token type
//! (`split`). No float in any arithmetic, no I/O.

mod catalogue;
mod cost;
mod decimal;
mod resolve;
mod split;

pub use catalogue::{context_window, deployment_context_window};
pub use cost::{batch_cost, cost, worst_case_cost, Price, Rates, Tier, Tokens};
pub use decimal::{is_exact_in_atto, usd_to_atto, AttoUsd, PriceError};
pub use resolve::{built_in, configured_price, resolve_price};
pub use split::cost_by_token_type;

#[cfg(test)]
mod tests;
