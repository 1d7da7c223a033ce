//! What an end-to-end test of the gateway and the consumer starts from: a scratch directory,
//! usage, budget-state and control topics and a Cassandra keyspace of its own (so no two tests
//! share state), and the mock provider; the gateway's and the consumer's configs on them.

use crate::configs::{ConsumerConfig, GatewayConfig};
use crate::kafka::Topics;
use crate::services::{scratch_dir, start_mock, Process};
use crate::unique;
use anyhow::Result;
use std::path::PathBuf;

/// One test's own topics, keyspace and mock provider. The mock is killed when this is dropped.
pub struct Fixture {
    /// Where configs and process logs go.
    pub dir: PathBuf,
    pub topics: Topics,
    pub keyspace: String,
    pub mock: Process,
    /// The test's name, which the topics, the keyspace and consumer groups are named after.
    name: String,
}

// === impl Fixture ===

impl Fixture {
    /// Creates the topics (`usage_partitions` for usage) and starts the mock provider; the
    /// consumer makes the keyspace, named `tg_<name>_` and a unique suffix.
    pub async fn start(name: &str, usage_partitions: i32) -> Result<Fixture> {
        let dir = scratch_dir(name)?;
        let topics = Topics::create(name, usage_partitions).await?;
        let keyspace = unique(&format!("tg_{name}_")).replace('-', "_");
        let mock = start_mock(&dir, &[]).await?;
        Ok(Fixture { dir, topics, keyspace, mock, name: name.to_owned() })
    }

    /// The config of gateway `id` on the test tenancy, the mock's models, these topics and
    /// this keyspace ([`GatewayConfig::tenancy`]).
    pub fn gateway(&self, id: &str) -> Result<GatewayConfig> {
        Ok(GatewayConfig::tenancy(id, self.mock.url()?, &self.topics, &self.keyspace))
    }

    /// The config of a consumer of these usage events into this keyspace, in a consumer group
    /// of its own, writing batches of up to `max_messages`.
    pub fn consumer(&self, max_messages: usize) -> ConsumerConfig {
        let group = unique(&format!("ledger-{}-", self.name));
        ConsumerConfig::new(&self.topics.usage, &group, &self.keyspace, max_messages)
    }
}
