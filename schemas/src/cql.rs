//! The CQL schema, from `schemas/cql/*.cql`, with the keyspace name substituted.
//! Only CQL that both Apache Cassandra 5 and ScyllaDB accept belongs here. The keyspace's
//! replication (`{{replication}}`) is configuration: see [`Replication`].

mod replication;

pub use replication::{InvalidReplication, Replication};

const FILES: &[(&str, &str)] = &[
    ("001_keyspace.cql", include_str!("../cql/001_keyspace.cql")),
    ("002_usage_events.cql", include_str!("../cql/002_usage_events.cql")),
    ("003_spend_aggregates.cql", include_str!("../cql/003_spend_aggregates.cql")),
    ("004_tenancy.cql", include_str!("../cql/004_tenancy.cql")),
    ("005_partition_ledger.cql", include_str!("../cql/005_partition_ledger.cql")),
    ("006_budget_leases.cql", include_str!("../cql/006_budget_leases.cql")),
    ("007_dead_letters.cql", include_str!("../cql/007_dead_letters.cql")),
    ("008_usage_events_by_key.cql", include_str!("../cql/008_usage_events_by_key.cql")),
    ("009_tenancy_changes.cql", include_str!("../cql/009_tenancy_changes.cql")),
    ("010_period_closes.cql", include_str!("../cql/010_period_closes.cql")),
    ("011_reconcile_runs.cql", include_str!("../cql/011_reconcile_runs.cql")),
    ("012_spend_daily.cql", include_str!("../cql/012_spend_daily.cql")),
];

/// Error for a keyspace name CQL would not accept unquoted.
#[derive(Debug, thiserror::Error)]
#[error("invalid keyspace name {0:?}: use 1-48 ASCII letters, digits or underscores, starting with a letter")]
pub struct InvalidKeyspace(pub String);

/// Checks a keyspace name before it is spliced into CQL.
pub fn validate_keyspace(name: &str) -> Result<(), InvalidKeyspace> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(InvalidKeyspace(name.to_owned()))
    }
}

/// A keyspace name or replication setting that cannot be spliced into CQL.
#[derive(Debug, thiserror::Error)]
pub enum InvalidSchema {
    #[error(transparent)]
    Keyspace(#[from] InvalidKeyspace),
    #[error(transparent)]
    Replication(#[from] InvalidReplication),
}

/// Every schema statement, in order, for `keyspace` replicated as `replication`. Each is
/// idempotent (`IF NOT EXISTS`): an existing keyspace keeps the replication it has.
pub fn statements(keyspace: &str, replication: &Replication) -> Result<Vec<String>, InvalidSchema> {
    validate_keyspace(keyspace)?;
    let replication = replication.to_cql()?;
    Ok(FILES
        .iter()
        .flat_map(|(_, text)| split_statements(text))
        .map(|s| s.replace("{{keyspace}}", keyspace).replace("{{replication}}", &replication))
        .collect())
}

fn split_statements(text: &str) -> Vec<String> {
    let without_comments: String =
        text.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    without_comments.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_keyspace_qualified() {
        let stmts = statements("tg_test", &Replication::default()).unwrap();
        assert_eq!(stmts.len(), 18);
        assert!(stmts[0].starts_with("CREATE KEYSPACE IF NOT EXISTS tg_test"));
        assert!(stmts[0].ends_with("replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"));
        assert!(stmts.iter().all(|s| !s.contains("{{")));
        assert!(stmts[2].contains("tg_test.spend_aggregates"));
        assert!(stmts[10].contains("tg_test.partition_spend") && stmts[10].contains("STATIC"));
        assert!(stmts[12].contains("tg_test.dead_letters"));
        assert!(stmts[13].contains("tg_test.usage_events_by_key") && stmts[13].contains("event_id DESC"));
        assert!(stmts[14].contains("tg_test.tenancy_changes"));
        assert!(stmts[15].contains("tg_test.period_closes") && stmts[15].contains("PRIMARY KEY ((chain), seq)"));
        assert!(stmts[16].contains("tg_test.reconcile_runs") && stmts[16].contains("finished_at DESC"));
        assert!(stmts[17].contains("tg_test.spend_daily") && stmts[17].contains("((kind, day, partition), scope_id)"));
    }

    #[test]
    fn rejects_injection_in_keyspace() {
        assert!(statements("x; DROP KEYSPACE y", &Replication::default()).is_err());
        assert!(statements("1abc", &Replication::default()).is_err());
    }

    #[test]
    fn cluster_replication_reaches_the_keyspace_statement() {
        let dcs = [("dc1".to_owned(), 3)].into_iter().collect();
        let stmts = statements("tg_test", &Replication::NetworkTopologyStrategy { data_centers: dcs }).unwrap();
        assert!(stmts[0].ends_with("replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3}"));
        assert!(stmts[1..].iter().all(|s| !s.contains("replication =")));
        let bad = Replication::SimpleStrategy { replication_factor: 0 };
        assert!(statements("tg_test", &bad).is_err());
    }
}
