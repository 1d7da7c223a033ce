//! Prices and the cost of a request, in integer money: LiteLLM's model catalogue shipped as
//! data (`catalogue`) and each deployment's price at config load (`resolve`). The price math
//! itself (exact USD to atto-USD, `Price`, `cost`, the split by token type) is
//! `tollgate_schemas::pricing`, shared with the ledger consumer's re-rating. No float in any
//! arithmetic, no I/O.

mod catalogue;
mod resolve;

pub use catalogue::{context_window, deployment_context_window, deployment_max_output};
pub use resolve::{built_in, configured_price, resolve_price};
pub use tollgate_schemas::pricing::{
    batch_cost, batch_price, cost, cost_by_token_type, is_exact_in_atto, usd_to_atto, worst_case_cost, AttoUsd, Price,
    PriceError, Rates, Tier, Tokens,
};

#[cfg(test)]
mod tests;
