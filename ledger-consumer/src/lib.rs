//! Tollgate's ledger consumer: folds usage events from Kafka into the Cassandra/ScyllaDB spend
//! ledgers exactly once (docs/design.md §4).
//!
//! The fold, the ledger stores and dead-letter classification are the `tollgate-ledger` crate,
//! shared with the gateway's embedded mode. Here: `consumer` drives `tollgate_ledger::apply`
//! from Kafka, storing offsets only after the ledger write, and publishes refused records to the
//! dead-letter topic; `budgets` pushes budget state back to the gateways and sends alerts;
//! `finance` exports the event ledger for finance (FOCUS 1.2, docs/finance.md).

pub mod budgets;
pub mod config;
pub mod consumer;
pub mod finance;
pub mod health;
