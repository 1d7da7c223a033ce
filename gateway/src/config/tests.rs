use super::*;

/// The smallest valid config; other config tests (`cache_tls`) build on it too.
pub(crate) const MINIMAL: &str = r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:9/v1
      api_key: sk-upstream
virtual_keys:
  - key: sk-tenant-1
    team_id: payments
kafka:
  bootstrap_servers: 127.0.0.1:9092
"#;

/// Found by fuzzing: a key's alias, team, user or organization, the gateway id and model
/// names were taken from the file as they were, and they go into every usage event. One the
/// ledger refuses (a control character, a `/` in an id, over 256 bytes) had each of those
/// events dead-lettered, its requests unbilled; an id with `/` could pose as another scope.
#[test]
fn names_and_ids_that_reach_usage_events_are_bounded() {
    let long = "x".repeat(300);
    for (from, to, field) in [
        ("    team_id: payments", "    team_id: a/model/b", "virtual_keys[0].team_id"),
        ("    team_id: payments", "    team_id: \"pay ments\"", "virtual_keys[0].team_id"),
        ("    team_id: payments", "    user_id: \"u\\0\"", "virtual_keys[0].user_id"),
        ("    team_id: payments", &format!("    organization_id: {long}"), "virtual_keys[0].organization_id"),
        ("    team_id: payments", "    key_alias: \"a\\tb\"", "virtual_keys[0].key_alias"),
        ("  - model_name: gpt-4o-mini", &format!("  - model_name: {long}"), "model_list[0].model_name"),
        (
            "      model: openai/gpt-4o-mini",
            &format!("      model: openai/{long}"),
            "model_list[0].litellm_params.model",
        ),
        ("kafka:", "gateway:\n  id: \"gw\\n1\"\nkafka:", "gateway.id"),
    ] {
        let text = MINIMAL.replace(from, to);
        assert_ne!(text, MINIMAL, "{from}");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains(&format!("field `{field}`")), "{to}: {err}");
    }
    let fine = MINIMAL.replace("    team_id: payments", "    team_id: payments\n    key_alias: checkout / eu");
    assert!(Config::parse(&fine, "test.yaml").is_ok());
}

#[test]
fn parses_a_minimal_config() {
    let c = Config::parse(MINIMAL, "test.yaml").unwrap();
    assert_eq!(c.model_list[0].model_name, "gpt-4o-mini");
    assert_eq!(c.kafka.as_ref().map(|k| k.usage_topic.as_str()), Some("usage"));
    assert_eq!(c.gateway.listen, "127.0.0.1:4000");
}

#[test]
fn unknown_fields_name_the_field_and_line() {
    let text = MINIMAL.replace("      api_key: sk-upstream", "      api_key: sk-upstream\n      api_bsae: x");
    let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("api_bsae"), "{err}");
    assert!(err.contains("line"), "{err}");
    assert!(err.contains("test.yaml"), "{err}");
}

#[test]
fn secrets_do_not_print() {
    let c = Config::parse(MINIMAL, "test.yaml").unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("sk-upstream") && !debug.contains("sk-tenant-1"), "{debug}");
}

#[test]
fn missing_env_var_names_the_field() {
    let text = MINIMAL.replace("api_key: sk-upstream", "api_key: os.environ/TOLLGATE_TEST_SURELY_UNSET");
    let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("model_list[0].litellm_params.api_key"), "{err}");
    assert!(err.contains("TOLLGATE_TEST_SURELY_UNSET"), "{err}");
}

#[test]
fn timeouts_must_be_sane() {
    for bad in ["0", "-1", ".nan", ".inf", "1e12"] {
        let text =
            MINIMAL.replace("      api_key: sk-upstream", &format!("      api_key: sk-upstream\n      timeout: {bad}"));
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("model_list[0].litellm_params.timeout"), "{bad}: {err}");
    }
}

#[test]
fn response_and_stream_bounds_are_validated() {
    let c = Config::parse(MINIMAL, "test.yaml").unwrap();
    assert_eq!(c.gateway.max_response_bytes, 64 * 1024 * 1024);
    let text = format!("gateway:\n  max_response_bytes: 0\n{MINIMAL}");
    let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("gateway.max_response_bytes"), "{err}");
    for bad in ["0", ".nan", "1e12"] {
        let text = MINIMAL.replace(
            "      api_key: sk-upstream",
            &format!("      api_key: sk-upstream\n      stream_max_duration: {bad}"),
        );
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("model_list[0].litellm_params.stream_max_duration"), "{bad}: {err}");
    }
    let text = format!("{MINIMAL}router_settings:\n  stream_max_duration: -1\n");
    let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("router_settings.stream_max_duration"), "{err}");
}

#[test]
fn reads_litellm_router_settings_and_reports_unsupported_keys() {
    let text = format!(
        "{MINIMAL}router_settings:\n  routing_strategy: least-busy\n  num_retries: 3\n  redis_host: localhost\n  \
             fallbacks: [{{\"gpt-4o-mini\": [\"gpt-4o-mini\"]}}]\nlitellm_settings:\n  drop_params: true\n"
    );
    let c = Config::parse(&text, "test.yaml").unwrap();
    assert_eq!(c.router_settings.routing_strategy, RoutingStrategy::LeastBusy);
    assert_eq!(c.router_settings.num_retries(), 3);
    let fields: Vec<String> = c.unsupported().into_iter().map(|u| u.field).collect();
    assert_eq!(fields, vec!["router_settings.redis_host", "litellm_settings.drop_params"]);
}

#[test]
fn fallbacks_must_name_known_models() {
    let text = format!("{MINIMAL}router_settings:\n  fallbacks: [{{\"gpt-4o-mini\": [\"gpt-5\"]}}]\n");
    let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("router_settings.fallbacks[0]") && err.contains("gpt-5"), "{err}");
}

/// Every shipped example config loads, resolves a price for every model and builds a router.
#[test]
fn shipped_examples_load() {
    for var in [
        "OPENAI_API_KEY",
        "AZURE_API_KEY_EASTUS",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GROQ_API_KEY",
        "TOLLGATE_MASTER_KEY",
        "DATABASE_URL",
        "AZURE_KEY_EASTUS",
        "AZURE_KEY_WESTEUROPE",
        "AZURE_KEY_JAPANEAST",
        "TOLLGATE_KEY_SUPPORT_BOT",
    ] {
        std::env::set_var(var, "test-value");
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") && !path.to_string_lossy().contains("ledger-consumer") {
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            crate::check_config(&config, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
            loaded += 1;
        }
    }
    assert!(loaded >= 5, "only {loaded} example configs found");
    let migration = Config::load(&dir.join("litellm-migration.yaml")).unwrap();
    let unsupported: Vec<String> = migration.unsupported().into_iter().map(|u| u.field).collect();
    assert!(unsupported.contains(&"litellm_settings.drop_params".to_owned()), "{unsupported:?}");
    assert!(unsupported.contains(&"general_settings.database_url".to_owned()), "{unsupported:?}");
}

#[test]
fn prices_are_bounded() {
    let text = format!(
        "{MINIMAL}prices:\n  gpt-4o-mini: {{input_nano_usd_per_token: 1000001, output_nano_usd_per_token: 1}}\n"
    );
    let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("prices.gpt-4o-mini") && err.contains("1000000"), "{err}");
    let text =
        MINIMAL.replace("      api_key: sk-upstream", "      api_key: sk-upstream\n      output_cost_per_token: 0.01");
    let config = Config::parse(&text, "test.yaml").unwrap();
    let err = crate::check_config(&config, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("model_list[0]") && err.contains("highest"), "{err}");
}

#[test]
fn client_connection_timeouts_default_long_and_must_be_sane() {
    let c = Config::parse(MINIMAL, "test.yaml").unwrap();
    assert_eq!((c.gateway.keep_alive_secs, c.gateway.client_request_timeout_ms), (75, 75_000));
    let text = format!("gateway:\n  keep_alive_secs: 120\n  client_request_timeout_ms: 2500\n{MINIMAL}");
    let c = Config::parse(&text, "test.yaml").unwrap();
    assert_eq!((c.gateway.keep_alive_secs, c.gateway.client_request_timeout_ms), (120, 2_500));
    for (field, bad) in [
        ("keep_alive_secs", "0"),
        ("keep_alive_secs", "3601"),
        ("client_request_timeout_ms", "0"),
        ("client_request_timeout_ms", "3600001"),
    ] {
        let text = format!("gateway:\n  {field}: {bad}\n{MINIMAL}");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains(&format!("gateway.{field}")) && err.contains("test.yaml"), "{field}: {bad}: {err}");
    }
    let err = Config::parse(&format!("gateway:\n  keep_alive_secs: -1\n{MINIMAL}"), "test.yaml").unwrap_err();
    assert!(err.to_string().contains("keep_alive_secs"), "{err}");
}

#[test]
fn console_settings_default_on_and_are_bounded() {
    let c = Config::parse(MINIMAL, "test.yaml").unwrap();
    assert!(c.gateway.console.enabled && !c.gateway.console.secure_cookie);
    assert_eq!((c.gateway.console.session_ttl_secs, c.gateway.console.sign_in_per_ip_per_minute), (28_800, 10));
    let text = format!("gateway:\n  console:\n    enabled: false\n    secure_cookie: true\n{MINIMAL}");
    let c = Config::parse(&text, "test.yaml").unwrap();
    assert!(!c.gateway.console.enabled && c.gateway.console.secure_cookie);
    for (field, bad) in [
        ("session_ttl_secs", "59"),
        ("session_ttl_secs", "604801"),
        ("session_idle_secs", "30000"),
        ("sign_in_per_ip_per_minute", "0"),
        ("sign_in_per_minute", "100001"),
        ("max_sessions", "0"),
    ] {
        let text = format!("gateway:\n  console:\n    {field}: {bad}\n{MINIMAL}");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains(&format!("gateway.console.{field}")), "{field}: {bad}: {err}");
    }
    let err = Config::parse(&format!("gateway:\n  console:\n    nope: 1\n{MINIMAL}"), "test.yaml").unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn metric_label_caps_are_bounded() {
    let c = Config::parse(MINIMAL, "test.yaml").unwrap();
    assert_eq!((c.gateway.metrics.labels.cap, c.gateway.metrics.labels.customer), (100, false));
    for bad in ["0", "10001"] {
        let text = format!("gateway:\n  metrics:\n    labels: {{cap: {bad}}}\n{MINIMAL}");
        let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
        assert!(err.contains("gateway.metrics.labels.cap"), "{bad}: {err}");
    }
    let text = format!("gateway:\n  metrics:\n    labels: {{cap: 10000, customer: true}}\n{MINIMAL}");
    assert!(Config::parse(&text, "test.yaml").unwrap().gateway.metrics.labels.customer);
}

#[test]
fn a_key_needs_a_value() {
    let text = MINIMAL.replace("  - key: sk-tenant-1\n", "  - key_alias: nothing\n");
    let err = Config::parse(&text, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("virtual_keys[0]"), "{err}");
}

#[test]
fn usage_generations_name_every_earlier_topic() {
    let c = Config::parse(MINIMAL, "test.yaml").unwrap();
    assert_eq!(c.kafka.as_ref().map(|k| k.usage_generation), Some(0));
    let next = MINIMAL.replace(
        "  bootstrap_servers: 127.0.0.1:9092\n",
        "  bootstrap_servers: 127.0.0.1:9092\n  usage_topic: usage.g1\n  usage_generation: 1\n",
    );
    let err = Config::parse(&next, "test.yaml").unwrap_err().to_string();
    assert!(err.contains("field `kafka.earlier_usage_topics`"), "{err}");
    let fine = next.replace("  usage_generation: 1\n", "  usage_generation: 1\n  earlier_usage_topics: [usage]\n");
    let c = Config::parse(&fine, "test.yaml").unwrap();
    let generations = c.kafka.as_ref().map(|k| k.usage_generations().unwrap());
    assert_eq!(generations.as_ref().map(|g| g.topic(0)), Some("usage"));
    assert_eq!(generations.as_ref().map(|g| g.topic(1)), Some("usage.g1"));
}

/// `cache_params` with `type: redis`: an address one way only, in LiteLLM's shape; secrets
/// resolved; every mistake names its field.
#[test]
fn a_redis_cache_is_checked_field_by_field() {
    let with = |params: &str| format!("{MINIMAL}litellm_settings:\n  cache: true\n  cache_params: {params}\n");
    let ok =
        Config::parse(&with("{type: redis, host: 10.0.0.5, port: 6380, password: \"p@ss word\"}"), "t.yaml").unwrap();
    let params = ok.litellm_settings.response_cache().unwrap();
    assert_eq!(params.redis_url().unwrap().expose(), "redis://:p%40ss%20word@10.0.0.5:6380");
    std::env::set_var("TOLLGATE_TEST_CACHE_URL", "redis://127.0.0.1:6390/2");
    let from_env =
        Config::parse(&with("{type: redis, redis_url: os.environ/TOLLGATE_TEST_CACHE_URL}"), "t.yaml").unwrap();
    let params = from_env.litellm_settings.response_cache().unwrap();
    assert_eq!(params.redis_url().unwrap().expose(), "redis://127.0.0.1:6390/2");
    let local = Config::parse(&with("{type: local}"), "t.yaml").unwrap();
    assert!(local.litellm_settings.response_cache().unwrap().redis_url().is_none());
    for (params, field) in [
        ("{type: redis}", "cache_params.host"),
        ("{type: redis, url: \"redis://a:1\", host: b}", "cache_params.url"),
        ("{type: redis, url: \"http://a:1\"}", "cache_params.url"),
        ("{type: redis, host: a, port: not-a-port}", "cache_params.port"),
        ("{type: redis, host: a, port: 70000}", "cache_params.port"),
        ("{type: local, host: a}", "cache_params.type"),
        ("{type: redis, host: a, redis_timeout_ms: 0}", "cache_params.redis_timeout_ms"),
        ("{type: redis, host: a, redis_timeout_ms: 60000}", "cache_params.redis_timeout_ms"),
        ("{type: redis, host: a, password: os.environ/TOLLGATE_TEST_UNSET_VAR}", "cache_params.password"),
        ("{type: memcached}", "cache_params.type"),
        ("{type: redis, host: a, redis_hots: b}", "redis_hots"),
    ] {
        let err = Config::parse(&with(params), "t.yaml").unwrap_err().to_string();
        assert!(err.contains(field), "{params}: {err}");
    }
}

#[test]
fn the_batch_id_secret_is_long_enough_and_resolved() {
    let with =
        |secret: &str| MINIMAL.replace("kafka:", &format!("gateway:\n  batches:\n    id_secret: {secret}\nkafka:"));
    let err = Config::parse(&with("too-short"), "test.yaml").unwrap_err().to_string();
    assert!(err.contains("gateway.batches.id_secret") && err.contains("32"), "{err}");
    let err = Config::parse(&with("os.environ/TOLLGATE_TEST_UNSET_BATCH_SECRET"), "test.yaml").unwrap_err().to_string();
    assert!(err.contains("gateway.batches.id_secret"), "{err}");
    let c = Config::parse(&with(&"s".repeat(32)), "test.yaml").unwrap();
    assert_eq!(c.gateway.batches.id_secret.map(|s| s.expose().len()), Some(32));
    assert!(
        !format!("{:?}", Config::parse(&with(&"s".repeat(32)), "test.yaml").unwrap().gateway.batches).contains("ssss")
    );
}
