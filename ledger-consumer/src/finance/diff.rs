//! The output of `rerate`: per scope, the spend so far, the spend under the new prices and the
//! difference, in integer nano-USD, as a table or as JSON (`--json`). Pure code.

use super::rerate::Plan;
use serde::Serialize;
use std::fmt::Write;

#[derive(Serialize)]
struct Report<'a> {
    period: &'a str,
    run: &'a str,
    events: usize,
    not_priced: usize,
    adjustments: usize,
    applied: bool,
    scopes: Vec<ScopeLine<'a>>,
}

#[derive(Serialize)]
struct ScopeLine<'a> {
    scope: &'a str,
    old_nano_usd: i128,
    new_nano_usd: i128,
    delta_nano_usd: i128,
}

/// The report of `plan`: the scopes whose spend changes, then a summary. `applied`: whether
/// the adjustments were published.
pub fn render(plan: &Plan, period: &str, applied: bool, json: bool) -> String {
    let scopes: Vec<ScopeLine<'_>> = plan
        .scopes
        .iter()
        .filter(|(_, d)| d.delta() != 0)
        .map(|(scope, d)| ScopeLine {
            scope,
            old_nano_usd: d.old_nano_usd,
            new_nano_usd: d.new_nano_usd,
            delta_nano_usd: d.delta(),
        })
        .collect();
    let report = Report {
        period,
        run: &plan.run,
        events: plan.events,
        not_priced: plan.not_priced,
        adjustments: plan.adjustments.len(),
        applied,
        scopes,
    };
    if json {
        return serde_json::to_string_pretty(&report).map(|s| s + "\n").unwrap_or_default();
    }
    let mut out = String::new();
    let width = report.scopes.iter().map(|l| l.scope.len()).max().unwrap_or(5).max(5);
    let _ =
        writeln!(out, "{:<width$}  {:>20}  {:>20}  {:>20}", "scope", "old_nano_usd", "new_nano_usd", "delta_nano_usd");
    for l in &report.scopes {
        let _ = writeln!(
            out,
            "{:<width$}  {:>20}  {:>20}  {:>20}",
            l.scope, l.old_nano_usd, l.new_nano_usd, l.delta_nano_usd
        );
    }
    let _ = writeln!(
        out,
        "rerate: {period}, run {}: {} events, {} not priced by the file (left as they are), {} scopes change, {} adjustments {}",
        report.run,
        report.events,
        report.not_priced,
        report.scopes.len(),
        report.adjustments,
        if applied { "published" } else { "to publish (--apply)" }
    );
    out
}
