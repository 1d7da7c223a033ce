//! The Kafka side: consume `usage`, batch per partition, fold into the ledger, and only then
//! store the offset (docs/design.md §4.6). Records the ledger refuses go to the dead-letter topic
//! and the ledger's `dead_letters` table before their offset is stored, so nothing is dropped
//! silently and no record can stall folding (docs/security.md).
//!
//! Transient failures are retried with backoff, forever; shutdown interrupts whatever the
//! consumer is waiting for (a retry sleep, a ledger call, a dead-letter or budget publish) and
//! stores nothing for a batch that is not wholly durable.

use crate::config::Config;
use crate::health::Health;
use metrics::{counter, gauge};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tollgate_ledger::apply::{fold_batch, Applied, LogRecord};
use tollgate_ledger::dead_letter::{DeadLetter, DeadLetterTopic};
use tollgate_ledger::ledger::LedgerStore;
use tollgate_schemas::store::ledger_partition;
use tollgate_schemas::topics::UsageGenerations;
use tracing::Instrument;

/// Publishes librdkafka's per-partition consumer lag as `tollgate_ledger_consumer_lag{partition}`
/// (the ledger partition: generation and Kafka partition, docs/design.md §4.10).
pub struct LagReporter {
    topics: UsageGenerations,
    /// Set when librdkafka reports the group session lost; cleared once partitions are back.
    session_lost: std::sync::atomic::AtomicBool,
    /// What `/health/readiness` answers from.
    health: Arc<Health>,
}

impl rdkafka::ClientContext for LagReporter {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "SESSTMOUT" {
            self.session_lost.store(true, std::sync::atomic::Ordering::Relaxed);
            self.health.session_lost();
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
        let mut total: Option<i64> = None;
        for (generation, name) in (0u8..).zip(self.topics.topics()) {
            let Some(topic) = statistics.topics.get(name) else { continue };
            for (partition, p) in &topic.partitions {
                if *partition < 0 {
                    continue;
                }
                if p.consumer_lag >= 0 {
                    let ledger_partition = ledger_partition(generation, *partition);
                    gauge!("tollgate_ledger_consumer_lag", "partition" => ledger_partition.to_string())
                        .set(p.consumer_lag as f64);
                }
                if let Some(lag) = known_lag(p) {
                    total = Some(total.unwrap_or(0).saturating_add(lag));
                }
            }
        }
        if let Some(total) = total {
            self.health.set_lag(total);
        }
    }
}

/// A partition's lag for the heartbeat: librdkafka's, or 0 for a partition that holds no record
/// (nothing committed yet, and nothing to fold); `None` when unknown (not fetched, or records
/// and no committed offset yet).
fn known_lag(p: &rdkafka::statistics::Partition) -> Option<i64> {
    if p.consumer_lag >= 0 {
        Some(p.consumer_lag)
    } else {
        (p.lo_offset >= 0 && p.hi_offset == p.lo_offset).then_some(0)
    }
}

impl rdkafka::consumer::ConsumerContext for LagReporter {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        // An assignment, even an empty one (more consumers than partitions), means the group
        // has this consumer.
        if let rdkafka::consumer::Rebalance::Assign(_) = rebalance {
            self.health.joined();
        }
    }
}

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
    /// The generation of the usage topic it was read from.
    generation: u8,
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
    topics: UsageGenerations,
    dlq_topic: String,
    max_messages: usize,
    max_wait: Duration,
    budgets: Option<Arc<crate::budgets::BudgetPublisher>>,
    health: Arc<Health>,
}

impl<L: LedgerStore> UsageConsumer<L> {
    pub fn new(
        config: &Config,
        ledger: Arc<L>,
        budgets: Option<Arc<crate::budgets::BudgetPublisher>>,
        health: Arc<Health>,
    ) -> Result<Self, KafkaError> {
        let k = &config.kafka;
        let mut cc = k.client_config();
        for (key, value) in &k.consumer_properties {
            cc.set(key, value.expose());
        }
        cc.set("group.id", &k.group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("statistics.interval.ms", "5000");
        let topics = k
            .usage_generations()
            .map_err(|(field, message)| KafkaError::ClientCreation(format!("config field `{field}`: {message}")))?;
        let consumer: StreamConsumer<LagReporter> = cc.create_with_context(LagReporter {
            topics: topics.clone(),
            session_lost: std::sync::atomic::AtomicBool::new(false),
            health: health.clone(),
        })?;
        let names: Vec<&str> = topics.topics().iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let dlq: FutureProducer = k.client_config().set("enable.idempotence", "true").set("acks", "all").create()?;
        Ok(UsageConsumer {
            consumer,
            dlq,
            ledger,
            topics,
            dlq_topic: k.dlq_topic.clone(),
            max_messages: config.batch.max_messages,
            max_wait: Duration::from_millis(config.batch.max_wait_ms),
            budgets,
            health,
        })
    }

    /// Runs until `shutdown` (returns [`RunEnd::Shutdown`]) or until the group membership is lost
    /// and does not come back ([`RunEnd::Rejoin`]: the caller builds a fresh consumer). Shutdown
    /// interrupts a batch in progress: its partitions that were not wholly folded store no offset
    /// and are replayed by whoever owns them next. Call [`UsageConsumer::close`] afterwards.
    pub async fn run(&self, shutdown: CancellationToken) -> RunEnd {
        let mut progress = Progress::default();
        let mut lost_since: Option<std::time::Instant> = None;
        loop {
            let Some(batch) = self.next_batch(&shutdown).await else {
                return RunEnd::Shutdown;
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
                        return RunEnd::Rejoin;
                    }
                }
            }
            let records = batch.len();
            let mut by_partition: BTreeMap<(u8, i32), Vec<Record>> = BTreeMap::new();
            for r in batch {
                by_partition.entry((r.generation, r.partition)).or_default().push(r);
            }
            // Partitions are independent (each owns its ledger rows): fold them concurrently.
            let work = by_partition.into_iter().map(|((generation, partition), records)| {
                let source = Source { topic: self.topics.topic(generation), generation, partition };
                let span = batch_span(&source, &records);
                self.process_partition(source, records).instrument(span)
            });
            // Everything a batch waits for (ledger calls, retry sleeps, dead-letter and budget
            // publishes) is inside this future: shutdown drops it wherever it is. An offset is
            // stored only at the very end of a partition's work, so nothing half-done is stored.
            let applied = tokio::select! {
                _ = shutdown.cancelled() => {
                    tracing::info!("shutdown: leaving the batch in progress to be replayed");
                    return RunEnd::Shutdown;
                }
                applied = futures::future::join_all(work) => applied,
            };
            progress.record(records, &applied);
            if let Some(b) = &self.budgets {
                b.mark_progress();
            }
        }
    }

    /// Commits the offsets stored so far and leaves the group, waiting at most `within`:
    /// librdkafka's close waits for the group coordinator, which a broker in trouble may never
    /// provide. The close goes on, on a thread of its own, when the wait gives up; the process
    /// may exit meanwhile (uncommitted offsets are replayed and the fences skip them). Returns
    /// whether it finished in time.
    pub async fn close(self, within: Duration) -> bool {
        let (done, finished) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new().name("tollgate-consumer-close".into()).spawn(move || {
            if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last commit is also a "failure" here; harmless either
                // way: uncommitted offsets are replayed and the fence skips them.
                tracing::debug!(error = %e, "final offset commit");
            }
            drop(self);
            let _ = done.send(());
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread to close the consumer");
            return false;
        }
        let closed = tokio::time::timeout(within, finished).await.is_ok();
        if !closed {
            tracing::warn!(?within, "the Kafka consumer did not close in time; leaving it behind");
        }
        closed
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
            Ok(m) => batch.push(detach(&m, &self.topics)),
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Some(batch);
            }
        }
        let deadline = tokio::time::Instant::now() + self.max_wait;
        while batch.len() < self.max_messages {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(detach(&m, &self.topics)),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive error");
                    break;
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Folds one partition's records (dead-lettering those the ledger refuses), publishes the
    /// budget state, then stores the offset. Failures are transient by the time they get here
    /// (permanent ones are the refused records') and are retried with backoff until they pass:
    /// a batch is never skipped. Only shutdown, which drops this future, ends it early.
    async fn process_partition(&self, source: Source<'_>, records: Vec<Record>) -> Applied {
        let Some(last_offset) = records.last().map(|r| r.offset) else {
            return Applied::default();
        };
        // The ledger knows partitions by generation and Kafka partition (docs/design.md §4.10).
        let partition = ledger_partition(source.generation, source.partition);
        let log: Vec<LogRecord<'_>> =
            records.iter().map(|r| LogRecord { offset: r.offset, value: r.payload.as_deref() }).collect();
        let topic = KafkaDeadLetters { consumer: self, source, records: &records };
        let mut backoff = Backoff::default();
        let folded = loop {
            match fold_batch(self.ledger.as_ref(), &topic, partition, &log).await {
                Ok(folded) => {
                    self.health.write_succeeded();
                    break folded;
                }
                Err(e) => {
                    self.health.write_failed();
                    counter!("tollgate_ledger_apply_errors_total").increment(1);
                    let wait = backoff.next_wait();
                    tracing::warn!(partition, failure = e.kind(), ?wait, "ledger write failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        counter!("tollgate_ledger_events_folded_total")
            .increment(folded.messages.len().saturating_sub(folded.applied.duplicates) as u64);
        if let Some(last) = folded.messages.last() {
            let ts = last.event.occurred_at.timestamp_millis() as f64 / 1000.0;
            gauge!("tollgate_ledger_last_event_timestamp_seconds").set(ts);
        }
        // Integers go out as i64: OpenTelemetry has no unsigned attribute type.
        let int = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let span = tracing::Span::current();
        span.record("tollgate.events_folded", int(folded.messages.len()));
        span.record("tollgate.duplicates", int(folded.applied.duplicates));
        span.record("tollgate.dead_letters", int(folded.dead_letters.len()));
        span.record("tollgate.rows_written", int(folded.applied.rows_written));
        span.record("tollgate.conflicts", int(folded.applied.conflicts));
        tracing::debug!(partition, last_offset, applied = ?folded.applied, dead_letters = folded.dead_letters.len(), "batch applied");
        // Budget state before the offset moves: a crash in between republishes on replay.
        if let Some(b) = &self.budgets {
            b.after_batch(&folded.messages).await;
        }
        // Only now, with both layers and every dead letter durable, may the offset move
        // (docs/design.md §4.6). librdkafka stores `offset + 1` (the next to read) for the offset
        // given here.
        if let Err(e) = self.consumer.store_offset(source.topic, source.partition, last_offset) {
            // The partition was revoked meanwhile; its new owner replays and the fence skips.
            tracing::info!(partition, error = %e, "offset not stored (partition revoked?)");
        }
        folded.applied
    }
}

/// Where a partition's share of a batch was read.
#[derive(Clone, Copy)]
struct Source<'a> {
    topic: &'a str,
    generation: u8,
    /// The Kafka partition (of `topic`).
    partition: i32,
}

/// The span of one partition's share of a batch (OpenTelemetry's messaging conventions): what
/// it read, then what the fold made of it.
fn batch_span(source: &Source<'_>, records: &[Record]) -> tracing::Span {
    let (topic, partition) = (source.topic, source.partition);
    let first = records.first().map_or(-1, |r| r.offset);
    let last = records.last().map_or(-1, |r| r.offset);
    tracing::info_span!(
        "ledger.batch",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.destination.partition.id = partition,
        messaging.batch.message_count = i64::try_from(records.len()).unwrap_or(i64::MAX),
        tollgate.first_offset = first,
        tollgate.last_offset = last,
        tollgate.events_folded = tracing::field::Empty,
        tollgate.duplicates = tracing::field::Empty,
        tollgate.dead_letters = tracing::field::Empty,
        tollgate.rows_written = tracing::field::Empty,
        tollgate.conflicts = tracing::field::Empty,
    )
}

/// The dead-letter topic of a [`UsageConsumer`], for the records of one partition's batch: a
/// refused record is published with its key, value and headers unchanged, plus headers that say
/// why (`tollgate_dlq_reason`: a reason code; `tollgate_dlq_message`: a short explanation that
/// never repeats the value) and where it came from (`tollgate_source_topic`, `_partition`,
/// `_offset`).
struct KafkaDeadLetters<'a, L> {
    consumer: &'a UsageConsumer<L>,
    source: Source<'a>,
    records: &'a [Record],
}

impl<L: LedgerStore> DeadLetterTopic for KafkaDeadLetters<'_, L> {
    async fn publish(&self, letter: &DeadLetter) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let c = self.consumer;
        let record = self.records.iter().find(|r| r.offset == letter.offset);
        // The letter knows the ledger partition; the headers say where in Kafka it was read.
        let partition = self.source.partition.to_string();
        let offset = letter.offset.to_string();
        let headers = record
            .and_then(|r| r.headers.clone())
            .unwrap_or_default()
            .insert(Header { key: "tollgate_dlq_reason", value: Some(letter.reason.code()) })
            .insert(Header { key: "tollgate_dlq_message", value: Some(letter.message.as_str()) })
            .insert(Header { key: "tollgate_source_topic", value: Some(self.source.topic) })
            .insert(Header { key: "tollgate_source_partition", value: Some(partition.as_str()) })
            .insert(Header { key: "tollgate_source_offset", value: Some(offset.as_str()) });
        let mut out = FutureRecord::<Vec<u8>, Vec<u8>>::to(&c.dlq_topic).headers(headers);
        if let Some(k) = record.and_then(|r| r.key.as_ref()) {
            out = out.key(k);
        }
        if let Some(p) = record.and_then(|r| r.payload.as_ref()) {
            out = out.payload(p);
        }
        c.dlq.send(out, Duration::from_secs(10)).await.map(|_| ()).map_err(|(e, _)| e.into())
    }
}

/// Waits between retries of a failing batch: exponential from 100 ms to 5 s, each wait drawn
/// at random from its upper half so consumers that failed together do not retry together.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn next_wait(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        ceiling.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Backoff::FIRST }
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

fn detach(m: &rdkafka::message::BorrowedMessage<'_>, topics: &UsageGenerations) -> Record {
    // Subscribed to these topics only; the current generation if the name were ever unknown.
    let generation = (0u8..).zip(topics.topics()).find(|(_, t)| *t == m.topic()).map_or(topics.current(), |(g, _)| g);
    Record {
        generation,
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers: m.headers().map(|h| h.detach()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_s_lag_is_known_once_committed_or_while_it_is_empty() {
        let p = |consumer_lag, lo_offset, hi_offset| rdkafka::statistics::Partition {
            consumer_lag,
            lo_offset,
            hi_offset,
            ..Default::default()
        };
        assert_eq!(known_lag(&p(12, 0, 40)), Some(12));
        assert_eq!(known_lag(&p(-1, 7, 7)), Some(0), "no record to fold");
        assert_eq!(known_lag(&p(-1, 0, 40)), None, "records and nothing committed yet");
        assert_eq!(known_lag(&p(-1, -1, -1)), None, "not fetched");
    }

    #[test]
    fn backoff_grows_to_its_ceiling_with_jitter() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..12).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100), "{waits:?}");
        assert!(waits[3] >= Duration::from_millis(400) && waits[3] <= Duration::from_millis(800), "{waits:?}");
        for w in &waits[6..] {
            assert!(*w >= Backoff::MAX / 2 && *w <= Backoff::MAX, "{waits:?}");
        }
        let mut other = Backoff::default();
        let again: Vec<Duration> = (0..12).map(|_| other.next_wait()).collect();
        assert_ne!(waits, again, "jitter: two consumers do not wait alike");
    }
}
