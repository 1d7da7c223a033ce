//! Criterion micro-benchmarks of the ledger fold (pure code, no Cassandra): the rows one usage
//! event counts in, one fold step of a row, and a batch folded bucket by bucket.
//!
//! `cargo bench -p tollgate-ledger --bench fold`.

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tollgate_ledger::fold::{
    fold_row, fold_step, pending_chunks, rows_by_bucket, rows_by_key, rows_of, BucketState, Message, RowState,
};
use tollgate_schemas::{NanoUsd, UsageEvent, USAGE_EVENT_VERSION};

fn event(team: usize) -> UsageEvent {
    UsageEvent {
        version: USAGE_EVENT_VERSION,
        event_id: uuid::Uuid::now_v7(),
        occurred_at: Utc::now(),
        gateway_id: "bench-gw".into(),
        request_id: "req_019ab0c45e3a7cc29d1e4f6a2b3c4d5e".into(),
        key_id: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        key_alias: Some("bench".into()),
        team_id: Some(format!("team-{team}")),
        user_id: Some("user-42".into()),
        organization_id: Some("org".into()),
        requested_model: "gpt-4o-mini".into(),
        served_model: Some("gpt-4o-mini-2024-07-18".into()),
        provider: Some("openai".into()),
        prompt_tokens: 12,
        completion_tokens: 16,
        cost_nano_usd: NanoUsd(11_400),
        latency_ms: 3,
        status: 200,
        ..UsageEvent::default()
    }
}

fn fold(c: &mut Criterion) {
    let message = Message { offset: 41, event: event(1) };
    let current = RowState { applied_offset: 40, ..RowState::NEW };
    c.bench_function("fold/fold_row (one event into one row)", |b| {
        b.iter(|| fold_row(black_box(current), black_box(&[&message])))
    });
    c.bench_function("fold/rows_of (rows one event counts in)", |b| b.iter(|| rows_of(black_box(&message.event))));
    // A consumer batch: 100 events of 10 teams, grouped by row and folded into fresh rows.
    let batch: Vec<Message> = (0..100).map(|i| Message { offset: i, event: event(i as usize % 10) }).collect();
    c.bench_function("fold/batch of 100 events (rows_by_key + fold_row each)", |b| {
        b.iter(|| {
            let mut folded = 0;
            for (_, messages) in rows_by_key(black_box(&batch)) {
                if let Ok(Some(_)) = fold_row(RowState::NEW, &messages) {
                    folded += 1;
                }
            }
            folded
        })
    });
    c.bench_function("fold/batch of 100 events in buckets (rows_by_bucket + pending_chunks + fold_step)", |b| {
        b.iter(|| {
            let mut steps = 0;
            for (_, rows) in rows_by_bucket(black_box(&batch)) {
                let state = BucketState::default();
                for chunk in pending_chunks(&rows, state.fence, 100) {
                    if let Ok(Some(_)) = fold_step(&state, &chunk) {
                        steps += 1;
                    }
                }
            }
            steps
        })
    });
}

criterion_group!(benches, fold);
criterion_main!(benches);
