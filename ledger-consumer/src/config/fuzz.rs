//! Property and fuzz tests of the consumer's config loader (`Config::parse`): arbitrary bytes,
//! YAML token soup, a full config mutated (fields removed, unknown keys, re-typed values, huge
//! numbers, `.nan`/`.inf`, deep nesting, tags) and anchors and aliases up to billion-laughs
//! shapes. Never a panic or a hang; what loads keeps every documented invariant.

use super::*;
use proptest::prelude::*;
use tollgate_fuzzing::{run, yaml};

/// Every section and field of the consumer's config.
const FULL: &str = r#"
kafka:
  bootstrap_servers: 127.0.0.1:9092
  usage_topic: usage
  dlq_topic: usage-dlq
  group_id: tollgate-ledger
  consumer_properties: {fetch.min.bytes: "1"}
  client_properties: {security.protocol: plaintext}
cassandra:
  contact_points: [127.0.0.1:9042, "[::1]:9042"]
  keyspace: tollgate
  create_schema: true
  username: ledger
  password: s3cret
  tls: {ca_file: /etc/ssl/ca.pem, cert_file: /etc/ssl/c.pem, key_file: /etc/ssl/k.pem}
batch: {max_messages: 20000, max_wait_ms: 50}
metrics_listen: 127.0.0.1:9465
budgets:
  enabled: true
  state_topic: budget-state
  heartbeat_interval_ms: 5000
  alert_thresholds: [80, 95]
  webhook_url: https://hooks.example.com/t0k3n
  consumer_id: consumer-1
"#;

const WORDS: &[&str] = &[
    "kafka",
    "bootstrap_servers",
    "usage_topic",
    "dlq_topic",
    "group_id",
    "consumer_properties",
    "client_properties",
    "cassandra",
    "contact_points",
    "keyspace",
    "create_schema",
    "username",
    "password",
    "tls",
    "ca_file",
    "cert_file",
    "key_file",
    "batch",
    "max_messages",
    "max_wait_ms",
    "metrics_listen",
    "budgets",
    "enabled",
    "state_topic",
    "heartbeat_interval_ms",
    "alert_thresholds",
    "webhook_url",
    "consumer_id",
    "tollgate",
    "a-b",
    "127.0.0.1:9042",
];

fn seeds() -> Vec<serde_json::Value> {
    vec![yaml::document_of(FULL), yaml::document_of(tests::OK)]
}

/// Parses without panicking; what loads keeps the invariants `parse` promises.
fn parse_holds(text: &str) -> Result<(), TestCaseError> {
    let Ok(c) = Config::parse(text, "fuzz.yaml") else { return Ok(()) };
    prop_assert!(tollgate_schemas::cql::validate_keyspace(&c.cassandra.keyspace).is_ok());
    prop_assert!(!c.cassandra.contact_points.is_empty());
    prop_assert_eq!(c.cassandra.username.is_some(), c.cassandra.password.is_some());
    prop_assert!(c.budgets.alert_thresholds.iter().all(|p| (1..=100).contains(p)));
    prop_assert!(c.budgets.heartbeat_interval_ms >= 100);
    prop_assert!(c.batch.max_messages > 0);
    let secrets = c.kafka.client_properties.values().chain(c.kafka.consumer_properties.values());
    prop_assert!(
        secrets.chain(&c.budgets.webhook_url).all(|s| !s.expose().starts_with("os.environ/")),
        "an environment reference was left unresolved"
    );
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
    fn mutated_configs_load_or_name_an_error(text in yaml::mutated(seeds(), WORDS)) {
        run::watchdog(move || parse_holds(&text))?;
    }

}

proptest! {
    // Each case may count up to `tollgate_schemas::yaml::MAX_NODES` nodes: fewer cases.
    #![proptest_config(run::config(128))]

    /// Anchors and aliases where the config takes maps and lists (and at the top level):
    /// refused or read within the node bound, never expanded without limit.
    #[test]
    fn aliases_are_bounded(block in yaml::laughs(4), top in yaml::laughs(0), place in 0usize..3) {
        run::watchdog(move || {
            let text = match place {
                0 => FULL.replace("  client_properties: {security.protocol: plaintext}\n", &format!("  client_properties:\n{block}")),
                1 => format!("{top}{}", tests::OK),
                _ => FULL.replace("  alert_thresholds: [80, 95]\n", &format!("  alert_thresholds: &t [80, 95]\n  x:\n{block}")),
            };
            parse_holds(&text)
        })?;
    }
}

#[test]
fn the_seeds_load() {
    assert!(Config::parse(FULL, "full.yaml").is_ok());
    assert!(Config::parse(tests::OK, "ok.yaml").is_ok());
}
