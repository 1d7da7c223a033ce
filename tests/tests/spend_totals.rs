//! Many scopes' totals read at once (`SpendSource::totals`, several scopes a query) on the real
//! Cassandra equal each scope's own `total` and the sums of the rows written, to the nano-dollar:
//! scopes spread over ledger partitions 0 to 63, in two windows, more scopes than one query
//! takes, a scope asked twice, a scope with no rows, and a scope whose id begins another's.

use anyhow::{ensure, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_ledger::ledger::CqlLedger;
use tollgate_schemas::store::{CqlSpend, SpendSource, SpendTotal, SCOPES_PER_QUERY};
use tollgate_schemas::NanoUsd;
use tollgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_totals_at_once_equal_each_scopes_own_total_and_the_rows_written() -> Result<()> {
    let keyspace = unique("tg_totals_");
    // Creates the keyspace and its tables.
    CqlLedger::connect(&cassandra_connection(), &keyspace, "usage", true).await?;
    let session = Arc::new(cql().await?);
    let insert = session
        .prepare(format!(
            "INSERT INTO {keyspace}.spend_aggregates (scope_id, window_id, partition, spent_nano_usd, events, \
             prompt_tokens, completion_tokens, applied_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .await?;
    let windows = ["all", "m:2026-12"];
    let scopes: Vec<String> = (0..37).map(|i| format!("key/k{i}")).collect();
    // (scope, window) -> the sum of the rows written.
    let mut want: BTreeMap<(String, String), SpendTotal> = BTreeMap::new();
    for (i, scope) in scopes.iter().enumerate() {
        let i = i as i64;
        // Every fifth scope has no rows in the month; the others one to three partitions each.
        for (w, window) in windows.iter().enumerate() {
            if w == 1 && i % 5 == 0 {
                continue;
            }
            for partition in [(i * 7) % 64, (i * 13 + 63) % 64, 63].iter().take(1 + (i as usize % 3)) {
                let spent = i * 1_000_000_007 + *partition * 3 + w as i64 + 1;
                let (events, prompt, completion) = (i + 1, i * 17 + 1, i * 3 + 2);
                let values = (scope, *window, *partition as i32, spent, events, prompt, completion, 1i64);
                session.execute_unpaged(&insert, values).await?;
                let t = want.entry((scope.clone(), (*window).to_owned())).or_default();
                t.spent = NanoUsd(t.spent.0 + spent);
                t.events += events;
                t.prompt_tokens += prompt;
                t.completion_tokens += completion;
            }
        }
    }
    // A scope whose id begins another's: its rows are not the other's.
    session.execute_unpaged(&insert, ("key/k1x", "all", 1, 999i64, 1i64, 1i64, 1i64, 1i64)).await?;

    let spend = CqlSpend::new(session.clone(), &keyspace).await?;
    let mut asked = scopes.clone();
    asked.push("key/k3".into());
    asked.push("key/none".into());
    ensure!(asked.len() > 3 * SCOPES_PER_QUERY, "more scopes than three queries take");
    for window in windows {
        let many = spend.totals(&asked, window).await?;
        ensure!(many.len() == asked.len(), "{window}: {} totals for {} scopes", many.len(), asked.len());
        for (scope, got) in asked.iter().zip(&many) {
            let expected = want.get(&(scope.clone(), window.to_owned())).copied().unwrap_or_default();
            ensure!(*got == expected, "{scope} in {window}: {got:?}, the rows sum to {expected:?}");
            let one = spend.total(scope, window).await?;
            ensure!(*got == one, "{scope} in {window}: {got:?} at once, {one:?} alone");
        }
    }
    ensure!(spend.totals(&[], "all").await?.is_empty(), "no scopes, no totals");
    Ok(())
}
