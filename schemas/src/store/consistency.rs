//! Consistency levels of the ledgers and tenancy records: configuration
//! (`database.consistency`), applied as the session's default execution profile, so every
//! statement that does not need a serial read uses them.

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::statement::{Consistency, SerialConsistency};

/// Reads and writes: a quorum of replicas (in the local data centre, or in all of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    LocalQuorum,
    Quorum,
    EachQuorum,
    All,
}

/// The Paxos phase of lightweight transactions (budget fences, leases, tenancy writes), and
/// the reads that must see their latest commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Serial {
    #[default]
    LocalSerial,
    Serial,
}

/// The `consistency` setting. Levels below a quorum are not offered: budgets and the exactly
/// once fence need a read to see the last acknowledged write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CqlConsistency {
    #[serde(default)]
    pub level: Level,
    #[serde(default)]
    pub serial: Serial,
}

impl CqlConsistency {
    pub fn level(&self) -> Consistency {
        match self.level {
            Level::LocalQuorum => Consistency::LocalQuorum,
            Level::Quorum => Consistency::Quorum,
            Level::EachQuorum => Consistency::EachQuorum,
            Level::All => Consistency::All,
        }
    }

    pub fn serial(&self) -> SerialConsistency {
        match self.serial {
            Serial::LocalSerial => SerialConsistency::LocalSerial,
            Serial::Serial => SerialConsistency::Serial,
        }
    }

    /// The session's default profile: every statement without a level of its own uses it.
    pub fn profile(&self) -> ExecutionProfile {
        ExecutionProfile::builder().consistency(self.level()).serial_consistency(Some(self.serial())).build()
    }
}

/// The level of a read that must see the latest committed lightweight transaction: the
/// session's serial level used as a read consistency.
pub fn serial_read(session: &Session) -> Consistency {
    match session.get_default_execution_profile_handle().to_profile().get_serial_consistency() {
        Some(SerialConsistency::Serial) => Consistency::Serial,
        _ => Consistency::LocalSerial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_preserves_local_quorum_and_local_serial() {
        let c = CqlConsistency::default();
        assert_eq!(c.level(), Consistency::LocalQuorum);
        assert_eq!(c.serial(), SerialConsistency::LocalSerial);
        let p = c.profile();
        assert_eq!(p.get_consistency(), Consistency::LocalQuorum);
        assert_eq!(p.get_serial_consistency(), Some(SerialConsistency::LocalSerial));
    }

    #[test]
    fn parses_every_offered_level() {
        let c: CqlConsistency = serde_yaml::from_str("level: each_quorum\nserial: serial").unwrap();
        assert_eq!((c.level(), c.serial()), (Consistency::EachQuorum, SerialConsistency::Serial));
        let c: CqlConsistency = serde_yaml::from_str("level: quorum").unwrap();
        assert_eq!((c.level(), c.serial()), (Consistency::Quorum, SerialConsistency::LocalSerial));
    }

    #[test]
    fn rejects_levels_below_quorum_and_unknown_fields() {
        for bad in ["level: one", "level: local_one", "level: any", "serial: local_quorum", "levels: quorum"] {
            assert!(serde_yaml::from_str::<CqlConsistency>(bad).is_err(), "{bad}");
        }
    }
}
