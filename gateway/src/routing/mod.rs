//! Which deployment serves a request: the router (`router`: model groups, weights, in-flight
//! counts, cooldowns) and the retries and fallbacks around it (`retry`). docs/design.md §2.4.

pub mod outcomes;
pub mod retry;
pub mod router;
#[cfg(test)]
mod tests;
mod wildcard;
