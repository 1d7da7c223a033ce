//! What an import did, per kind of record, and how fast: printed by `import-litellm`. Rows
//! are named by their LiteLLM id (a key by its SHA-256 `token`, never the key).

use super::rows::NOT_CARRIED;
use super::write::Outcome;
use std::fmt;
use std::time::Duration;

/// The most refused rows listed one by one; the rest are counted.
const MAX_LISTED: usize = 50;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    /// Stored already as LiteLLM has them.
    pub unchanged: u64,
    /// Rows not imported: (id, reason).
    pub refused: Vec<(String, String)>,
}

impl Counts {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Refused(id, reason) => self.refused.push((id, reason)),
        }
    }

    /// Rows not written: unchanged or refused.
    pub fn skipped(&self) -> u64 {
        self.unchanged + self.refused.len() as u64
    }
}

/// Opening balances (`--spend`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpendCounts {
    /// Events published (or, in a dry run, that would be).
    pub published: u64,
    /// Total carried, nano-USD.
    pub carried_nano_usd: i64,
    /// Owners with no spend to carry (none, or their LiteLLM budget period is over).
    pub nothing_to_carry: u64,
    /// Owners whose spend could not be carried: (scope, reason).
    pub refused: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub dry_run: bool,
    /// (kind, counts), in the order written.
    pub kinds: Vec<(&'static str, Counts)>,
    pub spend: Option<SpendCounts>,
    pub rows_read: usize,
    pub read_time: Duration,
    pub write_time: Duration,
}

impl Report {
    pub fn counts(&self, kind: &str) -> Option<&Counts> {
        self.kinds.iter().find(|(k, _)| *k == kind).map(|(_, c)| c)
    }

    /// Rows read and written per second, over the whole import.
    pub fn rows_per_second(&self) -> f64 {
        let secs = (self.read_time + self.write_time).as_secs_f64();
        if secs > 0.0 {
            self.rows_read as f64 / secs
        } else {
            0.0
        }
    }

    pub fn refused(&self) -> usize {
        self.kinds.iter().map(|(_, c)| c.refused.len()).sum::<usize>()
            + self.spend.as_ref().map_or(0, |s| s.refused.len())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "would be " } else { "" };
        writeln!(f, "import-litellm{}:", if self.dry_run { " (dry run: nothing written)" } else { "" })?;
        for (kind, c) in &self.kinds {
            writeln!(
                f,
                "  {kind:<13} {} {verb}created, {} {verb}updated, {} skipped ({} unchanged, {} refused)",
                c.created,
                c.updated,
                c.skipped(),
                c.unchanged,
                c.refused.len()
            )?;
        }
        if let Some(s) = &self.spend {
            writeln!(
                f,
                "  spend         {} opening balances {verb}published ({} USD in all), {} owners with nothing to carry, {} refused",
                s.published,
                tollgate_schemas::NanoUsd(s.carried_nano_usd).as_usd_display(),
                s.nothing_to_carry,
                s.refused.len()
            )?;
        }
        writeln!(
            f,
            "  {} rows read in {:.2} s, written in {:.2} s: {:.0} rows/s",
            self.rows_read,
            self.read_time.as_secs_f64(),
            self.write_time.as_secs_f64(),
            self.rows_per_second()
        )?;
        let refused = self
            .kinds
            .iter()
            .flat_map(|(kind, c)| c.refused.iter().map(move |(id, why)| (*kind, id, why)))
            .chain(self.spend.iter().flat_map(|s| s.refused.iter().map(|(id, why)| ("spend", id, why))));
        for (i, (kind, id, why)) in refused.enumerate() {
            if i == MAX_LISTED {
                writeln!(f, "  ... and {} more refused", self.refused() - MAX_LISTED)?;
                break;
            }
            writeln!(f, "  refused {kind} {id:?}: {why}")?;
        }
        writeln!(f, "  LiteLLM columns not carried:")?;
        for (table, columns) in NOT_CARRIED {
            writeln!(f, "    {table}: {columns}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_each_kind_and_names_refused_rows_and_columns_not_carried() {
        let mut keys = Counts::default();
        for o in [Outcome::Created, Outcome::Created, Outcome::Unchanged, Outcome::Refused("ab".into(), "bad".into())] {
            keys.add(o);
        }
        let report = Report {
            kinds: vec![("keys", keys)],
            rows_read: 4,
            read_time: Duration::from_millis(500),
            write_time: Duration::from_millis(1500),
            ..Report::default()
        };
        let text = report.to_string();
        assert!(text.contains("keys          2 created, 0 updated, 2 skipped (1 unchanged, 1 refused)"), "{text}");
        assert!(text.contains(r#"refused keys "ab": bad"#), "{text}");
        assert!(text.contains("4 rows read in 0.50 s, written in 1.50 s: 2 rows/s"), "{text}");
        assert!(text.contains("LiteLLM_VerificationToken: soft_budget_cooldown"), "{text}");
        assert_eq!(report.refused(), 1);
    }
}
