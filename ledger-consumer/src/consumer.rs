//! The Kafka side: consume `usage`, batch per partition, apply to the ledger, and only then
//! store the offset (DESIGN §3 step 3). Records that do not decode go to the dead-letter topic
//! before their offset is stored, so nothing is dropped silently.

use crate::apply::{apply_batch, Applied};
use crate::config::Config;
use crate::fold::Message;
use crate::ledger::LedgerStore;
use metrics::{counter, gauge};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tollgate_schemas::UsageEvent;

/// Publishes librdkafka's per-partition consumer lag as `tollgate_ledger_consumer_lag{partition}`.
pub struct LagReporter {
    topic: String,
    /// Set when librdkafka reports the group session lost; cleared once partitions are back.
    session_lost: std::sync::atomic::AtomicBool,
}

impl rdkafka::ClientContext for LagReporter {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "SESSTMOUT" {
            self.session_lost.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        match level {
            rdkafka::config::RDKafkaLogLevel::Emerg
            | rdkafka::config::RDKafkaLogLevel::Alert
            | rdkafka::config::RDKafkaLogLevel::Critical
            | rdkafka::config::RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {log_message}"),
            rdkafka::config::RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {log_message}"),
            _ => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    gauge!("tollgate_ledger_consumer_lag", "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LagReporter {}

/// How long a lost group membership may stay lost before the consumer is rebuilt.
const REJOIN_AFTER: Duration = Duration::from_secs(30);

/// Why [`UsageConsumer::run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum RunEnd {
    Shutdown,
    Rejoin,
}

/// A record as read, detached from the consumer's buffers.
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
}

pub struct UsageConsumer<L> {
    consumer: StreamConsumer<LagReporter>,
    dlq: FutureProducer,
    ledger: Arc<L>,
    topic: String,
    dlq_topic: String,
    max_messages: usize,
    max_wait: Duration,
    budgets: Option<Arc<crate::budgets::BudgetPublisher>>,
}

impl<L: LedgerStore> UsageConsumer<L> {
    pub fn new(
        config: &Config,
        ledger: Arc<L>,
        budgets: Option<Arc<crate::budgets::BudgetPublisher>>,
    ) -> Result<Self, KafkaError> {
        let k = &config.kafka;
        let mut cc = ClientConfig::new();
        for (key, value) in &k.consumer_properties {
            cc.set(key, value);
        }
        cc.set("bootstrap.servers", &k.bootstrap_servers)
            .set("group.id", &k.group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("statistics.interval.ms", "5000");
        let consumer: StreamConsumer<LagReporter> = cc.create_with_context(LagReporter {
            topic: k.usage_topic.clone(),
            session_lost: std::sync::atomic::AtomicBool::new(false),
        })?;
        consumer.subscribe(&[k.usage_topic.as_str()])?;
        let dlq: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &k.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(UsageConsumer {
            consumer,
            dlq,
            ledger,
            topic: k.usage_topic.clone(),
            dlq_topic: k.dlq_topic.clone(),
            max_messages: config.batch.max_messages,
            max_wait: Duration::from_millis(config.batch.max_wait_ms),
            budgets,
        })
    }

    /// Runs until `shutdown` (returns [`RunEnd::Shutdown`]) or until the group membership is lost
    /// and does not come back ([`RunEnd::Rejoin`]: the caller builds a fresh consumer). Finishes
    /// the batch in hand and commits stored offsets either way.
    pub async fn run(&self, shutdown: CancellationToken) -> RunEnd {
        let mut progress = Progress::default();
        let mut lost_since: Option<std::time::Instant> = None;
        let end = loop {
            let Some(batch) = self.next_batch(&shutdown).await else {
                break RunEnd::Shutdown;
            };
            // librdkafka can stay without a group coordinator after a broker stalled (seen after
            // a 30 s freeze): the session is lost and no assignment ever comes back.
            if self.consumer.context().session_lost.load(std::sync::atomic::Ordering::Relaxed) {
                let assigned = self.consumer.assignment().map(|a| a.count() > 0).unwrap_or(false);
                if assigned || !batch.is_empty() {
                    self.consumer.context().session_lost.store(false, std::sync::atomic::Ordering::Relaxed);
                    lost_since = None;
                } else {
                    let since = *lost_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > REJOIN_AFTER {
                        tracing::warn!("group membership lost and not regained; rebuilding the consumer");
                        counter!("tollgate_ledger_consumer_rebuilds_total").increment(1);
                        break RunEnd::Rejoin;
                    }
                }
            }
            let records = batch.len();
            let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
            for r in batch {
                by_partition.entry(r.partition).or_default().push(r);
            }
            // Partitions are independent (each owns its ledger rows): fold them concurrently.
            let work = by_partition
                .into_iter()
                .map(|(partition, records)| self.process_partition(partition, records, &shutdown));
            let applied = futures::future::join_all(work).await;
            progress.record(records, &applied);
            if let Some(b) = &self.budgets {
                b.mark_progress();
            }
        };
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is also a "failure" here; harmless either way:
            // uncommitted offsets are replayed and the fence skips them.
            tracing::debug!(error = %e, "final offset commit");
        }
        end
    }

    async fn next_batch(&self, shutdown: &CancellationToken) -> Option<Vec<Record>> {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return None,
            m = self.consumer.recv() => m,
            // Wake up now and then so the caller can check the group membership.
            _ = tokio::time::sleep(Duration::from_secs(5)) => return Some(Vec::new()),
        };
        let mut batch = Vec::with_capacity(self.max_messages);
        match first {
            Ok(m) => batch.push(detach(&m)),
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Some(batch);
            }
        }
        let deadline = tokio::time::Instant::now() + self.max_wait;
        while batch.len() < self.max_messages {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(detach(&m)),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive error");
                    break;
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Decodes, dead-letters what does not decode, applies the rest, then stores the offset.
    /// Ledger failures are retried with backoff until they succeed or shutdown: a batch is never
    /// skipped.
    async fn process_partition(&self, partition: i32, records: Vec<Record>, shutdown: &CancellationToken) -> Applied {
        let mut result = Applied::default();
        let Some(last_offset) = records.last().map(|r| r.offset) else {
            return result;
        };
        let mut messages = Vec::with_capacity(records.len());
        for r in &records {
            match r.payload.as_deref().map(UsageEvent::decode) {
                Some(Ok(event)) => messages.push(Message { offset: r.offset, event }),
                Some(Err(e)) => self.dead_letter(r, &e.to_string(), shutdown).await,
                None => self.dead_letter(r, "record has no value", shutdown).await,
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match apply_batch(self.ledger.as_ref(), partition, &messages).await {
                Ok(applied) => {
                    counter!("tollgate_ledger_events_folded_total")
                        .increment(messages.len().saturating_sub(applied.duplicates) as u64);
                    if let Some(last) = messages.last() {
                        let ts = last.event.occurred_at.timestamp_millis() as f64 / 1000.0;
                        gauge!("tollgate_ledger_last_event_timestamp_seconds").set(ts);
                    }
                    tracing::debug!(partition, last_offset, ?applied, "batch applied");
                    result = applied;
                    break;
                }
                Err(e) => {
                    counter!("tollgate_ledger_apply_errors_total").increment(1);
                    tracing::warn!(partition, error = %e, "ledger write failed; retrying");
                    if shutdown.is_cancelled() {
                        return result; // offset not stored: the batch is replayed by whoever owns it next
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Budget state before the offset moves: a crash in between republishes on replay.
        if let Some(b) = &self.budgets {
            b.after_batch(&messages).await;
        }
        // Only now, with both layers durable, may the offset move (DESIGN §3 step 3).
        // librdkafka stores `offset + 1` (the next to read) for the offset given here.
        if let Err(e) = self.consumer.store_offset(&self.topic, partition, last_offset) {
            // The partition was revoked meanwhile; its new owner replays and the fence skips.
            tracing::info!(partition, error = %e, "offset not stored (partition revoked?)");
        }
        result
    }

    /// Publishes a record that does not decode to the dead-letter topic, retrying until Kafka
    /// has it.
    async fn dead_letter(&self, r: &Record, reason: &str, shutdown: &CancellationToken) {
        counter!("tollgate_ledger_dead_letters_total").increment(1);
        tracing::warn!(
            partition = r.partition,
            offset = r.offset,
            reason,
            "usage record sent to the dead-letter topic"
        );
        let partition = r.partition.to_string();
        let offset = r.offset.to_string();
        loop {
            let mut headers = r.headers.clone().unwrap_or_default();
            headers = headers
                .insert(Header { key: "tollgate_dlq_reason", value: Some(reason) })
                .insert(Header { key: "tollgate_source_topic", value: Some(self.topic.as_str()) })
                .insert(Header { key: "tollgate_source_partition", value: Some(partition.as_str()) })
                .insert(Header { key: "tollgate_source_offset", value: Some(offset.as_str()) });
            let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.dlq_topic).headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k);
            }
            if let Some(p) = &r.payload {
                record = record.payload(p);
            }
            match self.dlq.send(record, Duration::from_secs(10)).await {
                Ok(_) => return,
                Err((e, _)) => {
                    tracing::error!(error = %e, "dead-letter publish failed; retrying");
                    if shutdown.is_cancelled() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Throughput and fence activity, logged every ten seconds.
struct Progress {
    since: std::time::Instant,
    records: usize,
    total: Applied,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { since: std::time::Instant::now(), records: 0, total: Applied::default() }
    }
}

impl Progress {
    fn record(&mut self, records: usize, applied: &[Applied]) {
        self.records += records;
        for a in applied {
            self.total.rows_written += a.rows_written;
            self.total.rows_already_applied += a.rows_already_applied;
            self.total.conditional_batches += a.conditional_batches;
            self.total.conflicts += a.conflicts;
            self.total.duplicates += a.duplicates;
        }
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(10) {
            tracing::info!(
                records = self.records,
                per_second = (self.records as f64 / elapsed.as_secs_f64()).round(),
                rows_written = self.total.rows_written,
                rows_already_applied = self.total.rows_already_applied,
                conditional_batches = self.total.conditional_batches,
                conflicts = self.total.conflicts,
                duplicates = self.total.duplicates,
                "ledger progress"
            );
            *self = Progress::default();
        }
    }
}

fn detach(m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    Record {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers: m.headers().map(|h| h.detach()),
    }
}
