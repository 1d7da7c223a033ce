//! The FOCUS export as Parquet, through the `parquet` crate's column writer: text as UTF-8
//! strings (optional where FOCUS allows nulls), money as DECIMAL(38, 9) in 16-byte big-endian
//! two's complement (exact nano-USD), quantities as DECIMAL(38, 0) (FOCUS types them as
//! decimals), counts as INT64, instants as TIMESTAMP(MILLIS, UTC). One row group: an export is
//! one period's rows.

use super::columns::{cells, Cell, Issuer, Kind, COLUMNS};
use super::focus::Charges;
use super::ExportError;
use parquet::data_type::{ByteArray, ByteArrayType, FixedLenByteArray, FixedLenByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::sync::Arc;

/// The Parquet message type of [`COLUMNS`].
fn message_type() -> String {
    let fields: Vec<String> = COLUMNS
        .iter()
        .map(|(name, kind)| match kind {
            Kind::Text => format!("OPTIONAL BYTE_ARRAY {name} (UTF8);"),
            Kind::Money => format!("REQUIRED FIXED_LEN_BYTE_ARRAY (16) {name} (DECIMAL(38, 9));"),
            Kind::Quantity => format!("REQUIRED FIXED_LEN_BYTE_ARRAY (16) {name} (DECIMAL(38, 0));"),
            Kind::Count => format!("REQUIRED INT64 {name};"),
            Kind::Time => format!("REQUIRED INT64 {name} (TIMESTAMP(MILLIS, true));"),
        })
        .collect();
    format!("message focus {{ {} }}", fields.join(" "))
}

/// Writes `charges` as a Parquet file to `out`.
pub fn write(charges: &Charges, issuer: &Issuer, out: std::fs::File) -> Result<(), ExportError> {
    let schema = Arc::new(parquet::schema::parser::parse_message_type(&message_type())?);
    let mut writer = SerializedFileWriter::new(out, schema, Arc::new(WriterProperties::builder().build()))?;
    let rows: Vec<Vec<Cell>> = charges.rows.iter().map(|(k, a)| cells(k, a, issuer)).collect();
    let mut group = writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut column) = group.next_column()? {
        let values = rows.iter().map(|r| r.get(index).cloned().unwrap_or(Cell::Text(None)));
        match COLUMNS.get(index).map(|(_, kind)| *kind) {
            Some(Kind::Text) => {
                let cells: Vec<Option<String>> =
                    values.map(|c| if let Cell::Text(t) = c { t } else { Some(c.text()) }).collect();
                let levels: Vec<i16> = cells.iter().map(|c| i16::from(c.is_some())).collect();
                let present: Vec<ByteArray> =
                    cells.into_iter().flatten().map(|s| ByteArray::from(s.into_bytes())).collect();
                column.typed::<ByteArrayType>().write_batch(&present, Some(&levels), None)?;
            }
            Some(Kind::Money | Kind::Quantity) => {
                let cells: Vec<FixedLenByteArray> = values
                    .map(|c| match c {
                        Cell::Money(n) => n,
                        Cell::Quantity(n) => i128::try_from(n).unwrap_or(i128::MAX),
                        _ => 0,
                    })
                    .map(|n| FixedLenByteArray::from(n.to_be_bytes().to_vec()))
                    .collect();
                column.typed::<FixedLenByteArrayType>().write_batch(&cells, None, None)?;
            }
            Some(Kind::Count) => {
                let cells = values
                    .map(|c| {
                        if let Cell::Count(n) = c {
                            i64::try_from(n).map_err(|_| ExportError::TooLarge)
                        } else {
                            Ok(0)
                        }
                    })
                    .collect::<Result<Vec<i64>, _>>()?;
                column.typed::<Int64Type>().write_batch(&cells, None, None)?;
            }
            Some(Kind::Time) | None => {
                let cells: Vec<i64> =
                    values.map(|c| if let Cell::Time(t) = c { t.timestamp_millis() } else { 0 }).collect();
                column.typed::<Int64Type>().write_batch(&cells, None, None)?;
            }
        }
        column.close()?;
        index += 1;
    }
    group.close()?;
    writer.close()?;
    Ok(())
}
