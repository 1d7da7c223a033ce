//! Which close seals an event, where a late one is billed, and the hash chain.

use super::*;
use tollgate_schemas::event::TokenTypeCost;
use tollgate_schemas::NanoUsd;

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn event(on: &str, cost: i64) -> UsageEvent {
    let mut e: UsageEvent =
        serde_json::from_str(include_str!("../../../../schemas/fixtures/usage_event_v1_minimal.json")).unwrap();
    e.event_id = uuid::Uuid::now_v7();
    e.occurred_at = day(on).and_hms_opt(12, 0, 0).unwrap().and_utc();
    e.team_id = Some("t".into());
    e.requested_model = "gpt-4o-mini".into();
    e.organization_id = Some("o".into());
    e.prompt_tokens = 10;
    e.cost_nano_usd = NanoUsd(cost);
    e.cost_by_token_type = vec![TokenTypeCost { token_type: "input".into(), tokens: 10, cost_nano_usd: NanoUsd(cost) }];
    e
}

fn close(seq: i64, period: &str, watermark: &[(i32, i64)]) -> Close {
    let p = parse_period(period).unwrap();
    Close {
        seq,
        period: period.into(),
        from: p.from,
        to: p.to,
        watermark: watermark.iter().copied().collect(),
        statements: Statements::new(),
        previous_hash: String::new(),
        content_hash: String::new(),
    }
}

#[test]
fn periods_are_months_or_days() {
    assert_eq!(parse_period("2026-11").map(|p| (p.from, p.to)), Some((day("2026-11-01"), day("2026-11-30"))));
    assert_eq!(parse_period("2026-02-28").map(|p| (p.from, p.to)), Some((day("2026-02-28"), day("2026-02-28"))));
    assert!(parse_period("2026-13").is_none() && parse_period("november").is_none() && parse_period("").is_none());
}

#[test]
fn a_close_seals_exactly_what_its_watermark_covers() {
    let november = close(1, "2026-11", &[(0, 100), (1, 5)]);
    let only_november = std::slice::from_ref(&november);
    let e = event("2026-11-20", 7);
    assert_eq!(billing(&e, 0, 100, only_november), Billing::Own { sealed_in: Some(1) });
    assert_eq!(billing(&e, 1, 5, only_november), Billing::Own { sealed_in: Some(1) });
    // Above the watermark, or on a partition it has no fence for: late, billed after November.
    let late = Billing::Correction { day: day("2026-12-01"), sealed_in: None };
    assert_eq!(billing(&e, 0, 101, only_november), late);
    assert_eq!(billing(&e, 2, 0, only_november), late);
    // An event of an open period is billed on its own day.
    assert_eq!(billing(&event("2026-12-02", 1), 0, 500, only_november), Billing::Own { sealed_in: None });
    // December's close covers the late event: a correction sealed there, on its first day.
    let december = close(2, "2026-12", &[(0, 200)]);
    let chain = [november, december];
    assert_eq!(billing(&e, 0, 150, &chain), Billing::Correction { day: day("2026-12-01"), sealed_in: Some(2) });
    // Still later: billed on the first day after the latest close, sealed nowhere yet.
    assert_eq!(billing(&e, 0, 250, &chain), Billing::Correction { day: day("2027-01-01"), sealed_in: None });
}

#[test]
fn statements_add_up_by_scope_model_and_token_type() {
    let (a, b, c) = (event("2026-11-01", 5), event("2026-11-02", 7), event("2026-11-03", 11));
    let s = statements([(&a, false), (&b, false), (&c, true)]);
    assert_eq!(s.keys().collect::<Vec<_>>(), vec!["org/o", "team/t"]);
    let team = &s["team/t"];
    assert_eq!(team.total_nano_usd, 23);
    assert_eq!(team.usage["gpt-4o-mini input"], Line { nano_usd: 12, tokens: 20, events: 2 });
    assert_eq!(team.corrections["gpt-4o-mini input"], Line { nano_usd: 11, tokens: 10, events: 1 });
}

#[test]
fn the_hash_covers_every_field_and_the_previous_hash() {
    let mut c = close(1, "2026-11", &[(0, 100)]);
    c.statements = statements([(&event("2026-11-01", 5), false)]);
    let hash = content_hash(&c);
    assert_eq!(hash.len(), 64);
    assert_eq!(content_hash(&c), hash, "deterministic");
    let mut with_hash = c.clone();
    with_hash.content_hash = hash.clone();
    assert_eq!(content_hash(&with_hash), hash, "the hash field itself is left out");
    for change in [
        (|c: &mut Close| c.previous_hash = "x".into()) as fn(&mut Close),
        |c| {
            c.watermark.insert(0, 101);
        },
        |c| c.statements.get_mut("team/t").unwrap().total_nano_usd += 1,
        |c| c.period = "2026-11-01".into(),
    ] {
        let mut changed = c.clone();
        change(&mut changed);
        assert_ne!(content_hash(&changed), hash);
    }
}
