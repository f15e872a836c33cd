//! Engine-neutral tensors and their KServe v2 encodings (JSON and binary).
//!
//! Both backends take and return [`Tensor`]s, so the HTTP layer decodes a request once and
//! never knows which engine runs it. Element types are the KServe datatypes an ONNX model can
//! use: numbers and booleans, half floats (`FP16`: JSON numbers, 2-byte little-endian binary),
//! and byte strings (`BYTES`: JSON strings; in binary a 4-byte little-endian length, then the
//! bytes, per element).

use edgefleet_shared::inference::Datatype;
/// The element type of `FP16` tensors.
pub use half::f16;
use serde_json::Value;

/// Why a tensor could not be built from request data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// The datatype exists in the protocol but the agent cannot carry it.
    #[error("datatype {0} is not supported (supported: BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES)")]
    Unsupported(Datatype),
    /// `data` holds a different number of elements than `shape` asks for.
    #[error("shape {shape:?} needs {expected} elements but data has {got}")]
    Length {
        /// Shape given.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements present.
        got: usize,
    },
    /// A JSON element is not a valid value of the datatype.
    #[error("element {index} ({value}) is not a valid {datatype} value")]
    Element {
        /// Flat index of the element.
        index: usize,
        /// The offending value, as JSON.
        value: String,
        /// Expected datatype.
        datatype: Datatype,
    },
    /// `data` is neither an array nor a scalar number/boolean.
    #[error("data must be a (possibly nested) JSON array of {0} values")]
    NotArray(Datatype),
    /// `data`'s text is not JSON the decoder takes (e.g. nested deeper than its limit of 128).
    #[error("data is not valid JSON: {0}")]
    Json(String),
    /// The binary part holds a different number of bytes than the shape needs.
    #[error("binary BYTES data of {got} bytes is not {} length-prefixed elements (4-byte little-endian length, then the bytes) for shape {shape:?}", element_count(shape).unwrap_or(usize::MAX))]
    BytesEncoding {
        /// Requested shape.
        shape: Vec<usize>,
        /// Bytes present.
        got: usize,
    },
    #[error("binary data has {got} bytes but shape {shape:?} of {datatype} needs {expected}")]
    BinaryLength {
        /// Shape given.
        shape: Vec<usize>,
        /// Datatype given.
        datatype: Datatype,
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
}

/// Typed, row-major tensor storage.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<half::f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// `BYTES`: one byte string per element (text for most models).
    Bytes(Vec<Vec<u8>>),
}

/// Calls `$m!(Variant, rust_type, Datatype)` once per numeric (and boolean) element type; `BYTES`
/// is handled beside it wherever it differs.
macro_rules! for_each_element {
    ($m:ident) => {
        $m!(Bool, bool, Bool);
        $m!(U8, u8, Uint8);
        $m!(U16, u16, Uint16);
        $m!(U32, u32, Uint32);
        $m!(U64, u64, Uint64);
        $m!(I8, i8, Int8);
        $m!(I16, i16, Int16);
        $m!(I32, i32, Int32);
        $m!(I64, i64, Int64);
        $m!(F16, half::f16, Fp16);
        $m!(F32, f32, Fp32);
        $m!(F64, f64, Fp64);
    };
}
pub(crate) use for_each_element;

/// Applies `$body` to the vector inside a [`TensorData`], whatever its element type.
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

// After the macros: `elements` uses `with_data!`.
mod elements;
mod json;

pub use elements::JsonData;
use elements::{BinaryElement, JsonElement, ToF64};
use json::JsonSource;

impl TensorData {
    /// The protocol datatype of these elements.
    pub fn datatype(&self) -> Datatype {
        macro_rules! arm {
            ($variant:ident, $t:ty, $dt:ident) => {
                if let TensorData::$variant(_) = self {
                    return Datatype::$dt;
                }
            };
        }
        for_each_element!(arm);
        Datatype::Bytes
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as `f64` (booleans as 0/1; 64-bit integers beyond 2^53 round; byte strings,
    /// which have no number, as NaN).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        macro_rules! arm {
            ($variant:ident, $t:ty, $dt:ident) => {
                if let TensorData::$variant(v) = self {
                    return v.iter().map(|x| x.to_f64()).collect();
                }
            };
        }
        for_each_element!(arm);
        vec![f64::NAN; self.len()]
    }

    /// All-zero (all-false) storage of `len` elements.
    pub fn zeros(datatype: Datatype, len: usize) -> Result<Self, TensorError> {
        macro_rules! arm {
            ($variant:ident, $t:ty, $dt:ident) => {
                if datatype == Datatype::$dt {
                    return Ok(TensorData::$variant(vec![<$t>::default(); len]));
                }
            };
        }
        for_each_element!(arm);
        match datatype {
            Datatype::Bytes => Ok(TensorData::Bytes(vec![Vec::new(); len])),
            other => Err(TensorError::Unsupported(other)),
        }
    }

    fn empty_like(&self, capacity: usize) -> Self {
        macro_rules! arm {
            ($variant:ident, $t:ty, $dt:ident) => {
                if let TensorData::$variant(_) = self {
                    return TensorData::$variant(Vec::with_capacity(capacity));
                }
            };
        }
        for_each_element!(arm);
        TensorData::Bytes(Vec::with_capacity(capacity))
    }

    /// Appends `other[range]`; `other` must have the same element type.
    fn extend_from(&mut self, other: &TensorData, range: std::ops::Range<usize>) -> bool {
        macro_rules! arm {
            ($variant:ident, $t:ty, $dt:ident) => {
                if let (TensorData::$variant(dst), TensorData::$variant(src)) = (&mut *self, other) {
                    dst.extend_from_slice(&src[range]);
                    return true;
                }
            };
        }
        for_each_element!(arm);
        if let (TensorData::Bytes(dst), TensorData::Bytes(src)) = (self, other) {
            dst.extend_from_slice(&src[range]);
            return true;
        }
        false
    }
}

/// A shaped, typed tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements, row-major; `data.len()` is the product of `shape`.
    pub data: TensorData,
}

/// Number of elements a shape holds, or `None` if it overflows.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// Whether this tensor matches a golden one: same shape and datatype, 64-bit integers
    /// exactly, other elements within `tolerance` relative and absolute
    /// (`|got - want| <= tolerance * (1 + |want|)`, NaN only where NaN is expected). The rule
    /// the agent's self-test applies, and the controller's determinism check at push.
    pub fn matches_golden(&self, want: &Tensor, tolerance: f64) -> Result<(), String> {
        if self.shape != want.shape || self.datatype() != want.datatype() {
            return Err(format!(
                "got {} {:?}, expected {} {:?}",
                self.datatype(),
                self.shape,
                want.datatype(),
                want.shape
            ));
        }
        if matches!(want.data, TensorData::I64(_) | TensorData::U64(_) | TensorData::Bytes(_)) {
            return if self.data == want.data { Ok(()) } else { Err("integer or byte-string outputs differ".into()) };
        }
        for (i, (g, w)) in self.data.to_f64_vec().iter().zip(want.data.to_f64_vec()).enumerate() {
            if (g - w).abs() > tolerance * (1.0 + w.abs()) || g.is_nan() != w.is_nan() {
                return Err(format!("element {i} is {g}, expected {w} (tolerance {tolerance})"));
            }
        }
        Ok(())
    }

    /// Builds a tensor, checking that `data` fits `shape`.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, TensorError> {
        let expected = element_count(&shape).unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(TensorError::Length { shape, expected, got: data.len() });
        }
        Ok(Tensor { shape, data })
    }

    /// An all-zero tensor, used for warm-up.
    pub fn zeros(datatype: Datatype, shape: Vec<usize>) -> Result<Self, TensorError> {
        let len = element_count(&shape).unwrap_or(usize::MAX);
        Ok(Tensor { data: TensorData::zeros(datatype, len)?, shape })
    }

    /// The protocol datatype of the elements.
    pub fn datatype(&self) -> Datatype {
        self.data.datatype()
    }

    /// Decodes KServe JSON `data` (flat or nested arrays, or a bare scalar for rank 0).
    pub fn from_json(datatype: Datatype, shape: Vec<usize>, data: &Value) -> Result<Self, TensorError> {
        Self::decode_json(datatype, shape, JsonSource::Value(data))
    }

    /// Decodes KServe JSON `data` from its text, as [`Tensor::from_json`] does from a parsed
    /// value, converting each element as it is parsed (no `Value` per element in between).
    pub fn from_json_text(datatype: Datatype, shape: Vec<usize>, text: &str) -> Result<Self, TensorError> {
        Self::decode_json(datatype, shape, JsonSource::Text(text))
    }

    fn decode_json(datatype: Datatype, shape: Vec<usize>, source: JsonSource<'_>) -> Result<Self, TensorError> {
        let expected = element_count(&shape).unwrap_or(usize::MAX);
        macro_rules! arm {
            ($variant:ident, $t:ty, $dt:ident) => {
                if datatype == Datatype::$dt {
                    let mut out: Vec<$t> = Vec::with_capacity(expected.min(1 << 20));
                    source.collect(datatype, &mut out, &<$t as JsonElement>::from_json)?;
                    return Tensor::new(shape, TensorData::$variant(out));
                }
            };
        }
        for_each_element!(arm);
        if datatype == Datatype::Bytes {
            let mut out: Vec<Vec<u8>> = Vec::with_capacity(expected.min(1 << 20));
            source.collect(datatype, &mut out, &|v: &Value| v.as_str().map(|s| s.as_bytes().to_vec()))?;
            return Tensor::new(shape, TensorData::Bytes(out));
        }
        Err(TensorError::Unsupported(datatype))
    }

    /// Decodes little-endian binary data (Triton's binary tensor extension; `BYTES` elements are
    /// each a 4-byte little-endian length and that many bytes).
    pub fn from_binary(datatype: Datatype, shape: Vec<usize>, bytes: &[u8]) -> Result<Self, TensorError> {
        if datatype == Datatype::Bytes {
            let count = element_count(&shape).unwrap_or(usize::MAX);
            let data = elements::split_bytes(bytes, count)
                .ok_or(TensorError::BytesEncoding { shape: shape.clone(), got: bytes.len() })?;
            return Ok(Tensor { shape, data: TensorData::Bytes(data) });
        }
        let size = datatype.element_size().ok_or(TensorError::Unsupported(datatype))?;
        let count = element_count(&shape).unwrap_or(usize::MAX);
        let expected = count.saturating_mul(size);
        if bytes.len() != expected {
            return Err(TensorError::BinaryLength { shape, datatype, expected, got: bytes.len() });
        }
        macro_rules! arm {
            ($variant:ident, $t:ty, $dt:ident) => {
                if datatype == Datatype::$dt {
                    let data = bytes.chunks_exact(size).map(<$t as BinaryElement>::from_le).collect();
                    return Ok(Tensor { shape, data: TensorData::$variant(data) });
                }
            };
        }
        for_each_element!(arm);
        Err(TensorError::Unsupported(datatype))
    }

    /// Appends the little-endian binary encoding to `out`; returns the number of bytes written.
    pub fn write_binary(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        with_data!(&self.data, v => v.iter().for_each(|x| x.write_le(out)));
        out.len() - start
    }

    /// Serialises the elements as a flat JSON array.
    pub fn json_data(&self) -> JsonData<'_> {
        JsonData(&self.data)
    }

    /// Joins tensors along the first axis. All parts must share datatype and inner dimensions.
    pub fn concat(parts: &[&Tensor]) -> Option<Tensor> {
        let first = parts.first()?;
        let inner = first.shape.get(1..)?;
        let mut batch = 0;
        let total: usize = parts.iter().map(|t| t.data.len()).sum();
        let mut data = first.data.empty_like(total);
        for part in parts {
            if part.shape.get(1..)? != inner {
                return None;
            }
            batch += part.shape[0];
            if !data.extend_from(&part.data, 0..part.data.len()) {
                return None;
            }
        }
        let mut shape = first.shape.clone();
        shape[0] = batch;
        Some(Tensor { shape, data })
    }

    /// Splits along the first axis into pieces of `sizes` rows; `None` if the rows do not add up.
    pub fn split(&self, sizes: &[usize]) -> Option<Vec<Tensor>> {
        let rows = *self.shape.first()?;
        if sizes.iter().sum::<usize>() != rows {
            return None;
        }
        let row_len = element_count(&self.shape[1..])?;
        let mut start = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for &n in sizes {
            let mut data = self.data.empty_like(n * row_len);
            data.extend_from(&self.data, start * row_len..(start + n) * row_len);
            start += n;
            let mut shape = self.shape.clone();
            shape[0] = n;
            out.push(Tensor { shape, data });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_and_flat_json_decode_the_same() {
        let flat = Tensor::from_json(Datatype::Fp32, vec![2, 2], &json!([1, 2.5, 3, 4])).expect("flat");
        let nested = Tensor::from_json(Datatype::Fp32, vec![2, 2], &json!([[1, 2.5], [3, 4]])).expect("nested");
        assert_eq!(flat, nested);
        assert_eq!(flat.data, TensorData::F32(vec![1.0, 2.5, 3.0, 4.0]));
    }

    #[test]
    fn json_refuses_out_of_range_and_wrong_kind() {
        let err = Tensor::from_json(Datatype::Uint8, vec![2], &json!([1, 256])).expect_err("range");
        assert!(matches!(err, TensorError::Element { index: 1, .. }), "{err}");
        let err = Tensor::from_json(Datatype::Int32, vec![1], &json!([1.5])).expect_err("float");
        assert!(matches!(err, TensorError::Element { index: 0, .. }));
        let err = Tensor::from_json(Datatype::Bool, vec![1], &json!(["yes"])).expect_err("string");
        assert!(matches!(err, TensorError::Element { .. }));
        let err = Tensor::from_json(Datatype::Fp32, vec![3], &json!([1, 2])).expect_err("length");
        assert_eq!(err, TensorError::Length { shape: vec![3], expected: 3, got: 2 });
        let half = Tensor::from_json(Datatype::Fp16, vec![3], &json!([1, 0.5, -2.25])).expect("fp16");
        assert_eq!(half.datatype(), Datatype::Fp16);
        assert_eq!(serde_json::to_value(half.json_data()).expect("json"), json!([1.0, 0.5, -2.25]));
        let mut bytes = Vec::new();
        assert_eq!(half.write_binary(&mut bytes), 6);
        assert_eq!(&bytes[..2], &[0x00, 0x3c], "1.0 in IEEE half, little-endian");
        assert!(Tensor::from_json(Datatype::Fp16, vec![1], &json!([70000])).is_err(), "beyond half's range");
        let text = Tensor::from_json(Datatype::Bytes, vec![2], &json!(["ab", ""])).expect("bytes");
        assert_eq!(serde_json::to_value(text.json_data()).expect("json"), json!(["ab", ""]));
        let mut bytes = Vec::new();
        assert_eq!(text.write_binary(&mut bytes), 10);
        assert_eq!(bytes, [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(Tensor::from_binary(Datatype::Bytes, vec![2], &bytes).expect("decode"), text);
        assert!(Tensor::from_binary(Datatype::Bytes, vec![3], &bytes).is_err(), "too few elements");
        assert!(Tensor::from_binary(Datatype::Bytes, vec![1], &bytes).is_err(), "bytes left over");
        assert!(Tensor::from_binary(Datatype::Bytes, vec![1], &[5, 0, 0, 0, 1]).is_err(), "length past the end");
        assert!(Tensor::from_json(Datatype::Bytes, vec![1], &json!([3])).is_err(), "BYTES are strings in JSON");
    }

    #[test]
    fn binary_round_trips_every_type() {
        let cases = [
            TensorData::Bool(vec![true, false]),
            TensorData::U8(vec![0, 255]),
            TensorData::U16(vec![1, 65535]),
            TensorData::U32(vec![1, u32::MAX]),
            TensorData::U64(vec![1, u64::MAX]),
            TensorData::I8(vec![-128, 127]),
            TensorData::I16(vec![-1, 300]),
            TensorData::I32(vec![-1, i32::MAX]),
            TensorData::I64(vec![i64::MIN, 1 << 40]),
            TensorData::F32(vec![1.5, -0.25]),
            TensorData::F64(vec![1e300, -0.0]),
        ];
        for data in cases {
            let t = Tensor::new(vec![2], data).expect("tensor");
            let mut bytes = Vec::new();
            let n = t.write_binary(&mut bytes);
            assert_eq!(n, 2 * t.datatype().element_size().expect("fixed size"));
            assert_eq!(Tensor::from_binary(t.datatype(), vec![2], &bytes).expect("decode"), t);
        }
    }

    #[test]
    fn binary_length_must_match_shape() {
        let err = Tensor::from_binary(Datatype::Fp32, vec![2], &[0; 7]).expect_err("short");
        assert!(matches!(err, TensorError::BinaryLength { expected: 8, got: 7, .. }));
    }

    #[test]
    fn concat_then_split_restores_parts() {
        let a = Tensor::new(vec![1, 2], TensorData::I64(vec![1, 2])).expect("a");
        let b = Tensor::new(vec![2, 2], TensorData::I64(vec![3, 4, 5, 6])).expect("b");
        let joined = Tensor::concat(&[&a, &b]).expect("concat");
        assert_eq!(joined.shape, vec![3, 2]);
        assert_eq!(joined.split(&[1, 2]).expect("split"), vec![a.clone(), b]);
        let c = Tensor::new(vec![1, 3], TensorData::I64(vec![1, 2, 3])).expect("c");
        assert!(Tensor::concat(&[&a, &c]).is_none());
        assert!(joined.split(&[1, 1]).is_none());
    }
}
