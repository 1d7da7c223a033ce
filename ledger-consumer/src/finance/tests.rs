//! Both writers on the same charges: the CSV reads back to the exact total, and the Parquet file
//! has every row and column, its money as DECIMAL(38, 9).

use super::focus::{decimal, Charges};
use super::{write, Issuer};
use tollgate_schemas::UsageEvent;

fn charges() -> Charges {
    let golden: UsageEvent =
        serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1.json")).unwrap();
    let mut older = golden.clone();
    older.event_id = uuid::Uuid::now_v7();
    older.cost_by_token_type.clear();
    older.cost_nano_usd = tollgate_schemas::NanoUsd(1_000_000_001);
    let mut charges = Charges::default();
    charges.add(&golden, None);
    charges.add(&older, None);
    charges
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tollgate-finance-{}-{name}", uuid::Uuid::now_v7()))
}

#[test]
fn the_csv_reads_back_to_the_exact_total() {
    let charges = charges();
    let path = scratch("export.csv");
    write(&charges, &Issuer { name: "Example Corp".into() }, &path).unwrap();
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let billed = headers.iter().position(|h| h == "BilledCost").unwrap();
    let class = headers.iter().position(|h| h == "ChargeClass").unwrap();
    let mut total = 0i128;
    let mut rows = 0;
    for r in reader.records() {
        let r = r.unwrap();
        let (whole, frac) = r[billed].split_once('.').unwrap();
        assert_eq!(frac.len(), 9, "{}", &r[billed]);
        total += whole.parse::<i128>().unwrap() * 1_000_000_000 + frac.parse::<i128>().unwrap();
        assert_eq!(&r[class], "", "no correction: ChargeClass is null");
        rows += 1;
    }
    std::fs::remove_file(&path).unwrap();
    assert_eq!(rows, 10, "nine token types of the golden event and one unsplit line");
    assert_eq!(total, 345_000 + 1_000_000_001);
    assert_eq!(decimal(total), "1.000345001");
}

#[test]
fn the_parquet_file_has_every_row_and_column() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let charges = charges();
    let path = scratch("export.parquet");
    write(&charges, &Issuer { name: "Example Corp".into() }, &path).unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let meta = reader.metadata().file_metadata();
    assert_eq!(meta.num_rows(), 10);
    let schema = meta.schema_descr();
    assert_eq!(schema.num_columns(), super::columns::COLUMNS.len());
    let billed = schema.column(0);
    assert_eq!(billed.name(), "BilledCost");
    assert_eq!((billed.type_precision(), billed.type_scale()), (38, 9));
    let mut total = 0i128;
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let (_, field) = row.get_column_iter().next().unwrap();
        let parquet::record::Field::Decimal(d) = field else { panic!("{field:?}") };
        let bytes: [u8; 16] = d.data().try_into().unwrap();
        total += i128::from_be_bytes(bytes);
    }
    std::fs::remove_file(&path).unwrap();
    assert_eq!(total, 345_000 + 1_000_000_001);
}

#[test]
fn the_output_must_name_its_format() {
    let err = write(&charges(), &Issuer { name: "x".into() }, std::path::Path::new("/tmp/export.json")).unwrap_err();
    assert!(err.to_string().contains(".csv or .parquet"), "{err}");
}
