//! `gateway.console`: the web console served under `/ui` (docs/console.md).

use serde::Deserialize;

/// The console: on by default, on the gateway's own listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve `/ui` and accept console sessions on the admin and spend APIs.
    #[serde(default = "super::default_true")]
    pub enabled: bool,
    /// How long a console session lives after sign-in, in seconds.
    #[serde(default = "default_session_ttl_secs")]
    pub session_ttl_secs: u64,
    /// How long a session may sit unused before it ends, in seconds.
    #[serde(default = "default_session_idle_secs")]
    pub session_idle_secs: u64,
    /// Mark the session cookie `Secure`: set it when clients reach the gateway over TLS (the
    /// gateway terminates no TLS itself; a proxy in front does).
    #[serde(default)]
    pub secure_cookie: bool,
    /// Sign-in attempts one client address may make per minute.
    #[serde(default = "default_sign_in_per_ip")]
    pub sign_in_per_ip_per_minute: u32,
    /// Sign-in attempts of all clients together per minute.
    #[serde(default = "default_sign_in_total")]
    pub sign_in_per_minute: u32,
    /// Live sessions at most; the oldest are dropped beyond it.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: true,
            session_ttl_secs: default_session_ttl_secs(),
            session_idle_secs: default_session_idle_secs(),
            secure_cookie: false,
            sign_in_per_ip_per_minute: default_sign_in_per_ip(),
            sign_in_per_minute: default_sign_in_total(),
            max_sessions: default_max_sessions(),
        }
    }
}

impl ConsoleSettings {
    /// The first setting out of its range, named, with what it must be.
    pub fn out_of_range(&self) -> Option<(&'static str, &'static str)> {
        if !(60..=7 * 86_400).contains(&self.session_ttl_secs) {
            return Some(("gateway.console.session_ttl_secs", "must be 60 to 604800 seconds"));
        }
        if !(60..=self.session_ttl_secs).contains(&self.session_idle_secs) {
            return Some(("gateway.console.session_idle_secs", "must be 60 seconds to session_ttl_secs"));
        }
        if !(1..=10_000).contains(&self.sign_in_per_ip_per_minute) {
            return Some(("gateway.console.sign_in_per_ip_per_minute", "must be 1 to 10000"));
        }
        if !(1..=100_000).contains(&self.sign_in_per_minute) {
            return Some(("gateway.console.sign_in_per_minute", "must be 1 to 100000"));
        }
        if !(1..=1_000_000).contains(&self.max_sessions) {
            return Some(("gateway.console.max_sessions", "must be 1 to 1000000"));
        }
        None
    }
}

fn default_session_ttl_secs() -> u64 {
    8 * 3_600
}
fn default_session_idle_secs() -> u64 {
    3_600
}
fn default_sign_in_per_ip() -> u32 {
    10
}
fn default_sign_in_total() -> u32 {
    300
}
fn default_max_sessions() -> u64 {
    10_000
}
