//! Tollgate's shared contracts: what the gateway publishes and what the ledger consumer folds.
//!
//! Everything that crosses a process boundary (the usage event, topic names, the CQL schema,
//! ledger row identifiers, money, tenancy records, how request logs are paged) is defined here
//! once. Apart from the tenancy and spend stores (feature `cql`, the one implementation both
//! services use) and the binaries' log set-up (feature `telemetry`), this crate does no I/O.

pub mod cloudevents;
pub mod cql;
pub mod event;
pub mod ledger;
pub mod limits;
pub mod logs;
pub mod money;
pub mod pricing;
pub mod secret;
#[cfg(feature = "cql")]
pub mod store;
#[cfg(feature = "telemetry")]
pub mod telemetry;
pub mod tenancy;
pub mod topics;
pub mod yaml;

pub use event::{UsageEvent, USAGE_EVENT_VERSION};
pub use money::NanoUsd;
