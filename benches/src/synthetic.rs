//! Synthetic usage events for the ledger and spool benchmarks: shaped like the gateway's, with
//! keys grouped ten to a team and costs at the test prices.

use tollgate_schemas::{NanoUsd, UsageEvent, USAGE_EVENT_VERSION};

/// Event `i` of a run over `keys` distinct virtual keys.
pub fn usage_event(i: u64, keys: u64) -> UsageEvent {
    let key = i % keys.max(1);
    let prompt = 100 + i % 900;
    let completion = 10 + i % 300;
    UsageEvent {
        version: USAGE_EVENT_VERSION,
        event_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
        gateway_id: "bench".into(),
        request_id: format!("bench-{i}"),
        key_id: format!("{key:064x}"),
        team_id: Some(format!("team-{}", key / 10)),
        customer_id: Some(format!("cust-{}", i % 50)),
        requested_model: "gpt-4o-mini".into(),
        served_model: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        deployment: Some("openai/gpt-4o-mini#0".into()),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost_nano_usd: NanoUsd(i64::try_from(prompt * 150 + completion * 600).unwrap_or(0)),
        latency_ms: 5,
        status: 200,
        ..UsageEvent::default()
    }
}
