//! Raw engine floor (BENCHMARKS.md §1): the same model run in-process in a loop, batch 1, one
//! thread, timed per call — tract's `SimplePlan` directly, then through the agent's engine
//! wrapper (tensor conversion included), and ONNX Runtime's `Session::run` when built with
//! `--features ort` and `ORT_DYLIB_PATH` is set.
//!
//! Run: `cargo bench -p edgefleet-agent --bench engine [--features ort]`. Prints one line per
//! (model, engine) with the median and p99 per call in microseconds.
#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a benchmark binary reports on stdout")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgefleet_agent::engine::{self, BackendConfig, BackendKind};
use edgefleet_agent::tensor::Tensor;
use serde_json::Value;
use tract_onnx::prelude::*;

const WARMUP: usize = 200;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata")
}

/// The first row of the committed reference input, as an agent tensor.
fn first_row(model: &str) -> Tensor {
    let reference: Value =
        serde_json::from_slice(&std::fs::read(testdata().join(format!("{model}.reference.json"))).unwrap()).unwrap();
    let input = &reference["request"]["inputs"][0];
    let mut shape: Vec<usize> =
        input["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let row: usize = shape[1..].iter().product();
    shape[0] = 1;
    let data = Value::Array(input["data"].as_array().unwrap()[..row].to_vec());
    Tensor::from_json(input["datatype"].as_str().unwrap().parse().unwrap(), shape, &data).unwrap()
}

fn measure(iterations: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..WARMUP.min(iterations) {
        f();
    }
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(times[times.len() / 2]), us(times[times.len() * 99 / 100]))
}

fn report(model: &str, engine: &str, iterations: usize, (p50, p99): (f64, f64)) {
    println!(
        "engine model={model:<8} engine={engine:<14} iterations={iterations:<6} p50_us={p50:>10.2} p99_us={p99:>10.2}"
    );
}

fn raw_tract(path: &Path, input: &Tensor) -> impl FnMut() {
    let shape = input.shape.clone();
    let typed = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(0, tract_onnx::prelude::InferenceFact::dt_shape(datum(input), shape.clone()))
        .unwrap();
    let plan = typed.into_optimized().unwrap().into_runnable().unwrap();
    let mut state = plan.spawn().unwrap();
    let value = to_tract(input);
    move || {
        let out = state.run(tvec!(value.clone())).unwrap();
        std::hint::black_box(out);
    }
}

fn datum(t: &Tensor) -> DatumType {
    match &t.data {
        edgefleet_agent::tensor::TensorData::F32(_) => f32::datum_type(),
        edgefleet_agent::tensor::TensorData::I32(_) => i32::datum_type(),
        other => panic!("the benchmark feeds FP32 or INT32 inputs, not {:?}", other.datatype()),
    }
}

fn to_tract(t: &Tensor) -> TValue {
    match &t.data {
        edgefleet_agent::tensor::TensorData::F32(v) => Tensor_::from_shape(&t.shape, v).unwrap().into_tvalue(),
        edgefleet_agent::tensor::TensorData::I32(v) => Tensor_::from_shape(&t.shape, v).unwrap().into_tvalue(),
        other => panic!("the benchmark feeds FP32 or INT32 inputs, not {:?}", other.datatype()),
    }
}

use tract_onnx::prelude::Tensor as Tensor_;

fn wrapped(path: &Path, backend: &BackendConfig, input: &Tensor) -> impl FnMut() {
    let engine = engine::load(path, backend).unwrap();
    let mut session = engine.session().unwrap();
    let input = input.clone();
    move || {
        let out = session.run(vec![input.clone()]).unwrap();
        std::hint::black_box(out);
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    for (model, iterations) in [("mlp", 20_000), ("magika", 200)] {
        let iterations = if quick { iterations / 10 } else { iterations };
        let path = testdata().join(format!("{model}.onnx"));
        let input = first_row(model);
        report(model, "tract-raw", iterations, measure(iterations, raw_tract(&path, &input)));
        let tract = BackendConfig { kind: BackendKind::Tract, ..BackendConfig::default() };
        report(model, "tract-agent", iterations, measure(iterations, wrapped(&path, &tract, &input)));
        if cfg!(feature = "ort") && std::env::var_os("ORT_DYLIB_PATH").is_some() {
            let mut ort = BackendConfig { kind: BackendKind::Ort, ..BackendConfig::default() };
            ort.ort.execution_providers = vec![engine::ExecutionProvider::Cpu];
            report(model, "ort-agent", iterations, measure(iterations, wrapped(&path, &ort, &input)));
        }
    }
}
