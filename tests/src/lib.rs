//! Harness for Tollgate's end-to-end tests: builds and starts the real binaries on ephemeral
//! ports, against the Kafka and Cassandra that `deploy/local/up` starts, with a unique topic,
//! consumer group and keyspace per test so tests never share state.

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
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
}

impl Process {
    /// Starts `bin` with `args` and waits for a stdout line starting with `ready_prefix`.
    pub async fn start(bin: &str, args: &[&str], ready_prefix: &str, log_dir: &Path) -> Result<Process> {
        let path = binaries()?.join(bin);
        let log_path = log_dir.join(format!("{}.log", unique(&format!("{bin}-"))));
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(&path)
            .args(args)
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
        Ok(Process { name: bin.to_owned(), child, log_path, url })
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
    let path = path.to_string_lossy().into_owned();
    Process::start("tollgate-gateway", &["--config", &path, "--listen", "127.0.0.1:0"], "listening on ", log_dir).await
}

/// Writes `config` and starts a ledger consumer.
pub async fn start_consumer(log_dir: &Path, config: &str) -> Result<Process> {
    let path = log_dir.join(format!("{}.yaml", unique("consumer-")));
    std::fs::write(&path, config)?;
    let path = path.to_string_lossy().into_owned();
    Process::start("tollgate-ledger-consumer", &["--config", &path], "consuming ", log_dir).await
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

/// A CQL session to the test Cassandra.
pub async fn cql() -> Result<scylla::client::session::Session> {
    Ok(scylla::client::session_builder::SessionBuilder::new().known_node(cassandra_node()).build().await?)
}
