//! Telemetry costs (BENCHMARKS.md §7): the per-inference histogram update on the request path,
//! the whole recorder path, and the bytes a batch costs per 1,000 inferences.
//!
//! Run: `cargo bench -p edgefleet-agent --bench telemetry`. Uses the iris model (run once per
//! row through tract for real outputs) and its committed baseline profile.
#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a benchmark binary reports on stdout")]

use std::path::PathBuf;
use std::time::Instant;

use edgefleet_agent::engine::{self, BackendConfig, BackendKind};
use edgefleet_agent::telemetry::{Hub, TelemetryConfig};
use edgefleet_agent::tensor::{Tensor, TensorData};
use edgefleet_shared::keys::FileKey;
use edgefleet_shared::profile::BaselineProfile;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata")
}

/// Each iris row as a `[1, 4]` input and the model's outputs for it.
fn traffic() -> Vec<(Tensor, Vec<Tensor>)> {
    let text = std::fs::read_to_string(testdata().join("iris_baseline.csv")).unwrap();
    let backend = BackendConfig { kind: BackendKind::Tract, ..BackendConfig::default() };
    let engine = engine::load(&testdata().join("iris_logreg.onnx"), &backend).unwrap();
    let mut session = engine.session().unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let row: Vec<f32> = l.split(',').map(|v| v.parse().unwrap()).collect();
            let input = Tensor::new(vec![1, 4], TensorData::F32(row)).unwrap();
            let outputs = session.run(vec![input.clone()]).unwrap();
            (input, outputs)
        })
        .collect()
}

/// Mean nanoseconds per call of `f` over `n` calls (timed as a whole: one call is far below
/// the clock's resolution).
fn ns_per_call(n: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..n / 10 {
        f(i);
    }
    let started = Instant::now();
    for i in 0..n {
        f(i);
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100_000 } else { 2_000_000 };
    let profile: BaselineProfile =
        serde_json::from_slice(&std::fs::read(testdata().join("iris_baseline.profile.json")).unwrap()).unwrap();
    let traffic = traffic();
    let quiet = TelemetryConfig { sample_rate: 0.0, low_confidence: 0.0, ..TelemetryConfig::default() };
    let hub = Hub::new(quiet);
    let recorder = hub.recorder("iris", 1, Some(&profile));
    let histogram = ns_per_call(n, |i| recorder.observe_inputs(std::slice::from_ref(&traffic[i % traffic.len()].0)));
    let whole = ns_per_call(n, |i| {
        let (input, outputs) = &traffic[i % traffic.len()];
        let inputs = std::slice::from_ref(input);
        let rolled = recorder.roll();
        recorder.observe_inputs(inputs);
        recorder.observe_outputs(outputs, None, None, rolled);
    });
    println!("telemetry hot_path=histogram_update features=4 ns_per_inference={histogram:.1}");
    println!("telemetry hot_path=histograms+classes+sampling_roll ns_per_inference={whole:.1}");

    let key = FileKey::from_seed([7; 32]);
    let configs = [
        ("sketches_only", TelemetryConfig { sample_rate: 0.0, low_confidence: 0.0, ..TelemetryConfig::default() }),
        ("defaults", TelemetryConfig::default()),
        (
            "every_row",
            TelemetryConfig {
                sample_rate: 1.0,
                samples_per_minute: u32::MAX,
                samples_per_hour: u32::MAX,
                ..TelemetryConfig::default()
            },
        ),
    ];
    for (name, config) in configs {
        let hub = Hub::new(config);
        let recorder = hub.recorder("iris", 1, Some(&profile));
        for i in 0..1000 {
            let (input, outputs) = &traffic[(i * 37) % traffic.len()];
            let inputs = std::slice::from_ref(input);
            let rolled = recorder.roll();
            let kept = recorder.keep_inputs(inputs, rolled).then_some(inputs);
            recorder.observe_inputs(inputs);
            recorder.observe_outputs(outputs, Some(&format!("req-{i}")), kept, rolled);
        }
        let batch = hub.drain("bench-device", 0, 60).unwrap();
        let json = serde_json::to_vec(&batch).unwrap().len();
        let frame = batch.encode(&key).len();
        println!(
            "telemetry batch={name:<14} inferences=1000 samples={:<5} json_bytes={json:<7} frame_bytes={frame}",
            batch.sample_count()
        );
    }
}
