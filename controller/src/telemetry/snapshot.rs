//! The data files of a dataset snapshot: one table (the features by name, then `predicted`,
//! `label`, `device_id`, `device_group`, `request_id`, `at_ms`) written as CSV and/or Parquet
//! with the same rows in the same order.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use super::TelemetryError;
pub use crate::config::SnapshotFormat as Format;
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as Physical, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

/// The columns after the features.
pub const TRAILING_COLUMNS: [&str; 6] = ["predicted", "label", "device_id", "device_group", "request_id", "at_ms"];

/// Rows a Parquet row group holds at most.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// One sampled row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Feature values (missing ones at the end are empty in CSV, null in Parquet).
    pub values: Vec<f32>,
    /// Predicted class.
    pub predicted: Option<i64>,
    /// Label from feedback.
    pub label: Option<i64>,
    /// Device that served it.
    pub device_id: String,
    /// The device's group.
    pub device_group: String,
    /// The caller's request id.
    pub request_id: Option<String>,
    /// When it was served (Unix ms).
    pub at_ms: i64,
}

/// Writes `rows` under `features` as `format` into `path`.
pub fn write(path: &Path, format: Format, features: &[String], rows: &[Row]) -> Result<(), TelemetryError> {
    match format {
        Format::Csv => write_csv(path, features, rows),
        Format::Parquet => write_parquet(path, features, rows)
            .map_err(|e| TelemetryError::Io(format!("cannot write {}: {e}", path.display()))),
    }
}

fn write_csv(path: &Path, features: &[String], rows: &[Row]) -> Result<(), TelemetryError> {
    let bad = |e: csv::Error| TelemetryError::Io(format!("cannot write {}: {e}", path.display()));
    let mut writer = csv::Writer::from_path(path).map_err(bad)?;
    writer.write_record(features.iter().map(String::as_str).chain(TRAILING_COLUMNS)).map_err(bad)?;
    let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    for row in rows {
        let mut record: Vec<String> = row.values.iter().take(features.len()).map(f32::to_string).collect();
        record.resize(features.len(), String::new());
        record.extend([
            opt(row.predicted),
            opt(row.label),
            row.device_id.clone(),
            row.device_group.clone(),
            row.request_id.clone().unwrap_or_default(),
            row.at_ms.to_string(),
        ]);
        writer.write_record(&record).map_err(bad)?;
    }
    writer.flush().map_err(|e| TelemetryError::Io(format!("cannot write {}: {e}", path.display())))
}

fn schema(features: &[String]) -> Result<Type, ParquetError> {
    let column = |name: &str, physical, repetition, logical| {
        Type::primitive_type_builder(name, physical)
            .with_repetition(repetition)
            .with_logical_type(logical)
            .build()
            .map(Arc::new)
    };
    let string = Some(LogicalType::String);
    let mut fields = features
        .iter()
        .map(|f| column(f, Physical::FLOAT, Repetition::OPTIONAL, None))
        .collect::<Result<Vec<_>, _>>()?;
    fields.extend([
        column("predicted", Physical::INT64, Repetition::OPTIONAL, None)?,
        column("label", Physical::INT64, Repetition::OPTIONAL, None)?,
        column("device_id", Physical::BYTE_ARRAY, Repetition::REQUIRED, string.clone())?,
        column("device_group", Physical::BYTE_ARRAY, Repetition::REQUIRED, string.clone())?,
        column("request_id", Physical::BYTE_ARRAY, Repetition::OPTIONAL, string)?,
        column("at_ms", Physical::INT64, Repetition::REQUIRED, Some(LogicalType::timestamp(true, TimeUnit::MILLIS)))?,
    ]);
    Type::group_type_builder("snapshot").with_fields(fields).build()
}

/// Values and definition levels (1 present, 0 null) of an optional column.
fn optional<T: Clone>(values: impl Iterator<Item = Option<T>>) -> (Vec<T>, Vec<i16>) {
    let (mut present, mut levels) = (Vec::new(), Vec::new());
    for v in values {
        levels.push(i16::from(v.is_some()));
        present.extend(v);
    }
    (present, levels)
}

fn write_parquet(path: &Path, features: &[String], rows: &[Row]) -> Result<(), ParquetError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by(format!("edgefleet-controller {}", env!("CARGO_PKG_VERSION")))
        .build();
    let file = BufWriter::new(File::create(path)?);
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema(features)?), Arc::new(props))?;
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        let mut group = writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            let text = |s: &str| ByteArray::from(s);
            match index {
                i if i < features.len() => {
                    let (values, levels) = optional(chunk.iter().map(|r| r.values.get(i).copied()));
                    column.typed::<FloatType>().write_batch(&values, Some(&levels), None)?;
                }
                i if i == features.len() || i == features.len() + 1 => {
                    let pick = |r: &Row| if i == features.len() { r.predicted } else { r.label };
                    let (values, levels) = optional(chunk.iter().map(pick));
                    column.typed::<Int64Type>().write_batch(&values, Some(&levels), None)?;
                }
                i if i == features.len() + 2 || i == features.len() + 3 => {
                    let pick = |r: &Row| text(if i == features.len() + 2 { &r.device_id } else { &r.device_group });
                    let values: Vec<ByteArray> = chunk.iter().map(pick).collect();
                    column.typed::<ByteArrayType>().write_batch(&values, None, None)?;
                }
                i if i == features.len() + 4 => {
                    let (values, levels) = optional(chunk.iter().map(|r| r.request_id.as_deref().map(text)));
                    column.typed::<ByteArrayType>().write_batch(&values, Some(&levels), None)?;
                }
                _ => {
                    let values: Vec<i64> = chunk.iter().map(|r| r.at_ms).collect();
                    column.typed::<Int64Type>().write_batch(&values, None, None)?;
                }
            }
            column.close()?;
            index += 1;
        }
        group.close()?;
    }
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    use parquet::record::Field;

    use super::*;

    fn rows() -> Vec<Row> {
        vec![
            Row {
                values: vec![0.1, -2.5],
                predicted: Some(1),
                label: None,
                device_id: "d1".into(),
                device_group: "site-a".into(),
                request_id: Some("r1".into()),
                at_ms: 1_700_000_000_123,
            },
            Row {
                values: vec![3.0],
                predicted: None,
                label: Some(2),
                device_id: "d2".into(),
                device_group: "site-b".into(),
                request_id: None,
                at_ms: 1_700_000_000_456,
            },
        ]
    }

    #[test]
    fn parquet_holds_the_csv_rows_with_types_and_nulls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let features = vec!["a".to_owned(), "b".to_owned()];
        write(&dir.path().join("data.csv"), Format::Csv, &features, &rows()).expect("csv");
        write(&dir.path().join("data.parquet"), Format::Parquet, &features, &rows()).expect("parquet");
        let csv = std::fs::read_to_string(dir.path().join("data.csv")).expect("read");
        assert_eq!(
            csv,
            "a,b,predicted,label,device_id,device_group,request_id,at_ms\n\
             0.1,-2.5,1,,d1,site-a,r1,1700000000123\n\
             3,,,2,d2,site-b,,1700000000456\n"
        );
        let reader =
            SerializedFileReader::new(File::open(dir.path().join("data.parquet")).expect("open")).expect("parquet");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let read: Vec<Vec<Field>> = reader
            .get_row_iter(None)
            .expect("rows")
            .map(|r| r.expect("row").into_columns().into_iter().map(|(_, f)| f).collect())
            .collect();
        assert_eq!(
            read[0],
            vec![
                Field::Float(0.1),
                Field::Float(-2.5),
                Field::Long(1),
                Field::Null,
                Field::Str("d1".into()),
                Field::Str("site-a".into()),
                Field::Str("r1".into()),
                Field::TimestampMillis(1_700_000_000_123),
            ]
        );
        assert_eq!(
            read[1],
            vec![
                Field::Float(3.0),
                Field::Null,
                Field::Null,
                Field::Long(2),
                Field::Str("d2".into()),
                Field::Str("site-b".into()),
                Field::Null,
                Field::TimestampMillis(1_700_000_000_456),
            ]
        );
    }

    #[test]
    fn an_empty_snapshot_is_a_valid_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.parquet");
        write(&path, Format::Parquet, &["x0".to_owned()], &[]).expect("parquet");
        let reader = SerializedFileReader::new(File::open(&path).expect("open")).expect("parquet");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(reader.metadata().file_metadata().schema_descr().num_columns(), 7);
    }
}
