//! What finance reads from Tollgate (docs/finance.md): the FOCUS 1.2 export of the event ledger
//! (`tollgate-ledger-consumer export`). It reads Layer 1 (`usage_events`) and the dead letters,
//! never Layer 2, and never writes to either: dead-lettered events are not billed, and each
//! event is billed once (Layer 1 holds one row per `event_id`).

pub mod columns;
pub mod focus;
mod to_csv;
mod to_parquet;

use chrono::NaiveDate;
use std::path::Path;
use tollgate_ledger::ledger::{CqlLedger, LedgerError};
use tollgate_ledger::reconcile::without_dead_letters;

pub use columns::Issuer;
pub use focus::Charges;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing CSV: {0}")]
    Csv(#[from] ::csv::Error),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("a count does not fit a Parquet INT64")]
    TooLarge,
    #[error("{0}")]
    Usage(String),
}

/// The file formats of an export, chosen by the output file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
}

impl FileFormat {
    pub fn of(path: &Path) -> Result<FileFormat, ExportError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(FileFormat::Csv),
            Some("parquet") => Ok(FileFormat::Parquet),
            _ => Err(ExportError::Usage(format!("{}: the output must end in .csv or .parquet", path.display()))),
        }
    }
}

/// UTC days `from` to `to`, both included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Period, ExportError> {
        if from > to {
            return Err(ExportError::Usage(format!("--from {from} is after --to {to}")));
        }
        Ok(Period { from, to })
    }

    pub fn contains(&self, day: NaiveDate) -> bool {
        self.from <= day && day <= self.to
    }
}

/// The charges of `period` from the event ledger: every event of those days that was not
/// dead-lettered.
pub async fn charges(ledger: &CqlLedger, keyspace: &str, period: Period) -> Result<(Charges, usize), ExportError> {
    let (events, dead) = tokio::try_join!(ledger.scan_events(keyspace), ledger.scan_dead_letters(keyspace))?;
    let mut charges = Charges::default();
    let mut counted = 0;
    for e in without_dead_letters(&events, &dead) {
        if period.contains(e.day()) {
            charges.add(e, None);
            counted += 1;
        }
    }
    Ok((charges, counted))
}

/// Writes `charges` to `output`, as its extension says.
///
/// `output` is created (or truncated) only once its name is known to be a format.
pub fn write(charges: &Charges, issuer: &Issuer, output: &Path) -> Result<(), ExportError> {
    let format = FileFormat::of(output)?;
    let file = std::fs::File::create(output)?;
    match format {
        FileFormat::Csv => to_csv::write(charges, issuer, std::io::BufWriter::new(file)),
        FileFormat::Parquet => to_parquet::write(charges, issuer, file),
    }
}

#[cfg(test)]
mod tests;
