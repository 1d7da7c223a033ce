//! The configs of the services under test, as YAML, and the tenancy and prices every test
//! gateway is given.

use crate::kafka::{kafka_bootstrap, Topics};
use crate::ledger::{cassandra_login, cassandra_node};

/// The tenancy every metering test uses: (raw key, team).
pub const TENANT_KEYS: &[(&str, Option<&str>)] = &[
    ("sk-e2e-alpha-1", Some("team-alpha")),
    ("sk-e2e-alpha-2", Some("team-alpha")),
    ("sk-e2e-beta-1", Some("team-beta")),
    ("sk-e2e-solo", None),
];

/// Prices the metering tests configure for `gpt-4o-mini`, nano-USD per token.
pub const INPUT_PRICE: i64 = 150;
pub const OUTPUT_PRICE: i64 = 600;

/// The server secret every test gateway hashes virtual keys with.
pub const KEY_HASH_SECRET: &str = "tollgate-e2e-key-hash-secret-0123456789abcdef";

/// The master key of the tenancy tests' gateways.
pub const MASTER_KEY: &str = "sk-master-e2e-0123456789";

/// `virtual_keys:` YAML for [`TENANT_KEYS`].
pub fn tenant_keys_yaml() -> String {
    TENANT_KEYS
        .iter()
        .map(|(k, team)| match team {
            Some(t) => format!("  - key: {k}\n    team_id: {t}\n"),
            None => format!("  - key: {k}\n"),
        })
        .collect()
}

/// The YAML lines (at `indent`) that give a config the test Cassandra's login.
pub fn cassandra_login_yaml(indent: &str) -> String {
    let (user, password) = cassandra_login();
    format!("{indent}username: {user}\n{indent}password: {password}\n")
}

/// A `model_list` entry for `gpt-4o-mini` at `api_base`, served to clients as `name`.
pub fn model_entry(name: &str, api_base: &str, extra_params: &str) -> String {
    format!("  - model_name: {name}\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: \"{api_base}\"{extra_params}}}\n")
}

/// A gateway config: the given models (each priced at the test prices), the test tenancy, Kafka
/// at `bootstrap` on `topic`, and any `extra` top-level YAML (`router_settings:`, `spool:`).
pub fn gateway_yaml(id: &str, models: &[String], topic: &str, bootstrap: &str, extra: &str) -> String {
    let mut names: Vec<&str> =
        models.iter().filter_map(|m| m.split("model_name: ").nth(1)?.split('\n').next()).collect();
    names.sort_unstable();
    names.dedup();
    let prices: String = names
        .iter()
        .map(|n| {
            format!("  {n}: {{input_nano_usd_per_token: {INPUT_PRICE}, output_nano_usd_per_token: {OUTPUT_PRICE}}}\n")
        })
        .collect();
    format!(
        "gateway:\n  id: {id}\n  key_hash_secret: {KEY_HASH_SECRET}\nmodel_list:\n{models}prices:\n{prices}virtual_keys:\n{keys}kafka:\n  bootstrap_servers: {bootstrap}\n  usage_topic: {topic}\n{extra}",
        models = models.concat(),
        keys = tenant_keys_yaml(),
    )
}

/// A ledger-consumer config on the test Kafka and Cassandra. `consumer_properties` is a YAML
/// flow mapping of librdkafka settings (`{}` for none).
pub fn consumer_yaml(
    topic: &str,
    group: &str,
    keyspace: &str,
    consumer_properties: &str,
    max_messages: usize,
) -> String {
    format!(
        "kafka:\n  bootstrap_servers: {kafka}\n  usage_topic: {topic}\n  dlq_topic: {topic}-dlq\n  group_id: {group}\n  \
         consumer_properties: {consumer_properties}\ncassandra:\n  contact_points: [{cql}]\n  keyspace: {keyspace}\n{login}\
         batch:\n  max_messages: {max_messages}\n  max_wait_ms: 20\n",
        kafka = kafka_bootstrap(),
        cql = cassandra_node(),
        login = cassandra_login_yaml("  "),
    )
}

/// A gateway config with tenancy in Cassandra (`keyspace`), the admin API on [`MASTER_KEY`],
/// models `gpt-4o-mini` and `gpt-4o` on the mock, and `extra` YAML appended.
pub fn tenancy_gateway_yaml(id: &str, mock: &str, topics: &Topics, keyspace: &str, extra: &str) -> String {
    let models =
        [model_entry("gpt-4o-mini", &format!("{mock}/v1"), ""), model_entry("gpt-4o", &format!("{mock}/v1"), "")];
    gateway_yaml(
        id,
        &models,
        &topics.usage,
        &kafka_bootstrap(),
        &format!(
            "  budget_state_topic: {bs}\n  control_topic: {ct}\ndatabase:\n  contact_points: [{cql}]\n  keyspace: {keyspace}\n\
             {login}general_settings:\n  master_key: {MASTER_KEY}\n{extra}",
            login = cassandra_login_yaml("  "),
            bs = topics.budget_state,
            ct = topics.control,
            cql = cassandra_node(),
        ),
    )
}
