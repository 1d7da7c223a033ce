//! Where usage goes: Kafka and a database, or the embedded ledger; the spool in front.

use super::*;
use tollgate_schemas::topics::UsageGenerations;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// The database file; one gateway process per file.
    #[serde(default = "default_embedded_path")]
    pub path: std::path::PathBuf,
    /// Largest size of the database file, in bytes; none: as large as the disk allows. When it
    /// (or the disk) is full, new requests are answered 503 `metering_unavailable` until space
    /// is free again; what was admitted waits in memory.
    #[serde(default)]
    pub max_size_bytes: Option<u64>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { path: default_embedded_path(), max_size_bytes: None }
    }
}

fn default_embedded_path() -> std::path::PathBuf {
    std::path::PathBuf::from("tollgate-data/tollgate.db")
}

/// What the gateway does when the usage backlog (spool queue) is full.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse new requests with 503 until the backlog drains; no accepted event is lost.
    #[default]
    Reject,
    /// Keep serving; events that do not fit are dropped and counted
    /// (`tollgate_usage_events_total{result="dropped"}`).
    Serve,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool; one gateway process per directory (it is locked).
    #[serde(default = "default_spool_dir")]
    pub dir: std::path::PathBuf,
    #[serde(default = "default_segment_bytes")]
    pub max_segment_bytes: u64,
    /// Events admitted and not yet spooled, at most; a request that finds it full is refused
    /// (policy `reject`) or served unmetered and counted (policy `serve`).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    #[serde(default)]
    pub when_full: WhenFull,
    /// How durable a request's usage event is before its answer goes to the client.
    #[serde(default)]
    pub answer_after: AnswerAfter,
}

/// When an answer may go to the client, with respect to its usage event (docs/design.md §3.6).
/// The end of a stream waits the same way as a whole answer.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AnswerAfter {
    /// The event is written to the spool file (the embedded log: committed): a crash of the
    /// gateway process (`kill -9`, out of memory) cannot lose an answered request's event.
    #[default]
    Written,
    /// The event is synced to disk: a power loss cannot lose it either. An answer then waits for
    /// its group commit (up to 5 ms and the disk's sync).
    Synced,
    /// The event is queued in memory: the answer never waits, and a crash can lose the events
    /// of the last few milliseconds' answers.
    Queued,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: default_spool_dir(),
            max_segment_bytes: default_segment_bytes(),
            queue_capacity: default_queue_capacity(),
            when_full: WhenFull::Reject,
            answer_after: AnswerAfter::Written,
        }
    }
}

fn default_spool_dir() -> std::path::PathBuf {
    std::path::PathBuf::from("tollgate-data/spool")
}
fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_queue_capacity() -> usize {
    50_000
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
    /// The topics of the earlier generations, generation 0 first: a spooled event created under
    /// an earlier generation is published there, with its other copies.
    #[serde(default)]
    pub earlier_usage_topics: Vec<String>,
    /// Compacted topic the ledger consumers publish budget state to; read from the beginning.
    #[serde(default = "default_budget_state_topic")]
    pub budget_state_topic: String,
    /// Tenancy changes (admin API) for every gateway to drop cached records.
    #[serde(default = "default_control_topic")]
    pub control_topic: String,
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// Events librdkafka may hold in memory while Kafka is slow or down; beyond it the spool
    /// queue fills and `spool.when_full` applies.
    #[serde(default = "default_max_queued")]
    pub max_queued_messages: u32,
    /// Extra librdkafka producer properties. The metering guarantees (`enable.idempotence`,
    /// `acks`, `partitioner`) cannot be overridden here.
    #[serde(default)]
    pub producer_properties: HashMap<String, Secret>,
    /// librdkafka properties for every Kafka client of the gateway (the usage producer, the
    /// admin-change publisher, the budget-state and control readers): security settings such
    /// as `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password` (values may
    /// be `os.environ/VAR`), `ssl.ca.location`.
    #[serde(default)]
    pub client_properties: HashMap<String, Secret>,
    /// A usage producer with events in flight that has delivered nothing for this long while
    /// the broker answers is replaced (an idempotent producer can stay wedged after its broker
    /// was frozen).
    #[serde(default = "default_stall_rebuild_secs")]
    pub stall_rebuild_secs: u64,
}

impl KafkaConfig {
    /// The usage topic's generations (checked when the config loads).
    pub fn usage_generations(&self) -> Result<UsageGenerations, (&'static str, String)> {
        UsageGenerations::new(&self.usage_topic, self.usage_generation, &self.earlier_usage_topics)
    }

    /// The properties every client of the gateway starts from ([`KafkaConfig::client_properties`]
    /// and the bootstrap servers).
    pub fn client_config(&self) -> rdkafka::config::ClientConfig {
        let mut client = rdkafka::config::ClientConfig::new();
        for (k, v) in &self.client_properties {
            client.set(k, v.expose());
        }
        client.set("bootstrap.servers", &self.bootstrap_servers);
        client
    }
}

fn default_stall_rebuild_secs() -> u64 {
    60
}

fn default_usage_topic() -> String {
    tollgate_schemas::topics::USAGE.to_owned()
}
fn default_budget_state_topic() -> String {
    tollgate_schemas::topics::BUDGET_STATE.to_owned()
}
fn default_control_topic() -> String {
    tollgate_schemas::topics::CONTROL.to_owned()
}
fn default_linger_ms() -> u32 {
    5
}
fn default_max_queued() -> u32 {
    500_000
}
