//! `gateway.admin`: where the admin API, the spend API and the web console are served
//! (docs/design.md §1.6, "The admin listener").

use serde::Deserialize;

/// The admin side's own listener. Without `listen`, the admin and spend APIs and the console
/// are served on `gateway.listen` with the data plane, by the same workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Serve the admin API, the spend API and `/ui` on this address only (e.g. `127.0.0.1:4001`),
    /// by workers of their own, and no longer on `gateway.listen`.
    pub listen: Option<String>,
    /// Worker threads of that listener.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// The scheduling priority of those workers: `low` (the default) lowers them (nice 10), so a
    /// console reading a month of spend takes the cores only when the data plane leaves them;
    /// `normal` leaves them as the data plane's.
    #[serde(default)]
    pub priority: AdminPriority,
}

/// `gateway.admin.priority`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminPriority {
    #[default]
    Low,
    Normal,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings { listen: None, workers: default_workers(), priority: AdminPriority::default() }
    }
}

impl AdminSettings {
    /// The first setting out of its range, named, with what it must be. `main` is
    /// `gateway.listen`, `metrics` `gateway.metrics.listen`.
    pub fn out_of_range(&self, main: &str, metrics: Option<&str>) -> Option<(&'static str, &'static str)> {
        if !(1..=64).contains(&self.workers) {
            return Some(("gateway.admin.workers", "must be 1 to 64"));
        }
        let listen = self.listen.as_deref()?;
        if listen.trim().is_empty() {
            return Some(("gateway.admin.listen", "must be an address such as 127.0.0.1:4001"));
        }
        if listen == main {
            return Some(("gateway.admin.listen", "must differ from gateway.listen"));
        }
        if Some(listen) == metrics {
            return Some(("gateway.admin.listen", "must differ from gateway.metrics.listen"));
        }
        None
    }
}

fn default_workers() -> usize {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Result<AdminSettings, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    #[test]
    fn defaults_keep_everything_on_the_main_listener_at_low_priority() {
        let s = AdminSettings::default();
        assert_eq!((s.listen.as_deref(), s.workers, s.priority), (None, 1, AdminPriority::Low));
        assert_eq!(s.out_of_range("127.0.0.1:4000", None), None);
    }

    #[test]
    fn bad_settings_are_named() {
        let s = settings("{listen: '127.0.0.1:4000'}").unwrap();
        assert_eq!(s.out_of_range("127.0.0.1:4000", None).map(|e| e.0), Some("gateway.admin.listen"));
        let s = settings("{listen: '127.0.0.1:9464'}").unwrap();
        assert_eq!(s.out_of_range("127.0.0.1:4000", Some("127.0.0.1:9464")).map(|e| e.0), Some("gateway.admin.listen"));
        let s = settings("{listen: ' '}").unwrap();
        assert_eq!(s.out_of_range("127.0.0.1:4000", None).map(|e| e.0), Some("gateway.admin.listen"));
        let s = settings("{workers: 0}").unwrap();
        assert_eq!(s.out_of_range("127.0.0.1:4000", None).map(|e| e.0), Some("gateway.admin.workers"));
        let s = settings("{listen: '127.0.0.1:4001', workers: 2, priority: normal}").unwrap();
        assert_eq!(s.out_of_range("127.0.0.1:4000", None), None);
        assert!(settings("{priority: idle}").is_err(), "an unknown priority is refused");
        assert!(settings("{listen: '127.0.0.1:4001', port: 1}").is_err(), "an unknown key is refused");
    }
}
