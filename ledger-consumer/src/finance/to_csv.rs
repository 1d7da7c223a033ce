//! The FOCUS export as CSV (RFC 4180, UTF-8, a header line): the columns of `columns::COLUMNS`,
//! money as exact decimals with 9 places, nulls as empty fields.

use super::columns::{cells, Issuer, COLUMNS};
use super::focus::Charges;
use super::ExportError;

/// Writes `charges` as CSV to `out`.
pub fn write(charges: &Charges, issuer: &Issuer, out: impl std::io::Write) -> Result<(), ExportError> {
    let mut w = ::csv::Writer::from_writer(out);
    w.write_record(COLUMNS.iter().map(|(name, _)| *name))?;
    for (key, amounts) in &charges.rows {
        w.write_record(cells(key, amounts, issuer).iter().map(|c| c.text()))?;
    }
    w.flush()?;
    Ok(())
}
