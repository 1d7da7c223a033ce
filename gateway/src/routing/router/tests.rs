use super::*;
use crate::limits::pricing::AttoUsd;

fn c(weight: f64) -> Candidate {
    Candidate { weight, ..Candidate::default() }
}

#[test]
fn simple_shuffle_follows_weights() {
    let cands = [c(1.0), c(3.0)];
    assert_eq!(choose(RoutingStrategy::SimpleShuffle, &cands, 0.0), Some(0));
    assert_eq!(choose(RoutingStrategy::SimpleShuffle, &cands, 0.24), Some(0));
    assert_eq!(choose(RoutingStrategy::SimpleShuffle, &cands, 0.26), Some(1));
    assert_eq!(choose(RoutingStrategy::SimpleShuffle, &cands, 0.99), Some(1));
    let picks_of_1 =
        (0..1000).filter(|i| choose(RoutingStrategy::SimpleShuffle, &cands, *i as f64 / 1000.0) == Some(1)).count();
    assert_eq!(picks_of_1, 750);
}

#[test]
fn least_busy_latency_usage_and_cost_pick_the_minimum() {
    let mut a = c(1.0);
    let mut b = c(1.0);
    a.in_flight = 5;
    b.in_flight = 2;
    assert_eq!(choose(RoutingStrategy::LeastBusy, &[a, b], 0.0), Some(1));
    a.latency_us = 100;
    b.latency_us = 900;
    assert_eq!(choose(RoutingStrategy::LatencyBased, &[a, b], 0.7), Some(0));
    a.rpm = Some(100);
    a.requests_this_minute = 90;
    b.rpm = Some(1000);
    b.requests_this_minute = 100;
    assert_eq!(choose(RoutingStrategy::UsageBased, &[a, b], 0.0), Some(1));
    a.unit_price = 10;
    b.unit_price = 5;
    assert_eq!(choose(RoutingStrategy::CostBased, &[a, b], 0.0), Some(1));
}

#[test]
fn the_worst_price_follows_every_fallback_transitively() {
    let yaml = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1"}}
  - {model_name: b, litellm_params: {model: openai/gpt-4.1-mini, api_base: "http://127.0.0.1:9/v1"}}
  - {model_name: c, litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:9/v1"}}
  - {model_name: d, litellm_params: {model: openai/gpt-4.1-nano, api_base: "http://127.0.0.1:9/v1"}}
router_settings:
  fallbacks: [{a: [b]}]
  context_window_fallbacks: [{b: [c]}, {c: [a]}]
"#;
    let config = crate::config::Config::parse(yaml, "test.yaml").unwrap();
    let router = Router::from_config(&config, "test.yaml").unwrap();
    let gpt_4o = Price::from_nanos(2_500, 1_250, 10_000);
    // a -> b -> c (-> a again): gpt-4o's prices, the highest on the way.
    assert_eq!(router.worst_price("a"), Some(gpt_4o));
    assert_eq!(router.worst_price("c"), Some(gpt_4o));
    assert_eq!(router.worst_price("d").map(|p| p.base.0[1]), Some(AttoUsd::from_nanos(400)));
    assert_eq!(router.worst_price("nope"), None);
}

#[test]
fn adapters_send_the_reserved_output_limit_and_unlimited_requests_reserve_their_default() {
    let yaml = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1"}}
  - {model_name: claude, litellm_params: {model: anthropic/claude-3-5-haiku-20241022, api_base: "http://127.0.0.1:9"}}
  - {model_name: gem, litellm_params: {model: gemini/gemini-2.0-flash, api_base: "http://127.0.0.1:9"}}
router_settings:
  fallbacks: [{a: [claude]}]
"#;
    let config = crate::config::Config::parse(yaml, "test.yaml").unwrap();
    let router = Router::from_config(&config, "test.yaml").unwrap();
    // `a` can fall back to Anthropic, whose adapter asks for 4,096 tokens when none is given.
    assert_eq!(router.worst_default_output("a"), Some(crate::providers::anthropic::DEFAULT_MAX_TOKENS));
    assert_eq!(router.worst_default_output("gem"), None);
    let deployment = |name: &str| router.deployments().find(|d| d.model_name == name).unwrap().clone();
    let request = |body: &str| {
        crate::http::wire::ProxyRequest::parse(body.as_bytes(), crate::providers::Endpoint::ChatCompletions).unwrap()
    };
    let body_for = |name: &str, req: &crate::http::wire::ProxyRequest| -> serde_json::Value {
        serde_json::from_slice(&crate::providers::request_body(&deployment(name), req).unwrap()).unwrap()
    };
    let limited = request(r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"max_output_tokens":7}"#);
    assert_eq!(body_for("claude", &limited)["max_tokens"], 7);
    assert_eq!(body_for("gem", &limited)["generationConfig"]["maxOutputTokens"], 7);
    let unlimited = request(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!(body_for("claude", &unlimited)["max_tokens"], crate::providers::anthropic::DEFAULT_MAX_TOKENS);
}

#[test]
fn ties_are_spread_by_the_roll() {
    let cands = [c(1.0), c(1.0), c(1.0)];
    let picks: std::collections::HashSet<_> =
        [0.0, 0.4, 0.8].iter().map(|r| choose(RoutingStrategy::LeastBusy, &cands, *r)).collect();
    assert_eq!(picks.len(), 3);
    assert_eq!(choose(RoutingStrategy::LeastBusy, &[], 0.5), None);
}
