//! Property and fuzz tests of the gateway's config loader (`Config::parse`): arbitrary bytes,
//! YAML token soup, a full config mutated (fields removed, unknown keys, re-typed values, huge
//! numbers, `.nan`/`.inf`, deep nesting, tags) and anchors and aliases up to billion-laughs
//! shapes. Never a panic or a hang; a config that loads builds its router, and every name and id
//! it puts into usage events is one the ledger accepts.

use super::validate::valid_timeout;
use super::*;
use proptest::prelude::*;
use tollgate_fuzzing::{run, yaml};
use tollgate_schemas::limits;

/// Every section of the gateway's config, with LiteLLM's settings it accepts.
const FULL: &str = r#"
gateway:
  id: gw-1
  listen: 127.0.0.1:4000
  max_body_bytes: 8388608
  max_upload_bytes: 26279936
  max_response_bytes: 67108864
  request_timeout_secs: 600
  workers: 2
  replicas: 3
  allow_unpriced_models: false
  metrics: {listen: "127.0.0.1:9464", token: 0123456789abcdef}
  key_hash_secret: 0123456789abcdef0123456789abcdef
  shared_customers: false
  shutdown_timeout_secs: 20
  flush_timeout_secs: 5
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_key: sk-upstream, timeout: 30, stream_timeout: 10,
                     stream_max_duration: 600, rpm: 100, tpm: 100000, weight: 2, max_retries: 3}
    model_info: {input_cost_per_token: 0.00000015, output_cost_per_token: 0.0000006, access_groups: [cheap]}
  - model_name: gpt-4o-mini
    litellm_params: {model: azure/my-deployment, api_base: "https://x.openai.azure.com", api_version: 2024-06-01,
                     input_cost_per_token: 0.00000015, output_cost_per_token: 0.0000006,
                     cache_read_input_token_cost: 0.00000007}
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: os.environ/TOLLGATE_FUZZ_KEY}
  - model_name: gemini
    litellm_params: {model: gemini/gemini-2.0-flash}
virtual_keys:
  - key: sk-tenant-1
    key_alias: checkout
    team_id: payments
    user_id: user-1
    organization_id: org-1
    models: [gpt-4o-mini, claude]
    blocked: false
    expires: 2030-01-01T00:00:00Z
    max_budget: 12.5
    soft_budget: "10"
    budget_duration: 30d
    rpm_limit: 60
    tpm_limit: 100000
    max_parallel_requests: 4
  - key_hash: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
prices:
  claude: {input_nano_usd_per_token: 3000, output_nano_usd_per_token: 15000, cached_input_nano_usd_per_token: 300}
  gemini: {input_nano_usd_per_token: 100, output_nano_usd_per_token: 400}
router_settings:
  routing_strategy: usage-based-routing-v2
  num_retries: 2
  timeout: 60
  stream_timeout: 30
  stream_max_duration: 1800
  fallbacks: [{gpt-4o-mini: [claude]}]
  context_window_fallbacks: [{claude: [gemini]}]
  content_policy_fallbacks: [{"*": [gemini]}]
  allowed_fails: 3
  cooldown_time: 5
  retry_after: 0.5
  request_timeout: 90
  max_fallbacks: 3
  disable_cooldowns: false
  default_fallbacks: [gemini]
  model_group_alias: {old-mini: gpt-4o-mini, hidden-claude: {model: claude, hidden: true}}
  redis_host: localhost
kafka:
  bootstrap_servers: 127.0.0.1:9092
  usage_topic: usage
  linger_ms: 5
  max_queued_messages: 500000
  producer_properties: {compression.type: lz4}
  client_properties: {security.protocol: plaintext}
  stall_rebuild_secs: 60
database:
  contact_points: [127.0.0.1:9042]
  keyspace: tollgate
  username: gw
  password: os.environ/TOLLGATE_FUZZ_DB_PASSWORD
spool: {dir: /tmp/tollgate-fuzz-spool, max_segment_bytes: 65536, queue_capacity: 1000, when_full: serve}
budgets: {max_staleness_secs: 30, when_stale: fail_open, leases: true, reserve_output_tokens: 1024, lease_idle_secs: 5}
general_settings: {master_key: sk-master, alerting: [slack], database_url: postgres://x}
litellm_settings: {drop_params: true, callbacks: [a, b], request_timeout: 60, num_retries: 1}
guardrails: [{guardrail_name: pii, litellm_params: {guardrail: pii_masking, mode: pre_call}}]
environment_variables: {TOLLGATE_FUZZ_KEY: sk-from-file, TOLLGATE_FUZZ_DB_PASSWORD: pw}
"#;

const MINIMAL: &str = "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m}\n";

const WORDS: &[&str] = &[
    "gateway",
    "id",
    "listen",
    "max_body_bytes",
    "max_upload_bytes",
    "request_timeout_secs",
    "replicas",
    "metrics",
    "token",
    "key_hash_secret",
    "model_list",
    "model_name",
    "litellm_params",
    "model",
    "api_base",
    "api_key",
    "api_version",
    "timeout",
    "stream_timeout",
    "stream_max_duration",
    "rpm",
    "tpm",
    "weight",
    "model_info",
    "input_cost_per_token",
    "virtual_keys",
    "key",
    "key_hash",
    "key_alias",
    "team_id",
    "user_id",
    "organization_id",
    "models",
    "max_budget",
    "budget_duration",
    "prices",
    "input_nano_usd_per_token",
    "router_settings",
    "fallbacks",
    "num_retries",
    "cooldown_time",
    "kafka",
    "embedded",
    "database",
    "spool",
    "budgets",
    "litellm_settings",
    "request_timeout",
    "model_group_alias",
    "hidden",
    "default_fallbacks",
    "max_fallbacks",
    "disable_cooldowns",
    "redis_host",
    "drop_params",
    "guardrails",
    "environment_variables",
    "openai/m",
    "anthropic/claude",
    "gemini/g",
    "azure/d",
    "unknown/x",
    "a/model/b",
    "30d",
    "1mo",
    "*",
    "os.environ/TOLLGATE_FUZZ_KEY",
];

fn seeds() -> Vec<serde_json::Value> {
    vec![yaml::document_of(FULL), yaml::document_of(MINIMAL)]
}

/// Parses without panicking; what loads is valid as `parse` promises, builds its router, and
/// puts only names and ids the ledger accepts into usage events.
fn parse_holds(text: &str) -> Result<(), TestCaseError> {
    let Ok(c) = Config::parse(text, "fuzz.yaml") else { return Ok(()) };
    prop_assert!(!c.model_list.is_empty());
    prop_assert!(valid_timeout(c.gateway.request_timeout_secs));
    prop_assert!(c.gateway.replicas >= 1 && c.spool.queue_capacity >= 10);
    let _ = c.unsupported();
    let name_ok = |v: &str| limits::check_name("name", v, limits::MAX_NAME_BYTES).is_ok();
    let id_ok = |v: &Option<String>| v.as_deref().is_none_or(|v| limits::check_id("id", v).is_ok());
    prop_assert!(c.gateway.id.as_deref().is_none_or(name_ok), "gateway.id {:?}", c.gateway.id);
    for k in &c.virtual_keys {
        prop_assert!(k.key_alias.as_deref().is_none_or(name_ok), "key_alias {:?}", k.key_alias);
        prop_assert!(id_ok(&k.team_id) && id_ok(&k.user_id) && id_ok(&k.organization_id), "{:?}", k);
    }
    for m in &c.model_list {
        prop_assert!(name_ok(&m.model_name) && name_ok(&m.litellm_params.model), "{:?}", m);
    }
    if let Ok(router) = crate::routing::router::Router::from_config(&c, "fuzz.yaml") {
        for m in &c.model_list {
            let Some((_, lease)) = router.pick(&m.model_name, &[]) else { continue };
            let d = &lease.deployment;
            prop_assert!(limits::check_name("deployment", &d.id, 2 * limits::MAX_NAME_BYTES).is_ok(), "{}", d.id);
            prop_assert!(name_ok(&d.provider) && name_ok(&d.upstream_model), "{:?}", d);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(run::config(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        run::watchdog(move || parse_holds(&String::from_utf8_lossy(&bytes)))?;
    }

    #[test]
    fn yaml_soup_never_panics(text in yaml::soup()) {
        run::watchdog(move || parse_holds(&text))?;
    }

    #[test]
    fn mutated_configs_load_valid_or_name_an_error(text in yaml::mutated(seeds(), WORDS)) {
        run::watchdog(move || parse_holds(&text))?;
    }
}

proptest! {
    // Each case may count up to `tollgate_schemas::yaml::MAX_NODES` nodes: fewer cases.
    #![proptest_config(run::config(128))]

    /// Anchors and aliases where the config takes any YAML (the LiteLLM settings it ignores,
    /// such as `litellm_settings.cache_params`, and `model_info`) and at the top level: refused
    /// or read within the node bound, never expanded without limit.
    #[test]
    fn aliases_are_bounded(block in yaml::laughs(4), deeper in yaml::laughs(6), top in yaml::laughs(0), place in 0usize..3) {
        run::watchdog(move || {
            let text = match place {
                0 => FULL.replace(
                    "litellm_settings: {drop_params: true, callbacks: [a, b], request_timeout: 60, num_retries: 1}\n",
                    &format!("litellm_settings:\n  cache_params:\n{block}"),
                ),
                1 => FULL.replace(
                    "    model_info: {input_cost_per_token: 0.00000015, output_cost_per_token: 0.0000006, access_groups: [cheap]}\n",
                    &format!("    model_info:\n      input_cost_per_token: 0.00000015\n{deeper}"),
                ),
                _ => format!("{top}{MINIMAL}"),
            };
            parse_holds(&text)
        })?;
    }
}

#[test]
fn the_seeds_load() {
    let full = Config::parse(FULL, "full.yaml").expect("the full config loads");
    assert!(crate::routing::router::Router::from_config(&full, "full.yaml").is_ok());
    assert!(Config::parse(MINIMAL, "minimal.yaml").is_ok());
}
