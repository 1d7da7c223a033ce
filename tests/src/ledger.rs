//! The test Cassandra and the ledger in it: where it is, a CQL session, the totals of both
//! ledger layers, the identities that name ledger scopes, and the ground truth of what the
//! gateways served, which every metering test compares the ledger with to the nano-dollar.
//! Nothing here writes to a ledger: the services under test are its only writers.

use crate::configs::KEY_HASH_SECRET;
use crate::services::binaries;
use anyhow::{ensure, Result};
use scylla::client::session::Session;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// A CQL contact point (`TOLLGATE_TEST_CASSANDRA`, default the local deployment).
pub fn cassandra_node() -> String {
    std::env::var("TOLLGATE_TEST_CASSANDRA").unwrap_or_else(|_| "127.0.0.1:9042".to_owned())
}

/// The login of the test Cassandra (`TOLLGATE_TEST_CQL_USER`/`_PASSWORD`, default deploy/local's).
pub fn cassandra_login() -> (String, String) {
    (
        std::env::var("TOLLGATE_TEST_CQL_USER").unwrap_or_else(|_| "cassandra".to_owned()),
        std::env::var("TOLLGATE_TEST_CQL_PASSWORD").unwrap_or_else(|_| "cassandra".to_owned()),
    )
}

/// How the services under test reach Cassandra.
pub fn cassandra_connection() -> tollgate_schemas::store::CqlConnection {
    let (user, password) = cassandra_login();
    tollgate_schemas::store::CqlConnection {
        contact_points: vec![cassandra_node()],
        username: Some(user),
        password: Some(tollgate_schemas::secret::Secret::new(password)),
        ..Default::default()
    }
}

/// The certificate clients of the test Cassandra trust for TLS (made by deploy/local/up).
pub fn cassandra_ca() -> PathBuf {
    std::env::var("TOLLGATE_TEST_CQL_CA").map(PathBuf::from).unwrap_or_else(|_| {
        let state = std::env::var("TOLLGATE_LOCAL_DIR").map(PathBuf::from).unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".local/state/tollgate-local")
        });
        state.join("cassandra/tls/node.pem")
    })
}

/// A CQL session to the test Cassandra.
pub async fn cql() -> Result<Session> {
    let (user, password) = cassandra_login();
    Ok(scylla::client::session_builder::SessionBuilder::new()
        .known_node(cassandra_node())
        .user(user, password)
        .build()
        .await?)
}

// === the two ledger layers ===

/// No test topic has more partitions than this (scope totals read rows of every partition).
pub const MAX_TEST_PARTITIONS: i32 = 16;

/// Layer 2: the all-time total of a scope, summed over its per-partition rows.
pub async fn scope_total(session: &Session, ks: &str, scope: &str) -> Result<(i64, i64)> {
    scope_window_total(session, ks, scope, "all").await
}

/// Layer 2: a scope's total in one window (`all`, `m:2026-11`, `d:2026-11-30`, ...), summed
/// over its per-partition rows.
pub async fn scope_window_total(session: &Session, ks: &str, scope: &str, window: &str) -> Result<(i64, i64)> {
    let rows = session
        .query_unpaged(
            format!(
                "SELECT spent_nano_usd, events FROM {ks}.spend_aggregates WHERE scope_id = ? AND window_id = ? \
                 AND partition IN ?"
            ),
            (scope, window, (0..MAX_TEST_PARTITIONS).collect::<Vec<i32>>()),
        )
        .await?
        .into_rows_result()?;
    let mut spent = 0i64;
    let mut events = 0i64;
    for row in rows.rows::<(Option<i64>, Option<i64>)>()? {
        let (s, e) = row?;
        spent += s.unwrap_or(0);
        events += e.unwrap_or(0);
    }
    Ok((spent, events))
}

/// Layer 1: (count, sum of cost) of the whole event ledger of the keyspace.
pub async fn event_ledger_totals(session: &Session, ks: &str) -> Result<(i64, i64)> {
    let rows =
        session.query_unpaged(format!("SELECT cost_nano_usd FROM {ks}.usage_events"), &[]).await?.into_rows_result()?;
    let mut count = 0;
    let mut sum = 0;
    for row in rows.rows::<(Option<i64>,)>()? {
        count += 1;
        sum += row?.0.unwrap_or(0);
    }
    Ok((count, sum))
}

/// Layer 1 by request id: (cost, copies), read page by page.
pub async fn layer1_by_request(session: &Session, ks: &str) -> Result<HashMap<String, (i64, usize)>> {
    use futures::TryStreamExt;
    let mut stmt = scylla::statement::Statement::new(format!("SELECT body FROM {ks}.usage_events"));
    stmt.set_page_size(5_000);
    let mut rows = session.query_iter(stmt, &[]).await?.rows_stream::<(Option<String>,)>()?;
    let mut out: HashMap<String, (i64, usize)> = HashMap::new();
    while let Some((body,)) = rows.try_next().await? {
        let event = tollgate_schemas::UsageEvent::decode(body.unwrap_or_default().as_bytes())?;
        let entry = out.entry(event.request_id).or_insert((event.cost_nano_usd.0, 0));
        entry.1 += 1;
    }
    Ok(out)
}

/// Waits (up to four minutes) until every request id of `wanted` is in Layer 1; returns Layer 1
/// by request id as [`layer1_by_request`] reads it.
pub async fn wait_for_layer1(session: &Session, ks: &str, wanted: &[&str]) -> Result<HashMap<String, (i64, usize)>> {
    crate::eventually("every answered request in the event ledger", Duration::from_secs(240), || async {
        let ledger = layer1_by_request(session, ks).await?;
        let missing: Vec<&&str> = wanted.iter().filter(|id| !ledger.contains_key(**id)).collect();
        if missing.is_empty() {
            return Ok(Some(ledger));
        }
        anyhow::bail!("{} of {} missing, e.g. {:?}", missing.len(), wanted.len(), &missing[..missing.len().min(3)])
    })
    .await
}

/// Runs `tollgate-ledger-consumer --config <config> reconcile` and returns (success, output).
pub async fn reconcile(config_path: &Path) -> Result<(bool, String)> {
    let bin = binaries()?.join("tollgate-ledger-consumer");
    let out = Command::new(bin).arg("--config").arg(config_path).arg("reconcile").output().await?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

// === identities of keys ===

/// The identity the gateway gives a config-file key (SHA-256 hex of the raw key), computed
/// here on its own.
pub fn key_hash(raw: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// The identity (`token`) the gateway gives a key made by the admin API: HMAC-SHA-256 with
/// [`KEY_HASH_SECRET`] over the key's SHA-256, computed here on its own.
pub fn key_token(raw: &str) -> String {
    use hmac::Mac;
    use sha2::{Digest, Sha256};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(KEY_HASH_SECRET.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(&Sha256::digest(raw.as_bytes()));
    hex::encode(mac.finalize().into_bytes())
}

// === ground truth ===

/// What the gateways served, per ledger scope (all-time window): `(spent, events)`.
#[derive(Debug, Default)]
pub struct GroundTruth {
    pub scopes: BTreeMap<String, (i64, i64)>,
    pub requests: usize,
    pub rejected: usize,
    /// Good events a test put on the usage topic itself, beside the served requests.
    pub injected: usize,
}

// === impl GroundTruth ===

impl GroundTruth {
    /// Counts one served request of `cost` in every scope it belongs to.
    pub(crate) fn add(&mut self, key: &str, team: Option<&str>, customer: &str, cost: i64) {
        let mut scopes = vec![format!("key/{}", key_hash(key)), format!("customer/{customer}")];
        if let Some(t) = team {
            scopes.push(format!("team/{t}"));
        }
        for s in scopes {
            for scope in [format!("{s}/model/gpt-4o-mini"), s] {
                let e = self.scopes.entry(scope).or_default();
                e.0 += cost;
                e.1 += 1;
            }
        }
        self.requests += 1;
    }

    /// Adds `n` events a test published itself, each of `cost`, counted in every one of `scopes`.
    pub fn add_injected(&mut self, scopes: &[String], cost: i64, n: usize) {
        for scope in scopes {
            let e = self.scopes.entry(scope.clone()).or_default();
            e.0 += cost * n as i64;
            e.1 += n as i64;
        }
        self.injected += n;
    }

    /// Asserts the ledger's all-time totals equal the ground truth at every scope.
    pub async fn assert_ledger(&self, session: &Session, ks: &str, label: &str) -> Result<()> {
        for (scope, expected) in &self.scopes {
            let got = scope_total(session, ks, scope).await?;
            ensure!(got == *expected, "{label}: scope {scope}: ledger {got:?} != served {expected:?}");
        }
        let (count, _) = event_ledger_totals(session, ks).await?;
        ensure!(
            count == (self.requests + self.injected) as i64,
            "{label}: event ledger has {count} rows, served {} and injected {}",
            self.requests,
            self.injected
        );
        Ok(())
    }

    /// Whether the ledger already equals the ground truth at every scope (rows of one batch are
    /// written concurrently, so the key rows may be complete a moment before the team rows).
    pub async fn ledger_complete(&self, session: &Session, ks: &str) -> Result<bool> {
        for (scope, expected) in &self.scopes {
            if scope_total(session, ks, scope).await? != *expected {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Waits until the event ledger holds exactly the answers of `charged` (key, cost in nano-USD),
/// then checks each key's and each team's total in Layer 2.
pub async fn assert_charged(session: &Session, ks: &str, charged: &[(&str, i64)]) -> Result<()> {
    let mut per_scope: HashMap<String, i64> = HashMap::new();
    for (key, cost) in charged {
        *per_scope.entry(format!("key/{}", key_hash(key))).or_default() += cost;
        if let Some(team) = crate::configs::TENANT_KEYS.iter().find(|(k, _)| k == key).and_then(|(_, t)| *t) {
            *per_scope.entry(format!("team/{team}")).or_default() += cost;
        }
    }
    let total: i64 = charged.iter().map(|(_, c)| c).sum();
    crate::eventually("the ledger to hold every answer", Duration::from_secs(90), || async {
        let (count, sum) = event_ledger_totals(session, ks).await?;
        Ok((count == charged.len() as i64 && sum == total).then_some(()))
    })
    .await?;
    for (scope, expected) in &per_scope {
        ensure!(scope_total(session, ks, scope).await?.0 == *expected, "{scope}: expected {expected}");
    }
    Ok(())
}
