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

/// A generation of the usage topic may have at most this many partitions: spend readers sum
/// the Layer 2 rows of partitions `0..MAX_USAGE_PARTITIONS` of each generation (absent rows
/// cost nothing).
pub const MAX_USAGE_PARTITIONS: i32 = 64;

/// Generations of the usage topic (docs/design.md §4.10): 0 is the first; a repartition moves
/// the gateways to the next one.
pub const MAX_USAGE_GENERATIONS: u8 = 16;

/// The ledger partition of a Kafka partition of the usage topic's `generation`: the
/// `partition` column of every ledger table. Generation 0's are its Kafka partitions
/// unchanged, so a ledger written before generations existed reads the same.
pub fn ledger_partition(generation: u8, kafka_partition: i32) -> i32 {
    i32::from(generation) * MAX_USAGE_PARTITIONS + kafka_partition
}

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

/// Generations of the usage topic (docs/design.md §4.10): `kafka.usage_topic` is generation
/// `kafka.usage_generation`, and `kafka.earlier_usage_topics` names generations `0..` in order.
/// Gateways publish each event to the topic of the generation it was created in; consumers read
/// them all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageGenerations {
    /// Topic names by generation; the last is the current one.
    topics: Vec<String>,
}

impl UsageGenerations {
    /// Checks the settings; the error names the field.
    pub fn new(current: &str, generation: u8, earlier: &[String]) -> Result<UsageGenerations, (&'static str, String)> {
        if generation >= MAX_USAGE_GENERATIONS {
            return Err(("kafka.usage_generation", format!("must be below {}", MAX_USAGE_GENERATIONS)));
        }
        if earlier.len() != usize::from(generation) {
            return Err((
                "kafka.earlier_usage_topics",
                format!(
                    "must name the topics of generations 0 to {} in order: {} given for generation {generation}",
                    i32::from(generation) - 1,
                    earlier.len()
                ),
            ));
        }
        let topics: Vec<String> = earlier.iter().cloned().chain([current.to_owned()]).collect();
        for (i, t) in topics.iter().enumerate() {
            if t.is_empty() || t.len() > 249 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                return Err(("kafka.earlier_usage_topics", format!("{t:?} is not a Kafka topic name")));
            }
            if topics[..i].contains(t) {
                return Err(("kafka.earlier_usage_topics", format!("{t:?} is named twice")));
            }
        }
        Ok(UsageGenerations { topics })
    }

    /// The current generation.
    pub fn current(&self) -> u8 {
        u8::try_from(self.topics.len().saturating_sub(1)).unwrap_or(u8::MAX)
    }

    /// The topic of `generation`; the current one's for a generation this gateway does not know
    /// (newer than its own: only a hand-made event can say so).
    pub fn topic(&self, generation: u8) -> &str {
        let last = self.topics.len().saturating_sub(1);
        &self.topics[usize::from(generation).min(last)]
    }

    /// Every topic, generation 0 first.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_name_every_topic_in_order() {
        let g = UsageGenerations::new("usage.g2", 2, &["usage".into(), "usage.g1".into()]).unwrap();
        assert_eq!(g.current(), 2);
        assert_eq!(g.topic(0), "usage");
        assert_eq!(g.topic(2), "usage.g2");
        assert_eq!(g.topic(9), "usage.g2");
        assert_eq!(UsageGenerations::new("usage", 0, &[]).unwrap().topics(), ["usage".to_owned()]);
        let err = UsageGenerations::new("usage.g1", 1, &[]).unwrap_err();
        assert_eq!(err.0, "kafka.earlier_usage_topics");
        let err = UsageGenerations::new("usage", 1, &["usage".into()]).unwrap_err();
        assert!(err.1.contains("twice"), "{err:?}");
        let err = UsageGenerations::new("usage.g1", 1, &["bad topic".into()]).unwrap_err();
        assert!(err.1.contains("not a Kafka topic"), "{err:?}");
        assert_eq!(UsageGenerations::new("u", 16, &vec!["x".into(); 16]).unwrap_err().0, "kafka.usage_generation");
    }

    #[test]
    fn every_named_topic_is_in_the_file() {
        for name in [USAGE, BUDGET_STATE, USAGE_DLQ, CONTROL] {
            let spec = spec(name).unwrap_or_else(|| panic!("{name} missing from topics.tsv"));
            assert!(spec.partitions > 0);
        }
        assert_eq!(spec(BUDGET_STATE).unwrap().cleanup_policy, "compact");
    }
}
