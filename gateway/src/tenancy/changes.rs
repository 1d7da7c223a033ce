//! The tenancy change log (`schemas/cql/009_tenancy_changes.cql`): how an admin change reaches
//! every gateway even while Kafka is down. An admin change is stored, then logged here, then
//! announced on the control topic; every gateway polls the log every [`POLL_INTERVAL`] and drops
//! its cached copy of each record named (revocation within about a second, whatever Kafka
//! does), and publishes to the control topic the changes that could not be announced (an
//! outbox that survives restarts). Never on a request's path: only admin calls and the poller
//! touch it. docs/security.md states the bound.

use crate::tenancy::auth::Tenancy;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tollgate_schemas::store::StoreError;
use tollgate_schemas::tenancy::{Invalidation, Kind};

/// How often every gateway reads the change log.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Changes are read back this far: clocks of gateways may disagree by this much.
const CLOCK_SLACK_MS: i64 = 10_000;
/// A change not on the control topic this long after it was made is published by the poller.
const PUBLISH_AFTER_MS: i64 = 3_000;
/// How often every gateway looks for logged changes that are not on the control topic.
const OUTBOX_INTERVAL: Duration = Duration::from_secs(5);

/// One change: a record of `kind` named `id` changed at `at_ms` (the writer's clock).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Change {
    pub hour: String,
    pub at_ms: i64,
    pub kind: Kind,
    pub id: String,
    pub published: bool,
}

/// The change log in Cassandra or ScyllaDB.
pub struct ChangeLog {
    session: Arc<Session>,
    insert: PreparedStatement,
    select: PreparedStatement,
    mark: PreparedStatement,
}

fn query_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Query(e.to_string())
}

/// The bucket of an instant: its UTC hour.
fn hour_of(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H").to_string()
}

impl ChangeLog {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<ChangeLog, StoreError> {
        tollgate_schemas::cql::validate_keyspace(keyspace).map_err(|e| StoreError::Schema(e.to_string()))?;
        let prepare = |cql: String| {
            let session = &session;
            async move { session.prepare(cql).await.map_err(query_err) }
        };
        let insert = prepare(format!(
            "INSERT INTO {keyspace}.tenancy_changes (hour, at_ms, kind, id, published) VALUES (?, ?, ?, ?, false)"
        ))
        .await?;
        let select = prepare(format!(
            "SELECT hour, at_ms, kind, id, published FROM {keyspace}.tenancy_changes WHERE hour = ? AND at_ms > ?"
        ))
        .await?;
        let mark = prepare(format!(
            "UPDATE {keyspace}.tenancy_changes SET published = true WHERE hour = ? AND at_ms = ? AND kind = ? AND id = ?"
        ))
        .await?;
        Ok(ChangeLog { session, insert, select, mark })
    }

    /// Logs a change made now.
    pub async fn record(&self, kind: Kind, id: &str) -> Result<Change, StoreError> {
        let now = Utc::now();
        let change =
            Change { hour: hour_of(now), at_ms: now.timestamp_millis(), kind, id: id.to_owned(), published: false };
        self.session
            .execute_unpaged(&self.insert, (&change.hour, change.at_ms, kind.as_str(), &change.id))
            .await
            .map_err(query_err)?;
        Ok(change)
    }

    /// The change is on the control topic.
    pub async fn mark_published(&self, change: &Change) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.mark, (&change.hour, change.at_ms, change.kind.as_str(), &change.id))
            .await
            .map_err(query_err)?;
        Ok(())
    }

    /// Changes made after `since_ms` (this hour's bucket and the last one's).
    pub async fn since(&self, since_ms: i64) -> Result<Vec<Change>, StoreError> {
        let now = Utc::now();
        let hours = [hour_of(now - chrono::Duration::hours(1)), hour_of(now)];
        let mut out = Vec::new();
        for hour in hours {
            let mut rows = self
                .session
                .execute_iter(self.select.clone(), (&hour, since_ms))
                .await
                .map_err(query_err)?
                .rows_stream::<(String, i64, String, String, Option<bool>)>()
                .map_err(query_err)?;
            while let Some(row) = rows.next().await {
                let (hour, at_ms, kind, id, published) = row.map_err(query_err)?;
                let Some(kind) = Kind::parse(&kind) else { continue };
                out.push(Change { hour, at_ms, kind, id, published: published.unwrap_or(false) });
            }
        }
        Ok(out)
    }
}

/// Why a change could not be announced on the control topic.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode the change: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Kafka(rdkafka::error::KafkaError),
}

/// Publishes tenancy changes on the control topic (the admin API's side of propagation).
pub struct ControlPublisher {
    producer: rdkafka::producer::FutureProducer,
    topic: String,
}

impl ControlPublisher {
    pub fn new(kafka: &crate::config::KafkaConfig) -> Result<ControlPublisher, rdkafka::error::KafkaError> {
        let producer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "5000")
            .create()?;
        Ok(ControlPublisher { producer, topic: kafka.control_topic.clone() })
    }

    /// Sends the change and waits until Kafka has it.
    pub async fn publish(&self, change: &Invalidation) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(change)?;
        let key = format!("{}/{}", change.kind.as_str(), change.id);
        let record = rdkafka::producer::FutureRecord::to(&self.topic).key(&key).payload(&payload);
        self.producer.send(record, Duration::from_secs(5)).await.map(|_| ()).map_err(|(e, _)| PublishError::Kafka(e))
    }
}

/// Follows the change log until `shutdown`: drops the cached copy of every record changed (by
/// any gateway), and publishes to the control topic the changes that are not on it yet.
pub async fn follow(
    log: Arc<ChangeLog>,
    tenancy: Arc<Tenancy>,
    control: Option<Arc<ControlPublisher>>,
    shutdown: CancellationToken,
) {
    // Publishing waits on Kafka (seconds while it is down): it must not hold up invalidation.
    tokio::join!(invalidate(log.clone(), tenancy, shutdown.clone()), outbox(log, control, shutdown));
}

/// Every [`POLL_INTERVAL`]: drops the cached copy of each record changed since the last poll.
async fn invalidate(log: Arc<ChangeLog>, tenancy: Arc<Tenancy>, shutdown: CancellationToken) {
    // Changes before the gateway started are already reflected in what it reads from the store.
    let mut since = Utc::now().timestamp_millis() - CLOCK_SLACK_MS;
    // Changes acted on, by when they were made: the slack window reads them again.
    let mut seen: HashMap<Change, i64> = HashMap::new();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let changes = match log.since(since).await {
            Ok(c) => c,
            Err(e) => {
                metrics::counter!("tollgate_tenancy_change_log_errors_total").increment(1);
                tracing::debug!(failure = e.kind(), "cannot read the tenancy change log");
                continue;
            }
        };
        let now_ms = Utc::now().timestamp_millis();
        for change in changes {
            let at_ms = change.at_ms;
            if let Entry::Vacant(entry) = seen.entry(Change { published: false, ..change }) {
                tenancy.invalidate(entry.key().kind, &entry.key().id).await;
                metrics::counter!("tollgate_tenancy_changes_applied_total", "source" => "change_log").increment(1);
                entry.insert(at_ms);
            }
        }
        let horizon = now_ms - CLOCK_SLACK_MS;
        seen.retain(|_, at| *at > horizon - CLOCK_SLACK_MS);
        since = horizon;
    }
}

/// Every [`OUTBOX_INTERVAL`]: publishes the logged changes (of the last two hours) that are not
/// on the control topic yet, oldest first, stopping at the first failure (Kafka is still down).
async fn outbox(log: Arc<ChangeLog>, control: Option<Arc<ControlPublisher>>, shutdown: CancellationToken) {
    let Some(control) = control else { return };
    let mut tick = tokio::time::interval(OUTBOX_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Ok(changes) = log.since(0).await else { continue };
        let now_ms = Utc::now().timestamp_millis();
        for change in changes.iter().filter(|c| !c.published && now_ms - c.at_ms > PUBLISH_AFTER_MS) {
            let published = tokio::select! {
                published = publish(&log, Some(&control), change) => published,
                _ = shutdown.cancelled() => return,
            };
            if !published {
                break;
            }
        }
    }
}

/// Publishes a logged change on the control topic and marks it published; a failure leaves it
/// for the next poll (of this gateway or another).
pub async fn publish(log: &ChangeLog, control: Option<&ControlPublisher>, change: &Change) -> bool {
    let Some(control) = control else { return false };
    let invalidation = Invalidation { kind: change.kind, id: change.id.clone(), at_ms: change.at_ms };
    if control.publish(&invalidation).await.is_err() {
        metrics::counter!("tollgate_control_publish_failures_total").increment(1);
        return false;
    }
    if log.mark_published(change).await.is_err() {
        // Published again by a later poll: harmless, an invalidation is idempotent.
        tracing::debug!("a published tenancy change could not be marked");
    }
    true
}
