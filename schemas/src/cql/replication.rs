//! The keyspace's replication: configuration (`database.replication`), rendered into the
//! `CREATE KEYSPACE` of `001_keyspace.cql`. Validated before it is spliced into CQL.

use std::collections::BTreeMap;

/// Most replicas per data centre (a replication factor beyond this is a typo).
pub const MAX_REPLICATION_FACTOR: u8 = 15;
/// Most data centres a keyspace may name.
pub const MAX_DATA_CENTERS: usize = 16;
/// Longest data-centre name.
pub const MAX_DC_NAME: usize = 48;

/// How the keyspace is replicated. Default: `SimpleStrategy` with one replica (one local node).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "class", deny_unknown_fields)]
pub enum Replication {
    /// Every replica in one ring, no notion of data centres (development only).
    SimpleStrategy { replication_factor: u8 },
    /// Replicas per data centre, by the name the snitch gives it (`dc1`, `datacenter1`, ...).
    NetworkTopologyStrategy { data_centers: BTreeMap<String, u8> },
}

impl Default for Replication {
    fn default() -> Self {
        Replication::SimpleStrategy { replication_factor: 1 }
    }
}

/// Error for a replication setting CQL would reject or that could not be spliced safely.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid replication: {0}")]
pub struct InvalidReplication(pub String);

fn check_factor(rf: u8) -> Result<(), InvalidReplication> {
    if (1..=MAX_REPLICATION_FACTOR).contains(&rf) {
        Ok(())
    } else {
        Err(InvalidReplication(format!("replication factor {rf} is not in 1..={MAX_REPLICATION_FACTOR}")))
    }
}

fn check_dc_name(name: &str) -> Result<(), InvalidReplication> {
    let ok = !name.is_empty()
        && name.len() <= MAX_DC_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(InvalidReplication(format!(
            "data centre name {name:?}: use 1-{MAX_DC_NAME} ASCII letters, digits, '_', '-' or '.'"
        )))
    }
}

impl Replication {
    /// Checks the factors and names; `Ok` means [`Replication::to_cql`] is safe to splice.
    pub fn validate(&self) -> Result<(), InvalidReplication> {
        match self {
            Replication::SimpleStrategy { replication_factor } => check_factor(*replication_factor),
            Replication::NetworkTopologyStrategy { data_centers } => {
                if data_centers.is_empty() || data_centers.len() > MAX_DATA_CENTERS {
                    return Err(InvalidReplication(format!(
                        "NetworkTopologyStrategy needs 1..={MAX_DATA_CENTERS} data centres, got {}",
                        data_centers.len()
                    )));
                }
                data_centers.iter().try_for_each(|(dc, rf)| check_dc_name(dc).and_then(|()| check_factor(*rf)))
            }
        }
    }

    /// The replication map of `CREATE KEYSPACE ... WITH replication = <this>`.
    pub fn to_cql(&self) -> Result<String, InvalidReplication> {
        self.validate()?;
        Ok(match self {
            Replication::SimpleStrategy { replication_factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
            }
            Replication::NetworkTopologyStrategy { data_centers } => {
                let dcs: Vec<String> = data_centers.iter().map(|(dc, rf)| format!(", '{dc}': {rf}")).collect();
                format!("{{'class': 'NetworkTopologyStrategy'{}}}", dcs.concat())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Replication, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    #[test]
    fn default_is_one_simple_replica() {
        assert_eq!(Replication::default().to_cql().unwrap(), "{'class': 'SimpleStrategy', 'replication_factor': 1}");
    }

    #[test]
    fn network_topology_renders_every_dc_in_order() {
        let r = parse("class: NetworkTopologyStrategy\ndata_centers: {dc2: 2, dc1: 3}").unwrap();
        assert_eq!(r.to_cql().unwrap(), "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}");
    }

    #[test]
    fn rejects_out_of_bound_factors_and_dc_counts() {
        assert!(parse("class: SimpleStrategy\nreplication_factor: 0").unwrap().validate().is_err());
        assert!(parse("class: SimpleStrategy\nreplication_factor: 15").unwrap().validate().is_ok());
        assert!(parse("class: SimpleStrategy\nreplication_factor: 16").unwrap().validate().is_err());
        assert!(parse("class: NetworkTopologyStrategy\ndata_centers: {}").unwrap().validate().is_err());
        let many: Vec<String> = (0..=MAX_DATA_CENTERS).map(|i| format!("dc{i}: 1")).collect();
        let r = parse(&format!("class: NetworkTopologyStrategy\ndata_centers: {{{}}}", many.join(", "))).unwrap();
        assert!(r.validate().is_err());
    }

    #[test]
    fn rejects_injection_in_dc_names() {
        let r = parse("class: NetworkTopologyStrategy\ndata_centers: {\"dc1': 3}; DROP KEYSPACE x; --\": 3}").unwrap();
        assert!(r.to_cql().is_err());
        let long = "d".repeat(MAX_DC_NAME + 1);
        assert!(parse(&format!("class: NetworkTopologyStrategy\ndata_centers: {{{long}: 3}}"))
            .unwrap()
            .validate()
            .is_err());
    }

    #[test]
    fn rejects_unknown_classes_and_fields() {
        assert!(parse("class: LocalStrategy").is_err());
        assert!(parse("class: SimpleStrategy\nreplication_factor: 1\ndata_centers: {dc1: 1}").is_err());
        assert!(parse("class: SimpleStrategy\nreplication_factor: 300").is_err());
    }
}
