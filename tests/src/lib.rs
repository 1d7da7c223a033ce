//! Harness for Tollgate's end-to-end tests: builds and starts the real binaries on ephemeral
//! ports, against the Kafka and Cassandra that `deploy/local/up` starts, with a unique topic,
//! consumer group and keyspace per test so tests never share state.

use anyhow::{bail, ensure, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Kafka bootstrap servers (`TOLLGATE_TEST_KAFKA`, default the local deployment).
pub fn kafka_bootstrap() -> String {
    std::env::var("TOLLGATE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A CQL contact point (`TOLLGATE_TEST_CASSANDRA`, default the local deployment).
pub fn cassandra_node() -> String {
    std::env::var("TOLLGATE_TEST_CASSANDRA").unwrap_or_else(|_| "127.0.0.1:9042".to_owned())
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

/// The test Kafka's SASL/PLAIN listener and its user: (bootstrap, user, password), from
/// `TOLLGATE_TEST_KAFKA_SASL` and deploy/local's `TOLLGATE_KAFKA_SASL_USER`/`_PASSWORD`.
pub fn kafka_sasl() -> (String, String, String) {
    (
        std::env::var("TOLLGATE_TEST_KAFKA_SASL").unwrap_or_else(|_| "127.0.0.1:9094".to_owned()),
        std::env::var("TOLLGATE_KAFKA_SASL_USER").unwrap_or_else(|_| "tollgate".to_owned()),
        std::env::var("TOLLGATE_KAFKA_SASL_PASSWORD").unwrap_or_else(|_| "tollgate-local-sasl-password".to_owned()),
    )
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

/// The login of the test Cassandra (`TOLLGATE_TEST_CQL_USER`/`_PASSWORD`, default deploy/local's).
pub fn cassandra_login() -> (String, String) {
    (
        std::env::var("TOLLGATE_TEST_CQL_USER").unwrap_or_else(|_| "cassandra".to_owned()),
        std::env::var("TOLLGATE_TEST_CQL_PASSWORD").unwrap_or_else(|_| "cassandra".to_owned()),
    )
}

/// The YAML lines (at `indent`) that give a config the test Cassandra's login.
pub fn cassandra_login_yaml(indent: &str) -> String {
    let (user, password) = cassandra_login();
    format!("{indent}username: {user}\n{indent}password: {password}\n")
}

/// A name unique to this test run: `prefix` + 12 hex digits.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}{}", &id[id.len() - 12..])
}

/// Polls `check` until it returns `Ok(Some(_))`, or fails with the last observation after
/// `timeout`. Never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The directory holding the workspace's binaries for the profile this test was built with.
fn bin_dir() -> Result<PathBuf> {
    // Test executables live in <target>/<profile>/deps/.
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("cannot locate the target directory from the test executable")
}

static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// Builds the binaries once per test process (cheap when they are up to date).
pub fn binaries() -> Result<PathBuf> {
    let result = BUILT.get_or_init(|| {
        let dir = bin_dir().map_err(|e| e.to_string())?;
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(workspace_root()).args([
            "build",
            "--quiet",
            "-p",
            "tollgate-gateway",
            "-p",
            "tollgate-ledger-consumer",
            "-p",
            "tollgate-benches",
            "--bins",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the binaries failed: {status}"));
        }
        Ok(dir)
    });
    result.clone().map_err(anyhow::Error::msg)
}

/// A started binary; killed when dropped. Its stderr goes to `log_path`.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub log_path: PathBuf,
    /// The address the process printed (`listening on ...`), if any.
    pub url: Option<String>,
    /// The config file it was started with, if any.
    pub config: Option<PathBuf>,
}

impl Process {
    /// Starts `bin` with `args` and waits for a stdout line starting with `ready_prefix`.
    pub async fn start(bin: &str, args: &[&str], ready_prefix: &str, log_dir: &Path) -> Result<Process> {
        Process::start_with_env(bin, args, &[], ready_prefix, log_dir).await
    }

    /// [`Process::start`] with extra environment variables.
    pub async fn start_with_env(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready_prefix: &str,
        log_dir: &Path,
    ) -> Result<Process> {
        let path = binaries()?.join(bin);
        let log_path = log_dir.join(format!("{}.log", unique(&format!("{bin}-"))));
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(&path)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(ready_prefix) {
                    return Ok::<_, anyhow::Error>(Some(rest.trim().to_owned()));
                }
            }
            Ok(None)
        })
        .await;
        let rest = match ready {
            Ok(Ok(Some(rest))) => rest,
            other => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("{bin} did not become ready ({other:?}); its log:\n{log}");
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = rest.starts_with("http").then_some(rest);
        Ok(Process { name: bin.to_owned(), child, log_path, url, config: None })
    }

    pub fn url(&self) -> Result<&str> {
        self.url.as_deref().context("process printed no address")
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("{} did not stop within 30 s of SIGTERM", self.name)
            }
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub async fn kill_hard(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, ...) without waiting.
    pub fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.child.id().context("process already exited")?;
        let status = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{sig} {pid} failed");
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// A scratch directory for configs and logs, kept under the target directory for inspection.
pub fn scratch_dir(test: &str) -> Result<PathBuf> {
    let dir = bin_dir()?.join("e2e").join(unique(&format!("{test}-")));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Starts the mock provider.
pub async fn start_mock(log_dir: &Path, extra: &[&str]) -> Result<Process> {
    Process::start("tollgate-mock-provider", extra, "listening on ", log_dir).await
}

/// Writes `config` and starts a gateway on an ephemeral port. A config without a `spool:`
/// section gets a spool directory of its own under `log_dir`.
pub async fn start_gateway(log_dir: &Path, config: &str) -> Result<Process> {
    let path = log_dir.join(format!("{}.yaml", unique("gateway-")));
    let mut config = config.to_owned();
    if !config.contains("\nspool:") {
        let spool = log_dir.join(unique("spool-"));
        config.push_str(&format!("spool:\n  dir: {}\n", spool.display()));
    }
    std::fs::write(&path, config)?;
    let arg = path.to_string_lossy().into_owned();
    let mut p =
        Process::start("tollgate-gateway", &["--config", &arg, "--listen", "127.0.0.1:0"], "listening on ", log_dir)
            .await?;
    p.config = Some(path);
    Ok(p)
}

/// Writes `config` and starts a ledger consumer.
pub async fn start_consumer(log_dir: &Path, config: &str) -> Result<Process> {
    start_consumer_with_env(log_dir, config, &[]).await
}

/// [`start_consumer`] with extra environment variables (fault injection).
pub async fn start_consumer_with_env(log_dir: &Path, config: &str, env: &[(&str, &str)]) -> Result<Process> {
    let path = log_dir.join(format!("{}.yaml", unique("consumer-")));
    std::fs::write(&path, config)?;
    let arg = path.to_string_lossy().into_owned();
    let mut p =
        Process::start_with_env("tollgate-ledger-consumer", &["--config", &arg], env, "consuming ", log_dir).await?;
    p.config = Some(path);
    Ok(p)
}

fn admin() -> Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", kafka_bootstrap()).create()?)
}

/// Creates a topic for one test.
pub async fn create_topic(name: &str, partitions: i32) -> Result<()> {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin()?.create_topics([&topic], &AdminOptions::new()).await?;
    for r in results {
        if let Err((t, e)) = r {
            bail!("cannot create topic {t}: {e}");
        }
    }
    Ok(())
}

/// Whether `group` has committed, on every partition of `topic`, the partition's end offset.
pub fn group_caught_up(group: &str, topic: &str, partitions: i32) -> Result<bool> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let at = committed.find_partition(topic, p).map(|e| e.offset());
        let done = match at {
            Some(Offset::Offset(o)) => o >= high,
            _ => high == 0,
        };
        if !done {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The offset `group` has committed on each partition of `topic` (`None`: nothing committed).
pub fn group_committed(group: &str, topic: &str, partitions: i32) -> Result<Vec<Option<i64>>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect())
}

/// A CQL session to the test Cassandra.
pub async fn cql() -> Result<scylla::client::session::Session> {
    let (user, password) = cassandra_login();
    Ok(scylla::client::session_builder::SessionBuilder::new()
        .known_node(cassandra_node())
        .user(user, password)
        .build()
        .await?)
}

// === ledger and topic helpers ===

/// No test topic has more partitions than this (scope totals read rows of every partition).
pub const MAX_TEST_PARTITIONS: i32 = 16;

/// Layer 2: the all-time total of a scope, summed over its per-partition rows.
pub async fn scope_total(session: &scylla::client::session::Session, ks: &str, scope: &str) -> Result<(i64, i64)> {
    let rows = session
        .query_unpaged(
            format!(
                "SELECT spent_nano_usd, events FROM {ks}.spend_aggregates WHERE scope_id = ? AND window_id = 'all' \
                 AND partition IN ?"
            ),
            (scope, (0..MAX_TEST_PARTITIONS).collect::<Vec<i32>>()),
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
pub async fn event_ledger_totals(session: &scylla::client::session::Session, ks: &str) -> Result<(i64, i64)> {
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

/// Reads `n` records of `topic` and produces them again, key, value and headers unchanged.
pub async fn republish_some(topic: &str, n: usize) -> Result<usize> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", unique("copier-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut copied = 0;
    while copied < n {
        let msg =
            tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.context("no record to copy")??;
        let mut headers = OwnedHeaders::new();
        if let Some(h) = msg.headers() {
            for header in h.iter() {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        copied += 1;
    }
    Ok(copied)
}

/// The identity the gateway gives a config-file key (SHA-256 hex of the raw key), computed
/// here on its own.
pub fn key_hash(raw: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// The server secret every test gateway hashes virtual keys with.
pub const KEY_HASH_SECRET: &str = "tollgate-e2e-key-hash-secret-0123456789abcdef";

/// The identity (`token`) the gateway gives a key made by the admin API: HMAC-SHA-256 with
/// [`KEY_HASH_SECRET`] over the key's SHA-256, computed here on its own.
pub fn key_token(raw: &str) -> String {
    use hmac::Mac;
    use sha2::{Digest, Sha256};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(KEY_HASH_SECRET.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(&Sha256::digest(raw.as_bytes()));
    hex::encode(mac.finalize().into_bytes())
}

// === load with ground truth ===

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

/// `virtual_keys:` YAML for [`TENANT_KEYS`].
pub fn tenant_keys_yaml() -> String {
    TENANT_KEYS
        .iter()
        .map(|(k, team)| match team {
            Some(t) => format!("  - key: {k}\n    team_id: {t}\n"),
            None => format!("  - key: {k}\n"),
        })
        .collect()
}

/// Request `i` of a load run and what the mock provider will charge for it at the test prices.
pub fn request_body(i: usize) -> (serde_json::Value, i64, String) {
    let content = "x".repeat(7 + (i * 37) % 400);
    let max_tokens = 1 + (i * 13) % 97;
    let prompt_tokens = 1 + content.len() as i64 / 4;
    let cost = prompt_tokens * INPUT_PRICE + max_tokens as i64 * OUTPUT_PRICE;
    let customer = format!("cust-{}", i % 5);
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "user": customer,
    });
    (body, cost, customer)
}

/// What the gateways served, per ledger scope (all-time window): `(spent, events)`.
#[derive(Debug, Default)]
pub struct GroundTruth {
    pub scopes: std::collections::BTreeMap<String, (i64, i64)>,
    pub requests: usize,
    pub rejected: usize,
    /// Good events a test put on the usage topic itself, beside the served requests.
    pub injected: usize,
}

impl GroundTruth {
    fn add(&mut self, key: &str, team: Option<&str>, customer: &str, cost: i64) {
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
    pub async fn assert_ledger(&self, session: &scylla::client::session::Session, ks: &str, label: &str) -> Result<()> {
        for (scope, expected) in &self.scopes {
            let got = scope_total(session, ks, scope).await?;
            anyhow::ensure!(got == *expected, "{label}: scope {scope}: ledger {got:?} != served {expected:?}");
        }
        let (count, _) = event_ledger_totals(session, ks).await?;
        anyhow::ensure!(
            count == (self.requests + self.injected) as i64,
            "{label}: event ledger has {count} rows, served {} and injected {}",
            self.requests,
            self.injected
        );
        Ok(())
    }

    /// Whether the ledger already equals the ground truth at every scope (rows of one batch are
    /// written concurrently, so the key rows may be complete a moment before the team rows).
    pub async fn ledger_complete(&self, session: &scylla::client::session::Session, ks: &str) -> Result<bool> {
        for (scope, expected) in &self.scopes {
            if scope_total(session, ks, scope).await? != *expected {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Sends requests round-robin over `gateways` with `concurrency` in flight until `stop` returns
/// true (checked between requests) or `max_requests` were sent. Every 200 answer's reported
/// cost is checked against the independent price computation and added to the ground truth;
/// 503s (metering backlog full, a documented policy) are counted as rejected.
pub async fn drive_load(
    gateways: &[String],
    concurrency: usize,
    max_requests: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<GroundTruth> {
    use futures::stream::StreamExt;
    let client = reqwest::Client::new();
    let results: Vec<Result<Option<(usize, i64, String)>>> = futures::stream::iter(0..max_requests)
        .take_while(|_| {
            let stop = stop.clone();
            async move { !stop.load(std::sync::atomic::Ordering::Relaxed) }
        })
        .map(|i| {
            let client = client.clone();
            let gw = gateways[i % gateways.len()].clone();
            async move {
                let (body, expected, customer) = request_body(i);
                let (key, _) = TENANT_KEYS[i % TENANT_KEYS.len()];
                let resp = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body).send().await?;
                if resp.status() == 503 {
                    return Ok(None);
                }
                anyhow::ensure!(resp.status() == 200, "request {i}: status {} {}", resp.status(), resp.text().await?);
                let reported: i64 =
                    resp.headers().get("x-tollgate-cost-nano-usd").context("no cost header")?.to_str()?.parse()?;
                anyhow::ensure!(
                    reported == expected,
                    "request {i}: reported cost {reported} != price table {expected}"
                );
                Ok(Some((i, reported, customer)))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut truth = GroundTruth::default();
    for r in results {
        match r? {
            Some((i, cost, customer)) => {
                let (key, team) = TENANT_KEYS[i % TENANT_KEYS.len()];
                truth.add(key, team, &customer, cost);
            }
            None => truth.rejected += 1,
        }
    }
    Ok(truth)
}

/// Runs `tollgate-ledger-consumer --config <config> reconcile` and returns (success, output).
pub async fn reconcile(config_path: &Path) -> Result<(bool, String)> {
    let bin = binaries()?.join("tollgate-ledger-consumer");
    let out = Command::new(bin).arg("--config").arg(config_path).arg("reconcile").output().await?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Reads `topic` from the beginning until `n` usage events arrived (or `timeout`), checking
/// each record's CloudEvents headers; returns them by request id. Fails on a duplicate id.
pub async fn collect_events(
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Result<std::collections::HashMap<String, tollgate_schemas::UsageEvent>> {
    use rdkafka::consumer::StreamConsumer;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", unique("verify-"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut events = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while events.len() < n {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .with_context(|| format!("only {} of {n} events arrived", events.len()))??;
        let event = tollgate_schemas::UsageEvent::decode(msg.payload().context("empty record")?)?;
        let headers = msg.headers().context("no CloudEvents headers")?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        anyhow::ensure!(header("ce_id") == Some(event.event_id.to_string()), "ce_id is not the event id");
        anyhow::ensure!(header("ce_specversion").as_deref() == Some("1.0"), "no ce_specversion");
        anyhow::ensure!(header("ce_type").as_deref() == Some("dev.tollgate.usage.v1"), "wrong ce_type");
        anyhow::ensure!(header("ce_source").is_some(), "no ce_source");
        anyhow::ensure!(msg.key() == Some(event.budget_owner().as_bytes()), "record key is not the budget owner");
        anyhow::ensure!(events.insert(event.request_id.clone(), event).is_none(), "duplicate event");
    }
    Ok(events)
}

// === configs ===

/// A `model_list` entry for `gpt-4o-mini` at `api_base`, served to clients as `name`.
pub fn model_entry(name: &str, api_base: &str, extra_params: &str) -> String {
    format!("  - model_name: {name}\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: \"{api_base}\"{extra_params}}}\n")
}

/// A gateway config: the given models (each priced at the test prices), the test tenancy, Kafka
/// at `bootstrap` on `topic`, and any `extra` top-level YAML (`router_settings:`, `spool:`).
pub fn gateway_yaml(id: &str, models: &[String], topic: &str, bootstrap: &str, extra: &str) -> String {
    let mut names: Vec<&str> =
        models.iter().filter_map(|m| m.split("model_name: ").nth(1)?.split('\n').next()).collect();
    names.sort_unstable();
    names.dedup();
    let prices: String = names
        .iter()
        .map(|n| {
            format!("  {n}: {{input_nano_usd_per_token: {INPUT_PRICE}, output_nano_usd_per_token: {OUTPUT_PRICE}}}\n")
        })
        .collect();
    format!(
        "gateway:\n  id: {id}\n  key_hash_secret: {KEY_HASH_SECRET}\nmodel_list:\n{models}prices:\n{prices}virtual_keys:\n{keys}kafka:\n  bootstrap_servers: {bootstrap}\n  usage_topic: {topic}\n{extra}",
        models = models.concat(),
        keys = tenant_keys_yaml(),
    )
}

/// A ledger-consumer config on the test Kafka and Cassandra. `consumer_properties` is a YAML
/// flow mapping of librdkafka settings (`{}` for none).
pub fn consumer_yaml(
    topic: &str,
    group: &str,
    keyspace: &str,
    consumer_properties: &str,
    max_messages: usize,
) -> String {
    format!(
        "kafka:\n  bootstrap_servers: {kafka}\n  usage_topic: {topic}\n  dlq_topic: {topic}-dlq\n  group_id: {group}\n  \
         consumer_properties: {consumer_properties}\ncassandra:\n  contact_points: [{cql}]\n  keyspace: {keyspace}\n{login}\
         batch:\n  max_messages: {max_messages}\n  max_wait_ms: 20\n",
        kafka = kafka_bootstrap(),
        cql = cassandra_node(),
        login = cassandra_login_yaml("  "),
    )
}

// === tenancy and the admin API ===

/// The master key of the tenancy tests' gateways.
pub const MASTER_KEY: &str = "sk-master-e2e-0123456789";

/// The Kafka topics of one tenancy test: usage, budget state and control.
pub struct Topics {
    pub usage: String,
    pub budget_state: String,
    pub control: String,
}

impl Topics {
    pub async fn create(prefix: &str, usage_partitions: i32) -> Result<Topics> {
        let t = Topics {
            usage: unique(&format!("{prefix}-usage-")),
            budget_state: unique(&format!("{prefix}-budget-")),
            control: unique(&format!("{prefix}-control-")),
        };
        create_topic(&t.usage, usage_partitions).await?;
        create_topic(&t.budget_state, 3).await?;
        create_topic(&t.control, 1).await?;
        Ok(t)
    }
}

/// A gateway config with tenancy in Cassandra (`keyspace`), the admin API on [`MASTER_KEY`],
/// models `gpt-4o-mini` and `gpt-4o` on the mock, and `extra` YAML appended.
pub fn tenancy_gateway_yaml(id: &str, mock: &str, topics: &Topics, keyspace: &str, extra: &str) -> String {
    let models =
        [model_entry("gpt-4o-mini", &format!("{mock}/v1"), ""), model_entry("gpt-4o", &format!("{mock}/v1"), "")];
    gateway_yaml(
        id,
        &models,
        &topics.usage,
        &kafka_bootstrap(),
        &format!(
            "  budget_state_topic: {bs}\n  control_topic: {ct}\ndatabase:\n  contact_points: [{cql}]\n  keyspace: {keyspace}\n\
             {login}general_settings:\n  master_key: {MASTER_KEY}\n{extra}",
            login = cassandra_login_yaml("  "),
            bs = topics.budget_state,
            ct = topics.control,
            cql = cassandra_node(),
        ),
    )
}

/// A client of one gateway's admin API.
pub struct AdminApi {
    pub client: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl AdminApi {
    pub fn new(base: &str) -> AdminApi {
        AdminApi { client: reqwest::Client::new(), base: base.to_owned(), key: MASTER_KEY.to_owned() }
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> Result<(u16, serde_json::Value)> {
        let resp = self.client.post(format!("{}{path}", self.base)).bearer_auth(&self.key).json(&body).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(serde_json::Value::Null)))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, serde_json::Value)> {
        let resp = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(serde_json::Value::Null)))
    }

    /// POSTs and requires 200; returns the body.
    pub async fn ok(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let (status, v) = self.post(path, body).await?;
        ensure!(status == 200, "{path}: {status} {v}");
        Ok(v)
    }
}

/// A small chat completion with `key`; returns the response.
pub async fn chat_as(
    client: &reqwest::Client,
    gw: &str,
    key: &str,
    model: &str,
    user: Option<&str>,
) -> Result<reqwest::Response> {
    let mut body =
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5});
    if let Some(u) = user {
        body["user"] = serde_json::json!(u);
    }
    Ok(client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body).send().await?)
}

/// The `error.code` of an OpenAI error envelope.
pub async fn error_code(resp: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, v["error"]["code"].as_str().unwrap_or_default().to_owned(), v)
}
