//! Each gateway's view of spend against budgets (docs/design.md §5.1-5.3), and the listener that
//! keeps it and the tenancy caches current (changes are announced by `changes::ControlPublisher`).
//!
//! The view holds, per `(scope, window)` with a budget, the largest total the ledger consumers
//! have published on the compacted `budget-state` topic, and this gateway's own spend since it
//! started. Both only grow within a window and both are lower bounds of the true spend, so the
//! estimate is their maximum: it never counts a request twice, and it sees this gateway's own
//! requests at once, before the consumers have folded them.
//!
//! The listener reads `budget-state` from the beginning of every partition (no consumer group)
//! and the control topic from its end, on a thread of its own.

use super::with_window_key;
use crate::tenancy::auth::Tenancy;
use chrono::{DateTime, Utc};
use metrics::{counter, gauge, histogram};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tollgate_schemas::tenancy::{window_end, BudgetState, Invalidation};
use tollgate_schemas::NanoUsd;

#[derive(Default)]
struct Cell {
    published: AtomicI64,
    local: AtomicI64,
    /// Window end, Unix ms; `i64::MAX` for all time.
    ends_ms: i64,
}

pub struct BudgetView {
    cells: RwLock<HashMap<String, Arc<Cell>>>,
    last_heartbeat_ms: AtomicI64,
    caught_up: AtomicBool,
    /// Each consumer's newest heartbeat (at most [`MAX_CONSUMERS`], the newest kept), for
    /// `/ledger/health`.
    consumers: std::sync::Mutex<HashMap<String, ConsumerBeat>>,
}

/// The most consumers whose heartbeats a view remembers.
pub const MAX_CONSUMERS: usize = 64;

/// A consumer's newest heartbeat: when it was sent (Unix ms) and the lag it reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerBeat {
    pub at_ms: i64,
    pub lag: Option<i64>,
}

impl Default for BudgetView {
    fn default() -> Self {
        BudgetView::new()
    }
}

impl BudgetView {
    pub fn new() -> BudgetView {
        BudgetView {
            cells: RwLock::new(HashMap::new()),
            last_heartbeat_ms: AtomicI64::new(i64::MIN),
            caught_up: AtomicBool::new(false),
            consumers: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn cell(&self, scope: &str, window: &str) -> Arc<Cell> {
        let found = with_window_key(scope, window, |key| self.cells.read().ok().and_then(|m| m.get(key).cloned()));
        if let Some(c) = found {
            return c;
        }
        let ends_ms = window_end(window).map_or(i64::MAX, |t| t.timestamp_millis());
        let Ok(mut cells) = self.cells.write() else { return Arc::new(Cell::default()) };
        cells
            .entry(format!("{scope}|{window}"))
            .or_insert_with(|| Arc::new(Cell { ends_ms, ..Cell::default() }))
            .clone()
    }

    /// The best estimate of `scope`'s spend in `window`.
    pub fn spent(&self, scope: &str, window: &str) -> NanoUsd {
        let found = with_window_key(scope, window, |key| self.cells.read().ok().and_then(|m| m.get(key).cloned()));
        found.map_or(NanoUsd::ZERO, |c| {
            NanoUsd(c.published.load(Ordering::Acquire).max(c.local.load(Ordering::Acquire)))
        })
    }

    /// Counts this gateway's own spend as soon as a request ends.
    pub fn add_local(&self, scope: &str, window: &str, amount: NanoUsd) {
        if amount.0 > 0 {
            self.cell(scope, window).local.fetch_add(amount.0, Ordering::AcqRel);
        }
    }

    /// Applies one message of the budget-state topic.
    pub fn apply(&self, state: &BudgetState) {
        match state {
            BudgetState::Spend { scope, window, spent_nano_usd, .. } => {
                self.cell(scope, window).published.fetch_max(spent_nano_usd.0, Ordering::AcqRel);
            }
            BudgetState::Heartbeat { consumer, at_ms, lag } => {
                self.last_heartbeat_ms.fetch_max(*at_ms, Ordering::AcqRel);
                self.remember(consumer, ConsumerBeat { at_ms: *at_ms, lag: *lag });
            }
        }
    }

    fn remember(&self, consumer: &str, beat: ConsumerBeat) {
        let Ok(mut consumers) = self.consumers.lock() else { return };
        match consumers.get_mut(consumer) {
            Some(known) if known.at_ms > beat.at_ms => {}
            Some(known) => *known = beat,
            None => {
                if consumers.len() >= MAX_CONSUMERS {
                    // Forget the consumer heard from longest ago (a stopped one, most likely).
                    let oldest = consumers.iter().min_by_key(|(_, b)| b.at_ms).map(|(c, _)| c.clone());
                    if let Some(oldest) = oldest.filter(|c| consumers[c].at_ms < beat.at_ms) {
                        consumers.remove(&oldest);
                    } else {
                        return;
                    }
                }
                consumers.insert(consumer.to_owned(), beat);
            }
        }
    }

    /// Each consumer's newest heartbeat, newest first.
    pub fn consumers(&self) -> Vec<(String, ConsumerBeat)> {
        let mut all: Vec<_> =
            self.consumers.lock().map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
        all.sort_by(|a, b| b.1.at_ms.cmp(&a.1.at_ms).then_with(|| a.0.cmp(&b.0)));
        all
    }

    /// How old the view is, in ms: since the newest consumer heartbeat, or `None` when no
    /// consumer has ever been heard or the topic has not been read to its end yet.
    pub fn age_ms(&self, now: DateTime<Utc>) -> Option<i64> {
        let last = self.last_heartbeat_ms.load(Ordering::Acquire);
        if last == i64::MIN || !self.caught_up.load(Ordering::Acquire) {
            return None;
        }
        Some((now.timestamp_millis() - last).max(0))
    }

    /// Marks the topic as read to its end (the listener does this; tests too).
    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::Release);
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Forgets windows that ended more than an hour ago.
    pub fn prune(&self, now: DateTime<Utc>) {
        let horizon = now.timestamp_millis() - 3_600_000;
        if let Ok(mut cells) = self.cells.write() {
            cells.retain(|_, c| c.ends_ms > horizon);
            gauge!("tollgate_budget_view_entries").set(cells.len() as f64);
        }
    }
}

/// What the listener reads, and where its messages go.
pub struct ListenerConfig {
    /// Bootstrap servers and security properties (`kafka.client_properties`).
    pub client: ClientConfig,
    pub budget_state_topic: String,
    pub control_topic: String,
}

/// Starts the listener thread. It runs for the life of the process.
pub fn listen(config: ListenerConfig, view: Arc<BudgetView>, tenancy: Arc<Tenancy>) -> std::io::Result<()> {
    std::thread::Builder::new().name("tollgate-budget-view".into()).spawn(move || loop {
        if let Err(e) = run_listener(&config, &view, &tenancy) {
            tracing::warn!(error = %e, "budget/control listener stopped; restarting in 2 s");
            counter!("tollgate_budget_listener_restarts_total").increment(1);
            std::thread::sleep(Duration::from_secs(2));
        }
    })?;
    Ok(())
}

/// Why the listener stopped (it is restarted).
#[derive(Debug, thiserror::Error)]
enum ListenerError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} has no partitions (does it exist?)")]
    NoPartitions(String),
}

fn run_listener(config: &ListenerConfig, view: &BudgetView, tenancy: &Tenancy) -> Result<(), ListenerError> {
    // librdkafka wants a group id even for assigned partitions; none is joined (no subscribe)
    // and nothing is committed.
    let group = format!("tollgate-gateway-view-{}", uuid::Uuid::new_v4().simple());
    let consumer: BaseConsumer = config
        .client
        .clone()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let timeout = Duration::from_secs(10);
    let mut assignment = TopicPartitionList::new();
    // Where the budget-state partitions end now: reading up to there is "caught up".
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let metadata = consumer.fetch_metadata(Some(&config.budget_state_topic), timeout)?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        return Err(ListenerError::NoPartitions(config.budget_state_topic.clone()));
    }
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(&config.budget_state_topic, *p, timeout)?;
        if high > low {
            ends.insert(*p, high);
        }
        assignment.add_partition_offset(&config.budget_state_topic, *p, Offset::Beginning)?;
    }
    let control = consumer.fetch_metadata(Some(&config.control_topic), timeout)?;
    for p in control.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())) {
        assignment.add_partition_offset(&config.control_topic, p, Offset::End)?;
    }
    consumer.assign(&assignment)?;
    if ends.is_empty() {
        view.caught_up.store(true, Ordering::Release);
    }
    tracing::info!(partitions = partitions.len(), "reading budget state and tenancy changes");
    let mut last_prune = std::time::Instant::now();
    loop {
        if last_prune.elapsed() > Duration::from_secs(60) {
            view.prune(Utc::now());
            last_prune = std::time::Instant::now();
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message?;
        let Some(payload) = message.payload() else { continue };
        if message.topic() == config.control_topic {
            match serde_json::from_slice::<Invalidation>(payload) {
                Ok(change) => {
                    futures::executor::block_on(tenancy.invalidate(change.kind, &change.id));
                    let lag = (Utc::now().timestamp_millis() - change.at_ms).max(0);
                    histogram!("tollgate_tenancy_change_propagation_seconds").record(lag as f64 / 1000.0);
                }
                Err(e) => tracing::warn!(error = %e, "control message does not decode; skipped"),
            }
            continue;
        }
        match serde_json::from_slice::<BudgetState>(payload) {
            Ok(state) => view.apply(&state),
            Err(e) => tracing::warn!(error = %e, "budget-state message does not decode; skipped"),
        }
        if let Some(end) = ends.get(&message.partition()) {
            if message.offset() + 1 >= *end {
                ends.remove(&message.partition());
                if ends.is_empty() {
                    tracing::info!("budget state read to the end");
                    view.caught_up.store(true, Ordering::Release);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_larger_of_published_and_own_spend() {
        let view = BudgetView::new();
        view.add_local("team/a", "all", NanoUsd(30));
        assert_eq!(view.spent("team/a", "all"), NanoUsd(30));
        let published = |n| BudgetState::Spend {
            scope: "team/a".into(),
            window: "all".into(),
            spent_nano_usd: NanoUsd(n),
            max_budget_nano_usd: None,
            exceeded: false,
            threshold_pct: None,
            at_ms: 0,
        };
        view.apply(&published(100));
        view.apply(&published(70)); // older, or a duplicate: ignored
        assert_eq!(view.spent("team/a", "all"), NanoUsd(100));
        assert_eq!(view.spent("team/b", "all"), NanoUsd::ZERO);
    }

    #[test]
    fn each_consumer_s_newest_heartbeat_is_kept_within_a_bound() {
        let view = BudgetView::new();
        let beat = |c: &str, at_ms: i64, lag: Option<i64>| BudgetState::Heartbeat { consumer: c.into(), at_ms, lag };
        view.apply(&beat("a", 10, Some(5)));
        view.apply(&beat("a", 5, Some(99)));
        view.apply(&beat("b", 20, None));
        assert_eq!(
            view.consumers(),
            [
                ("b".to_owned(), ConsumerBeat { at_ms: 20, lag: None }),
                ("a".to_owned(), ConsumerBeat { at_ms: 10, lag: Some(5) })
            ]
        );
        for i in 0..MAX_CONSUMERS as i64 {
            view.apply(&beat(&format!("c{i}"), 100 + i, Some(i)));
        }
        let kept = view.consumers();
        assert_eq!(kept.len(), MAX_CONSUMERS);
        assert!(kept.iter().all(|(c, _)| c != "a" && c != "b"), "the oldest were forgotten: {kept:?}");
        view.apply(&beat("late", 1, None));
        assert!(view.consumers().iter().all(|(c, _)| c != "late"), "an old heartbeat does not push a newer one out");
    }

    #[test]
    fn staleness_needs_a_heartbeat_and_the_topic_read() {
        let view = BudgetView::new();
        let now = Utc::now();
        assert_eq!(view.age_ms(now), None);
        view.apply(&BudgetState::Heartbeat { consumer: "c".into(), at_ms: now.timestamp_millis() - 5_000, lag: None });
        assert_eq!(view.age_ms(now), None, "not caught up yet");
        view.set_caught_up();
        assert_eq!(view.age_ms(now), Some(5_000));
    }

    #[test]
    fn ended_windows_are_pruned() {
        let view = BudgetView::new();
        view.add_local("key/k", "d:2020-01-01", NanoUsd(5));
        view.add_local("key/k", "all", NanoUsd(5));
        view.prune(Utc::now());
        assert_eq!(view.spent("key/k", "d:2020-01-01"), NanoUsd::ZERO);
        assert_eq!(view.spent("key/k", "all"), NanoUsd(5));
    }
}
