//! Values crossing the SQL layer: parameters in, columns out, with SQLite's loose typing on both
//! engines (an integer binds to any integer, real, boolean or text parameter PostgreSQL infers).

use std::error::Error as StdError;

use bytes::BytesMut;
use postgres::types::{FromSql as PgFromSql, IsNull, ToSql as PgToSql, Type, to_sql_checked};

use super::Error;

/// One SQL value, as SQLite stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// A 64-bit integer (PostgreSQL `BIGINT`, `INTEGER`, `SMALLINT`, `BOOLEAN`).
    Integer(i64),
    /// A double (PostgreSQL `DOUBLE PRECISION`, `REAL`, `NUMERIC` with a fraction).
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes (PostgreSQL `BYTEA`).
    Blob(Vec<u8>),
}

/// A Rust value that binds as an SQL parameter.
pub trait ToSql {
    /// The value to bind.
    fn to_value(&self) -> Result<Value, Error>;
}

/// A Rust value read from an SQL column.
pub trait FromSql: Sized {
    /// Converts the column's value; the message says why it does not fit.
    fn from_value(value: Value) -> Result<Self, String>;
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_value(&self) -> Result<Value, Error> {
        (**self).to_value()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_value(&self) -> Result<Value, Error> {
        self.as_ref().map_or(Ok(Value::Null), ToSql::to_value)
    }
}

macro_rules! integer_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_value(&self) -> Result<Value, Error> {
                i64::try_from(*self)
                    .map(Value::Integer)
                    .map_err(|_| Error::Parameter(format!("{self} does not fit a 64-bit SQL integer")))
            }
        }
        impl FromSql for $t {
            fn from_value(value: Value) -> Result<Self, String> {
                let i = i64::from_value(value)?;
                <$t>::try_from(i).map_err(|_| format!("{i} does not fit {}", stringify!($t)))
            }
        }
    )*};
}
integer_to_sql!(i32, u32, u64, usize, u16, u8);

impl ToSql for i64 {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(Value::Integer(*self))
    }
}

impl ToSql for bool {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(Value::Integer(i64::from(*self)))
    }
}

impl ToSql for f64 {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(Value::Real(*self))
    }
}

impl ToSql for f32 {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(Value::Real(f64::from(*self)))
    }
}

impl ToSql for str {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(Value::Text(self.to_owned()))
    }
}

impl ToSql for String {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(Value::Text(self.clone()))
    }
}

impl ToSql for std::borrow::Cow<'_, str> {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(Value::Text(self.as_ref().to_owned()))
    }
}

impl ToSql for [u8] {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(Value::Blob(self.to_vec()))
    }
}

impl ToSql for Vec<u8> {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(Value::Blob(self.clone()))
    }
}

impl ToSql for Value {
    fn to_value(&self) -> Result<Value, Error> {
        Ok(self.clone())
    }
}

impl FromSql for Value {
    fn from_value(value: Value) -> Result<Self, String> {
        Ok(value)
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl FromSql for i64 {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Integer(i) => Ok(i),
            other => Err(format!("expected an integer, found {}", kind(&other))),
        }
    }
}

impl FromSql for bool {
    fn from_value(value: Value) -> Result<Self, String> {
        i64::from_value(value).map(|i| i != 0)
    }
}

impl FromSql for f64 {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Real(f) => Ok(f),
            Value::Integer(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {}", kind(&other))),
        }
    }
}

impl FromSql for String {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s),
            other => Err(format!("expected text, found {}", kind(&other))),
        }
    }
}

impl FromSql for Vec<u8> {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b),
            other => Err(format!("expected bytes, found {}", kind(&other))),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    }
}

impl From<rusqlite::types::Value> for Value {
    fn from(v: rusqlite::types::Value) -> Self {
        use rusqlite::types::Value as V;
        match v {
            V::Null => Value::Null,
            V::Integer(i) => Value::Integer(i),
            V::Real(f) => Value::Real(f),
            V::Text(s) => Value::Text(s),
            V::Blob(b) => Value::Blob(b),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

impl PgToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot bind to a {ty} parameter").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => f.to_string().to_sql(ty, out),
                _ => Err(format!("a real cannot bind to a {ty} parameter").into()),
            },
            Value::Text(s) => match *ty {
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => s.as_str().to_sql(&Type::TEXT, out),
            },
            Value::Blob(b) => b.as_slice().to_sql(&Type::BYTEA, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A PostgreSQL column read as a [`Value`].
pub(super) struct PgValue(pub Value);

impl<'a> PgFromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(PgValue(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Integer(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            _ => Value::Text(<&str>::from_sql(&Type::TEXT, raw)?.to_owned()),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(PgValue(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Decodes PostgreSQL's binary NUMERIC (what `SUM` and `AVG` of integers return): an integer
/// when it has no fraction and fits, a double otherwise.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        raw.get(i * 2..i * 2 + 2).map(|b| i16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "short NUMERIC".into())
    };
    let (ndigits, weight, sign, scale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut int: Option<i128> = Some(0);
    let mut real = 0f64;
    for i in 0..ndigits.max(0) as usize {
        let digit = word(4 + i)?;
        let power = i32::from(weight) - i as i32;
        real += f64::from(digit) * 10_000f64.powi(power);
        int = match (int, power) {
            (Some(acc), p) if p >= 0 => 10_000i128
                .checked_pow(p as u32)
                .and_then(|m| m.checked_mul(i128::from(digit)))
                .and_then(|d| acc.checked_add(d)),
            (Some(acc), _) if digit == 0 => Some(acc),
            _ => None,
        };
    }
    let negative = sign == 0x4000;
    Ok(match int.and_then(|i| i64::try_from(if negative { -i } else { i }).ok()) {
        Some(i) if scale == 0 || real.fract() == 0.0 => Value::Integer(i),
        _ => Value::Real(if negative { -real } else { real }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(ndigits: i16, weight: i16, sign: u16, scale: i16, digits: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [ndigits, weight, sign as i16, scale].into_iter().chain(digits.iter().copied()) {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    #[test]
    fn numeric_sums_read_as_integers_and_fractions_as_reals() {
        assert_eq!(numeric(&encode(0, 0, 0, 0, &[])).unwrap(), Value::Integer(0));
        // 123456789 = 1 2345 6789 (base 10000).
        assert_eq!(numeric(&encode(3, 2, 0, 0, &[1, 2345, 6789])).unwrap(), Value::Integer(123_456_789));
        assert_eq!(numeric(&encode(1, 1, 0x4000, 0, &[42])).unwrap(), Value::Integer(-420_000));
        // 2.5 = 2 . 5000
        assert_eq!(numeric(&encode(2, 0, 0, 1, &[2, 5000])).unwrap(), Value::Real(2.5));
    }

    #[test]
    fn integers_convert_with_their_range_checked() {
        assert_eq!(u32::from_value(Value::Integer(7)).unwrap(), 7);
        assert!(u32::from_value(Value::Integer(-1)).is_err());
        assert!(String::from_value(Value::Integer(1)).is_err());
        assert_eq!(Option::<i64>::from_value(Value::Null).unwrap(), None);
        assert!(matches!(u64::MAX.to_value(), Err(Error::Parameter(_))));
    }
}
