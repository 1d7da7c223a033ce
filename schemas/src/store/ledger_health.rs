//! What the admin API's `/ledger/health` reads of the ledger: how many usage records it refused
//! (`dead_letters`, `cql/007_dead_letters.cql`), with one bounded read of at most
//! [`DEAD_LETTER_SAMPLE`] rows, never the whole table; and the newest run of `reconcile`
//! (`reconcile_runs`, `cql/011_reconcile_runs.cql`), which `reconcile` records here.

use super::{query_err, CqlSpend, Session, StoreError};
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

/// One run of `tollgate-ledger-consumer reconcile`, as `reconcile_runs` keeps it
/// (`cql/011_reconcile_runs.cql`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileRun {
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// The days compared (`--from`, `--to`); `None` for no bound.
    pub range_from: Option<String>,
    pub range_to: Option<String>,
    pub events: i64,
    pub rows_compared: i64,
    pub differences: i64,
    pub read_model_behind: i64,
    pub key_index_missing: i64,
    pub key_index_stray: i64,
    pub dead_letters: i64,
    pub ok: bool,
}

const RECONCILE_CHAIN: &str = "reconcile";
const RECONCILE_COLUMNS: &str = "finished_at, range_from, range_to, events, rows_compared, differences, \
     read_model_behind, key_index_missing, key_index_stray, dead_letters, ok";

type RunRow = (
    chrono::DateTime<chrono::Utc>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<bool>,
);

/// Records a finished run of `reconcile`.
pub async fn record_reconcile(session: &Session, keyspace: &str, run: &ReconcileRun) -> Result<(), StoreError> {
    crate::cql::validate_keyspace(keyspace).map_err(|e| StoreError::Schema(e.to_string()))?;
    let cql = format!(
        "INSERT INTO {keyspace}.reconcile_runs (chain, {RECONCILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    let values = (
        RECONCILE_CHAIN,
        run.finished_at,
        &run.range_from,
        &run.range_to,
        run.events,
        run.rows_compared,
        run.differences,
        run.read_model_behind,
        run.key_index_missing,
        run.key_index_stray,
        run.dead_letters,
        run.ok,
    );
    session.query_unpaged(cql, values).await.map_err(query_err)?;
    Ok(())
}

impl CqlSpend {
    /// The newest run of `reconcile` (one row read).
    pub(super) async fn newest_reconcile(&self) -> Result<Option<ReconcileRun>, StoreError> {
        let cql = format!("SELECT {RECONCILE_COLUMNS} FROM {}.reconcile_runs WHERE chain = ? LIMIT 1", self.keyspace);
        let result = self.session.query_unpaged(cql, (RECONCILE_CHAIN,)).await.map_err(query_err)?;
        let rows = result.into_rows_result().map_err(query_err)?;
        let Some(row) = rows.rows::<RunRow>().map_err(query_err)?.next() else { return Ok(None) };
        let (finished_at, range_from, range_to, events, rows_compared, differences, behind, missing, stray, dead, ok) =
            row.map_err(query_err)?;
        Ok(Some(ReconcileRun {
            finished_at,
            range_from,
            range_to,
            events: events.unwrap_or(0),
            rows_compared: rows_compared.unwrap_or(0),
            differences: differences.unwrap_or(0),
            read_model_behind: behind.unwrap_or(0),
            key_index_missing: missing.unwrap_or(0),
            key_index_stray: stray.unwrap_or(0),
            dead_letters: dead.unwrap_or(0),
            ok: ok.unwrap_or(false),
        }))
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
