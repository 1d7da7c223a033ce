//! Gauges read from live state when `/metrics` is scraped, so they cost nothing per request:
//! each deployment's state, and how fresh this gateway's budget view is.

use crate::routing::router::DeploymentState;
use crate::AppState;
use metrics::gauge;

/// Sets the scrape-time gauges from `state`.
pub fn refresh(state: &AppState) {
    let policy = super::policy();
    for (deployment, health) in state.router.deployment_states() {
        let model = policy.models.get(&deployment.model_name);
        let id = policy.deployments.get(&deployment.id);
        let provider = policy.providers.get(&deployment.provider);
        let value = match health {
            DeploymentState::Healthy => 0.0,
            DeploymentState::Failing => 1.0,
            DeploymentState::CooledDown => 2.0,
        };
        gauge!("tollgate_deployment_state", "model" => model.clone(), "deployment" => id.clone(), "provider" => provider.clone())
            .set(value);
        if policy.litellm {
            super::litellm::deployment_state(model, id, provider, value);
        }
    }
    let view = &state.budget_view;
    gauge!("tollgate_budget_view_caught_up").set(if view.caught_up() { 1.0 } else { 0.0 });
    if let Some(age_ms) = view.age_ms(chrono::Utc::now()) {
        gauge!("tollgate_budget_view_age_seconds").set(age_ms as f64 / 1000.0);
    }
}

/// Counters an alert or dashboard reads, created at zero at start-up so that their series exist
/// before the first event (an absent series makes `rate` and `increase` answer nothing).
pub fn register_zeroes() {
    use metrics::counter;
    for reason in ["store", "timeout", "exhausted"] {
        counter!("tollgate_budget_lease_failures_total", "reason" => reason).absolute(0);
    }
    counter!("tollgate_budget_lease_grants_total").absolute(0);
    counter!("tollgate_budget_view_stale_refusals_total").absolute(0);
    counter!("tollgate_spool_write_errors_total").absolute(0);
    counter!("tollgate_kafka_producer_rebuilds_total").absolute(0);
    counter!("tollgate_budget_listener_restarts_total").absolute(0);
    // The kinds of database failure a running gateway meets (`StoreError::kind`).
    for failure in ["connect", "query"] {
        counter!("tollgate_tenancy_lookup_errors_total", "failure" => failure).absolute(0);
        counter!("tollgate_database_errors_total", "failure" => failure).absolute(0);
    }
}

#[cfg(test)]
mod tests {
    use crate::routing::router::{DeploymentState, Router};

    #[test]
    fn deployment_state_follows_failures_and_cooldowns() {
        let yaml = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1"}}
  - {model_name: b, litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1"}}
router_settings: {allowed_fails: 2, cooldown_time: 60}
"#;
        let config = crate::config::Config::parse(yaml, "test.yaml").unwrap();
        let router = Router::from_config(&config, "test.yaml").unwrap();
        let state_of = |name: &str| {
            router.deployment_states().into_iter().find(|(d, _)| d.model_name == name).map(|(_, s)| s).unwrap()
        };
        assert_eq!(state_of("a"), DeploymentState::Healthy);
        let (_, picked) = router.pick("a", &[]).unwrap();
        assert!(!router.record_failure(&picked));
        assert_eq!(state_of("a"), DeploymentState::Failing);
        assert!(router.record_failure(&picked));
        assert_eq!(state_of("a"), DeploymentState::CooledDown);
        assert_eq!(state_of("b"), DeploymentState::Healthy);
    }

    #[test]
    fn deployment_health_counts_calls_failures_and_latency() {
        let yaml = r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1"}}
router_settings: {allowed_fails: 2, cooldown_time: 60}
"#;
        let config = crate::config::Config::parse(yaml, "test.yaml").unwrap();
        let router = Router::from_config(&config, "test.yaml").unwrap();
        let (_, picked) = router.pick("a", &[]).unwrap();
        router.record_success(&picked, std::time::Duration::from_millis(30), 10);
        router.record_success(&picked, std::time::Duration::from_millis(700), 10);
        router.record_failure(&picked);
        let health = router.deployment_health();
        let (_, h) = &health[0];
        assert_eq!((h.state, h.cooldown_remaining_ms), (DeploymentState::Failing, 0));
        assert_eq!((h.outcomes.calls, h.outcomes.failures), (3, 1));
        assert_eq!((h.outcomes.p50_ms, h.outcomes.p99_ms), (Some(50), Some(750)));
        router.record_failure(&picked);
        let (_, h) = &router.deployment_health()[0];
        assert_eq!(h.state, DeploymentState::CooledDown);
        assert!(h.cooldown_remaining_ms > 50_000 && h.cooldown_remaining_ms <= 60_000, "{}", h.cooldown_remaining_ms);
    }
}
