//! Re-rating by hand: a model billed at zero, a price that changed mid-month, and a run applied
//! twice.

use super::*;
use crate::finance::close::parse_period;
use crate::finance::prices::tests::at;
use tollgate_schemas::limits::check_event;

const PRICES: &str = "
models:
  gpt-4o-mini:
    - effective_from: 2026-11-01T00:00:00Z
      nano_usd_per_million_tokens: {input: 150000000, output: 600000000, cached_input: 75000000}
    - effective_from: 2026-11-16T00:00:00Z
      nano_usd_per_million_tokens: {input: 300000000, output: 1200000000, cached_input: 150000000}
  llama-local:
    - effective_from: 2026-01-01T00:00:00Z
      nano_usd_per_million_tokens: {input: 100000000, output: 200000000}
";

/// An event of `model` at `when`, 1,000 prompt tokens (400 cached) and 100 completion tokens,
/// billed `parts`.
fn event(model: &str, when: &str, parts: &[(&str, u64, i64)]) -> UsageEvent {
    let mut e: UsageEvent =
        serde_json::from_str(include_str!("../../../../schemas/fixtures/usage_event_v1_minimal.json")).unwrap();
    e.event_id = Uuid::now_v7();
    e.occurred_at = at(when);
    e.team_id = Some("t".into());
    e.organization_id = Some("o".into());
    e.requested_model = model.into();
    e.prompt_tokens = 1_000;
    e.cached_tokens = 400;
    e.completion_tokens = 100;
    e.status = 200;
    e.cost_by_token_type = parts
        .iter()
        .map(|(t, n, c)| TokenTypeCost { token_type: (*t).into(), tokens: *n, cost_nano_usd: NanoUsd(*c) })
        .collect();
    e.cost_nano_usd = NanoUsd(parts.iter().map(|p| p.2).sum());
    e
}

fn recorded(events: &[UsageEvent]) -> Vec<RecordedEvent> {
    events.iter().enumerate().map(|(i, e)| RecordedEvent { event: e.clone(), partition: 0, offset: i as i64 }).collect()
}

fn run(events: &[RecordedEvent]) -> Plan {
    let book = PriceBook::parse(PRICES).unwrap();
    let refs: Vec<&RecordedEvent> = events.iter().collect();
    plan(&refs, parse_period("2026-11").unwrap(), &book, &"a".repeat(64), 0).unwrap()
}

#[test]
fn an_unpriced_model_and_a_mid_month_change_are_priced_again_exactly() {
    let old_price = [("cached_input", 400, 30_000), ("input", 600, 90_000), ("output", 100, 60_000)];
    let events = [
        // Before the change: already at the file's price; nothing to adjust.
        event("gpt-4o-mini", "2026-11-10T08:00:00Z", &old_price),
        // After the change, still billed at the old price: doubled.
        event("gpt-4o-mini", "2026-11-20T08:00:00Z", &old_price),
        // Served unpriced (cost 0, no breakdown).
        UsageEvent { unpriced: true, ..event("llama-local", "2026-11-21T08:00:00Z", &[]) },
        // A model the file does not price: left alone.
        event("other", "2026-11-22T08:00:00Z", &[("input", 1_000, 5)]),
        // Another month.
        event("gpt-4o-mini", "2026-12-01T00:00:00Z", &old_price),
    ];
    let plan = run(&recorded(&events));
    assert_eq!((plan.events, plan.not_priced), (4, 1));
    // Hand-computed: the second event goes from 180,000 to 360,000; the third from 0 to
    // 1,000 × 100 + 100 × 200 = 120,000 (llama-local has no cached price: cached at input).
    assert_eq!(plan.adjustments.len(), 2);
    let (doubled, unpriced) = (&plan.adjustments[0], &plan.adjustments[1]);
    assert_eq!(doubled.cost_nano_usd, NanoUsd(180_000));
    let parts: Vec<(&str, i64)> =
        doubled.cost_by_token_type.iter().map(|p| (p.token_type.as_str(), p.cost_nano_usd.0)).collect();
    assert_eq!(parts, vec![("cached_input", 30_000), ("input", 90_000), ("output", 60_000)]);
    assert_eq!(unpriced.cost_nano_usd, NanoUsd(120_000));
    assert_eq!(unpriced.adjustment.as_ref().unwrap().adjusts_event_id, events[2].event_id);
    for a in &plan.adjustments {
        check_event(a).unwrap();
        assert_eq!((a.prompt_tokens, a.completion_tokens), (0, 0));
    }
    let team = plan.scopes["team/t"];
    assert_eq!((team.old_nano_usd, team.new_nano_usd), (180_000 + 180_000 + 5, 180_000 + 360_000 + 120_000 + 5));
    assert_eq!(team.delta(), 300_000);
    assert_eq!(plan.scopes["org/o/model/llama-local"].delta(), 120_000);
    assert_eq!(plan.scopes["org/o/model/other"].delta(), 0);
}

#[test]
fn a_run_applied_twice_adjusts_nothing_the_second_time() {
    let events = vec![
        event("gpt-4o-mini", "2026-11-20T08:00:00Z", &[("input", 1_000, 7)]),
        UsageEvent { unpriced: true, ..event("llama-local", "2026-11-21T08:00:00Z", &[]) },
    ];
    let first = run(&recorded(&events));
    assert_eq!(first.adjustments.len(), 2);
    // Not yet folded: the same adjustments, the same ids.
    let again = run(&recorded(&events));
    let ids = |p: &Plan| p.adjustments.iter().map(|a| a.event_id).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first));
    // Folded: nothing left to adjust, and the shadow's old spend is the new one.
    let mut folded = events.clone();
    folded.extend(first.adjustments.iter().cloned());
    let second = run(&recorded(&folded));
    assert!(second.adjustments.is_empty(), "{:?}", second.adjustments);
    assert!(second.scopes.values().all(|d| d.delta() == 0));
    assert_eq!(second.scopes["team/t"].old_nano_usd, first.scopes["team/t"].new_nano_usd);
}

#[test]
fn a_negative_difference_is_an_adjustment_too() {
    // Billed 10× the file's price: the adjustment takes the excess back, type by type.
    let events =
        [event("llama-local", "2026-11-03T00:00:00Z", &[("input", 1_000, 1_000_000), ("output", 100, 200_000)])];
    let plan = run(&recorded(&events));
    let a = &plan.adjustments[0];
    assert_eq!(a.cost_nano_usd, NanoUsd(120_000 - 1_200_000));
    check_event(a).unwrap();
    assert_eq!(plan.scopes["team/t"].delta(), -1_080_000);
}
