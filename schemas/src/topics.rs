//! Kafka topic names and partition counts, read from `schemas/topics.tsv` — the one place they
//! are defined. `deploy/local/up` reads the same file to create the topics.

/// The usage topic: one event per request, keyed by budget owner.
pub const USAGE: &str = "usage";
/// Compacted budget state pushed back to every gateway.
pub const BUDGET_STATE: &str = "budget-state";
/// Tenancy changes (`tenancy::Invalidation`): every gateway drops its cached copy.
pub const CONTROL: &str = "control";
/// Usage records the ledger consumer refused, with the reason in a header (docs/security.md).
pub const USAGE_DLQ: &str = "usage-dlq";

const TOPICS_TSV: &str = include_str!("../topics.tsv");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub cleanup_policy: String,
}

/// All topics with their pinned partition counts.
pub fn all() -> Vec<TopicSpec> {
    parse(TOPICS_TSV)
}

/// The spec of one of the topics above, by its base name.
pub fn spec(name: &str) -> Option<TopicSpec> {
    all().into_iter().find(|t| t.name == name)
}

fn parse(text: &str) -> Vec<TopicSpec> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let name = cols.next()?.to_owned();
            let partitions = cols.next()?.parse().ok()?;
            let cleanup_policy = cols.next().unwrap_or("delete").to_owned();
            Some(TopicSpec { name, partitions, cleanup_policy })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_topic_is_in_the_file() {
        for name in [USAGE, BUDGET_STATE, USAGE_DLQ, CONTROL] {
            let spec = spec(name).unwrap_or_else(|| panic!("{name} missing from topics.tsv"));
            assert!(spec.partitions > 0);
        }
        assert_eq!(spec(BUDGET_STATE).unwrap().cleanup_policy, "compact");
    }
}
