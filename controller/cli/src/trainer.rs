//! The bundled retraining step: a multinomial logistic regression fitted on a retrain request's
//! dataset snapshot (the labelled rows of `data.csv`), written out as an ONNX model
//! (`MatMul → Add → Softmax → ArgMax`, outputs `label` and `probabilities` like skl2onnx's), so
//! the loop closes without Python. Real pipelines take the same snapshot through the webhook.

use std::collections::HashMap;

use prost::Message as _;

use crate::onnx;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The snapshot cannot be read.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// Not enough labelled rows.
    #[error("only {0} labelled rows; at least 10 with 2 classes are needed")]
    TooFewRows(usize),
}

/// Labelled rows of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    /// Feature names.
    pub features: Vec<String>,
    /// Feature values per row.
    pub x: Vec<Vec<f64>>,
    /// Class per row.
    pub y: Vec<usize>,
    /// When each row was served (Unix ms).
    pub at_ms: Vec<i64>,
}

impl Labelled {
    /// Reads the rows of a snapshot's `data.csv` that have a label, from `since_ms` on.
    pub fn from_snapshot(csv: &[u8], since_ms: i64) -> Result<Self, TrainError> {
        let bad = |e: csv::Error| TrainError::Snapshot(e.to_string());
        let mut reader = csv::Reader::from_reader(csv);
        let header: Vec<String> = reader.headers().map_err(bad)?.iter().map(str::to_owned).collect();
        let col = |name: &str| header.iter().position(|h| h == name);
        let (Some(predicted), Some(label), Some(at)) = (col("predicted"), col("label"), col("at_ms")) else {
            return Err(TrainError::Snapshot("not a snapshot: predicted, label and at_ms columns expected".into()));
        };
        let mut out =
            Labelled { features: header[..predicted].to_vec(), x: Vec::new(), y: Vec::new(), at_ms: Vec::new() };
        for record in reader.records() {
            let record = record.map_err(bad)?;
            let (Some(y), Some(t)) = (
                record.get(label).and_then(|v| v.parse::<usize>().ok()),
                record.get(at).and_then(|v| v.parse::<i64>().ok()),
            ) else {
                continue;
            };
            let x: Option<Vec<f64>> = (0..predicted).map(|j| record.get(j).and_then(|v| v.parse().ok())).collect();
            if let Some(x) = x.filter(|_| t >= since_ms) {
                out.x.push(x);
                out.y.push(y);
                out.at_ms.push(t);
            }
        }
        Ok(out)
    }
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// Weights, `features × classes`.
    pub w: Vec<Vec<f64>>,
    /// Bias per class.
    pub b: Vec<f64>,
    /// Accuracy on the training rows.
    pub train_accuracy: f64,
}

impl Fitted {
    /// Class probabilities of one row.
    pub fn predict(&self, x: &[f64]) -> Vec<f64> {
        let logits: Vec<f64> =
            (0..self.b.len()).map(|c| self.b[c] + x.iter().zip(&self.w).map(|(v, w)| v * w[c]).sum::<f64>()).collect();
        softmax(&logits)
    }
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// Fits softmax regression by full-batch gradient descent on standardised features (with a
/// small L2 penalty), then folds the standardisation into the weights.
pub fn fit(data: &Labelled) -> Result<Fitted, TrainError> {
    let n = data.x.len();
    let classes = data.y.iter().max().map_or(0, |m| m + 1);
    let distinct: std::collections::HashSet<_> = data.y.iter().collect();
    if n < 10 || distinct.len() < 2 {
        return Err(TrainError::TooFewRows(n));
    }
    let f = data.features.len();
    let mean: Vec<f64> = (0..f).map(|j| data.x.iter().map(|r| r[j]).sum::<f64>() / n as f64).collect();
    let std: Vec<f64> = (0..f)
        .map(|j| (data.x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n as f64).sqrt().max(1e-9))
        .collect();
    let z: Vec<Vec<f64>> = data.x.iter().map(|r| (0..f).map(|j| (r[j] - mean[j]) / std[j]).collect()).collect();
    let (mut w, mut b) = (vec![vec![0.0; classes]; f], vec![0.0; classes]);
    let (rate, l2) = (0.5, 1e-3);
    for _ in 0..2000 {
        let (mut gw, mut gb) = (vec![vec![0.0; classes]; f], vec![0.0; classes]);
        for (row, &y) in z.iter().zip(&data.y) {
            let p = Fitted { w: w.clone(), b: b.clone(), train_accuracy: 0.0 }.predict(row);
            for c in 0..classes {
                let err = p[c] - if c == y { 1.0 } else { 0.0 };
                gb[c] += err;
                for j in 0..f {
                    gw[j][c] += err * row[j];
                }
            }
        }
        for c in 0..classes {
            b[c] -= rate * gb[c] / n as f64;
            for j in 0..f {
                w[j][c] -= rate * (gw[j][c] / n as f64 + l2 * w[j][c]);
            }
        }
    }
    // logits = Σ_j (x_j − μ_j)/σ_j · w_jc + b_c = Σ_j x_j · (w_jc/σ_j) + (b_c − Σ_j μ_j w_jc/σ_j)
    let folded_w: Vec<Vec<f64>> = (0..f).map(|j| w[j].iter().map(|v| v / std[j]).collect()).collect();
    let folded_b: Vec<f64> =
        (0..classes).map(|c| b[c] - (0..f).map(|j| mean[j] * folded_w[j][c]).sum::<f64>()).collect();
    let mut fitted = Fitted { w: folded_w, b: folded_b, train_accuracy: 0.0 };
    let correct = data.x.iter().zip(&data.y).filter(|(x, y)| argmax(&fitted.predict(x)) == **y).count();
    fitted.train_accuracy = correct as f64 / n as f64;
    Ok(fitted)
}

fn argmax(p: &[f64]) -> usize {
    p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

fn tensor_type(elem: i32, dims: &[Result<i64, &str>]) -> Option<onnx::TypeProto> {
    let dim = dims
        .iter()
        .map(|d| onnx::Dimension {
            value: Some(match d {
                Ok(v) => onnx::DimensionValue::Value(*v),
                Err(name) => onnx::DimensionValue::Param((*name).to_owned()),
            }),
        })
        .collect();
    Some(onnx::TypeProto {
        tensor_type: Some(onnx::TensorType { elem_type: elem, shape: Some(onnx::TensorShapeProto { dim }) }),
    })
}

fn node(op: &str, inputs: &[&str], output: &str, attributes: Vec<onnx::AttributeProto>) -> onnx::NodeProto {
    onnx::NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.into()],
        attribute: attributes,
    }
}

fn int_attribute(name: &str, value: i64) -> onnx::AttributeProto {
    onnx::AttributeProto { name: name.into(), r#type: onnx::ATTRIBUTE_INT, i: value }
}

/// The model as ONNX bytes: input `input` `[N, F]` float; outputs `label` `[N]` int64 and
/// `probabilities` `[N, C]` float. `metadata` goes into the model's metadata properties.
pub fn to_onnx(fitted: &Fitted, input: &str, metadata: &HashMap<String, String>) -> Vec<u8> {
    let (f, c) = (fitted.w.len() as i64, fitted.b.len() as i64);
    let weights = onnx::TensorProto {
        name: "W".into(),
        dims: vec![f, c],
        data_type: onnx::FLOAT,
        float_data: fitted.w.iter().flatten().map(|v| *v as f32).collect(),
    };
    let bias = onnx::TensorProto {
        name: "B".into(),
        dims: vec![c],
        data_type: onnx::FLOAT,
        float_data: fitted.b.iter().map(|v| *v as f32).collect(),
    };
    let value = |name: &str, elem: i32, dims: &[Result<i64, &str>]| onnx::ValueInfoProto {
        name: name.into(),
        r#type: tensor_type(elem, dims),
    };
    let graph = onnx::GraphProto {
        name: "edgefleet_logistic_regression".into(),
        node: vec![
            node("MatMul", &[input, "W"], "xw", vec![]),
            node("Add", &["xw", "B"], "logits", vec![]),
            node("Softmax", &["logits"], "probabilities", vec![int_attribute("axis", 1)]),
            node("ArgMax", &["probabilities"], "label", vec![int_attribute("axis", 1), int_attribute("keepdims", 0)]),
        ],
        initializer: vec![weights, bias],
        input: vec![value(input, onnx::FLOAT, &[Err("N"), Ok(f)])],
        output: vec![value("label", onnx::INT64, &[Err("N")]), value("probabilities", onnx::FLOAT, &[Err("N"), Ok(c)])],
    };
    let mut props: Vec<onnx::StringStringEntryProto> =
        metadata.iter().map(|(k, v)| onnx::StringStringEntryProto { key: k.clone(), value: v.clone() }).collect();
    props.sort_by(|a, b| a.key.cmp(&b.key));
    onnx::ModelProto {
        ir_version: 8,
        opset_import: vec![onnx::OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "edgefleet".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: props,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_engine::tensor::{Tensor, TensorData};
    use edgefleet_engine::{self as engine, BackendConfig, BackendKind};

    /// Two separable blobs per class on 2 features.
    fn blobs() -> Labelled {
        let mut d = Labelled { features: vec!["a".into(), "b".into()], x: vec![], y: vec![], at_ms: vec![] };
        for i in 0..60 {
            let class = i % 3;
            let jitter = (i as f64 * 0.37).sin() * 0.3;
            d.x.push(vec![class as f64 * 3.0 + jitter, 10.0 - class as f64 * 2.0 - jitter]);
            d.y.push(class);
            d.at_ms.push(i as i64);
        }
        d
    }

    #[test]
    fn fits_separable_classes_and_runs_in_tract_like_it_predicts() {
        let data = blobs();
        let fitted = fit(&data).expect("fit");
        assert_eq!(fitted.train_accuracy, 1.0);
        let bytes = to_onnx(&fitted, "X", &HashMap::from([("trained_on".into(), "test".into())]));
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, bytes).expect("write");
        let engine = engine::load(&path, &BackendConfig { kind: BackendKind::Tract, ..BackendConfig::default() })
            .expect("tract loads the exported model");
        let mut session = engine.session().expect("session");
        let x: Vec<f32> = data.x.iter().flatten().map(|v| *v as f32).collect();
        let out = session.run(vec![Tensor::new(vec![60, 2], TensorData::F32(x)).expect("t")]).expect("run");
        let TensorData::I64(labels) = &out[0].data else { panic!("label output is int64: {:?}", out[0]) };
        assert_eq!(labels.iter().map(|l| *l as usize).collect::<Vec<_>>(), data.y);
        let TensorData::F32(p) = &out[1].data else { panic!("probabilities are float") };
        let expected = fitted.predict(&data.x[0]);
        assert!((f64::from(p[0]) - expected[0]).abs() < 1e-4);
    }

    #[test]
    fn reads_only_labelled_rows_since_a_time() {
        let csv = b"a,b,predicted,label,device_id,request_id,at_ms\n1,2,0,1,d,r1,10\n3,4,1,,d,r2,20\n5,6,1,0,d,r3,30\n";
        let d = Labelled::from_snapshot(csv, 15).expect("read");
        assert_eq!(d.features, vec!["a", "b"]);
        assert_eq!(d.x, vec![vec![5.0, 6.0]]);
        assert_eq!(d.y, vec![0]);
        assert!(matches!(Labelled::from_snapshot(b"a,b\n1,2\n", 0), Err(TrainError::Snapshot(_))));
        assert!(matches!(fit(&d), Err(TrainError::TooFewRows(1))));
    }
}
