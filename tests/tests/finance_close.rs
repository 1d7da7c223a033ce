//! Sealed periods (docs/finance.md, "Closing a period") on real Kafka and Cassandra. A month of
//! events is folded; more of that month arrive while `close` runs and the consumer is killed
//! during it; still more arrive after the close. The close holds exactly the events at or below
//! its watermark and never changes: not when late events fold, not when a new consumer group
//! replays the topic from offset 0, not when the period is closed again (refused). Late events
//! are billed as corrections on the first day after the closed month, and the next close seals
//! them, chained to the first by its hash.

use anyhow::{ensure, Context, Result};
use chrono::{Datelike, Duration as Days, Utc};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tollgate_schemas::UsageEvent;
use tollgate_tests::*;

const PARTITIONS: i32 = 2;

/// A row of `period_closes`: `(seq, period, content_hash, previous_hash, body)`.
type CloseRow = (i64, String, String, String, String);

async fn closes(session: &scylla::client::session::Session, ks: &str) -> Result<Vec<CloseRow>> {
    let rows = session
        .query_unpaged(
            format!(
                "SELECT seq, period, content_hash, previous_hash, body FROM {ks}.period_closes WHERE chain = 'usage'"
            ),
            &[],
        )
        .await?
        .into_rows_result()?;
    Ok(rows.rows::<CloseRow>()?.collect::<Result<_, _>>()?)
}

/// A close's statement totals per scope, usage and corrections apart, from its stored body.
fn statement_totals(body: &str) -> Result<BTreeMap<String, (i128, i128)>> {
    let close: serde_json::Value = serde_json::from_str(body)?;
    let mut out = BTreeMap::new();
    for (scope, s) in close["statements"].as_object().context("statements")? {
        let sum = |book: &str| -> i128 {
            s[book]
                .as_object()
                .map_or(0, |lines| lines.values().filter_map(|l| l["nano_usd"].as_i64()).map(i128::from).sum())
        };
        out.insert(scope.clone(), (sum("usage"), sum("corrections")));
    }
    Ok(out)
}

/// Per scope, the export's (own usage, corrections) over all its rows.
fn export_totals(csv: &Path) -> Result<BTreeMap<String, (i128, i128)>> {
    let mut out: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    for row in read_export(csv)? {
        for scope in row.scopes.iter().filter(|s| ["org/", "team/", "customer/"].iter().any(|k| s.starts_with(k))) {
            let t = out.entry(scope.clone()).or_default();
            if row.correction {
                t.1 += row.nano_usd;
            } else {
                t.0 += row.nano_usd;
            }
        }
    }
    Ok(out)
}

/// Publishes the events and returns their costs' sum.
async fn publish_events(topic: &str, events: &[UsageEvent]) -> Result<i128> {
    let records: Vec<(String, Vec<u8>)> =
        events.iter().map(|e| Ok((e.budget_owner(), e.encode()?))).collect::<Result<_>>()?;
    publish(topic, &records).await?;
    Ok(events.iter().map(|e| i128::from(e.cost_nano_usd.0)).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_period_never_changes_and_late_events_become_corrections() -> Result<()> {
    let FinanceLedger { dir, topic, keyspace, config, consumer, config_path, session } =
        finance_ledger("close", PARTITIONS).await?;

    // Last month: its first events, folded.
    let today = Utc::now().date_naive();
    let first = today.with_day(1).context("day")? - Days::days(1);
    let month = first.with_day(1).context("day")?;
    let period = format!("{:04}-{:02}", month.year(), month.month());
    let day_of = |i: usize| month + Days::days((i % 28) as i64);
    let early: Vec<UsageEvent> = (0..60).map(|i| own_event(i, day_of(i), i != 7)).collect::<Result<_>>()?;
    let mut month_total = publish_events(&topic, &early).await?;
    eventually("the month's first events folded", Duration::from_secs(90), || async {
        Ok((event_ledger_totals(&session, &keyspace).await?.0 == 60).then_some(()))
    })
    .await?;

    // More of the month arrive; the close runs while they fold, and the consumer is killed.
    let during: Vec<UsageEvent> = (60..400).map(|i| own_event(i, day_of(i), true)).collect::<Result<_>>()?;
    month_total += publish_events(&topic, &during).await?;
    let close_run = tokio::spawn({
        let path = config_path.clone();
        let period = period.clone();
        async move { ledger_command(&path, &["close", "--period", &period]).await }
    });
    consumer.kill_hard().await?;
    let (ok, said) = close_run.await??;
    ensure!(ok, "close failed: {said}");
    eprintln!("{}", said.trim());
    let sealed = closes(&session, &keyspace).await?;
    ensure!(
        sealed.len() == 1 && sealed[0].0 == 1 && sealed[0].3.is_empty(),
        "one close, first of its chain: {sealed:?}"
    );
    let first_close = sealed[0].clone();

    // After the close: late events of the closed month; a new consumer folds everything.
    let late: Vec<UsageEvent> = (400..420).map(|i| own_event(i, day_of(i), true)).collect::<Result<_>>()?;
    month_total += publish_events(&topic, &late).await?;
    let consumer = start_consumer(&dir, &config).await?;
    eventually("every event folded", Duration::from_secs(120), || async {
        Ok((event_ledger_totals(&session, &keyspace).await?.0 == 420).then_some(()))
    })
    .await?;
    eventually("the ledger's layers to agree", Duration::from_secs(60), || async {
        Ok(reconcile(&config_path).await?.0.then_some(()))
    })
    .await?;

    // The closed month's export is its statement, exactly; the rest of the month is corrections
    // on the first day after it.
    let statement = statement_totals(&first_close.4)?;
    ensure!(statement.values().all(|t| t.1 == 0), "the first close has no corrections");
    let month_csv = dir.join("month.csv");
    export_focus(&config_path, month, first, &month_csv).await?;
    let exported = export_totals(&month_csv)?;
    ensure!(
        exported == statement,
        "the closed month's export differs from its statement:\n{exported:?}\n{statement:?}"
    );
    let next_day = first + Days::days(1);
    let next_csv = dir.join("next.csv");
    export_focus(&config_path, next_day, next_day, &next_csv).await?;
    let corrections: i128 = read_export(&next_csv)?.iter().filter(|r| r.correction).map(|r| r.nano_usd).sum();
    let sealed_total: i128 = statement.iter().filter(|(s, _)| s.starts_with("org/")).map(|(_, t)| t.0).sum();
    let org_total: i128 = [&early, &during, &late]
        .into_iter()
        .flatten()
        .filter(|e| e.organization_id.is_some())
        .map(|e| i128::from(e.cost_nano_usd.0))
        .sum();
    let late_org: i128 = read_export(&next_csv)?
        .iter()
        .filter(|r| r.correction && r.scopes.iter().any(|s| s.starts_with("org/")))
        .map(|r| r.nano_usd)
        .sum();
    eprintln!(
        "month {period}: published {month_total} nano-USD; sealed (organizations) {sealed_total}, late (organizations) {late_org}, all corrections {corrections}"
    );
    ensure!(sealed_total + late_org == org_total, "sealed {sealed_total} + late {late_org} != published {org_total}");
    ensure!(late_org > 0, "the events published after the close are late");

    // Replay from offset 0 in a new consumer group: nothing changes.
    consumer.stop().await?;
    let replay = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("replay-"), &keyspace, 50)).await?;
    eventually("the replay to reach the end of the topic", Duration::from_secs(120), || async {
        let group = replay_group(&replay)?;
        Ok(group_caught_up(&group, &topic, PARTITIONS)?.then_some(()))
    })
    .await?;
    replay.stop().await?;
    let (again, refused) = ledger_command(&config_path, &["close", "--period", &period]).await?;
    ensure!(!again && refused.contains("periods close in order"), "closing again is refused: {refused}");
    ensure!(closes(&session, &keyspace).await? == vec![first_close.clone()], "the close row never changes");
    let replayed_csv = dir.join("month-after-replay.csv");
    export_focus(&config_path, month, first, &replayed_csv).await?;
    ensure!(
        std::fs::read(&replayed_csv)? == std::fs::read(&month_csv)?,
        "the closed month's export is unchanged by the replay"
    );

    // The next close seals the corrections, chained to the first.
    let (ok, said) = ledger_command(&config_path, &["close", "--period", &next_day.to_string()]).await?;
    ensure!(ok, "second close failed: {said}");
    eprintln!("{}", said.trim());
    let chain = closes(&session, &keyspace).await?;
    ensure!(chain.len() == 2 && chain[1].3 == first_close.2, "the second close names the first's hash: {chain:?}");
    let second = statement_totals(&chain[1].4)?;
    let second_corrections: i128 = second.iter().filter(|(s, _)| s.starts_with("org/")).map(|(_, t)| t.1).sum();
    ensure!(
        second_corrections == late_org,
        "the second close seals the corrections: {second_corrections} != {late_org}"
    );
    Ok(())
}

/// The consumer group a running consumer's config names.
fn replay_group(p: &Process) -> Result<String> {
    let yaml = std::fs::read_to_string(p.config.as_ref().context("config")?)?;
    let v: serde_yaml::Value = serde_yaml::from_str(&yaml)?;
    Ok(v["kafka"]["group_id"].as_str().context("group_id")?.to_owned())
}
