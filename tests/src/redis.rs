//! A private Redis (Debian's `redis-server`, installed by `deploy/local/prereqs`) on a loopback
//! port of its own, in memory only, for the shared response cache's tests; killed when dropped
//! or by [`Redis::stop`], so a test can take it away mid-run (or freeze it: [`Redis::freeze`]).
//! [`Redis::start_tls`] adds a TLS port that asks for client certificates, with certificates
//! made by `deploy/local/redis certs` ([`TlsFiles`]).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// The TLS port ([`Redis::start_tls`]).
    pub tls_port: Option<u16>,
}

/// A CA, and a server and a client certificate it signed, as PEM files (`deploy/local/redis
/// certs`): `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`.
pub struct TlsFiles {
    pub dir: PathBuf,
}

impl TlsFiles {
    /// Makes a new CA and its certificates in `dir`.
    pub fn make(dir: &Path) -> Result<TlsFiles> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/redis");
        let out = Command::new(&script).arg("certs").arg(dir).output().with_context(|| format!("{script:?}"))?;
        anyhow::ensure!(out.status.success(), "redis certs: {}", String::from_utf8_lossy(&out.stderr));
        Ok(TlsFiles { dir: dir.to_owned() })
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Redis {
    /// Starts a Redis and waits until it accepts connections.
    pub async fn start() -> Result<Redis> {
        Redis::launch(&[]).await
    }

    /// Starts a Redis that also listens over TLS with `tls`'s server certificate, and asks
    /// clients for a certificate its CA signed.
    pub async fn start_tls(tls: &TlsFiles) -> Result<Redis> {
        let tls_port = crate::prometheus::free_port()?.to_string();
        let args = [
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &tls.path("server.pem"),
            "--tls-key-file",
            &tls.path("server.key"),
            "--tls-ca-cert-file",
            &tls.path("ca.pem"),
            "--tls-auth-clients",
            "yes",
        ];
        Redis::launch(&args).await
    }

    async fn launch(extra: &[&str]) -> Result<Redis> {
        let port = crate::prometheus::free_port()?;
        let tls_port = extra.iter().position(|a| *a == "--tls-port").and_then(|i| extra.get(i + 1)?.parse().ok());
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server not found: deploy/local/prereqs installs it")?;
        let redis = Redis { child: Some(child), port, tls_port };
        for _ in 0..100 {
            let plain = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok();
            let tls = match tls_port {
                Some(p) => tokio::net::TcpStream::connect(("127.0.0.1", p)).await.is_ok(),
                None => true,
            };
            if plain && tls {
                return Ok(redis);
            }
            // Polling for the port; the time decides nothing.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server did not listen on 127.0.0.1:{port} (TLS {tls_port:?}) within 5 s")
    }

    /// Freezes it (SIGSTOP): it still accepts connections but answers nothing, as a Redis that
    /// stalls does.
    pub fn freeze(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// Lets a frozen Redis go on (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.child.as_ref().context("redis is stopped")?.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
        Ok(())
    }

    /// Every value it holds, as stored (read with `redis-cli`).
    pub fn values(&self) -> Result<Vec<Vec<u8>>> {
        let cli = |args: &[&str]| -> Result<Vec<u8>> {
            let port = self.port.to_string();
            let out = Command::new("redis-cli").args(["-p", &port, "--raw"]).args(args).output()?;
            anyhow::ensure!(out.status.success(), "redis-cli {args:?} failed");
            Ok(out.stdout)
        };
        let keys = String::from_utf8(cli(&["KEYS", "*"])?)?;
        keys.lines().filter(|k| !k.is_empty()).map(|k| cli(&["GET", k])).collect()
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
