//! The processes under test: builds the workspace's binaries once per test process, starts them
//! on ephemeral ports with their configs written to a scratch directory, and stops or kills
//! them. A started process is killed when its handle is dropped, so a failing test leaves
//! nothing running.

use crate::configs::{ConsumerConfig, GatewayConfig, Spool};
use crate::unique;
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The repository's root (the workspace), for the scripts and assets tests run.
pub fn workspace_root() -> PathBuf {
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

/// A free TCP port on loopback (bound and released: the caller binds it next).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A scratch directory for configs and logs, kept under the target directory for inspection.
pub fn scratch_dir(test: &str) -> Result<PathBuf> {
    let dir = bin_dir()?.join("e2e").join(unique(&format!("{test}-")));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
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

// === impl Process ===

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
        ensure!(status.success(), "kill -{sig} {pid} failed");
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

// === starting the services ===

/// Starts the mock provider.
pub async fn start_mock(log_dir: &Path, extra: &[&str]) -> Result<Process> {
    Process::start("tollgate-mock-provider", extra, "listening on ", log_dir).await
}

/// Writes `config` and starts a gateway on an ephemeral port. A config without a spool gets a
/// spool directory of its own under `log_dir`.
pub async fn start_gateway(log_dir: &Path, config: &GatewayConfig) -> Result<Process> {
    start_gateway_with_env(log_dir, config, &[]).await
}

/// [`start_gateway`] with extra environment variables (the OTLP exporter's, log settings).
pub async fn start_gateway_with_env(log_dir: &Path, config: &GatewayConfig, env: &[(&str, &str)]) -> Result<Process> {
    let path = log_dir.join(format!("{}.yaml", unique("gateway-")));
    let mut config = config.clone();
    if config.spool.is_none() {
        config.spool = Some(Spool { dir: log_dir.join(unique("spool-")) });
    }
    std::fs::write(&path, config.to_yaml()?)?;
    let arg = path.to_string_lossy().into_owned();
    let args = ["--config", arg.as_str(), "--listen", "127.0.0.1:0"];
    let mut p = Process::start_with_env("tollgate-gateway", &args, env, "listening on ", log_dir).await?;
    p.config = Some(path);
    Ok(p)
}

/// Waits until `gateway` answers `/health/readiness` with 200 (its budget view read), as a load
/// balancer's readiness probe does before sending it traffic.
pub async fn wait_until_ready(gateway: &Process) -> Result<()> {
    let ready = format!("{}/health/readiness", gateway.url()?);
    crate::eventually("the gateway to be ready", Duration::from_secs(60), || async {
        Ok(reqwest::get(&ready).await.ok().filter(|r| r.status() == 200).map(|_| ()))
    })
    .await
}

/// Writes `config` and starts a ledger consumer.
pub async fn start_consumer(log_dir: &Path, config: &ConsumerConfig) -> Result<Process> {
    start_consumer_with_env(log_dir, config, &[]).await
}

/// [`start_consumer`] with extra environment variables (fault injection).
pub async fn start_consumer_with_env(log_dir: &Path, config: &ConsumerConfig, env: &[(&str, &str)]) -> Result<Process> {
    let path = log_dir.join(format!("{}.yaml", unique("consumer-")));
    std::fs::write(&path, config.to_yaml()?)?;
    let arg = path.to_string_lossy().into_owned();
    let mut p =
        Process::start_with_env("tollgate-ledger-consumer", &["--config", &arg], env, "consuming ", log_dir).await?;
    p.config = Some(path);
    Ok(p)
}

/// The Python of the test virtualenv `deploy/local/prereqs` makes from `tests/sdk/requirements.txt`
/// (the official SDKs, pytest, confluent-kafka, jsonschema): `$TOLLGATE_PYTHON`, else
/// `$TOLLGATE_CACHE/venv/bin/python` (default `~/.cache/tollgate`).
pub fn test_python() -> PathBuf {
    if let Ok(p) = std::env::var("TOLLGATE_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("TOLLGATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tollgate"));
    cache.join("venv/bin/python")
}
