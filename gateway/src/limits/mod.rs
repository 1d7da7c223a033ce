//! What a request may spend and how fast: admission against the key's (and its team's, user's,
//! organization's and customer's) rate limits and budgets (`admission`), the rate limiter
//! (`ratelimit`), prices and costs in integer nano-USD (`pricing`), each gateway's view of spend
//! against budgets (`budget_view`) and the credit leases that bound hard budgets across gateways
//! (`leases`). docs/design.md §5.

pub mod admission;
pub mod budget_view;
pub mod leases;
pub mod pricing;
pub mod ratelimit;
