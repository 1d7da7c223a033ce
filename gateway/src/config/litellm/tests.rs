use super::*;
use crate::config::RoutingStrategy;
use crate::routing::router::Router;
use std::path::{Path, PathBuf};

/// The variables the corpus reads through `os.environ/VAR` (only the settings Tollgate acts on
/// are resolved).
const CORPUS_VARIABLES: &[&str] = &[
    "GUARD_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_API_KEY_2",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GROQ_API_KEY",
    "VLLM_API_KEY",
    "LITELLM_MASTER_KEY",
    "AZURE_API_KEY_EASTUS",
    "AZURE_API_KEY_SWEDEN",
    "REDIS_HOST",
    "REDIS_PASSWORD",
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/litellm-configs")
}

/// Sets the corpus' variables (the same dummy values every time, so tests running at once
/// agree) and loads `name`.
fn load_corpus(name: &str) -> Config {
    for var in CORPUS_VARIABLES {
        std::env::set_var(var, format!("dummy-{}", var.to_ascii_lowercase()));
    }
    std::env::set_var("REDIS_PORT", "6379");
    std::env::set_var("VLLM_API_BASE", "http://vllm.internal:8000/v1");
    std::env::set_var("AZURE_API_BASE_EASTUS", "https://my-eastus.openai.azure.com");
    std::env::set_var("AZURE_API_VERSION", "2024-10-21");
    let path = corpus_dir().join(name);
    Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fields(config: &Config) -> Vec<String> {
    config.unsupported().into_iter().map(|u| u.field).collect()
}

const MINIMAL: &str =
    "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_key: k\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.yaml")
}

/// Each file of the corpus loads, builds its router, and reports exactly these settings.
#[test]
fn the_corpus_loads_and_reports_what_it_ignores() {
    let expected: &[(&str, &[&str])] = &[
        ("openai-anthropic-vllm.yaml", &[]),
        (
            "latency-fallbacks.yaml",
            &[
                "router_settings.allowed_fails_policy",
                "router_settings.retry_policy",
                "router_settings.routing_strategy_args",
            ],
        ),
        (
            "cache-guardrails-callbacks.yaml",
            &[
                "callback_settings",
                "litellm_settings.json_logs",
                "litellm_settings.langfuse_default_tags",
                "litellm_settings.redact_user_api_key_info",
                "litellm_settings.service_callbacks",
                "litellm_settings.turn_off_message_logging",
            ],
        ),
        (
            "database-alerting.yaml",
            &[
                "general_settings.alert_to_webhook_url",
                "general_settings.alert_types",
                "general_settings.alerting",
                "general_settings.alerting_args",
                "general_settings.alerting_threshold",
                "general_settings.allow_requests_on_db_unavailable",
                "general_settings.background_health_checks",
                "general_settings.database_connection_pool_limit",
                "general_settings.database_connection_timeout",
                "general_settings.database_url",
                "general_settings.disable_spend_logs",
                "general_settings.health_check_interval",
                "general_settings.max_request_size_mb",
                "general_settings.max_response_size_mb",
                "general_settings.maximum_spend_logs_retention_period",
                "general_settings.proxy_batch_write_at",
                "general_settings.spend_report_frequency",
                "general_settings.store_model_in_db",
            ],
        ),
        (
            "azure-regions.yaml",
            &["model_list[].litellm_params.region_name", "model_list[].litellm_params.organization"],
        ),
        (
            "teams-and-keys.yaml",
            &[
                "model_list[].litellm_params.default_api_key_rpm_limit",
                "model_list[].litellm_params.default_api_key_tpm_limit",
                "litellm_settings.default_internal_user_params",
                "litellm_settings.default_key_generate_params",
                "litellm_settings.default_team_settings",
                "litellm_settings.internal_user_budget_duration",
                "litellm_settings.key_generation_settings",
                "litellm_settings.max_end_user_budget",
                "litellm_settings.max_internal_user_budget",
                "litellm_settings.upperbound_key_generate_params",
                "general_settings.database_url",
                "general_settings.default_team_disabled",
                "general_settings.disable_master_key_return",
                "general_settings.enforce_user_param",
                "general_settings.global_max_parallel_requests",
                "general_settings.max_parallel_requests",
                "general_settings.user_api_key_cache_ttl",
            ],
        ),
        (
            "redis-usage-routing.yaml",
            &[
                "model_list[].litellm_params.order",
                "model_list[].litellm_params.tags",
                "model_list[].litellm_params.max_parallel_requests",
                "router_settings.cache_responses",
                "router_settings.client_ttl",
                "router_settings.default_litellm_params",
                "router_settings.default_max_parallel_requests",
                "router_settings.enable_tag_filtering",
                "router_settings.redis_host",
                "router_settings.redis_password",
                "router_settings.redis_port",
            ],
        ),
        ("aliases-and-defaults.yaml", &["litellm_settings.drop_params", "litellm_settings.modify_params"]),
        (
            "gemini-groq-embeddings.yaml",
            &[
                "model_list[].litellm_params.max_tokens",
                "model_list[].litellm_params.safety_settings",
                "model_list[].litellm_params.temperature",
                "model_list[].litellm_params.drop_params",
                "model_list[].litellm_params.mock_response",
                "litellm_settings.drop_params",
                "litellm_settings.set_verbose",
            ],
        ),
        ("quickstart.yaml", &[]),
        ("wildcards.yaml", &["litellm_settings.drop_params"]),
    ];
    let mut seen: Vec<String> = expected.iter().map(|(name, _)| (*name).to_owned()).collect();
    seen.push("production.yaml".to_owned());
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(seen.contains(&name), "{name} is in the corpus but not in this test");
    }
    for (name, unsupported) in expected {
        let config = load_corpus(name);
        assert_eq!(fields(&config), *unsupported, "{name}");
        crate::check_config(&config, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The production config of the issue: it loads as it is, honours its routing settings, names
/// each LiteLLM setting it ignores once, and — having no prices for its three models — says how
/// to give them; with prices it starts.
#[test]
fn the_production_config_loads_unchanged() {
    let config = load_corpus("production.yaml");
    let rs = &config.router_settings;
    assert_eq!(rs.routing_strategy, RoutingStrategy::LatencyBased);
    assert_eq!((rs.num_retries(), rs.allowed_fails(), rs.cooldown_time), (3, 3, 30.0));
    assert_eq!(rs.timeout, Some(600.0), "router_settings.request_timeout is the timeout");
    assert_eq!(rs.fallbacks.len(), 2);
    assert_eq!(
        fields(&config),
        [
            "model_list[].litellm_params.max_retries",
            "router_settings.redis_host",
            "router_settings.redis_password",
            "router_settings.redis_port",
            "litellm_settings.drop_params",
            "litellm_settings.guardrails",
            "litellm_settings.output_parse_pii",
            "litellm_settings.set_verbose",
            "general_settings.alerting",
            "general_settings.alerting_threshold",
            "general_settings.database_connection_pool_limit",
            "general_settings.database_url",
            "general_settings.proxy_batch_write_at",
            "general_settings.slack_alerting_url",
        ]
    );
    let report = config.unsupported().iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(
        report.contains("`model_list[].litellm_params.max_retries` (claude-opus) is not supported: retries"),
        "{report}"
    );
    assert!(report.contains("`general_settings.database_url` is not supported: keys, teams and spend"), "{report}");

    // The self-hosted model has no price: it is served at cost zero (events marked
    // `unpriced`); the others are priced from the model catalogue.
    crate::check_config(&config, "production.yaml").unwrap();
    let router = Router::from_config(&config, "production.yaml").unwrap();
    let price = |name: &str| router.deployments().find(|d| d.model_name == name).unwrap().price;
    assert!(price("gpt-4-turbo").is_some() && price("claude-opus").is_some());
    assert_eq!(price("llama-3.1-70b"), None);
    let text = std::fs::read_to_string(corpus_dir().join("production.yaml")).unwrap();
    let refusing =
        Config::parse(&format!("{text}\nbilling: {{unpriced_models: refuse}}\n"), "production.yaml").unwrap();
    let err = crate::check_config(&refusing, "production.yaml").unwrap_err().to_string();
    for hint in [
        "no price for `llama-3.1-70b`",
        "input_cost_per_token",
        "model_info",
        "prices.llama-3.1-70b",
        "unpriced_models",
    ] {
        assert!(err.contains(hint), "{hint}: {err}");
    }
    let priced = format!(
        "{text}\nprices:\n  gpt-4-turbo: {{input_nano_usd_per_token: 10000, output_nano_usd_per_token: 30000}}\n  \
         claude-opus: {{input_nano_usd_per_token: 15000, output_nano_usd_per_token: 75000}}\n  \
         llama-3.1-70b: {{input_nano_usd_per_token: 0, output_nano_usd_per_token: 0}}\n"
    );
    let config = Config::parse(&priced, "production.yaml").unwrap();
    let router = Router::from_config(&config, "production.yaml").unwrap();
    assert_eq!(router.policy.num_retries, 3);
    let vllm = router.deployments().find(|d| d.model_name == "llama-3.1-70b").unwrap();
    assert_eq!(vllm.timeout, std::time::Duration::from_secs(120));
    let openai = router.deployments().find(|d| d.model_name == "gpt-4-turbo").unwrap();
    assert_eq!(openai.timeout, std::time::Duration::from_secs(600));
}

/// Every key a table marks honoured is a typed field of its section (never set aside), and every
/// typed field of a LiteLLM section is in its table: these files set each of them.
#[test]
fn honoured_keys_are_exactly_the_typed_fields() {
    let every_honoured = r#"
model_list:
  - model_name: m
    litellm_params:
      model: d
      custom_llm_provider: azure
      api_base: https://x.openai.azure.com
      api_key: k
      api_version: "2024-10-21"
      vertex_project: p
      vertex_location: us-central1
      vertex_credentials: /not/read/for/azure.json
      timeout: 30
      stream_timeout: 10
      stream_max_duration: 600
      rpm: 10
      tpm: 1000
      weight: 2
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000001
      cache_read_input_token_cost: 0.000001
      cache_creation_input_token_cost: 0.000001
      output_cost_per_reasoning_token: 0.000001
      input_cost_per_audio_token: 0.000001
      output_cost_per_audio_token: 0.000001
      input_cost_per_image_token: 0.000001
      output_cost_per_image_token: 0.000001
      input_cost_per_request: 0.000001
      input_cost_per_token_above_128k_tokens: 0.000001
      output_cost_per_token_above_128k_tokens: 0.000001
      input_cost_per_token_above_200k_tokens: 0.000001
      output_cost_per_token_above_200k_tokens: 0.000001
      cache_read_input_token_cost_above_200k_tokens: 0.000001
      aws_access_key_id: AKID
      aws_secret_access_key: secret
      aws_session_token: token
      aws_region_name: us-east-1
      aws_bedrock_runtime_endpoint: https://bedrock-runtime.us-east-1.amazonaws.com
  - model_name: n
    litellm_params: {model: openai/gpt-4o-mini, api_key: k}
router_settings:
  routing_strategy: least-busy
  num_retries: 1
  timeout: 30
  request_timeout: 40
  stream_timeout: 10
  stream_max_duration: 600
  fallbacks: [{m: [n]}]
  context_window_fallbacks: [{m: [n]}]
  content_policy_fallbacks: [{m: [n]}]
  default_fallbacks: [n]
  max_fallbacks: 1
  allowed_fails: 1
  cooldown_time: 1
  disable_cooldowns: true
  enable_pre_call_checks: true
  retry_after: 1
  model_group_alias: {old: m}
litellm_settings:
  request_timeout: 30
  num_retries: 1
  allowed_fails: 1
  fallbacks: [{m: [n]}]
  default_fallbacks: [n]
  context_window_fallbacks: [{m: [n]}]
  content_policy_fallbacks: [{m: [n]}]
  callbacks: [prometheus]
  success_callback: [prometheus]
  failure_callback: [prometheus]
  cache: true
  cache_params: {type: local, ttl: 60, namespace: ns}
general_settings:
  master_key: sk-master
  reject_clientside_metadata_tags: true
environment_variables: {A: b}
gateway: {}
virtual_keys: []
prices: {}
kafka: {bootstrap_servers: "127.0.0.1:9092"}
database: {contact_points: ["127.0.0.1:9042"]}
spool: {}
budgets: {}
billing: {}
guardrails: []
"#;
    let doc: serde_yaml::Value = serde_yaml::from_str(every_honoured).unwrap();
    let keys_of = |v: &serde_yaml::Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect();
        keys.sort();
        keys
    };
    let honoured = |section: Section| -> Vec<String> {
        let mut keys: Vec<String> = section
            .keys()
            .iter()
            .filter(|(_, s)| matches!(s, Status::Honoured(_)))
            .map(|(k, _)| (*k).to_owned())
            .collect();
        keys.sort();
        keys
    };
    let mut top = honoured(Section::TopLevel);
    top.retain(|k| k != "embedded"); // `embedded` and `kafka` exclude each other
    assert_eq!(keys_of(&doc), top);
    assert_eq!(keys_of(&doc["model_list"][0]["litellm_params"]), honoured(Section::LitellmParams));
    let mut router_keys = honoured(Section::RouterSettings);
    router_keys.retain(|k| k != "enable_pre_call_check"); // another name of `enable_pre_call_checks`
    assert_eq!(keys_of(&doc["router_settings"]), router_keys);
    assert_eq!(keys_of(&doc["litellm_settings"]), honoured(Section::LitellmSettings));
    assert_eq!(keys_of(&doc["general_settings"]), honoured(Section::GeneralSettings));
    let config = parse(every_honoured).unwrap();
    for aside in config.set_aside() {
        assert!(aside.keys.is_empty(), "{:?} set aside {:?}", aside.section, aside.keys.keys());
    }
    assert!(config.unsupported().is_empty());
    let embedded = parse(&format!("{MINIMAL}embedded: {{}}\n")).unwrap();
    assert!(embedded.litellm_only.is_empty());
    assert!(config.gateway.metrics.litellm_compatible, "the prometheus callback turns on LiteLLM's metric names");
    assert!(!embedded.gateway.metrics.litellm_compatible);
    let langfuse_only = parse(&format!("{MINIMAL}embedded: {{}}\nlitellm_settings:\n  success_callback: [langfuse]\n"));
    assert!(!langfuse_only.unwrap().gateway.metrics.litellm_compatible);
    let one_name = parse(&format!("{MINIMAL}embedded: {{}}\nlitellm_settings:\n  callbacks: prometheus\n"));
    assert!(one_name.unwrap().gateway.metrics.litellm_compatible);
    let module = parse(&format!("{MINIMAL}embedded: {{}}\nlitellm_settings:\n  callbacks: custom_callbacks.handler\n"));
    assert!(!module.unwrap().gateway.metrics.litellm_compatible, "a custom callback's module path loads");
}

/// No key is in a table twice, and every ignored key says what to use instead.
#[test]
fn tables_hold_each_key_once() {
    for section in Section::ALL {
        let keys = section.keys();
        for (i, (key, status)) in keys.iter().enumerate() {
            assert!(!keys[..i].iter().any(|(k, _)| k == key), "{key} twice in {section:?}");
            let text = match status {
                Status::Honoured(t) | Status::Ignored(t) => t,
            };
            assert!(!text.is_empty() && !text.ends_with('.'), "{section:?}.{key}: {text}");
        }
    }
}

/// A key neither Tollgate nor LiteLLM has is an error naming the field, its line and the key it
/// is closest to, in every section.
#[test]
fn unknown_keys_name_the_field_line_and_closest_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "router_settings:\n  num_retries: 1\n  request_timeuot: 5\n",
            "router_settings.request_timeuot",
            "line 8 column 3",
            "request_timeout",
        ),
        (
            "litellm_settings:\n  sucess_callback: [x]\n",
            "litellm_settings.sucess_callback",
            "line 7 column 3",
            "success_callback",
        ),
        (
            "general_settings:\n  master_key: k\n  alerting_treshold: 5\n",
            "general_settings.alerting_treshold",
            "line 8 column 3",
            "alerting_threshold",
        ),
        ("rooter_settings: {}\n", "rooter_settings", "line 6 column 1", "router_settings"),
        ("virtual_key: []\n", "virtual_key", "line 6 column 1", "virtual_keys"),
    ];
    for (extra, field, line, closest) in cases {
        let err = parse(&format!("{MINIMAL}{extra}")).unwrap_err().to_string();
        assert!(err.contains(&format!("unknown field `{field}`")), "{err}");
        assert!(err.contains(line), "{line}: {err}");
        assert!(err.contains(&format!("did you mean `{closest}`?")), "{err}");
        assert!(err.starts_with("config file test.yaml"), "{err}");
    }
    let text = "model_list:\n  - model_name: a\n    litellm_params: {model: openai/gpt-4o, api_key: k}\n  - model_name: b\n    \
                litellm_params: {model: openai/gpt-4o, api_key: k, api_bsae: x}\n";
    let err = parse(text).unwrap_err().to_string();
    assert!(err.contains("unknown field `model_list[1].litellm_params.api_bsae`"), "{err}");
    assert!(err.contains("line 5 column 56") && err.contains("did you mean `api_base`?"), "{err}");
    let err = parse(&format!("{MINIMAL}router_settings: {{frobnicate: 1}}\n")).unwrap_err().to_string();
    assert!(err.contains("neither Tollgate nor LiteLLM has this setting in router_settings"), "{err}");
    // Tollgate's own sections keep serde's check.
    let err = parse(&format!("{MINIMAL}spool: {{dri: x}}\n")).unwrap_err().to_string();
    assert!(err.contains("unknown field `dri`") && err.contains("line"), "{err}");
    // model_info takes any key, as in LiteLLM.
    assert!(parse(&format!("{MINIMAL}    model_info: {{anything: [1, 2]}}\n")).is_ok());
}

/// `litellm_settings` gives the router settings `router_settings` leaves unset; a value in
/// `router_settings` wins; checks name the section the value was written in.
#[test]
fn litellm_settings_fill_what_router_settings_leaves_unset() {
    let text = format!(
        "{MINIMAL}  - model_name: n\n    litellm_params: {{model: openai/gpt-4o, api_key: k}}\n\
         router_settings:\n  num_retries: 1\nlitellm_settings:\n  num_retries: 4\n  allowed_fails: 7\n  \
         request_timeout: 90\n  fallbacks: [{{m: [n]}}]\n  default_fallbacks: [n]\n"
    );
    let c = parse(&text).unwrap();
    let rs = &c.router_settings;
    assert_eq!((rs.num_retries(), rs.allowed_fails(), rs.timeout), (1, 7, Some(90.0)));
    assert_eq!(rs.fallbacks.len(), 1);
    assert_eq!(rs.default_fallbacks, ["n"]);
    let both = text.replace("router_settings:\n", "router_settings:\n  request_timeout: 30\n");
    assert_eq!(parse(&both).unwrap().router_settings.timeout, Some(30.0));
    let timeout_wins = both.replace("router_settings:\n", "router_settings:\n  timeout: 20\n");
    assert_eq!(parse(&timeout_wins).unwrap().router_settings.timeout, Some(20.0));
    for (bad, field) in [
        ("  request_timeout: 90\n", "litellm_settings.request_timeout"),
        ("  default_fallbacks: [n]\n", "litellm_settings.default_fallbacks"),
        ("  num_retries: 4\n", "litellm_settings.num_retries"),
    ] {
        let broken = text.replace(bad, &bad.replace("90", "-1").replace("[n]", "[zz]").replace("4", "11"));
        let err = parse(&broken).unwrap_err().to_string();
        assert!(err.contains(&format!("field `{field}`")), "{field}: {err}");
    }
}

/// `model_group_alias`: the alias resolves to its group, is listed unless hidden, and must be a
/// new name for a configured group.
#[test]
fn model_group_aliases_resolve_to_their_group() {
    let config = load_corpus("aliases-and-defaults.yaml");
    let router = Router::from_config(&config, "aliases.yaml").unwrap();
    assert_eq!(router.alias_target("gpt-4"), Some("gpt-4o"));
    assert_eq!(router.alias_target("claude-3-sonnet"), Some("claude-sonnet"));
    assert_eq!(router.alias_target("gpt-4o"), None);
    let listed: Vec<(&str, &str)> = router.listed_aliases().collect();
    assert_eq!(listed, [("gpt-3.5-turbo", "gpt-4o-mini"), ("gpt-4", "gpt-4o")]);
    // litellm_settings' retries and default fallbacks reached the router.
    assert_eq!(router.policy.num_retries, 4);
    assert_eq!(router.fallbacks("gpt-4o"), ["claude-sonnet"]);
    assert_eq!(router.context_window_fallbacks("gpt-4o-mini"), ["gpt-4o"]);

    for (alias, message) in [
        ("gpt-4: nope", "`nope` is not a model_name"),
        ("m: m", "is a model_name already"),
        ("\"a/b\\u0001\": m", "model_group_alias"),
    ] {
        let err =
            parse(&format!("{MINIMAL}router_settings:\n  model_group_alias:\n    {alias}\n")).unwrap_err().to_string();
        assert!(err.contains("router_settings.model_group_alias") && err.contains(message), "{alias}: {err}");
    }
}

/// `disable_cooldowns`, `max_fallbacks` and `default_fallbacks` reach the router's policy.
#[test]
fn cooldown_and_fallback_settings_reach_the_router() {
    let text = format!(
        "{MINIMAL}  - model_name: n\n    litellm_params: {{model: openai/gpt-4o, api_key: k}}\n\
         router_settings:\n  disable_cooldowns: true\n  max_fallbacks: 1\n  default_fallbacks: [n]\n  \
         fallbacks: [{{n: [m]}}]\n"
    );
    let router = Router::from_config(&parse(&text).unwrap(), "test.yaml").unwrap();
    assert!(!router.policy.cooldowns);
    assert_eq!(router.policy.max_fallbacks, 1);
    assert_eq!(router.fallbacks("m"), ["n"], "default fallbacks apply to groups without their own");
    assert_eq!(router.fallbacks("n"), ["m"]);
    let (_, picked) = router.pick("m", &[]).unwrap();
    for _ in 0..10 {
        assert!(!router.record_failure(&picked), "no cooldown when disabled");
    }
    let defaults = Router::from_config(&parse(MINIMAL).unwrap(), "test.yaml").unwrap();
    assert!(defaults.policy.cooldowns);
    assert_eq!(defaults.policy.max_fallbacks, usize::MAX);
}

/// `api_base` and `api_version` may be `os.environ/VAR`, as in LiteLLM; a wildcard upstream
/// model needs a wildcard model name (routing/tests.rs covers wildcards).
#[test]
fn deployment_settings_from_the_environment_and_wildcards() {
    let config = load_corpus("azure-regions.yaml");
    let east = &config.model_list[0].litellm_params;
    assert_eq!(east.api_base.as_deref(), Some("https://my-eastus.openai.azure.com"));
    assert_eq!(east.api_version.as_deref(), Some("2024-10-21"));
    let unset = MINIMAL.replace("api_key: k", "api_key: k\n      api_base: os.environ/TOLLGATE_TEST_SURELY_UNSET_BASE");
    let err = parse(&unset).unwrap_err().to_string();
    assert!(
        err.contains("model_list[0].litellm_params.api_base") && err.contains("TOLLGATE_TEST_SURELY_UNSET_BASE"),
        "{err}"
    );
    let wildcard = MINIMAL.replace("openai/gpt-4o-mini", "openai/*");
    assert!(parse(&wildcard).unwrap_err().to_string().contains("`model_name` must be one too"));
    assert!(parse(&wildcard.replace("model_name: m", "model_name: \"openai/*\"")).is_ok());
}

/// A setting of several deployments is named once, with their model names.
#[test]
fn each_unsupported_setting_is_named_once() {
    let mut text = String::from("model_list:\n");
    for i in 0..8 {
        text.push_str(&format!(
            "  - model_name: m{}\n    litellm_params: {{model: openai/gpt-4o-mini, api_key: k, max_retries: 1}}\n    \
             model_info: {{id: x{i}}}\n",
            i % 7
        ));
    }
    let c = parse(&text).unwrap();
    let report: Vec<String> = c.unsupported().iter().map(ToString::to_string).collect();
    assert_eq!(report.len(), 2, "{report:?}");
    assert!(
        report[0].starts_with(
            "`model_list[].litellm_params.max_retries` (m0, m1, m2, m3, m4 and 2 more) is not supported: "
        ),
        "{}",
        report[0]
    );
    assert!(report[1].starts_with("`model_list[].model_info.id` (m0"), "{}", report[1]);
}

#[test]
fn closest_names_only_what_looks_like_a_typo() {
    assert_eq!(edits("kitten", "sitting"), 3);
    assert_eq!(edits("", "abc"), 3);
    assert_eq!(edits("same", "same"), 0);
    let known = ["request_timeout", "timeout", "num_retries"];
    assert_eq!(closest("request_timeuot", known.into_iter()), Some("request_timeout"));
    assert_eq!(closest("Num_Retries", known.into_iter()), Some("num_retries"));
    assert_eq!(closest("redis", known.into_iter()), None);
}

/// docs/litellm-migration.md holds the tables of every key as the code has them. Set
/// TOLLGATE_BLESS_DOCS=1 to rewrite them after changing a table.
#[test]
fn the_migration_guide_lists_every_key() {
    const BEGIN: &str = "<!-- litellm-keys: generated from gateway/src/config/litellm/keys.rs -->\n";
    const END: &str = "<!-- litellm-keys: end -->\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/litellm-migration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else { panic!("markers missing in {path:?}") };
    let tables = markdown_tables();
    if std::env::var_os("TOLLGATE_BLESS_DOCS").is_some() {
        let updated = format!("{}{BEGIN}{tables}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert!(
        doc[start + BEGIN.len()..end] == tables,
        "the key tables are stale: run this test with TOLLGATE_BLESS_DOCS=1"
    );
}

fn markdown_tables() -> String {
    let mut out = String::new();
    for section in Section::ALL {
        let title = match section {
            Section::TopLevel => "Top level".to_owned(),
            other => format!("`{}`", other.name()),
        };
        let honoured = section.keys().iter().filter(|(_, s)| matches!(s, Status::Honoured(_))).count();
        let ignored = section.keys().len() - honoured;
        out.push_str(&format!("\n#### {title}: {honoured} honoured, {ignored} accepted and ignored\n\n"));
        out.push_str("| key | status | what Tollgate does, or what to use instead |\n|---|---|---|\n");
        for (key, status) in section.keys() {
            let (word, text) = match status {
                Status::Honoured(t) => ("honoured", t),
                Status::Ignored(t) => ("ignored", t),
            };
            out.push_str(&format!("| `{key}` | {word} | {} |\n", text.replace('|', "\\|")));
        }
    }
    out.push('\n');
    out
}
