//! The FOCUS 1.2 export (docs/finance.md) on real Kafka and Cassandra: a gateway serves load and
//! a test publishes events of its own straight onto the usage topic (past days, odd amounts,
//! every token type, an older event without a breakdown, a duplicate, a poison event whose parts
//! do not sum to its cost, an event outside the period). The consumer folds them; `export`
//! writes CSV and Parquet; the FinOps Foundation's focus-validator finds no error in the CSV;
//! and BilledCost sums, per scope and day, to exactly the nano-USD of the ledger's spend rows.

use anyhow::{ensure, Context, Result};
use chrono::{Duration as Days, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tollgate_schemas::{NanoUsd, UsageEvent};
use tollgate_tests::*;

const PARTITIONS: i32 = 3;

/// `(scope, day)` → nano-USD.
type Spend = BTreeMap<(String, NaiveDate), i128>;

/// The export's BilledCost per ledger scope and charge day; also the rows' total.
fn export_spend(csv_path: &Path) -> Result<(Spend, i128, usize)> {
    let rows = read_export(csv_path)?;
    let mut spend = Spend::new();
    for row in &rows {
        ensure!(!row.correction, "no period is closed: no correction");
        for scope in &row.scopes {
            *spend.entry((scope.clone(), row.day)).or_default() += row.nano_usd;
        }
    }
    Ok((spend, rows.iter().map(|r| r.nano_usd).sum(), rows.len()))
}

/// The ledger's spend rows (`spend_aggregates`, summed over partitions) of the tenant scopes,
/// per UTC day of `[from, to]`.
async fn ledger_spend(
    session: &scylla::client::session::Session,
    ks: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Spend> {
    let rows = session
        .query_unpaged(format!("SELECT scope_id, window_id, spent_nano_usd FROM {ks}.spend_aggregates"), &[])
        .await?
        .into_rows_result()?;
    let mut spend = Spend::new();
    for row in rows.rows::<(String, String, Option<i64>)>()? {
        let (scope, window, spent) = row?;
        let Some(day) = window.strip_prefix("d:") else { continue };
        let day = NaiveDate::parse_from_str(day, "%Y-%m-%d")?;
        // The platform's own rows (`global/all`) are the sum of the tenants': no export row; tag
        // rows (`tag/<tag>`) overlap the tenants' and each other: no export row either.
        let overlapping = scope.starts_with("global/") || scope.starts_with("tag/");
        if scope.contains("/model/") || overlapping || day < from || day > to {
            continue;
        }
        *spend.entry((scope, day)).or_default() += i128::from(spent.unwrap_or(0));
    }
    // A day of events with neither tokens nor cost bills nothing: the export has no row for it.
    spend.retain(|_, nanos| *nanos != 0);
    Ok(spend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_focus_export_validates_and_sums_to_the_ledger_exactly() -> Result<()> {
    let dir = scratch_dir("finance-export")?;
    let topic = unique("usage-finance-");
    let keyspace = unique("finance_");
    create_topic(&topic, PARTITIONS).await?;
    create_topic(&format!("{topic}-dlq"), 1).await?;
    let mock = start_mock(&dir, &["--latency-ms", "1"]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let gateway = start_gateway(&dir, &GatewayConfig::new("gw-finance", &models, &topic, &kafka_bootstrap())).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &keyspace, 500)).await?;
    let session = cql().await?;

    let truth = drive_load(&[gateway.url()?.to_owned()], 4, 120, Arc::new(AtomicBool::new(false))).await?;
    let today = Utc::now().date_naive();
    let (from, to) = (today - Days::days(8), today);
    let mut records = Vec::new();
    let mut injected: i128 = 0;
    for i in 0..40 {
        let e = own_event(i, today - Days::days(7 - (i % 2) as i64), i != 13)?;
        injected += i128::from(e.cost_nano_usd.0);
        records.push((e.budget_owner(), e.encode()?));
    }
    let duplicate = records[3].clone();
    records.push(duplicate);
    let mut poison = own_event(41, today - Days::days(7), true)?;
    poison.cost_nano_usd = NanoUsd(poison.cost_nano_usd.0 + 1);
    records.push((poison.budget_owner(), poison.encode()?));
    let outside = own_event(42, today - Days::days(9), true)?;
    records.push((outside.budget_owner(), outside.encode()?));
    let empty = UsageEvent {
        cost_by_token_type: Vec::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_nano_usd: NanoUsd(0),
        ..own_event(43, today, true)?
    };
    records.push((empty.budget_owner(), empty.encode()?));
    publish(&topic, &records).await?;

    let served: i128 = truth
        .scopes
        .iter()
        .filter(|(s, _)| s.starts_with("key/") && !s.contains("/model/"))
        .map(|(_, t)| i128::from(t.0))
        .sum();
    let expected_events = (truth.requests + 40 + 2) as i64; // served, own, outside, empty
    eventually("every event in the event ledger and the dead letter recorded", Duration::from_secs(120), || async {
        let (count, _) = event_ledger_totals(&session, &keyspace).await?;
        let dead = session
            .query_unpaged(format!("SELECT reason FROM {keyspace}.dead_letters"), &[])
            .await?
            .into_rows_result()?
            .rows_num();
        Ok((count == expected_events && dead == 1).then_some(()))
    })
    .await?;
    let config = consumer.config.clone().context("consumer config")?;
    eventually("the ledger's spend rows to agree with the event ledger", Duration::from_secs(60), || async {
        Ok(reconcile(&config).await?.0.then_some(()))
    })
    .await?;

    let csv_path = dir.join("focus.csv");
    let said = export_focus(&config, from, to, &csv_path).await?;
    eprintln!("{}", said.trim());
    let parquet_path = dir.join("focus.parquet");
    export_focus(&config, from, to, &parquet_path).await?;
    ensure!(std::fs::read(&parquet_path)?.starts_with(b"PAR1"), "a Parquet file");
    for line in std::fs::read_to_string(&csv_path)?.lines().take(4) {
        eprintln!("{line}");
    }

    let (exported, total, rows) = export_spend(&csv_path)?;
    let ledger = ledger_spend(&session, &keyspace, from, to).await?;
    eprintln!(
        "BilledCost total {total} nano-USD in {rows} rows; served {served} + own {injected} = {}; {} (scope, day) pairs",
        served + injected,
        ledger.len()
    );
    ensure!(
        total == served + injected,
        "the export bills {total}, the gateway served {served} and the test published {injected}"
    );
    ensure!(
        exported == ledger,
        "per scope and day, the export differs from the ledger:\nexport {exported:?}\nledger {ledger:?}"
    );
    ensure!(
        ledger.keys().any(|(s, _)| s.starts_with("org/")) && ledger.keys().any(|(s, _)| s.starts_with("team/")),
        "scopes of every kind compared"
    );

    let report = focus_validator(&csv_path, &dir.join("focus-report.xml")).await?;
    ensure!(report.rules > 500, "the validator checked {} rules", report.rules);
    ensure!(report.errors == 0, "focus-validator: {} errors", report.errors);
    let failed = report.failed_rules();
    ensure!(failed.is_empty(), "focus-validator: rules failed: {failed:?}");
    let report = focus_validator(&parquet_path, &dir.join("focus-report-parquet.xml")).await?;
    let failed = report.failed_rules();
    ensure!(
        report.errors == 0 && failed.is_empty(),
        "focus-validator on Parquet: {failed:?}, {} errors",
        report.errors
    );
    drop((gateway, mock, consumer));
    Ok(())
}
