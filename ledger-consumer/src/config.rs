//! The ledger consumer's YAML configuration. Unknown fields are errors naming the field.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use tollgate_schemas::secret::Secret;
use tollgate_schemas::topics::UsageGenerations;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("config file {path}: field `{field}`: {message}")]
    Invalid { path: String, field: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub cassandra: tollgate_schemas::store::CqlDatabase,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Serve Prometheus metrics on this address.
    pub metrics_listen: Option<String>,
    #[serde(default)]
    pub budgets: BudgetsConfig,
}

/// Budget push-back to the gateways (docs/design.md §5.2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Publish budget state and heartbeats (gateways with hard budgets need them).
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_budget_state_topic")]
    pub state_topic: String,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// Alert thresholds, percent of `max_budget`, for records that name none.
    #[serde(default = "default_thresholds")]
    pub alert_thresholds: Vec<u8>,
    /// Where budget alerts are POSTed (JSON); none: alerts only go to the budget-state topic.
    /// A secret (such URLs carry tokens): never logged; may be `os.environ/VAR`.
    pub webhook_url: Option<Secret>,
    /// Names this consumer in heartbeats and alert claims; defaults to host and process id.
    pub consumer_id: Option<String>,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            enabled: true,
            state_topic: default_budget_state_topic(),
            heartbeat_interval_ms: default_heartbeat_ms(),
            alert_thresholds: default_thresholds(),
            webhook_url: None,
            consumer_id: None,
        }
    }
}

fn default_budget_state_topic() -> String {
    tollgate_schemas::topics::BUDGET_STATE.to_owned()
}
fn default_heartbeat_ms() -> u64 {
    5_000
}
fn default_thresholds() -> Vec<u8> {
    vec![80, 95]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    #[serde(default = "default_usage_topic")]
    pub usage_topic: String,
    /// The generation of the usage topic `usage_topic` is (docs/design.md §4.10): 0 until the
    /// first repartition.
    #[serde(default)]
    pub usage_generation: u8,
    /// The topics of the earlier generations, generation 0 first: read too, until they are
    /// drained and no gateway publishes there any more.
    #[serde(default)]
    pub earlier_usage_topics: Vec<String>,
    #[serde(default = "default_dlq_topic")]
    pub dlq_topic: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Extra librdkafka consumer properties. Offset handling (`enable.auto.offset.store`)
    /// cannot be overridden: offsets are stored only after the ledger write.
    #[serde(default)]
    pub consumer_properties: HashMap<String, Secret>,
    /// librdkafka properties for every Kafka client of the consumer (the usage consumer, the
    /// dead-letter and budget-state producers, metadata lookups): `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`, ... Values may be
    /// `os.environ/VAR`.
    #[serde(default)]
    pub client_properties: HashMap<String, Secret>,
}

impl KafkaConfig {
    /// The usage topic's generations (checked when the config loads).
    pub fn usage_generations(&self) -> Result<UsageGenerations, (&'static str, String)> {
        UsageGenerations::new(&self.usage_topic, self.usage_generation, &self.earlier_usage_topics)
    }

    /// The properties every Kafka client of the consumer starts from.
    pub fn client_config(&self) -> rdkafka::config::ClientConfig {
        let mut client = rdkafka::config::ClientConfig::new();
        for (k, v) in &self.client_properties {
            client.set(k, v.expose());
        }
        client.set("bootstrap.servers", &self.bootstrap_servers);
        client
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_messages: default_max_messages(), max_wait_ms: default_max_wait_ms() }
    }
}

fn default_usage_topic() -> String {
    tollgate_schemas::topics::USAGE.to_owned()
}
fn default_dlq_topic() -> String {
    tollgate_schemas::topics::USAGE_DLQ.to_owned()
}
fn default_group() -> String {
    "tollgate-ledger".to_owned()
}
fn default_true() -> bool {
    true
}
/// Larger batches fold more events per conditional row write (measured in
/// benches/results/ledger-*.md: 5,000 -> 20,000 roughly halves the time to drain a backlog).
fn default_max_messages() -> usize {
    20_000
}
fn default_max_wait_ms() -> u64 {
    50
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: display.clone(), source })?;
        Config::parse(&text, &display)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = tollgate_schemas::yaml::from_str(text)
            .map_err(|source| ConfigError::Parse { path: origin.to_owned(), source })?;
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            field: field.to_owned(),
            message,
        };
        tollgate_schemas::cql::validate_keyspace(&config.cassandra.keyspace)
            .map_err(|e| invalid("cassandra.keyspace", e.to_string()))?;
        // `os.environ/VAR` wherever a secret may go.
        let env = HashMap::new();
        for (section, properties) in [
            ("kafka.client_properties", &mut config.kafka.client_properties),
            ("kafka.consumer_properties", &mut config.kafka.consumer_properties),
        ] {
            for (name, value) in properties.iter_mut() {
                *value = value.resolve(&env).map_err(|m| invalid(&format!("{section}.{name}"), m.to_string()))?;
            }
        }
        if let Some(url) = &config.budgets.webhook_url {
            config.budgets.webhook_url =
                Some(url.resolve(&env).map_err(|m| invalid("budgets.webhook_url", m.to_string()))?);
        }
        let mut connection = config.cassandra.connection();
        connection.resolve(&env).map_err(|(field, m)| invalid(&format!("cassandra.{field}"), m))?;
        connection.validate().map_err(|(field, m)| invalid(&format!("cassandra.{field}"), m))?;
        config.cassandra.password = connection.password;
        if config.budgets.alert_thresholds.iter().any(|p| *p == 0 || *p > 100) {
            return Err(invalid("budgets.alert_thresholds", "each threshold must be 1 to 100 (percent)".into()));
        }
        if config.budgets.heartbeat_interval_ms < 100 {
            return Err(invalid("budgets.heartbeat_interval_ms", "must be at least 100".into()));
        }
        config.kafka.usage_generations().map_err(|(field, message)| invalid(field, message))?;
        if config.batch.max_messages == 0 {
            return Err(invalid("batch.max_messages", "must be positive".into()));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const OK: &str =
        "kafka:\n  bootstrap_servers: 127.0.0.1:9092\ncassandra:\n  contact_points: [127.0.0.1:9042]\n";

    #[test]
    fn parses_with_defaults() {
        let c = Config::parse(OK, "c.yaml").unwrap();
        assert_eq!(c.kafka.usage_topic, "usage");
        assert_eq!(c.cassandra.keyspace, "tollgate");
        assert_eq!(c.batch.max_messages, 20_000);
    }

    #[test]
    fn secrets_come_from_the_environment_and_never_print() {
        std::env::set_var("TOLLGATE_TEST_CONSUMER_SASL", "s3cret-pass");
        let text = format!(
            "{OK}  username: ledger\n  password: os.environ/TOLLGATE_TEST_CONSUMER_SASL\n"
        )
        .replace(
            "bootstrap_servers: 127.0.0.1:9092\n",
            "bootstrap_servers: 127.0.0.1:9092\n  client_properties: {sasl.password: os.environ/TOLLGATE_TEST_CONSUMER_SASL}\n",
        );
        let c = Config::parse(&text, "c.yaml").unwrap();
        assert_eq!(c.kafka.client_properties["sasl.password"].expose(), "s3cret-pass");
        assert_eq!(c.cassandra.password.as_ref().map(Secret::expose), Some("s3cret-pass"));
        assert!(!format!("{c:?}").contains("s3cret-pass"));
        let err = Config::parse(&format!("{OK}  username: ledger\n"), "c.yaml").unwrap_err().to_string();
        assert!(err.contains("cassandra.password"), "{err}");
        let err = Config::parse(&text.replace("TOLLGATE_TEST_CONSUMER_SASL}", "TOLLGATE_SURELY_UNSET}"), "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.client_properties.sasl.password") && err.contains("TOLLGATE_SURELY_UNSET"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = Config::parse(&OK.replace("contact_points", "contact_pionts"), "c.yaml").unwrap_err().to_string();
        assert!(err.contains("contact_pionts"), "{err}");
        let err = Config::parse(&format!("{OK}  keyspace: \"a-b\"\n"), "c.yaml").unwrap_err().to_string();
        assert!(err.contains("cassandra.keyspace"), "{err}");
    }

    #[test]
    fn usage_generations_name_every_earlier_topic() {
        let c = Config::parse(OK, "c.yaml").unwrap();
        assert_eq!(c.kafka.usage_generations().unwrap().topics(), ["usage".to_owned()]);
        let next = OK.replace(
            "bootstrap_servers: 127.0.0.1:9092\n",
            "bootstrap_servers: 127.0.0.1:9092\n  usage_topic: usage.g1\n  usage_generation: 1\n",
        );
        let err = Config::parse(&next, "c.yaml").unwrap_err().to_string();
        assert!(err.contains("kafka.earlier_usage_topics"), "{err}");
        let c = Config::parse(
            &next.replace("usage_generation: 1\n", "usage_generation: 1\n  earlier_usage_topics: [usage]\n"),
            "c.yaml",
        )
        .unwrap();
        assert_eq!(c.kafka.usage_generations().unwrap().topic(0), "usage");
    }

    #[test]
    fn replication_and_consistency_are_configuration() {
        let c = Config::parse(OK, "c.yaml").unwrap();
        assert_eq!(c.cassandra.replication, tollgate_schemas::cql::Replication::default());
        assert_eq!(c.cassandra.consistency, tollgate_schemas::store::CqlConsistency::default());
        let cluster = format!(
            "{OK}  replication: {{class: NetworkTopologyStrategy, data_centers: {{dc1: 3}}}}\n  consistency: {{level: quorum, serial: serial}}\n"
        );
        let c = Config::parse(&cluster, "c.yaml").unwrap();
        assert_eq!(c.cassandra.replication.to_cql().unwrap(), "{'class': 'NetworkTopologyStrategy', 'dc1': 3}");
        assert_eq!(c.cassandra.connection().consistency.level(), scylla::statement::Consistency::Quorum);
        let err = Config::parse(&cluster.replace("dc1: 3", "dc1: 0"), "c.yaml").unwrap_err().to_string();
        assert!(err.contains("cassandra.replication"), "{err}");
        let err = Config::parse(&cluster.replace("level: quorum", "level: one"), "c.yaml").unwrap_err().to_string();
        assert!(err.contains("one"), "{err}");
        let c = Config::parse(&format!("{OK}  local_datacenter: dc1\n"), "c.yaml").unwrap();
        assert_eq!(c.cassandra.connection().local_datacenter.as_deref(), Some("dc1"));
        let err = Config::parse(&format!("{OK}  local_datacenter: \"\"\n"), "c.yaml").unwrap_err().to_string();
        assert!(err.contains("cassandra.local_datacenter"), "{err}");
    }
}
