//! scikit-learn classifiers exported by skl2onnx with its defaults end in a `ZipMap`: a list of
//! `{class: probability}` maps, which neither tract nor the KServe protocol can carry. At push
//! the registry replaces each `ZipMap` by the probability tensor it was built from (`[N, C]`
//! FP32, classes in the order of its `classlabels_*` attribute), keeping the output's name, so
//! the model serves on any engine. The model is re-encoded with tract's ONNX schema; the stored,
//! signed artifact is the rewritten one.

use prost::Message as _;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{ModelProto, TensorShapeProto, TypeProto, type_proto};

/// ONNX's FLOAT element type.
const FLOAT: i32 = 1;

/// A rewritten model.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The model's new bytes.
    pub bytes: Vec<u8>,
    /// One sentence per output rewritten.
    pub notes: Vec<String>,
}

/// The model without its `ZipMap`s, or `None` when it has none (the bytes stay as pushed).
pub fn strip(bytes: &[u8]) -> Result<Option<Rewritten>, String> {
    let Ok(mut model) = ModelProto::decode(bytes) else { return Ok(None) };
    let Some(graph) = model.graph.as_mut() else { return Ok(None) };
    if !graph.node.iter().any(|n| n.op_type == "ZipMap") {
        return Ok(None);
    }
    let mut notes = Vec::new();
    while let Some(ix) = graph.node.iter().position(|n| n.op_type == "ZipMap") {
        let node = graph.node.remove(ix);
        let (Some(probabilities), Some(out)) = (node.input.first().cloned(), node.output.first().cloned()) else {
            return Err("a ZipMap node without its input or output".into());
        };
        let labels: Vec<String> = node
            .attribute
            .iter()
            .find(|a| a.name == "classlabels_int64s" || a.name == "classlabels_strings")
            .map(|a| {
                if a.ints.is_empty() {
                    a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()
                } else {
                    a.ints.iter().map(ToString::to_string).collect()
                }
            })
            .unwrap_or_default();
        // The tensor that fed the ZipMap now carries the output's name.
        for n in &mut graph.node {
            for name in n.output.iter_mut().chain(n.input.iter_mut()) {
                if *name == probabilities {
                    name.clone_from(&out);
                }
            }
        }
        graph.value_info.retain(|v| v.name != probabilities && v.name != out);
        let classes = (!labels.is_empty()).then_some(dimension::Value::DimValue(labels.len() as i64));
        let Some(output) = graph.output.iter_mut().find(|o| o.name == out) else {
            return Err(format!("the ZipMap output {out:?} is not a graph output"));
        };
        output.r#type = Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        Dimension { denotation: String::new(), value: Some(dimension::Value::DimParam("N".into())) },
                        Dimension { denotation: String::new(), value: classes },
                    ],
                }),
            })),
        });
        notes.push(format!(
            "output {out:?} was a ZipMap (a list of {{class: probability}} maps): it is now the probabilities \
             as an [N, {}] FP32 tensor, classes in the order {}",
            labels.len(),
            labels.join(", ")
        ));
    }
    Ok(Some(Rewritten { bytes: model.encode_to_vec(), notes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata").join(name))
            .expect("fixture")
    }

    #[test]
    fn a_zipmap_becomes_the_probabilities_it_was_built_from() {
        let Rewritten { bytes, notes } =
            strip(&fixture("iris_zipmap.onnx")).expect("rewrite").expect("it had a ZipMap");
        let model = ModelProto::decode(&bytes[..]).expect("decodes");
        let graph = model.graph.expect("graph");
        assert!(graph.node.iter().all(|n| n.op_type != "ZipMap"));
        let out = graph.output.iter().find(|o| o.name == "output_probability").expect("output kept by name");
        let Some(TypeProto { value: Some(type_proto::Value::TensorType(t)), .. }) = &out.r#type else {
            panic!("not a tensor: {out:?}")
        };
        assert_eq!(t.elem_type, FLOAT);
        let dims: Vec<_> = t.shape.as_ref().expect("shape").dim.iter().map(|d| d.value.clone()).collect();
        assert_eq!(dims, [Some(dimension::Value::DimParam("N".into())), Some(dimension::Value::DimValue(3))]);
        assert!(graph.node.iter().any(|n| n.output.iter().any(|o| o == "output_probability")), "a node produces it");
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("classes in the order 0, 1, 2"), "{}", notes[0]);
    }

    #[test]
    fn a_model_without_zipmap_is_left_as_pushed() {
        assert_eq!(strip(&fixture("iris_logreg.onnx")), Ok(None));
        assert_eq!(strip(b"not protobuf at all"), Ok(None));
    }
}
