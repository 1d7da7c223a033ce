//! The usage topic as finance's contract (docs/finance.md, 1.), read from another language: a
//! gateway serves load, some records are published a second time (duplicates, headers and all),
//! and a Python consumer (`tests/finance/compat.py`, confluent-kafka) reads the whole topic,
//! checks the CloudEvents headers, validates every event against the JSON Schema, deduplicates
//! on `event_id` and re-derives the spend per scope, which must equal the ledger's exactly.

use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tollgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_consumer_validates_every_event_and_re_derives_the_ledger() -> Result<()> {
    let dir = scratch_dir("finance-compat")?;
    let topic = unique("usage-compat-");
    let keyspace = unique("compat_");
    create_topic(&topic, 3).await?;
    create_topic(&format!("{topic}-dlq"), 1).await?;
    let mock = start_mock(&dir, &["--latency-ms", "1"]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let gateway = start_gateway(&dir, &GatewayConfig::new("gw-compat", &models, &topic, &kafka_bootstrap())).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &keyspace, 500)).await?;
    let session = cql().await?;

    let truth = drive_load(&[gateway.url()?.to_owned()], 4, 150, Arc::new(AtomicBool::new(false))).await?;
    let copies = republish_some(&topic, 20).await?;
    eventually("the ledger to hold every served request", Duration::from_secs(90), || async {
        Ok(truth.ledger_complete(&session, &keyspace).await?.then_some(()))
    })
    .await?;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("repository")?;
    let out = tokio::process::Command::new(test_python())
        .arg(root.join("tests/finance/compat.py"))
        .arg(kafka_bootstrap())
        .arg(&topic)
        .arg(root.join("schemas/usage_event.v1.schema.json"))
        .output()
        .await
        .context("run tests/finance/compat.py with the test virtualenv (deploy/local/prereqs)")?;
    ensure!(out.status.success(), "compat.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    eprintln!(
        "Python consumer: {} records, {} events, {} duplicates, {} invalid",
        report["records"],
        report["events"],
        report["duplicates"],
        report["invalid"].as_array().map_or(0, Vec::len)
    );
    ensure!(
        report["invalid"].as_array().is_some_and(Vec::is_empty),
        "records that break the contract: {}",
        report["invalid"]
    );
    ensure!(
        report["events"] == truth.requests,
        "one event per served request: {} != {}",
        report["events"],
        truth.requests
    );
    ensure!(
        report["duplicates"] == copies,
        "the copies are told apart by event_id: {} != {copies}",
        report["duplicates"]
    );
    let scopes = report["scopes"].as_object().context("scopes")?;
    ensure!(scopes.len() >= 5, "scopes of keys, teams and customers: {}", scopes.len());
    for (scope, spent) in scopes {
        let (ledger, _) = scope_total(&session, &keyspace, scope).await?;
        ensure!(spent.as_i64() == Some(ledger), "{scope}: Python {spent} != ledger {ledger}");
        let served = truth.scopes.get(scope).map(|t| t.0);
        ensure!(served == Some(ledger), "{scope}: served {served:?} != ledger {ledger}");
    }
    drop((gateway, mock, consumer));
    Ok(())
}
