//! One conformance suite for both backends (STYLE §13): every committed fixture runs on tract
//! and, with the `ort` feature, on ONNX Runtime, and must match the outputs ONNX Runtime's
//! Python API produced when the fixtures were generated.

mod common;

use common::{Reference, assert_close, references, tensor_from_json};
use edgefleet_agent::engine::{self, BackendConfig};

fn run_suite(backend: &BackendConfig, label: &str) {
    for Reference { name, model, tolerance, request, outputs } in references() {
        let engine = engine::load(&model, backend).unwrap_or_else(|e| panic!("{label}/{name}: load: {e}"));
        let sig = engine.signature().clone();
        let inputs: Vec<_> = sig
            .inputs
            .iter()
            .map(|spec| {
                let t = request["inputs"]
                    .as_array()
                    .and_then(|a| a.iter().find(|t| t["name"] == spec.name.as_str()))
                    .unwrap_or_else(|| panic!("{label}/{name}: reference lacks input {}", spec.name));
                tensor_from_json(t)
            })
            .collect();
        let mut session = engine.clone().session().unwrap_or_else(|e| panic!("{label}/{name}: session: {e}"));
        let got = session.run(inputs.clone()).unwrap_or_else(|e| panic!("{label}/{name}: run: {e}"));
        assert_eq!(got.len(), outputs.len(), "{label}/{name}: output count");
        for (spec, (g, want)) in sig.outputs.iter().zip(got.iter().zip(&outputs)) {
            assert_eq!(want["name"], spec.name.as_str(), "{label}/{name}: output order");
            assert_close(&format!("{label}/{name}/{}", spec.name), g, &tensor_from_json(want), tolerance);
        }
        // A second run on the same session reuses its state and must give the same answer.
        let again = session.run(inputs).unwrap_or_else(|e| panic!("{label}/{name}: second run: {e}"));
        assert_eq!(again, got, "{label}/{name}: repeated run differs");
    }
}

#[test]
fn tract_matches_onnxruntime_references() {
    run_suite(&common::tract_backend(), "tract");
}

#[cfg(feature = "ort")]
#[test]
fn ort_matches_onnxruntime_references() {
    run_suite(&common::ort_backend(), "ort");
}

#[cfg(feature = "ort")]
#[test]
fn both_backends_report_the_same_signature() {
    for r in references() {
        let tract = engine::load(&r.model, &common::tract_backend()).expect("tract loads");
        let ort = engine::load(&r.model, &common::ort_backend()).expect("ort loads");
        let names = |s: &engine::Signature| {
            (
                s.inputs.iter().map(|t| (t.name.clone(), t.datatype)).collect::<Vec<_>>(),
                s.outputs.iter().map(|t| (t.name.clone(), t.datatype)).collect::<Vec<_>>(),
            )
        };
        assert_eq!(names(tract.signature()), names(ort.signature()), "{}", r.name);
        assert_eq!(tract.signature().inputs[0].shape, ort.signature().inputs[0].shape, "{}", r.name);
        let dims = |s: &engine::Signature| s.outputs.iter().map(|t| t.shape.clone()).collect::<Vec<_>>();
        assert_eq!(dims(tract.signature()), dims(ort.signature()), "{}: output shapes", r.name);
    }
}

#[test]
fn a_file_that_is_not_a_model_is_refused_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("junk.onnx");
    std::fs::write(&path, b"this is not protobuf").expect("write");
    let err = engine::load(&path, &common::tract_backend()).expect_err("junk refused");
    assert!(err.to_string().contains("junk.onnx"), "{err}");
}
