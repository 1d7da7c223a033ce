//! Re-rating (docs/finance.md, "Re-rating") on real Kafka and Cassandra. Last month's events
//! are folded and the month is closed: a model served unpriced (billed at zero), a model whose
//! price changed on the 16th but was billed at the old price all month, and a model the price
//! file does not name. `rerate` must report per scope exactly the hand-computed difference;
//! `--apply` (run twice while no consumer folds, so both publish) must bring every scope's
//! spend to the new prices, counting each adjustment once; a third run finds nothing to adjust;
//! the close never changes and the adjustments are billed as corrections on the first day
//! after the closed month. The gateway's statement routes then answer the closed month as
//! sealed and the open month with the adjustments among its corrections, to admins only.

use anyhow::{ensure, Context, Result};
use chrono::{Datelike, Duration as Days, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::time::Duration;
use tollgate_schemas::event::TokenTypeCost;
use tollgate_schemas::{NanoUsd, UsageEvent};
use tollgate_tests::*;

const PARTITIONS: i32 = 2;
const EVENTS: usize = 42;
/// The day of the month the new price of `gpt-4o-mini` takes effect.
const CHANGE_DAY: u32 = 16;

/// Nano-USD per token (input, cached input, output): whole numbers, so every cost is exact and
/// the hand computation below needs no rounding.
const BILLED: (i64, i64, i64) = (150, 75, 600);
const RAISED: (i64, i64, i64) = (300, 150, 1_200);
const LLAMA: (i64, i64, i64) = (100, 100, 200);
/// `claude-sonnet-4-5` was billed at [`OVERCHARGED`]; the file's price is lower.
const OVERCHARGED: (i64, i64, i64) = (500, 250, 2_000);
const CLAUDE: (i64, i64, i64) = (300, 30, 1_500);

/// The new price file: `gpt-4o-mini` at the billed price, then raised from the 16th;
/// `llama-local` priced at last (it was served unpriced); `claude-sonnet-4-5` lower than it was
/// billed. Prices per million tokens.
fn price_file(month: NaiveDate) -> String {
    let per_million = |(i, c, o): (i64, i64, i64)| {
        format!("{{input: {}, cached_input: {}, output: {}}}", i * 1_000_000, c * 1_000_000, o * 1_000_000)
    };
    let change = month.with_day(CHANGE_DAY).unwrap_or(month);
    format!(
        "models:\n  gpt-4o-mini:\n    - effective_from: {month}T00:00:00Z\n      nano_usd_per_million_tokens: {}\n    \
         - effective_from: {change}T00:00:00Z\n      nano_usd_per_million_tokens: {}\n  llama-local:\n    \
         - effective_from: 2020-01-01T00:00:00Z\n      nano_usd_per_million_tokens: {}\n  claude-sonnet-4-5:\n    \
         - effective_from: 2020-01-01T00:00:00Z\n      nano_usd_per_million_tokens: {}\n",
        per_million(BILLED),
        per_million(RAISED),
        per_million(LLAMA),
        per_million(CLAUDE)
    )
}

/// By hand: `(prompt − cached) × input + cached × cached price + completion × output`.
fn priced(e: &UsageEvent, (i, c, o): (i64, i64, i64)) -> i64 {
    let (p, k, q) = (e.prompt_tokens as i64, e.cached_tokens as i64, e.completion_tokens as i64);
    (p - k) * i + k * c + q * o
}

/// Event `i` of the month: `gpt-4o-mini` billed at [`BILLED`] (with its breakdown),
/// `llama-local` unpriced (cost 0, no breakdown), `other` (not in the price file), or
/// `claude-sonnet-4-5` billed at [`OVERCHARGED`].
fn event(i: usize, month: NaiveDate) -> Result<UsageEvent> {
    let day = month + Days::days((i % 28) as i64);
    let mut e = own_event(i, day, true)?;
    e.requested_model = ["gpt-4o-mini", "llama-local", "other", "claude-sonnet-4-5"][i % 4].into();
    e.reasoning_tokens = 0;
    e.cached_tokens = if i % 4 == 1 { 0 } else { 100 + i as u64 };
    let (p, k, q) = (e.prompt_tokens, e.cached_tokens, e.completion_tokens);
    let part = |t: &str, n: u64, c: i64| TokenTypeCost { token_type: t.into(), tokens: n, cost_nano_usd: NanoUsd(c) };
    let billed_at = |(i, c, o): (i64, i64, i64)| {
        vec![
            part("cached_input", k, k as i64 * c),
            part("input", p - k, (p - k) as i64 * i),
            part("output", q, q as i64 * o),
        ]
    };
    e.cost_by_token_type = match i % 4 {
        0 => billed_at(BILLED),
        1 => Vec::new(),
        2 => vec![part("input", p, 12_345 + i as i64)],
        _ => billed_at(OVERCHARGED),
    };
    e.unpriced = i % 4 == 1;
    e.cost_nano_usd = NanoUsd(e.cost_by_token_type.iter().map(|p| p.cost_nano_usd.0).sum());
    Ok(e)
}

/// What `e` costs under the new price file, by hand.
fn new_cost(e: &UsageEvent) -> i64 {
    match e.requested_model.as_str() {
        "gpt-4o-mini" if e.occurred_at.day() >= CHANGE_DAY => priced(e, RAISED),
        "gpt-4o-mini" => priced(e, BILLED),
        "llama-local" => priced(e, LLAMA),
        "claude-sonnet-4-5" => priced(e, CLAUDE),
        _ => e.cost_nano_usd.0,
    }
}

/// The `scopes` of a `rerate --json` report: scope → delta.
fn deltas(report: &serde_json::Value) -> Result<BTreeMap<String, i128>> {
    let mut out = BTreeMap::new();
    for s in report["scopes"].as_array().context("scopes")? {
        let n = |f: &str| s[f].as_i64().map(i128::from).with_context(|| format!("{f} in {s}"));
        ensure!(n("new_nano_usd")? - n("old_nano_usd")? == n("delta_nano_usd")?, "delta of {s}");
        out.insert(s["scope"].as_str().context("scope")?.to_owned(), n("delta_nano_usd")?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rerating_adjusts_each_scope_exactly_once_and_never_rewrites_a_close() -> Result<()> {
    let FinanceLedger { dir, topic, keyspace, config, consumer, config_path, session } =
        finance_ledger("rerate", PARTITIONS).await?;

    // Last month, folded and closed.
    let first_of_this_month = Utc::now().date_naive().with_day(1).context("day")?;
    let month = (first_of_this_month - Days::days(1)).with_day(1).context("day")?;
    let period = format!("{:04}-{:02}", month.year(), month.month());
    let events: Vec<UsageEvent> = (0..EVENTS).map(|i| event(i, month)).collect::<Result<_>>()?;
    let records: Vec<(String, Vec<u8>)> =
        events.iter().map(|e| Ok((e.budget_owner(), e.encode()?))).collect::<Result<_>>()?;
    publish(&topic, &records).await?;
    eventually("the month folded", Duration::from_secs(90), || async {
        Ok((event_ledger_totals(&session, &keyspace).await?.0 == EVENTS as i64).then_some(()))
    })
    .await?;
    let (ok, said) = ledger_command(&config_path, &["close", "--period", &period]).await?;
    ensure!(ok, "close failed: {said}");
    let close_row = || async {
        let q = format!("SELECT seq, content_hash, body FROM {keyspace}.period_closes WHERE chain = 'usage'");
        let rows = session.query_unpaged(q, &[]).await?.into_rows_result()?;
        Ok::<_, anyhow::Error>(rows.rows::<(i64, String, String)>()?.collect::<Result<Vec<_>, _>>()?)
    };
    let sealed = close_row().await?;

    // By hand: each scope's difference, and each scope's spend under the new prices.
    let mut expected: BTreeMap<String, i128> = BTreeMap::new();
    let mut new_spend: BTreeMap<String, i128> = BTreeMap::new();
    for e in &events {
        for s in tollgate_schemas::ledger::tenant_scopes_of(e) {
            *expected.entry(s.clone()).or_default() += i128::from(new_cost(e) - e.cost_nano_usd.0);
            *new_spend.entry(s).or_default() += i128::from(new_cost(e));
        }
    }
    expected.retain(|_, d| *d != 0);
    let changed = events.iter().filter(|e| new_cost(e) != e.cost_nano_usd.0).count();
    ensure!(changed > 0 && changed < EVENTS, "some events change, some do not: {changed}");

    // The dry run: the diff, exactly; nothing published.
    let prices = dir.join("prices.yaml");
    std::fs::write(&prices, price_file(month))?;
    let prices = prices.to_string_lossy().into_owned();
    let dry = ledger_json(&config_path, &["rerate", "--period", &period, "--prices", &prices, "--json"]).await?;
    let (_, table) = ledger_command(&config_path, &["rerate", "--period", &period, "--prices", &prices]).await?;
    eprintln!("{table}");
    let all = deltas(&dry)?;
    // The platform's own scope counts every event: its difference is the whole period's.
    let whole: i128 = events.iter().map(|e| i128::from(new_cost(e) - e.cost_nano_usd.0)).sum();
    ensure!(all.get("global/all").copied().unwrap_or(0) == whole, "global/all: {:?} != {whole}", all.get("global/all"));
    // The tenants' scopes (what statements and the FOCUS export bill), without per-model rows.
    let reported: BTreeMap<String, i128> = all
        .into_iter()
        .filter(|(s, _)| !s.contains("/model/") && !s.starts_with("global/") && !s.starts_with("tag/"))
        .collect();
    ensure!(reported == expected, "the diff differs from the hand computation:\n{reported:?}\n{expected:?}");
    ensure!(dry["adjustments"] == changed && dry["applied"] == false, "dry run: {dry}");

    // Applied twice while nothing folds: both runs publish the same adjustments.
    consumer.stop().await?;
    let apply = ["rerate", "--period", &period, "--prices", &prices, "--json", "--apply"];
    let first = ledger_json(&config_path, &apply).await?;
    let second = ledger_json(&config_path, &apply).await?;
    ensure!(first["adjustments"] == changed && first["applied"] == true, "first apply: {first}");
    ensure!(second == first, "the second run, before the first is folded, is the same run: {second}");
    ensure!(records_on(&topic, PARTITIONS)? == (EVENTS + 2 * changed) as i64, "both runs published");
    let consumer = start_consumer(&dir, &config).await?;
    let folded = (EVENTS + changed) as i64;
    eventually("each adjustment folded once", Duration::from_secs(90), || async {
        Ok((event_ledger_totals(&session, &keyspace).await?.0 == folded).then_some(()))
    })
    .await?;
    eventually("the ledger's layers to agree", Duration::from_secs(60), || async {
        Ok(reconcile(&config_path).await?.0.then_some(()))
    })
    .await?;

    // Every scope's spend of the month is the new pricing, to the nano-USD.
    let window = format!("m:{period}");
    for (scope, want) in &new_spend {
        let (got, _) = scope_window_total(&session, &keyspace, scope, &window).await?;
        ensure!(i128::from(got) == *want, "{scope} {window}: ledger {got}, new pricing {want}");
    }

    // A third run finds nothing to adjust, and publishes nothing.
    let third = ledger_json(&config_path, &apply).await?;
    ensure!(third["adjustments"] == 0 && deltas(&third)?.is_empty(), "the third run: {third}");
    ensure!(records_on(&topic, PARTITIONS)? == (EVENTS + 2 * changed) as i64, "nothing more published");

    // The close never changes; the adjustments are corrections on the first open day.
    ensure!(close_row().await? == sealed, "the close row changed");
    let csv = dir.join("next-day.csv");
    export_focus(&config_path, first_of_this_month, first_of_this_month, &csv).await?;
    let mut corrections: BTreeMap<String, i128> = BTreeMap::new();
    let rows = read_export(&csv)?;
    ensure!(rows.iter().any(|r| r.correction && r.nano_usd < 0), "the price that fell is credited");
    for row in rows.iter().filter(|r| r.correction) {
        for s in &row.scopes {
            *corrections.entry(s.clone()).or_default() += row.nano_usd;
        }
    }
    corrections.retain(|_, d| *d != 0);
    ensure!(corrections == expected, "corrections on {first_of_this_month}:\n{corrections:?}\n{expected:?}");
    let report = focus_validator(&csv, &dir.join("focus-report.xml")).await?;
    let failed = report.failed_rules();
    ensure!(
        report.errors == 0 && failed.is_empty(),
        "focus-validator on the corrections: {failed:?}, {} errors",
        report.errors
    );
    consumer.stop().await?;

    // Statements over the admin API: the closed month as sealed, the open month with the
    // adjustments among its corrections.
    let mock = start_mock(&dir, &[]).await?;
    let topics = Topics::create("statements", 1).await?;
    let gateway =
        start_gateway(&dir, &GatewayConfig::tenancy("gw-statements", mock.url()?, &topics, &keyspace)).await?;
    let admin = AdminApi::new(gateway.url()?);
    let body: serde_json::Value = serde_json::from_str(&sealed[0].2)?;
    let this_month = format!("{:04}-{:02}", first_of_this_month.year(), first_of_this_month.month());
    for (route, param, scope) in [
        ("/team/statement", "team_id", "team/fin-a"),
        ("/customer/statement", "customer_id", "customer/cust-2"),
        ("/organization/statement", "organization_id", "org/org-x"),
    ] {
        let id = scope.split_once('/').map(|(_, id)| id).context("scope")?;
        let (status, closed) = admin.get(&format!("{route}?{param}={id}&period={period}")).await?;
        ensure!(status == 200 && closed["status"] == "closed", "{route} {period}: {status} {closed}");
        ensure!(closed["statement"] == body["statements"][scope], "{scope}: the sealed statement, as stored: {closed}");
        ensure!(closed["content_hash"] == sealed[0].1.as_str() && closed["close_seq"] == 1, "{closed}");
        let (status, open) = admin.get(&format!("{route}?{param}={id}&period={this_month}")).await?;
        ensure!(status == 200 && open["status"] == "open" && open["content_hash"].is_null(), "{open}");
        let corrected: i64 = open["statement"]["corrections"]
            .as_object()
            .context("corrections")?
            .values()
            .filter_map(|l| l["nano_usd"].as_i64())
            .sum();
        ensure!(
            i128::from(corrected) == expected[scope],
            "{scope} {this_month}: corrections {corrected} != {}",
            expected[scope]
        );
        let (status, refused) = admin.get(&format!("{route}?{param}={id}&period=2026-13")).await?;
        ensure!(status == 400 && refused["error"]["param"] == "period", "a bad period: {status} {refused}");
        let long = "9".repeat(64);
        let (status, refused) = admin.get(&format!("{route}?{param}={id}&period={long}")).await?;
        ensure!(status == 400 && refused["error"]["param"] == "period", "a long period: {status} {refused}");
        let day = format!("{month}");
        let (status, refused) = admin.get(&format!("{route}?{param}={id}&period={day}")).await?;
        ensure!(status == 400 && refused["error"]["param"] == "period", "a day of a closed month: {status} {refused}");
        let (status, refused) = admin.get(&format!("{route}?{param}={}&period={period}", "x".repeat(4_096))).await?;
        ensure!(status == 400 && refused["error"]["param"] == param, "an id beyond its bound: {status} {refused}");
    }
    let statement = format!("{}/team/statement?team_id=fin-a&period={period}", gateway.url()?);
    let http = reqwest::Client::new();
    ensure!(http.get(&statement).send().await?.status() == 401, "no key");
    let plain = http.get(&statement).bearer_auth(TENANT_KEYS[3].0).send().await?;
    ensure!(plain.status() == 403, "a key without admin rights: {}", plain.status());
    gateway.stop().await?;
    Ok(())
}
