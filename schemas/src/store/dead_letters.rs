//! How many usage records the ledger refused (`dead_letters`, `cql/007_dead_letters.cql`), read
//! for the admin API's `/ledger/health` with one bounded read: at most [`DEAD_LETTER_SAMPLE`]
//! rows, never the whole table.

use super::{query_err, CqlSpend, StoreError};
use std::collections::BTreeMap;

/// The most dead-letter rows one summary reads.
pub const DEAD_LETTER_SAMPLE: usize = 1_000;

/// Dead letters counted by reason, up to [`DEAD_LETTER_SAMPLE`] rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterSummary {
    /// Rows read (at most [`DEAD_LETTER_SAMPLE`]).
    pub count: usize,
    /// True when the table holds more than [`DEAD_LETTER_SAMPLE`] rows: `count` is then a floor.
    pub more: bool,
    pub by_reason: BTreeMap<String, usize>,
    /// When the newest of the rows read was refused.
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
}

impl DeadLetterSummary {
    /// Adds one row (its reason and time); false once the sample is full.
    pub fn add(&mut self, reason: Option<String>, at: Option<chrono::DateTime<chrono::Utc>>) -> bool {
        if self.count >= DEAD_LETTER_SAMPLE {
            self.more = true;
            return false;
        }
        self.count += 1;
        *self.by_reason.entry(reason.unwrap_or_default()).or_default() += 1;
        self.newest = self.newest.max(at);
        true
    }
}

impl CqlSpend {
    /// Counts the dead letters, reading one more row than the sample to know whether there are
    /// more.
    pub(super) async fn dead_letter_summary(&self) -> Result<DeadLetterSummary, StoreError> {
        use futures::StreamExt;
        let cql = format!(
            "SELECT reason, dead_lettered_at FROM {}.dead_letters LIMIT {}",
            self.keyspace,
            DEAD_LETTER_SAMPLE + 1
        );
        let mut rows = self.scan::<(Option<String>, Option<chrono::DateTime<chrono::Utc>>)>(cql).await?;
        let mut summary = DeadLetterSummary::default();
        while let Some(row) = rows.next().await {
            let (reason, at) = row.map_err(query_err)?;
            if !summary.add(reason, at) {
                break;
            }
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_stops_at_its_sample_and_says_there_is_more() {
        let mut s = DeadLetterSummary::default();
        for i in 0..DEAD_LETTER_SAMPLE {
            assert!(s.add(Some(if i % 2 == 0 { "not_json" } else { "schema_violation" }.into()), None));
        }
        assert!(!s.more);
        assert!(!s.add(Some("not_json".into()), None));
        assert!(s.more && s.count == DEAD_LETTER_SAMPLE);
        assert_eq!(s.by_reason["not_json"], DEAD_LETTER_SAMPLE / 2);
    }
}
