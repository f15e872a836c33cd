//! Reference data for baseline profiles: CSV with a header row, or a 2-D `.npy` array.

use std::io::Read;

/// Why reference data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// CSV syntax or I/O.
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    /// A row has a different number of fields than the header.
    #[error("line {line}: {got} fields, the header has {expected}")]
    ColumnCount {
        /// 1-based line number.
        line: u64,
        /// Columns in the header.
        expected: usize,
        /// Fields in the row.
        got: usize,
    },
    /// A field is not a number.
    #[error("line {line}, column {column:?}: {value:?} is not a number")]
    NotNumber {
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: String,
        /// The field.
        value: String,
    },
    /// `.npy` problems.
    #[error(".npy: {0}")]
    Npy(String),
    /// No rows.
    #[error("the data has no rows")]
    Empty,
}

/// Named numeric columns, row-major. Missing values are NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each `columns.len()` long.
    pub rows: Vec<Vec<f64>>,
}

impl Dataset {
    /// Reads CSV with a header row. Empty fields and `NaN`/`nan`/`NA` are missing values.
    pub fn from_csv(reader: impl Read) -> Result<Self, DatasetError> {
        let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(reader);
        let columns: Vec<String> = csv.headers()?.iter().map(|h| h.trim().to_owned()).collect();
        let mut rows = Vec::new();
        for record in csv.records() {
            let record = record?;
            let line = record.position().map_or(0, |p| p.line());
            if record.len() != columns.len() {
                return Err(DatasetError::ColumnCount { line, expected: columns.len(), got: record.len() });
            }
            let row = record
                .iter()
                .zip(&columns)
                .map(|(field, column)| {
                    let f = field.trim();
                    if f.is_empty() || f.eq_ignore_ascii_case("nan") || f == "NA" {
                        return Ok(f64::NAN);
                    }
                    f.parse::<f64>().map_err(|_| DatasetError::NotNumber {
                        line,
                        column: column.clone(),
                        value: field.into(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            rows.push(row);
        }
        if rows.is_empty() {
            return Err(DatasetError::Empty);
        }
        Ok(Dataset { columns, rows })
    }

    /// Reads a 2-D `.npy` array (float or integer); columns are named `names` if given (their
    /// count must match) or `f0`, `f1`, ...
    pub fn from_npy(bytes: &[u8], names: Option<&[String]>) -> Result<Self, DatasetError> {
        let npy = npyz::NpyFile::new(bytes).map_err(|e| DatasetError::Npy(e.to_string()))?;
        let shape = npy.shape().to_vec();
        let (n_rows, n_cols) = match shape.as_slice() {
            [r, c] => (*r as usize, *c as usize),
            [r] => (*r as usize, 1),
            _ => return Err(DatasetError::Npy(format!("expected a 1-D or 2-D array, got shape {shape:?}"))),
        };
        if npy.order() != npyz::Order::C {
            return Err(DatasetError::Npy("Fortran-ordered arrays are not supported; save with C order".into()));
        }
        let values: Vec<f64> = match npy.dtype() {
            npyz::DType::Plain(t) => match (t.type_char(), t.size_field()) {
                (npyz::TypeChar::Float, 8) => npy.into_vec::<f64>().map_err(|e| DatasetError::Npy(e.to_string()))?,
                (npyz::TypeChar::Float, 4) => read_as::<f32>(npy)?,
                (npyz::TypeChar::Int, 8) => npy
                    .into_vec::<i64>()
                    .map_err(|e| DatasetError::Npy(e.to_string()))?
                    .into_iter()
                    // Reference data beyond 2^53 loses precision; profiles only need bins and moments.
                    .map(|v| v as f64)
                    .collect(),
                (npyz::TypeChar::Int, 4) => read_as::<i32>(npy)?,
                (npyz::TypeChar::Uint, 1) => read_as::<u8>(npy)?,
                (c, s) => return Err(DatasetError::Npy(format!("unsupported dtype {c:?} of {s} bytes"))),
            },
            other => return Err(DatasetError::Npy(format!("unsupported dtype {other:?}"))),
        };
        if n_rows == 0 {
            return Err(DatasetError::Empty);
        }
        let columns = match names {
            Some(n) if n.len() == n_cols => n.to_vec(),
            Some(n) => {
                return Err(DatasetError::Npy(format!("array has {n_cols} columns, the model has {} inputs", n.len())));
            }
            None => (0..n_cols).map(|i| format!("f{i}")).collect(),
        };
        let rows = values.chunks(n_cols).map(<[f64]>::to_vec).collect();
        Ok(Dataset { columns, rows })
    }

    /// Values of one column.
    pub fn column(&self, ix: usize) -> impl Iterator<Item = f64> + '_ {
        self.rows.iter().map(move |r| r[ix])
    }
}

fn read_as<T>(npy: npyz::NpyFile<&[u8]>) -> Result<Vec<f64>, DatasetError>
where
    T: npyz::Deserialize + Into<f64>,
{
    Ok(npy.into_vec::<T>().map_err(|e| DatasetError::Npy(e.to_string()))?.into_iter().map(Into::into).collect())
}
