//! The Python browser suites under `tests/console/`: Selenium driving Debian's headless
//! Chromium through chromedriver, with axe-core for accessibility. A suite reads the gateway's
//! URL and the keys it signs in with from the environment, saves screenshots, and writes what
//! it saw as one JSON object; it never decides a pass for the Rust test, which checks that object.

use crate::configs::MASTER_KEY;
use crate::services::{test_python, workspace_root};
use anyhow::{ensure, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One run of a suite: which script, against which gateway, with which extra environment.
pub struct BrowserSuite<'a> {
    /// The script's file name in `tests/console/` (`console_test.py`).
    pub script: &'a str,
    /// The gateway's base URL (`TOLLGATE_URL`); the master key goes along as `TOLLGATE_MASTER_KEY`.
    pub gateway: &'a str,
    /// Where the screenshots go (`TOLLGATE_SHOTS`).
    pub shots: PathBuf,
    /// Where the suite writes what it saw (`TOLLGATE_RESULT`).
    pub result: PathBuf,
    /// The suite's own variables: the keys it signs in with.
    pub env: &'a [(&'a str, &'a str)],
}

/// What a suite saw, and its output (stdout, then stderr).
pub struct BrowserRun {
    pub seen: Value,
    pub log: String,
}

impl BrowserSuite<'_> {
    /// Runs the suite to its end; fails with its output when it exits non-zero, or when Python,
    /// Chromium, chromedriver or axe-core are missing (`deploy/local/prereqs` installs them).
    pub fn run(&self) -> Result<BrowserRun> {
        let python = test_python();
        ensure!(python.exists(), "{} not found: run deploy/local/prereqs", python.display());
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            ensure!(
                Path::new(tool).exists(),
                "{tool} not found: run deploy/local/prereqs (Debian chromium, chromium-driver)"
            );
        }
        let repo = workspace_root();
        let axe = repo.join("gateway/ui/node_modules/axe-core/axe.min.js");
        ensure!(axe.exists(), "{} not found: run deploy/local/prereqs (npm ci in gateway/ui)", axe.display());
        let output = std::process::Command::new(&python)
            .arg(repo.join("tests/console").join(self.script))
            .env("TOLLGATE_URL", self.gateway)
            .env("TOLLGATE_MASTER_KEY", MASTER_KEY)
            .envs(self.env.iter().copied())
            .env("TOLLGATE_AXE", &axe)
            .env("TOLLGATE_SHOTS", &self.shots)
            .env("TOLLGATE_RESULT", &self.result)
            .output()?;
        let log = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        ensure!(output.status.success(), "the browser run failed (screenshots in {}):\n{log}", self.shots.display());
        let seen = serde_json::from_str(&std::fs::read_to_string(&self.result)?)?;
        Ok(BrowserRun { seen, log })
    }
}
