//! Budget push-back (docs/design.md §5.2): after a batch is in both ledger layers, the consumer
//! publishes the new total of every budgeted `(scope, window)` the batch touched to the
//! compacted `budget-state` topic, where every gateway reads it. Crossing an alert threshold
//! (e.g. 80 % and 95 % of `max_budget`), the soft budget, or the budget itself is announced once
//! per `(scope, window, threshold)` by webhook, claimed first with `INSERT ... IF NOT EXISTS`.
//! Heartbeats on the same topic tell gateways how fresh their view is.

use futures::StreamExt;
use metrics::counter;
use moka::future::Cache;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tollgate_ledger::fold::Message;
use tollgate_schemas::store::{get_record, lwt_applied, CqlSpend, SpendSource, StoreError, TenancyStore};
use tollgate_schemas::tenancy::{
    BudgetRecord, BudgetState, CustomerRecord, KeyRecord, Limits, OrganizationRecord, Record, TeamRecord, UserRecord,
};
use tollgate_schemas::NanoUsd;

/// Settings of budget push-back (`budgets:` in the consumer's config).
#[derive(Clone, Debug)]
pub struct PushBackConfig {
    /// Bootstrap servers and security properties (`kafka.client_properties`).
    pub kafka: ClientConfig,
    pub topic: String,
    /// Names this consumer in heartbeats and alert claims.
    pub consumer_id: String,
    pub heartbeat_interval: Duration,
    /// Thresholds (percent of `max_budget`) for records that name none.
    pub default_thresholds: Vec<u8>,
    /// A secret: such URLs carry tokens; never logged.
    pub webhook_url: Option<tollgate_schemas::secret::Secret>,
    /// Partitions of each generation of the usage topic, generation 0 first (a total sums one
    /// row per ledger partition).
    pub usage_partitions: Vec<i32>,
}

/// The budget of one ledger scope, as the tenancy records say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ScopeBudget {
    max: Option<NanoUsd>,
    soft: Option<NanoUsd>,
    thresholds: Vec<u8>,
}

/// Why budget push-back could not start, or a scope's state could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PushBackError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot prepare a statement: {0}")]
    Prepare(#[from] scylla::errors::PrepareError),
    #[error("cannot build the webhook client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot encode the budget state: {0}")]
    Encode(#[from] serde_json::Error),
}

pub struct BudgetPublisher {
    config: PushBackConfig,
    producer: FutureProducer,
    spend: CqlSpend,
    tenancy: Arc<dyn TenancyStore>,
    budgets: Cache<String, Option<ScopeBudget>>,
    claim: PreparedStatement,
    release: PreparedStatement,
    session: Arc<Session>,
    http: reqwest::Client,
    /// When the consumer last finished a batch or found nothing to read (Unix ms).
    last_progress_ms: std::sync::atomic::AtomicI64,
}

/// The claim row of a soft-budget crossing (thresholds are 1-100 percent).
const SOFT_BUDGET_CLAIM: i32 = 0;

impl BudgetPublisher {
    pub async fn new(
        config: PushBackConfig,
        session: Arc<Session>,
        keyspace: &str,
        tenancy: Arc<dyn TenancyStore>,
    ) -> Result<BudgetPublisher, PushBackError> {
        let producer: FutureProducer =
            config.kafka.clone().set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "2").create()?;
        let spend = CqlSpend::new(session.clone(), keyspace).await?.with_generations(&config.usage_partitions);
        let claim = session
            .prepare(format!(
                "INSERT INTO {keyspace}.budget_alerts (scope_id, window_id, threshold_pct, claimed_by, claimed_at) \
                 VALUES (?, ?, ?, ?, toTimestamp(now())) IF NOT EXISTS"
            ))
            .await?;
        let release = session
            .prepare(format!(
                "DELETE FROM {keyspace}.budget_alerts WHERE scope_id = ? AND window_id = ? AND threshold_pct = ? \
                 IF claimed_by = ?"
            ))
            .await?;
        // A webhook's address is the operator's: a redirect elsewhere is not followed.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(BudgetPublisher {
            config,
            producer,
            spend,
            tenancy,
            budgets: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(10)).build(),
            claim,
            release,
            session,
            http,
            last_progress_ms: std::sync::atomic::AtomicI64::new(chrono::Utc::now().timestamp_millis()),
        })
    }

    /// The consumer is keeping up: it finished a batch, or found nothing to read.
    pub fn mark_progress(&self) {
        self.last_progress_ms.store(chrono::Utc::now().timestamp_millis(), std::sync::atomic::Ordering::Release);
    }

    /// Publishes the state of every budgeted `(scope, window)` of `batch`. Failures are logged
    /// and counted; the next batch of the scope publishes its total again.
    pub async fn after_batch(&self, batch: &[Message]) {
        let touched: BTreeSet<(String, String)> =
            batch.iter().flat_map(|m| tollgate_schemas::ledger::budgeted_rows_of(&m.event)).collect();
        futures::stream::iter(touched)
            .for_each_concurrent(16, |(scope, window)| async move {
                // The error's text stays out of the log: the database's messages can quote values.
                if self.publish_scope(&scope, &window).await.is_err() {
                    counter!("tollgate_budget_state_errors_total").increment(1);
                    tracing::warn!(%scope, %window, "budget state not published; published again with a later batch");
                }
            })
            .await;
    }

    async fn publish_scope(&self, scope: &str, window: &str) -> Result<(), PushBackError> {
        let total = self.spend.total(scope, window).await?;
        let budget = self.budget_of(scope).await;
        let spent = total.spent;
        let exceeded = budget.max.is_some_and(|max| spent >= max);
        let crossed: Vec<u8> = match budget.max {
            Some(max) if max.0 > 0 => budget
                .thresholds
                .iter()
                .copied()
                .filter(|pct| i128::from(spent.0) * 100 >= i128::from(max.0) * i128::from(*pct))
                .collect(),
            _ => Vec::new(),
        };
        let state = BudgetState::Spend {
            scope: scope.to_owned(),
            window: window.to_owned(),
            spent_nano_usd: spent,
            max_budget_nano_usd: budget.max,
            exceeded,
            threshold_pct: crossed.last().copied(),
            at_ms: chrono::Utc::now().timestamp_millis(),
        };
        self.send(&state).await?;
        counter!("tollgate_budget_state_published_total").increment(1);
        if budget.soft.is_some_and(|soft| spent >= soft) {
            self.alert(scope, window, SOFT_BUDGET_CLAIM, "soft_budget_crossed", spent, &budget).await;
        }
        for pct in crossed {
            let kind = if pct == 100 { "budget_exceeded" } else { "budget_threshold_crossed" };
            self.alert(scope, window, i32::from(pct), kind, spent, &budget).await;
        }
        if exceeded && !budget.thresholds.contains(&100) {
            self.alert(scope, window, 100, "budget_exceeded", spent, &budget).await;
        }
        Ok(())
    }

    async fn send(&self, state: &BudgetState) -> Result<(), PushBackError> {
        let payload = serde_json::to_vec(state)?;
        let key = state.topic_key();
        let record = FutureRecord::to(&self.config.topic).key(&key).payload(&payload);
        self.producer.send(record, Duration::from_secs(10)).await.map(|_| ()).map_err(|(e, _)| PushBackError::Kafka(e))
    }

    /// Announces a crossing once: whoever claims the row sends the webhook; a failed send
    /// gives the claim back so a later batch tries again.
    async fn alert(&self, scope: &str, window: &str, threshold: i32, kind: &str, spent: NanoUsd, budget: &ScopeBudget) {
        let Some(url) = &self.config.webhook_url else { return };
        let me = &self.config.consumer_id;
        let claimed = match self.session.execute_unpaged(&self.claim, (scope, window, threshold, me)).await {
            Ok(r) => lwt_applied(r).unwrap_or(false),
            Err(_) => {
                counter!("tollgate_budget_alert_failures_total").increment(1);
                tracing::warn!("cannot claim a budget alert (database unavailable)");
                false
            }
        };
        if !claimed {
            return;
        }
        let body = serde_json::json!({
            "type": kind,
            "scope": scope,
            "window": window,
            "threshold_pct": if threshold == SOFT_BUDGET_CLAIM { None } else { Some(threshold) },
            "spent_nano_usd": spent.0,
            "spent_usd": spent.to_string(),
            "max_budget_nano_usd": budget.max.map(|m| m.0),
            "soft_budget_nano_usd": budget.soft.map(|m| m.0),
            "at": chrono::Utc::now(),
        });
        let sent = self.http.post(url.expose()).json(&body).send().await.and_then(reqwest::Response::error_for_status);
        match sent {
            Ok(_) => {
                counter!("tollgate_budget_alerts_sent_total", "type" => kind.to_owned()).increment(1);
            }
            Err(e) => {
                counter!("tollgate_budget_alert_failures_total").increment(1);
                // Without its URL: the webhook's address is a secret.
                tracing::warn!(%scope, error = %e.without_url(), "budget alert webhook failed; will retry with a later batch");
                let _ = self.session.execute_unpaged(&self.release, (scope, window, threshold, me)).await;
            }
        }
    }

    /// Budget, soft budget and thresholds of a ledger scope (`team/x`, `key/h/model/m`, ...),
    /// from the tenancy records (cached for a few seconds).
    async fn budget_of(&self, scope: &str) -> ScopeBudget {
        let store = self.tenancy.clone();
        let defaults = self.config.default_thresholds.clone();
        let scope_owned = scope.to_owned();
        let found = self
            .budgets
            .try_get_with(scope.to_owned(), async move { load_budget(store.as_ref(), &scope_owned, &defaults).await })
            .await;
        match found {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => {
                tracing::warn!(%scope, "cannot read the budget of a scope (database unavailable)");
                ScopeBudget::default()
            }
        }
    }

    /// Sends a heartbeat every interval while the consumer makes progress (a consumer stuck on
    /// ledger retries stops vouching for the view; gateways then apply their staleness policy).
    /// Each heartbeat carries the consumer's lag as `health` last knew it.
    pub async fn heartbeats(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
        health: Arc<crate::health::Health>,
    ) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let idle_ms = chrono::Utc::now().timestamp_millis()
                - self.last_progress_ms.load(std::sync::atomic::Ordering::Acquire);
            let bound = i64::try_from(self.config.heartbeat_interval.as_millis()).unwrap_or(i64::MAX).saturating_mul(3);
            if idle_ms > bound.max(15_000) {
                continue;
            }
            let beat = BudgetState::Heartbeat {
                consumer: self.config.consumer_id.clone(),
                at_ms: chrono::Utc::now().timestamp_millis(),
                lag: health.lag(),
            };
            // A broker in trouble holds a send for up to librdkafka's message timeout: never let
            // it hold the shutdown too.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                sent = self.send(&beat) => match sent {
                    Ok(()) => metrics::gauge!("tollgate_budget_heartbeat_timestamp_seconds")
                        .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0),
                    Err(e) => tracing::warn!(error = %e, "heartbeat not published"),
                },
            }
        }
    }
}

async fn limits_of<R: Record>(store: &dyn TenancyStore, id: &str) -> Result<Option<Limits>, StoreError> {
    let Some((record, _)) = get_record::<R>(store, id).await? else { return Ok(None) };
    let limits = record.limits().clone();
    match &limits.budget_id {
        Some(b) => match get_record::<BudgetRecord>(store, b).await? {
            Some((budget, _)) => Ok(Some(limits.with_defaults(&budget.limits))),
            None => Ok(Some(limits)),
        },
        None => Ok(Some(limits)),
    }
}

async fn load_budget(
    store: &dyn TenancyStore,
    scope: &str,
    defaults: &[u8],
) -> Result<Option<ScopeBudget>, StoreError> {
    let (tenant, model) = match scope.split_once("/model/") {
        Some((t, m)) => (t, Some(m)),
        None => (scope, None),
    };
    let Some((kind, id)) = tenant.split_once('/') else { return Ok(None) };
    let limits = match kind {
        "key" => limits_of::<KeyRecord>(store, id).await?,
        "team" => limits_of::<TeamRecord>(store, id).await?,
        "user" => limits_of::<UserRecord>(store, id).await?,
        "customer" => limits_of::<CustomerRecord>(store, id).await?,
        "org" => limits_of::<OrganizationRecord>(store, id).await?,
        _ => None,
    };
    let Some(limits) = limits else { return Ok(None) };
    let thresholds =
        if limits.alert_thresholds.is_empty() { defaults.to_vec() } else { limits.alert_thresholds.clone() };
    Ok(Some(match model {
        Some(m) => ScopeBudget { max: limits.model_max_budget.get(m).copied(), soft: None, thresholds },
        None => ScopeBudget { max: limits.max_budget, soft: limits.soft_budget, thresholds },
    }))
}
