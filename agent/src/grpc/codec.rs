//! Tensors in and out of the gRPC messages: `raw_input_contents` (little-endian, `BYTES`
//! length-prefixed, as Triton's clients send them) or typed `contents`; outputs always as
//! `raw_output_contents`, as Triton answers.

use edgefleet_shared::inference::Datatype;

use super::pb::InferTensorContents;
use crate::tensor::{Tensor, TensorData};

/// Converts `v` element-wise, refusing values out of the target type's range.
fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(v: &[S], what: &str) -> Result<Vec<T>, String> {
    v.iter().map(|&x| T::try_from(x).map_err(|_| format!("{x} is out of range for {what}"))).collect()
}

/// A tensor from typed `contents`; the datatype's own field must hold the elements (FP16 and
/// BF16 have none: they travel in `raw_input_contents`).
pub(super) fn from_contents(datatype: Datatype, shape: Vec<usize>, c: &InferTensorContents) -> Result<Tensor, String> {
    let filled = [
        !c.bool_contents.is_empty(),
        !c.int_contents.is_empty(),
        !c.int64_contents.is_empty(),
        !c.uint_contents.is_empty(),
        !c.uint64_contents.is_empty(),
        !c.fp32_contents.is_empty(),
        !c.fp64_contents.is_empty(),
        !c.bytes_contents.is_empty(),
    ];
    if filled.iter().filter(|f| **f).count() > 1 {
        return Err("contents fill more than one typed field".into());
    }
    let data = match datatype {
        Datatype::Bool => TensorData::Bool(c.bool_contents.clone()),
        Datatype::Int8 => TensorData::I8(narrow(&c.int_contents, "INT8")?),
        Datatype::Int16 => TensorData::I16(narrow(&c.int_contents, "INT16")?),
        Datatype::Int32 => TensorData::I32(c.int_contents.clone()),
        Datatype::Int64 => TensorData::I64(c.int64_contents.clone()),
        Datatype::Uint8 => TensorData::U8(narrow(&c.uint_contents, "UINT8")?),
        Datatype::Uint16 => TensorData::U16(narrow(&c.uint_contents, "UINT16")?),
        Datatype::Uint32 => TensorData::U32(c.uint_contents.clone()),
        Datatype::Uint64 => TensorData::U64(c.uint64_contents.clone()),
        Datatype::Fp32 => TensorData::F32(c.fp32_contents.clone()),
        Datatype::Fp64 => TensorData::F64(c.fp64_contents.clone()),
        Datatype::Bytes => TensorData::Bytes(c.bytes_contents.clone()),
        Datatype::Fp16 => return Err("FP16 has no typed contents: send it in raw_input_contents".into()),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// The raw (little-endian, `BYTES` length-prefixed) encoding of `tensor`.
pub(super) fn raw(tensor: &Tensor) -> Vec<u8> {
    let mut out = Vec::new();
    tensor.write_binary(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_contents_become_tensors_in_the_declared_type() {
        let c = InferTensorContents { fp32_contents: vec![1.0, 2.5], ..Default::default() };
        let t = from_contents(Datatype::Fp32, vec![1, 2], &c).expect("fp32");
        assert_eq!(t.data, TensorData::F32(vec![1.0, 2.5]));
        let c = InferTensorContents { int_contents: vec![-3, 7], ..Default::default() };
        assert_eq!(from_contents(Datatype::Int8, vec![2], &c).expect("int8").data, TensorData::I8(vec![-3, 7]));
        let c = InferTensorContents { bytes_contents: vec![b"hi".to_vec()], ..Default::default() };
        assert_eq!(
            from_contents(Datatype::Bytes, vec![1], &c).expect("bytes").data,
            TensorData::Bytes(vec![b"hi".to_vec()])
        );
    }

    #[test]
    fn contents_that_do_not_fit_are_refused_with_the_reason() {
        let c = InferTensorContents { int_contents: vec![300], ..Default::default() };
        assert!(from_contents(Datatype::Int8, vec![1], &c).expect_err("range").contains("out of range"));
        let c = InferTensorContents { fp32_contents: vec![1.0], ..Default::default() };
        assert!(from_contents(Datatype::Fp32, vec![2], &c).is_err(), "two elements declared, one given");
        let c = InferTensorContents { fp32_contents: vec![1.0], int_contents: vec![1], ..Default::default() };
        assert!(from_contents(Datatype::Fp32, vec![1], &c).expect_err("both").contains("more than one"));
        assert!(
            from_contents(Datatype::Fp16, vec![1], &InferTensorContents::default()).expect_err("fp16").contains("raw")
        );
    }

    #[test]
    fn raw_encoding_round_trips_through_the_binary_decoder() {
        let t = Tensor::new(vec![2], TensorData::Bytes(vec![b"a".to_vec(), b"bcd".to_vec()])).expect("tensor");
        let bytes = raw(&t);
        assert_eq!(bytes, [1, 0, 0, 0, b'a', 3, 0, 0, 0, b'b', b'c', b'd']);
        assert_eq!(Tensor::from_binary(Datatype::Bytes, vec![2], &bytes).expect("decode"), t);
    }
}
