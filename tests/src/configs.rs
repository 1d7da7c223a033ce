//! The configs of the services under test, as typed values written out with serde_yaml, and the
//! tenancy and prices every test gateway is given.
//!
//! Only the fields the tests set are modelled; a field left `None` is left out, so the service
//! applies its default. A section no struct models is merged in with `with_yaml` (the escape
//! hatch for the one test that needs it). Both services reject unknown keys, so a misspelt
//! field fails the start instead of passing unnoticed.

use crate::kafka::{kafka_bootstrap, Topics};
use crate::ledger::{cassandra_login, cassandra_node};
use anyhow::{bail, Result};
use serde::Serialize;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

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

/// `virtual_keys` for [`TENANT_KEYS`].
pub fn tenant_keys() -> Vec<VirtualKey> {
    TENANT_KEYS
        .iter()
        .map(|(key, team)| VirtualKey { key: (*key).to_owned(), team_id: team.map(str::to_owned) })
        .collect()
}

/// A `model_list` entry for `gpt-4o-mini` at `api_base`, served to clients as `name`.
pub fn model_entry(name: &str, api_base: &str) -> ModelEntry {
    ModelEntry {
        model_name: name.to_owned(),
        litellm_params: LitellmParams {
            model: "openai/gpt-4o-mini".to_owned(),
            api_base: Some(api_base.to_owned()),
            ..LitellmParams::default()
        },
        model_info: None,
    }
}

/// librdkafka properties from `(name, value)` pairs.
pub fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

// === the gateway ===

/// A gateway config (`gateway/src/config.rs`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GatewayConfig {
    pub gateway: GatewaySettings,
    pub model_list: Vec<ModelEntry>,
    pub prices: BTreeMap<String, Price>,
    pub virtual_keys: Vec<VirtualKey>,
    pub kafka: Option<GatewayKafka>,
    pub spool: Option<Spool>,
    pub embedded: Option<Embedded>,
    pub database: Option<Cql>,
    pub budgets: Option<Budgets>,
    pub general_settings: Option<GeneralSettings>,
    /// Further YAML, merged over the typed fields (see [`GatewayConfig::with_yaml`]).
    #[serde(skip)]
    pub extra: Mapping,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GatewaySettings {
    pub id: Option<String>,
    pub key_hash_secret: Option<String>,
    pub replicas: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub max_upload_bytes: Option<usize>,
    pub max_response_bytes: Option<usize>,
    pub metrics: Option<Metrics>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Metrics {
    pub listen: Option<String>,
    pub token: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ModelEntry {
    pub model_name: String,
    pub litellm_params: LitellmParams,
    pub model_info: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LitellmParams {
    pub model: String,
    pub api_base: Option<String>,
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_session_token: Option<String>,
    pub aws_region_name: Option<String>,
    pub vertex_project: Option<String>,
    pub vertex_location: Option<String>,
    /// A path to a service account key, or its JSON.
    pub vertex_credentials: Option<String>,
    pub timeout: Option<f64>,
    pub stream_timeout: Option<f64>,
    pub stream_max_duration: Option<f64>,
    /// simple-shuffle's weight.
    pub weight: Option<f64>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Price {
    pub input_nano_usd_per_token: i64,
    pub output_nano_usd_per_token: i64,
}

impl Price {
    /// [`INPUT_PRICE`] and [`OUTPUT_PRICE`].
    pub const TEST: Price = Price { input_nano_usd_per_token: INPUT_PRICE, output_nano_usd_per_token: OUTPUT_PRICE };
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VirtualKey {
    pub key: String,
    pub team_id: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GatewayKafka {
    pub bootstrap_servers: String,
    pub usage_topic: String,
    pub budget_state_topic: Option<String>,
    pub control_topic: Option<String>,
    pub producer_properties: BTreeMap<String, String>,
    pub client_properties: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Spool {
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct Embedded {
    pub path: PathBuf,
    pub max_size_bytes: Option<u64>,
}

/// How a service reaches Cassandra: the gateway's `database`, the consumer's `cassandra`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cql {
    pub contact_points: Vec<String>,
    pub keyspace: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<CqlTls>,
    pub replication: Option<CqlReplication>,
}

/// `NetworkTopologyStrategy` replication, for tests against deploy/local/cluster.
#[derive(Clone, Debug, Serialize)]
pub struct CqlReplication {
    pub class: String,
    pub data_centers: BTreeMap<String, u8>,
}

impl CqlReplication {
    /// RF 3 in the data centre `TOLLGATE_TEST_CQL_DC` names, when it is set.
    pub fn from_env() -> Option<CqlReplication> {
        let dc = std::env::var("TOLLGATE_TEST_CQL_DC").ok()?;
        Some(CqlReplication { class: "NetworkTopologyStrategy".into(), data_centers: [(dc, 3)].into_iter().collect() })
    }
}

impl Cql {
    /// `keyspace` on the test Cassandra, with its login.
    pub fn test(keyspace: &str) -> Cql {
        let (user, password) = cassandra_login();
        Cql {
            contact_points: vec![cassandra_node()],
            keyspace: keyspace.to_owned(),
            username: Some(user),
            password: Some(password),
            tls: None,
            replication: CqlReplication::from_env(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CqlTls {
    pub ca_file: PathBuf,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Budgets {
    pub when_stale: Option<String>,
    pub leases: Option<bool>,
}

impl Budgets {
    /// Serve when no consumer's budget state is fresh (tests without a ledger consumer).
    pub fn fail_open() -> Budgets {
        Budgets { when_stale: Some("fail_open".to_owned()), leases: None }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GeneralSettings {
    pub master_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_clientside_metadata_tags: Option<bool>,
}

// === impl GatewayConfig ===

impl GatewayConfig {
    /// `models`, each priced at the test prices, the test tenancy, and Kafka at `bootstrap` on
    /// `topic`.
    pub fn new(id: &str, models: &[ModelEntry], topic: &str, bootstrap: &str) -> GatewayConfig {
        GatewayConfig {
            gateway: GatewaySettings {
                id: Some(id.to_owned()),
                key_hash_secret: Some(KEY_HASH_SECRET.to_owned()),
                ..GatewaySettings::default()
            },
            prices: models.iter().map(|m| (m.model_name.clone(), Price::TEST)).collect(),
            model_list: models.to_vec(),
            virtual_keys: tenant_keys(),
            kafka: Some(GatewayKafka {
                bootstrap_servers: bootstrap.to_owned(),
                usage_topic: topic.to_owned(),
                ..GatewayKafka::default()
            }),
            ..GatewayConfig::default()
        }
    }

    /// The embedded set-up on the database file `db`: `models`, each priced at the test prices,
    /// the test tenancy, and the admin API on [`MASTER_KEY`].
    pub fn embedded(id: &str, models: &[ModelEntry], db: &std::path::Path) -> GatewayConfig {
        GatewayConfig {
            gateway: GatewaySettings { id: Some(id.to_owned()), ..GatewaySettings::default() },
            prices: models.iter().map(|m| (m.model_name.clone(), Price::TEST)).collect(),
            model_list: models.to_vec(),
            virtual_keys: tenant_keys(),
            general_settings: Some(GeneralSettings {
                master_key: Some(MASTER_KEY.to_owned()),
                ..GeneralSettings::default()
            }),
            embedded: Some(Embedded { path: db.to_path_buf(), max_size_bytes: None }),
            ..GatewayConfig::default()
        }
    }

    /// Tenancy in Cassandra (`keyspace`), the admin API on [`MASTER_KEY`], and models
    /// `gpt-4o-mini` and `gpt-4o` on the mock at `mock`, on the test Kafka's `topics`.
    pub fn tenancy(id: &str, mock: &str, topics: &Topics, keyspace: &str) -> GatewayConfig {
        let api_base = format!("{mock}/v1");
        let models = [model_entry("gpt-4o-mini", &api_base), model_entry("gpt-4o", &api_base)];
        let mut config = GatewayConfig::new(id, &models, &topics.usage, &kafka_bootstrap());
        if let Some(kafka) = &mut config.kafka {
            kafka.budget_state_topic = Some(topics.budget_state.clone());
            kafka.control_topic = Some(topics.control.clone());
        }
        config.database = Some(Cql::test(keyspace));
        config.general_settings =
            Some(GeneralSettings { master_key: Some(MASTER_KEY.to_owned()), ..GeneralSettings::default() });
        config
    }

    /// Merges the top-level sections of `yaml` into the config, over its typed fields: for a
    /// section no field models (`router_settings`, `billing`, ...).
    pub fn with_yaml(mut self, yaml: &str) -> Result<GatewayConfig> {
        merge(&mut self.extra, parse_sections(yaml)?);
        Ok(self)
    }

    /// The config file's text.
    pub fn to_yaml(&self) -> Result<String> {
        render(self, &self.extra)
    }
}

// === the ledger consumer ===

/// A ledger-consumer config (`ledger-consumer/src/config.rs`).
#[derive(Clone, Debug, Serialize)]
pub struct ConsumerConfig {
    pub kafka: ConsumerKafka,
    pub cassandra: Cql,
    pub batch: Batch,
    pub metrics_listen: Option<String>,
    pub budgets: Option<ConsumerBudgets>,
    /// Further YAML, merged over the typed fields (see [`ConsumerConfig::with_yaml`]).
    #[serde(skip)]
    pub extra: Mapping,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ConsumerKafka {
    pub bootstrap_servers: String,
    pub usage_topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    pub consumer_properties: BTreeMap<String, String>,
    pub client_properties: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Batch {
    pub max_messages: usize,
    pub max_wait_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ConsumerBudgets {
    pub state_topic: Option<String>,
    pub heartbeat_interval_ms: Option<u64>,
    pub alert_thresholds: Option<Vec<u8>>,
    pub webhook_url: Option<String>,
}

// === impl ConsumerConfig ===

impl ConsumerConfig {
    /// A consumer of `topic` (dead letters to `<topic>-dlq`) in `group`, folding into
    /// `keyspace` on the test Cassandra in batches of at most `max_messages`.
    pub fn new(topic: &str, group: &str, keyspace: &str, max_messages: usize) -> ConsumerConfig {
        ConsumerConfig {
            kafka: ConsumerKafka {
                bootstrap_servers: kafka_bootstrap(),
                usage_topic: topic.to_owned(),
                dlq_topic: format!("{topic}-dlq"),
                group_id: group.to_owned(),
                ..ConsumerKafka::default()
            },
            cassandra: Cql::test(keyspace),
            batch: Batch { max_messages, max_wait_ms: 20 },
            metrics_listen: None,
            budgets: None,
            extra: Mapping::new(),
        }
    }

    /// Merges the top-level sections of `yaml` into the config, over its typed fields.
    pub fn with_yaml(mut self, yaml: &str) -> Result<ConsumerConfig> {
        merge(&mut self.extra, parse_sections(yaml)?);
        Ok(self)
    }

    /// The config file's text.
    pub fn to_yaml(&self) -> Result<String> {
        render(self, &self.extra)
    }
}

// === rendering ===

fn parse_sections(yaml: &str) -> Result<Mapping> {
    match serde_yaml::from_str(yaml)? {
        Value::Mapping(sections) => Ok(sections),
        other => bail!("extra config is not a mapping of sections: {other:?}"),
    }
}

/// `typed` without its `None` fields, with `extra` merged over it.
fn render<T: Serialize>(typed: &T, extra: &Mapping) -> Result<String> {
    let mut doc = match without_nulls(serde_yaml::to_value(typed)?) {
        Value::Mapping(doc) => doc,
        other => bail!("a config is not a mapping: {other:?}"),
    };
    merge(&mut doc, extra.clone());
    Ok(serde_yaml::to_string(&doc)?)
}

/// Drops mapping entries whose value is null, at every depth: a field left out takes the
/// service's default, where an explicit null would be refused for most sections.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Mapping(map) => {
            Value::Mapping(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect())
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// Merges `from` into `into`: mappings key by key, at every depth; anything else replaces.
fn merge(into: &mut Mapping, from: Mapping) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Mapping(inner)), Value::Mapping(value)) => merge(inner, value),
            (Some(slot), value) => *slot = value,
            (None, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics { usage: "usage".into(), budget_state: "budget".into(), control: "control".into() }
    }

    #[test]
    fn extra_yaml_merges_into_typed_sections() -> Result<()> {
        let config = GatewayConfig::new("gw", &[model_entry("m", "http://mock/v1")], "usage", "k:9092")
            .with_yaml("gateway:\n  replicas: 2\nrouter_settings:\n  num_retries: 0\n")?;
        let doc: Value = serde_yaml::from_str(&config.to_yaml()?)?;
        assert_eq!(doc["gateway"]["id"], Value::from("gw"));
        assert_eq!(doc["gateway"]["replicas"], Value::from(2));
        assert_eq!(doc["router_settings"]["num_retries"], Value::from(0));
        assert_eq!(doc["prices"]["m"]["input_nano_usd_per_token"], Value::from(INPUT_PRICE));
        assert!(doc.get("spool").is_none(), "a None section is left out");
        assert!(doc["gateway"].get("metrics").is_none(), "a None field is left out");
        Ok(())
    }

    /// The services' own loaders, which refuse unknown keys, accept what the builders write.
    #[test]
    fn the_services_accept_the_configs() -> Result<()> {
        let mut gateway = GatewayConfig {
            budgets: Some(Budgets { when_stale: Some("fail_open".into()), leases: Some(false) }),
            spool: Some(Spool { dir: "spool".into() }),
            ..GatewayConfig::tenancy("gw", "http://mock", &topics(), "tg_ks")
        }
        .with_yaml("billing:\n  on_client_disconnect: charge_delivered\n")?;
        gateway.gateway.replicas = Some(2);
        gateway.gateway.metrics =
            Some(Metrics { listen: Some("127.0.0.1:9".into()), token: Some("metrics-token-0123456789".into()) });
        if let Some(kafka) = &mut gateway.kafka {
            kafka.producer_properties = properties(&[("reconnect.backoff.max.ms", "500")]);
        }
        gateway.model_list[0].litellm_params.stream_timeout = Some(0.5);
        tollgate_gateway::config::Config::parse(&gateway.to_yaml()?, "gateway")?;

        let mut consumer = ConsumerConfig::new("usage", "group", "tg_ks", 100);
        consumer.kafka.consumer_properties = properties(&[("session.timeout.ms", "6000")]);
        consumer.budgets = Some(ConsumerBudgets {
            state_topic: Some("budget".into()),
            heartbeat_interval_ms: Some(1000),
            alert_thresholds: Some(vec![50, 90]),
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
        });
        consumer.metrics_listen = Some("127.0.0.1:9".into());
        consumer.cassandra.tls = Some(CqlTls { ca_file: "ca.pem".into() });
        tollgate_ledger_consumer::config::Config::parse(&consumer.to_yaml()?, "consumer")?;
        Ok(())
    }
}
