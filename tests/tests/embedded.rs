//! The embedded default: one gateway process with no Kafka and no Cassandra. The ledger equals
//! what was served to the nano-dollar, across a SIGKILL and a restart; keys and budgets survive
//! the restart; the same fold code reconciles the two ledger layers.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tollgate_ledger::embedded::{scan, EmbeddedDb};
use tollgate_ledger::reconcile::{compare, event_ledger_totals, Range, Totals};
use tollgate_tests::*;

fn embedded_config(mock: &str, db: &std::path::Path) -> GatewayConfig {
    GatewayConfig::embedded("gw-embedded", &[model_entry("gpt-4o-mini", &format!("{mock}/v1"))], db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_ledger_is_exact_across_a_kill_and_keeps_keys_and_budgets() -> Result<()> {
    let dir = scratch_dir("embedded")?;
    let db_path = dir.join("data").join("tollgate.db");
    let mock = start_mock(&dir, &[]).await?;
    let config = embedded_config(mock.url()?, &db_path);
    let gateway = start_gateway(&dir, &config).await?;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);
    let client = reqwest::Client::new();

    // Keys and budgets through the admin API, stored in the embedded file.
    admin.ok("/team/new", json!({"team_id": "team-emb", "max_budget": 10})).await?;
    let budgeted = admin.ok("/key/generate", json!({"team_id": "team-emb", "max_budget": 0.0001})).await?["key"]
        .as_str()
        .context("key")?
        .to_owned();
    let mut served = 0;
    for _ in 0..100 {
        let resp = chat_as(&client, &gw, &budgeted, "gpt-4o-mini", None).await?;
        if resp.status() != 200 {
            let (status, code, _) = error_code(resp).await;
            ensure!(status == 400 && code == "key_budget_exceeded", "{status} {code}");
            break;
        }
        served += 1;
    }
    // 100,000 nano-USD at 3,450 a request: the 29th request crosses it.
    ensure!(served == 29, "served {served} requests on a budget of 29");

    // Load through the config file's keys, then SIGKILL with events possibly not yet folded.
    let truth = drive_load(std::slice::from_ref(&gw), 8, 400, Arc::new(AtomicBool::new(false))).await?;
    // An answered request's event is durable once its group commit (at most 5 ms) is done:
    // wait for that, not for the fold, then kill.
    let committed = truth.requests + 29;
    eventually("every event committed to the log", Duration::from_secs(30), || async {
        let m = client.get(format!("{gw}/metrics")).send().await?.text().await?;
        let delivered = m
            .lines()
            .find(|l| l.starts_with("tollgate_usage_events_total{result=\"delivered\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        Ok((delivered == committed).then_some(()))
    })
    .await?;
    gateway.kill_hard().await?;

    // Restarted on the same file: everything served is in the ledger exactly once, the key and
    // its exhausted budget are still there.
    let gateway = start_gateway(&dir, &config).await?;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);
    let (status, code, _) = error_code(chat_as(&client, &gw, &budgeted, "gpt-4o-mini", None).await?).await;
    ensure!(status == 400 && code == "key_budget_exceeded", "after restart: {status} {code}");
    let key_info = |raw: String| {
        let admin = &admin;
        async move { admin.get(&format!("/key/info?key={raw}")).await }
    };
    for (raw, _) in TENANT_KEYS {
        let (spent, requests) = truth.scopes.get(&format!("key/{}", key_hash(raw))).copied().unwrap_or_default();
        let got = eventually("the ledger to hold every request", Duration::from_secs(30), || {
            let f = key_info((*raw).to_owned());
            async move {
                let (_, v) = f.await?;
                let got = (v["info"]["spend_nano_usd"].as_i64(), v["info"]["requests"].as_i64());
                Ok((got == (Some(spent), Some(requests))).then_some(got))
            }
        })
        .await;
        if got.is_err() {
            let (_, v) = key_info((*raw).to_owned()).await?;
            anyhow::bail!(
                "key {raw}: ledger {} / {} requests, served {spent} / {requests}",
                v["info"]["spend_nano_usd"],
                v["info"]["requests"]
            );
        }
    }
    let (_, report) = admin.get("/global/spend/report?group_by=customer").await?;
    for (scope, (spent, _)) in truth.scopes.iter().filter(|(s, _)| s.starts_with("customer/") && !s.contains("/model/"))
    {
        let id = scope.trim_start_matches("customer/");
        let row = report.as_array().context("report")?.iter().find(|r| r["end_user"] == id).context("customer row")?;
        ensure!(row["spend_nano_usd"] == *spent, "{scope}: {row}");
    }
    gateway.stop().await?;

    // The two ledger layers agree at every scope and window (the reconcile comparison).
    let db = EmbeddedDb::open(&db_path)?;
    let (events, aggregates) = scan(&db)?;
    let layer1 = event_ledger_totals(&events, &Range::default());
    let layer2 = aggregates
        .into_iter()
        .map(|(scope, window, spent, events)| ((scope, window), Totals { spent, events }))
        .collect();
    let diffs = compare(&layer1, &layer2);
    ensure!(diffs.is_empty(), "{} differences, first {:?}", diffs.len(), diffs.first());
    ensure!(events.len() == truth.requests + 29, "event ledger has {} events", events.len());
    drop(mock);
    Ok(())
}
