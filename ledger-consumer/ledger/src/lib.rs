//! Tollgate's spend ledgers, shared by the ledger consumer and the gateway's embedded mode
//! (docs/design.md §4, §7): usage events go into the two ledger layers exactly once, whoever
//! drives the fold.
//!
//! `fold` is the pure arithmetic, `apply` runs one partition's batch through it against a
//! [`ledger::LedgerStore`] (`ledger::CqlLedger` for Cassandra/ScyllaDB, `embedded::EmbeddedDb`
//! for the embedded SQLite file), and `dead_letter` decides which records can never be folded
//! and which failures are worth retrying. `reconcile` (feature `reconcile`) compares the layers.
//!
//! This crate never reads Kafka and never stores an offset: the caller stores it once
//! [`apply::fold_batch`] returned Ok.

pub mod apply;
#[cfg(feature = "statements")]
pub mod close;
#[cfg(feature = "statements")]
pub mod closes;
pub mod dead_letter;
pub mod embedded;
pub mod fold;
pub mod ledger;
#[cfg(feature = "reconcile")]
pub mod reconcile;
#[cfg(feature = "statements")]
pub mod scan;
#[cfg(feature = "statements")]
pub mod statements;
