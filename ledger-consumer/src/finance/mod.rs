//! What finance reads from Tollgate (docs/finance.md): the FOCUS 1.2 export of the event ledger
//! (`tollgate-ledger-consumer export`), sealed periods (`close`) and re-rating (`rerate`). All
//! read Layer 1 (`usage_events`) and the dead letters and never write to either: dead-lettered
//! events are not billed, and each event is billed once (Layer 1 holds one row per `event_id`).
//! A close also reads `partition_spend`'s fences, and writes only `period_closes`; a re-rating
//! writes nothing to the ledger, and with `--apply` publishes adjustment events to the usage
//! topic, which the consumers fold like any other.

pub mod columns;
pub mod diff;
pub mod focus;
pub mod prices;
mod publish;
pub mod rerate;
mod to_csv;
mod to_parquet;

use chrono::NaiveDate;
use std::path::Path;
pub use tollgate_ledger::close::{self, Period};
use tollgate_ledger::closes;
use tollgate_ledger::ledger::{CqlLedger, LedgerError};
use tollgate_ledger::reconcile::{counted_records, RecordedEvent};

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

/// `--from` to `--to`, both included.
pub fn period(from: NaiveDate, to: NaiveDate) -> Result<Period, ExportError> {
    if from > to {
        return Err(ExportError::Usage(format!("--from {from} is after --to {to}")));
    }
    Ok(Period { from, to })
}

/// The charges of `period` from the event ledger: every event of those days that was not
/// dead-lettered and is not late for a closed period, and every late event of a closed period
/// whose correction is billed on one of those days (`close::billing`).
pub async fn charges(ledger: &CqlLedger, keyspace: &str, period: Period) -> Result<(Charges, usize), ExportError> {
    let closes = closes::read(ledger.session(), keyspace).await?;
    let (events, dead) = tokio::try_join!(ledger.scan_events(keyspace), ledger.scan_dead_letters(keyspace))?;
    let mut charges = Charges::default();
    let mut counted = 0;
    for r in counted_records(&events, &dead) {
        let billed_on = match close::billing(&r.event, r.partition, r.offset, &closes) {
            close::Billing::Own { .. } => None,
            close::Billing::Correction { day, .. } => Some(day),
        };
        if period.contains(billed_on.unwrap_or_else(|| r.event.day())) {
            charges.add(&r.event, billed_on);
            counted += 1;
        }
    }
    Ok((charges, counted))
}

/// Seals `period` (`close --period`): reads the watermark, then the event ledger, and writes one
/// close holding the period's events at or below the watermark and the corrections of earlier
/// closed periods it covers. Periods close in order, each once.
pub async fn seal(ledger: &CqlLedger, keyspace: &str, name: &str) -> Result<(close::Close, usize), ExportError> {
    let period = close::parse_period(name)
        .ok_or_else(|| ExportError::Usage(format!("--period {name:?}: expected YYYY-MM or YYYY-MM-DD")))?;
    let closes = closes::read(ledger.session(), keyspace).await?;
    if let Some(last) = closes.last().filter(|c| c.to >= period.from) {
        return Err(ExportError::Usage(format!(
            "{name} is not after the latest closed period {} (to {}): periods close in order, once",
            last.period, last.to
        )));
    }
    // The watermark first: every event at or below it is already in the event ledger.
    let watermark = closes::watermark(ledger.session(), keyspace).await?;
    let (events, dead) = tokio::try_join!(ledger.scan_events(keyspace), ledger.scan_dead_letters(keyspace))?;
    let mut close = close::Close {
        seq: closes.last().map_or(1, |c| c.seq + 1),
        period: name.to_owned(),
        from: period.from,
        to: period.to,
        watermark,
        statements: close::Statements::new(),
        previous_hash: closes.last().map(|c| c.content_hash.clone()).unwrap_or_default(),
        content_hash: String::new(),
    };
    let mut chain = closes;
    chain.push(close.clone());
    let sealed: Vec<(&RecordedEvent, bool)> = counted_records(&events, &dead)
        .into_iter()
        .filter_map(|r| match close::billing(&r.event, r.partition, r.offset, &chain) {
            close::Billing::Own { sealed_in } if sealed_in == Some(close.seq) => Some((r, false)),
            close::Billing::Correction { sealed_in, .. } if sealed_in == Some(close.seq) => Some((r, true)),
            _ => None,
        })
        .collect();
    close.statements = close::statements(sealed.iter().map(|(r, correction)| (&r.event, *correction)));
    close.content_hash = close::content_hash(&close);
    if !closes::insert(ledger.session(), keyspace, &close).await? {
        return Err(ExportError::Usage(format!(
            "another close took place {} of the chain first; run again",
            close.seq
        )));
    }
    Ok((close, sealed.len()))
}

/// Re-rates `period` (`rerate --period`, a month or a day) under the price file `prices` (its
/// bytes: the run's identity is their hash with the period): every event of the period priced
/// again, in memory, against the event ledger as it is now, adjustments already folded
/// included. Adjustments are made for usage-topic generation `generation`.
pub async fn rerate(
    ledger: &CqlLedger,
    keyspace: &str,
    name: &str,
    prices: &[u8],
    generation: u8,
) -> Result<rerate::Plan, ExportError> {
    let period = close::parse_period(name)
        .ok_or_else(|| ExportError::Usage(format!("--period {name:?}: expected YYYY-MM or YYYY-MM-DD")))?;
    let text = std::str::from_utf8(prices).map_err(|_| ExportError::Usage("--prices: not UTF-8".into()))?;
    let book = prices::PriceBook::parse(text).map_err(|e| ExportError::Usage(format!("--prices: {e}")))?;
    let run = tollgate_schemas::event::adjustment::run_id(prices, name);
    let (events, dead) = tokio::try_join!(ledger.scan_events(keyspace), ledger.scan_dead_letters(keyspace))?;
    rerate::plan(&counted_records(&events, &dead), period, &book, &run, generation)
        .map_err(|e| ExportError::Usage(e.to_string()))
}

pub use publish::publish as publish_adjustments;

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
