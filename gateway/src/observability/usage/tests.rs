use super::*;
use crate::config::{MetricLabels, MetricsSettings};

fn event(team: &str, customer: &str) -> UsageEvent {
    let json = serde_json::json!({
        "version": 1,
        "event_id": "0190a0a0-0000-7000-8000-000000000000",
        "occurred_at": "2026-01-01T00:00:00Z",
        "gateway_id": "gw",
        "request_id": "req",
        "key_id": "k1",
        "key_alias": "alias-1",
        "team_id": team,
        "customer_id": customer,
        "requested_model": "gpt-4o",
        "served_model": "gpt-4o-2024",
        "provider": "openai",
        "deployment": "openai/gpt-4o#0",
        "prompt_tokens": 10,
        "completion_tokens": 21,
        "cached_tokens": 0,
        "cost_nano_usd": 1500,
        "latency_ms": 2500,
        "status": 200,
        "stream": true,
    });
    serde_json::from_value(json).unwrap()
}

fn rendered(policy: &Policy, events: &[UsageEvent], timing: Request<'_>) -> String {
    let recorder = super::super::buckets::configured().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        for e in events {
            record_with(policy, e, timing);
        }
    });
    handle.render()
}

fn settings(customer: bool, cap: usize, litellm: bool) -> MetricsSettings {
    MetricsSettings {
        labels: MetricLabels { key_alias: false, customer, cap },
        litellm_compatible: litellm,
        ..MetricsSettings::default()
    }
}

const STREAMED: Request<'static> =
    Request { operation: "chat", model: "gpt-4o", first_token: Some(Duration::from_millis(500)) };

#[test]
fn genai_metrics_carry_the_convention_labels() {
    let out = rendered(&Policy::new(&settings(false, 10, false)), &[event("t1", "c1")], STREAMED);
    let labels = r#"gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o",gen_ai_response_model="gpt-4o-2024""#;
    assert!(
        out.contains(&format!(r#"gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="input"}} 10"#)),
        "{out}"
    );
    assert!(
        out.contains(&format!(r#"gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="output"}} 21"#)),
        "{out}"
    );
    assert!(
        out.contains(&format!(r#"gen_ai_client_token_usage_bucket{{{labels},gen_ai_token_type="output",le="64"}} 1"#)),
        "{out}"
    );
    assert!(out.contains(&format!(r#"gen_ai_server_time_to_first_token_seconds_sum{{{labels}}} 0.5"#)), "{out}");
    // (2.5 s - 0.5 s) over the 20 tokens after the first.
    assert!(out.contains(&format!(r#"gen_ai_server_time_per_output_token_seconds_sum{{{labels}}} 0.1"#)), "{out}");
    assert!(out.contains(r#"gen_ai_client_operation_duration_seconds_sum{"#), "{out}");
    assert!(
        out.contains(r#"tollgate_tenant_spend_nano_usd_total{team="t1",model="gpt-4o",key_alias="",customer=""} 1500"#),
        "{out}"
    );
    assert!(!out.contains("litellm_"), "LiteLLM names only when asked for: {out}");
}

#[test]
fn a_request_without_a_stream_has_no_first_token_metrics() {
    let timing = Request { operation: "embeddings", model: "gpt-4o", first_token: None };
    let out = rendered(&Policy::new(&settings(false, 10, false)), &[event("t1", "c1")], timing);
    assert!(!out.contains("time_to_first_token"), "{out}");
    assert!(out.contains(r#"gen_ai_operation_name="embeddings""#), "{out}");
}

#[test]
fn customer_labels_are_opt_in_and_capped() {
    let events: Vec<UsageEvent> = (0..5).map(|i| event(&format!("t{i}"), &format!("c{i}"))).collect();
    let off = rendered(&Policy::new(&settings(false, 2, false)), &events, STREAMED);
    assert!(!off.contains(r#"customer="c0""#), "customers are not labels by default: {off}");
    let on = rendered(&Policy::new(&settings(true, 2, false)), &events, STREAMED);
    assert!(on.contains(r#"team="t0",model="gpt-4o",key_alias="",customer="c0"} 1500"#), "{on}");
    assert!(on.contains(r#"team="t1",model="gpt-4o",key_alias="",customer="c1"} 1500"#), "{on}");
    // Beyond the cap of 2, three teams and customers fold into one `other` series.
    assert!(
        on.contains(
            r#"tollgate_tenant_spend_nano_usd_total{team="other",model="gpt-4o",key_alias="",customer="other"} 4500"#
        ),
        "{on}"
    );
    assert!(!on.contains(r#"team="t2""#), "{on}");
}

#[test]
fn litellm_names_are_exported_when_asked_for() {
    let out = rendered(&Policy::new(&settings(false, 10, true)), &[event("t1", "c1")], STREAMED);
    let labels = r#"end_user="",hashed_api_key="",api_key_alias="",model="gpt-4o",team="t1",team_alias="",user="""#;
    assert!(out.contains(&format!("litellm_spend_metric_total{{{labels}}} 0.0000015")), "{out}");
    assert!(out.contains(&format!("litellm_total_tokens_total{{{labels}}} 31")), "{out}");
    assert!(out.contains(&format!("litellm_requests_metric_total{{{labels}}} 1")), "{out}");
    assert!(
        out.contains(
            r#"litellm_deployment_success_responses_total{litellm_model_name="gpt-4o",model_id="openai/gpt-4o#0""#
        ),
        "{out}"
    );
    assert!(!out.contains("k1"), "never a key id: {out}");
}

#[test]
fn a_name_a_client_chose_through_a_wildcard_is_never_a_label() {
    let mut e = event("t1", "c1");
    e.requested_model = "openai/client-chosen-name".into();
    // The provider answers with the name it was sent: the star filled in.
    e.served_model = Some("client-chosen-name".into());
    let wildcard = Request { operation: "chat", model: "openai/*", first_token: None };
    let out = rendered(&Policy::new(&settings(false, 10, true)), &[e], wildcard);
    assert!(out.contains(r#"gen_ai_request_model="openai/*",gen_ai_response_model="openai/*""#), "{out}");
    assert!(out.contains(r#"team="t1",model="openai/*""#), "{out}");
    assert!(!out.contains("client-chosen-name"), "{out}");
}
