//! A private Redis (Debian's `redis-server`, installed by `deploy/local/prereqs`) on a loopback
//! port of its own, in memory only, for the shared response cache's tests; killed when dropped
//! or by [`Redis::stop`], so a test can take it away mid-run (or freeze it: [`Redis::freeze`]).

use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    /// Starts a Redis and waits until it accepts connections.
    pub async fn start() -> Result<Redis> {
        let port = crate::prometheus::free_port()?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server not found: deploy/local/prereqs installs it")?;
        let redis = Redis { child: Some(child), port };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(redis);
            }
            // Polling for the port; the time decides nothing.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server did not listen on 127.0.0.1:{port} within 5 s")
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
