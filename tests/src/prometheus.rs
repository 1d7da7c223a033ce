//! A real Prometheus (Debian's `prometheus` package, installed by `deploy/local/prereqs`) on
//! loopback with a scratch data directory, scraping the services of a test; and the PromQL the
//! shipped dashboards (`deploy/grafana/*.json`) and alert rules (`deploy/prometheus/*.yml`) use,
//! read from those files.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub use crate::services::free_port;

pub struct Prometheus {
    child: Child,
    pub url: String,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`) every second.
    pub async fn start(dir: &Path, targets: &[(&str, String)]) -> Result<Prometheus> {
        let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n");
        for (job, target) in targets {
            config.push_str(&format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"));
        }
        let config_path = dir.join(crate::unique("prometheus-").to_string() + ".yml");
        std::fs::write(&config_path, config)?;
        let data = dir.join(crate::unique("prometheus-data-"));
        let port = free_port()?;
        let log = std::fs::File::create(dir.join(crate::unique("prometheus-") + ".log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("cannot start prometheus: run deploy/local/prereqs")?;
        let p = Prometheus { child, url: format!("http://127.0.0.1:{port}"), client: reqwest::Client::new() };
        crate::eventually("prometheus to be ready", Duration::from_secs(60), || async {
            let resp = p.client.get(format!("{}/-/ready", p.url)).send().await?;
            Ok(resp.status().is_success().then_some(()))
        })
        .await?;
        Ok(p)
    }

    /// Evaluates `expr` now: its result series, or the error Prometheus gives (a parse error).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let resp = self.client.get(format!("{}/api/v1/query", self.url)).query(&[("query", expr)]).send().await?;
        let body: Value = resp.json().await?;
        if body["status"] != "success" {
            bail!("{}: {}", body["errorType"], body["error"]);
        }
        match body["data"]["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(body["data"]["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![body["data"]["result"].clone()]),
            other => bail!("unexpected result type {other:?}"),
        }
    }

    /// Stops Prometheus.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        }
        let exited = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        ensure!(matches!(exited, Ok(Ok(_))), "prometheus did not stop: {exited:?}");
        Ok(())
    }
}

/// Every PromQL expression of every panel of the shipped Grafana dashboards, with where it is.
pub fn dashboard_queries() -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let dir = deploy_dir().join("grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "json")) {
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for panel in dashboard["panels"].as_array().context("no panels")? {
            let targets = panel["targets"].as_array().context("a panel without targets")?;
            ensure!(!targets.is_empty(), "{name}: panel {} has no query", panel["title"]);
            for t in targets {
                let expr = t["expr"].as_str().context("a target without expr")?;
                out.push((format!("{name}: {}", panel["title"].as_str().unwrap_or_default()), expr.to_owned()));
            }
        }
    }
    ensure!(!out.is_empty(), "no dashboards in {}", dir.display());
    Ok(out)
}

/// An alert rule: its name and expression.
pub struct Alert {
    pub name: String,
    pub expr: String,
}

impl Alert {
    /// What the alert measures: its expression without the final comparison with a number
    /// (the rules file keeps every alert in the form `(signal) <op> <threshold>`).
    pub fn signal(&self) -> Result<&str> {
        let expr = self.expr.trim();
        let (left, threshold) = [">=", "<=", "==", "!=", ">", "<"]
            .iter()
            .filter_map(|op| expr.rfind(op).map(|i| (&expr[..i], &expr[i + op.len()..])))
            // The last comparison; of `>=` and `>` at the same place, the longer operator.
            .max_by_key(|(l, t)| (l.len(), usize::MAX - t.len()))
            .with_context(|| format!("{}: no comparison", self.name))?;
        let left = left.trim();
        ensure!(
            threshold.trim().parse::<f64>().is_ok() && left.starts_with('(') && left.ends_with(')'),
            "{}: not of the form `(signal) <op> <number>`: {expr}",
            self.name
        );
        Ok(left)
    }
}

/// Every alert rule of the shipped rule files (`deploy/prometheus/*.yml`, not their tests).
pub fn alert_rules() -> Result<Vec<Alert>> {
    let mut out = Vec::new();
    for file in rule_files()? {
        let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&file)?)?;
        for group in doc["groups"].as_sequence().context("no groups")? {
            for rule in group["rules"].as_sequence().context("no rules")? {
                let (Some(name), Some(expr)) = (rule["alert"].as_str(), rule["expr"].as_str()) else { continue };
                out.push(Alert { name: name.to_owned(), expr: expr.to_owned() });
            }
        }
    }
    ensure!(!out.is_empty(), "no alert rules");
    Ok(out)
}

/// The rule files (`*.yml` but not `*.test.yml`).
pub fn rule_files() -> Result<Vec<PathBuf>> {
    prometheus_files(|name| name.ends_with(".yml") && !name.ends_with(".test.yml"))
}

/// The rule unit tests beside the rules (`*.test.yml`).
pub fn rule_tests() -> Result<Vec<PathBuf>> {
    prometheus_files(|name| name.ends_with(".test.yml"))
}

fn prometheus_files(wanted: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let dir = deploy_dir().join("prometheus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| wanted(&n.to_string_lossy())))
        .collect();
    files.sort();
    Ok(files)
}
