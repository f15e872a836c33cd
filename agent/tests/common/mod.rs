//! Helpers shared by the agent's integration tests.
#![allow(dead_code, unreachable_pub, reason = "each test binary uses a different subset")]

use std::path::PathBuf;

pub mod server;

use edgefleet_agent::engine::BackendConfig;
#[cfg(feature = "ort")]
use edgefleet_agent::engine::{BackendKind, ExecutionProvider};
use edgefleet_agent::tensor::{Tensor, TensorData};
use edgefleet_shared::inference::Datatype;
use serde_json::Value;

/// `tests/testdata` at the workspace root.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata")
}

/// A committed reference: a KServe request and ONNX Runtime's outputs for it.
pub struct Reference {
    pub name: String,
    pub model: PathBuf,
    pub tolerance: f64,
    pub request: Value,
    pub outputs: Vec<Value>,
}

pub fn references() -> Vec<Reference> {
    let mut refs: Vec<Reference> = std::fs::read_dir(testdata())
        .expect("testdata exists")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let file = path.file_name()?.to_str()?.to_owned();
            let name = file.strip_suffix(".reference.json")?.to_owned();
            let json: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).expect("reference parses");
            Some(Reference {
                model: testdata().join(format!("{name}.onnx")),
                name,
                tolerance: json["tolerance"].as_f64().expect("tolerance"),
                request: json["request"].clone(),
                outputs: json["outputs"].as_array().expect("outputs").clone(),
            })
        })
        .collect();
    refs.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(refs.len() >= 5, "expected the committed fixtures, found {}", refs.len());
    refs
}

/// Decodes a KServe JSON tensor (`name`, `datatype`, `shape`, `data`).
pub fn tensor_from_json(t: &Value) -> Tensor {
    let datatype: Datatype = t["datatype"].as_str().expect("datatype").parse().expect("known datatype");
    let shape = t["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
    Tensor::from_json(datatype, shape, &t["data"]).expect("valid tensor")
}

/// Asserts two tensors are equal within `tol` (absolute, plus relative for large values).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    assert_eq!(got.datatype(), want.datatype(), "{what}: datatype");
    if matches!(got.data, TensorData::I64(_) | TensorData::U64(_)) {
        assert_eq!(got.data, want.data, "{what}: 64-bit integers must match exactly");
        return;
    }
    for (i, (g, w)) in got.data.to_f64_vec().iter().zip(want.data.to_f64_vec()).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w} (tolerance {tol})");
    }
}

/// Path of libonnxruntime.so: `ORT_DYLIB_PATH`, else where `agent/scripts/fetch-onnxruntime.sh` puts it.
pub fn ort_library() -> PathBuf {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/onnxruntime/libonnxruntime.so"));
    assert!(
        path.exists(),
        "ONNX Runtime library not found at {}: run agent/scripts/fetch-onnxruntime.sh or set ORT_DYLIB_PATH",
        path.display()
    );
    path
}

pub fn tract_backend() -> BackendConfig {
    BackendConfig { kind: edgefleet_agent::engine::BackendKind::Tract, ..BackendConfig::default() }
}

#[cfg(feature = "ort")]
pub fn ort_backend() -> BackendConfig {
    let mut config = BackendConfig { kind: BackendKind::Ort, ..BackendConfig::default() };
    config.ort.library_path = Some(ort_library());
    config.ort.execution_providers = vec![ExecutionProvider::Cpu];
    config
}
