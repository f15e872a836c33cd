//! How one element of each type converts: from and to JSON, to `f64`, and to and from its
//! little-endian binary form.

use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Value;

use super::{TensorData, TensorError};
use edgefleet_shared::inference::Datatype;

/// Flat JSON array view of a tensor's elements.
#[derive(Debug)]
pub struct JsonData<'a>(pub(super) &'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let TensorData::Bytes(v) = self.0 {
            // As strings, the protocol's JSON form of BYTES (invalid UTF-8 replaced).
            let mut seq = serializer.serialize_seq(Some(v.len()))?;
            for x in v {
                seq.serialize_element(&String::from_utf8_lossy(x))?;
            }
            return seq.end();
        }
        if let TensorData::F16(v) = self.0 {
            // As numbers: half's own serde form (which `with_data!` below needs to type-check,
            // and never reaches) is the raw bits.
            let mut seq = serializer.serialize_seq(Some(v.len()))?;
            for x in v {
                seq.serialize_element(&x.to_f32())?;
            }
            return seq.end();
        }
        with_data!(self.0, v => {
            let mut seq = serializer.serialize_seq(Some(v.len()))?;
            for x in v {
                seq.serialize_element(x)?;
            }
            seq.end()
        })
    }
}

pub(super) fn push_element<T>(
    item: &Value,
    datatype: Datatype,
    out: &mut Vec<T>,
    convert: &impl Fn(&Value) -> Option<T>,
) -> Result<(), TensorError> {
    match convert(item) {
        Some(x) => {
            out.push(x);
            Ok(())
        }
        None => Err(TensorError::Element { index: out.len(), value: item.to_string(), datatype }),
    }
}

/// Conversion of one JSON element, refusing values outside the type's range.
pub(super) trait JsonElement: Sized {
    fn from_json(v: &Value) -> Option<Self>;
}

impl JsonElement for bool {
    fn from_json(v: &Value) -> Option<Self> {
        v.as_bool()
    }
}

macro_rules! json_int {
    ($($t:ty),*) => {$(
        impl JsonElement for $t {
            fn from_json(v: &Value) -> Option<Self> {
                if let Some(i) = v.as_i64() {
                    <$t>::try_from(i).ok()
                } else {
                    v.as_u64().and_then(|u| <$t>::try_from(u).ok())
                }
            }
        }
    )*};
}
json_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl JsonElement for f64 {
    fn from_json(v: &Value) -> Option<Self> {
        v.as_f64()
    }
}

impl JsonElement for f32 {
    fn from_json(v: &Value) -> Option<Self> {
        // Narrowing is the point of FP32; only values beyond f32's range are refused.
        let x = v.as_f64()? as f32;
        x.is_finite().then_some(x)
    }
}

impl JsonElement for half::f16 {
    fn from_json(v: &Value) -> Option<Self> {
        // As for FP32: rounding to half precision is the point; beyond ±65504 is refused.
        let x = half::f16::from_f64(v.as_f64()?);
        x.is_finite().then_some(x)
    }
}

impl ToF64 for half::f16 {
    fn to_f64(&self) -> f64 {
        half::f16::to_f64(*self)
    }
}

/// Widening to `f64` for statistics and comparisons.
pub(super) trait ToF64 {
    fn to_f64(&self) -> f64;
}

impl ToF64 for bool {
    fn to_f64(&self) -> f64 {
        f64::from(u8::from(*self))
    }
}

macro_rules! to_f64_lossless {
    ($($t:ty),*) => {$(
        impl ToF64 for $t {
            fn to_f64(&self) -> f64 {
                f64::from(*self)
            }
        }
    )*};
}
to_f64_lossless!(u8, u16, u32, i8, i16, i32, f32, f64);

macro_rules! to_f64_rounding {
    ($($t:ty),*) => {$(
        impl ToF64 for $t {
            fn to_f64(&self) -> f64 {
                // Beyond 2^53 the nearest f64 is the best a statistic can use.
                *self as f64
            }
        }
    )*};
}
to_f64_rounding!(u64, i64);

/// Little-endian encoding of one element.
pub(super) trait BinaryElement: Sized {
    fn from_le(bytes: &[u8]) -> Self;
    fn write_le(&self, out: &mut Vec<u8>);
}

impl BinaryElement for bool {
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write_le(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

macro_rules! binary_num {
    ($($t:ty),*) => {$(
        impl BinaryElement for $t {
            fn from_le(bytes: &[u8]) -> Self {
                let mut buf = [0u8; std::mem::size_of::<$t>()];
                buf.copy_from_slice(bytes);
                <$t>::from_le_bytes(buf)
            }
            fn write_le(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
binary_num!(u8, u16, u32, u64, i8, i16, i32, i64, half::f16, f32, f64);

impl BinaryElement for Vec<u8> {
    fn from_le(bytes: &[u8]) -> Self {
        bytes.to_vec()
    }
    fn write_le(&self, out: &mut Vec<u8>) {
        // Triton's BYTES element: a 4-byte little-endian length, then the bytes.
        out.extend_from_slice(&u32::try_from(self.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(self);
    }
}

/// `count` length-prefixed byte strings that fill `bytes` exactly, or `None`.
pub(super) fn split_bytes(mut bytes: &[u8], count: usize) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(count.min(1 << 20));
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if rest.len() < len || out.len() == count {
            return None;
        }
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    (out.len() == count).then_some(out)
}
