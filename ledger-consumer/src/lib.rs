//! Tollgate's ledger consumer: folds usage events from Kafka into the Cassandra/ScyllaDB spend
//! ledgers exactly once (docs/design.md §4).
//!
//! `fold` is the pure arithmetic, `apply` runs it against a [`ledger::LedgerStore`], and
//! `consumer` drives it from Kafka, storing offsets only after the ledger write. `dead_letter`
//! decides which records can never be folded and which failures are worth retrying.

pub mod apply;
pub mod budgets;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod embedded;
pub mod fold;
pub mod ledger;
pub mod reconcile;
