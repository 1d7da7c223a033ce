//! Harness for Tollgate's end-to-end tests: builds and starts the real binaries on ephemeral
//! ports, against the Kafka and Cassandra that `deploy/local/up` starts, with a unique topic,
//! consumer group and keyspace per test so tests never share state.
//!
//! - [`services`]: the binaries, started and stopped ([`Process`]), and scratch directories;
//! - [`browser`]: the Python browser suites of `tests/console/` in headless Chromium;
//! - [`fixture`]: a test's own topics, keyspace and mock provider, and configs on them;
//! - [`configs`]: the gateway's and the consumer's configs as typed values, and the tenancy
//!   and prices the tests give them;
//! - [`clients`]: chat completions, the admin API, error envelopes, load with ground truth;
//! - [`kafka`]: topics, consumer groups, reading and republishing usage events;
//! - [`ledger`]: the CQL session, both ledger layers, key identities, the ground truth, reconcile;
//! - [`load`]: load over gateways that come and go, and the ledger checked request by request;
//! - [`finance`]: events with a cost breakdown, `export` and `close`, exports read back exactly;
//! - [`postgres`]: a private PostgreSQL with LiteLLM's schema (the import test).
//! - [`redis`]: a private Redis for the shared response cache, stopped at will.
//! - [`otelcol`]: the OpenTelemetry Collector the trace tests export to, and the spans it wrote.
//!
//! Tests wait for conditions with [`eventually`] (and check that one lasts with [`holds_for`]),
//! never with a fixed sleep that decides a pass or a fail.

pub mod browser;
pub mod clients;
pub mod configs;
pub mod finance;
pub mod fixture;
pub mod kafka;
pub mod ledger;
pub mod load;
pub mod otelcol;
pub mod postgres;
pub mod prometheus;
pub mod redis;
pub mod services;

pub use browser::*;
pub use clients::*;
pub use configs::*;
pub use finance::*;
pub use fixture::*;
pub use kafka::*;
pub use ledger::*;
pub use load::*;
pub use otelcol::*;
pub use services::*;

use anyhow::{bail, Result};
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] and [`holds_for`] look again.
const POLL: Duration = Duration::from_millis(100);

/// A name unique to this test run: `prefix` + 12 hex digits.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}{}", &id[id.len() - 12..])
}

/// Polls `check` until it returns `Ok(Some(_))`, or fails with the last observation after
/// `timeout`. Never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` for `period` and fails at the first observation where it does not hold: for
/// what must stay true (a gateway that must not become ready), where one look after a sleep
/// would miss a change and come back.
pub async fn holds_for<F, Fut>(what: &str, period: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if !check().await? {
            bail!("{what} stopped holding {:?} into {period:?}", start.elapsed());
        }
        if start.elapsed() > period {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}
