//! NVIDIA's tritonclient (Python, HTTP) against a real agent: metadata, model configuration,
//! inference in both encodings with FP32, FP16 and BYTES, statistics (`tests/clients/triton_http.py`).
//! Needs the client's virtual environment, which `tests/run.sh` creates and names in
//! `EDGEFLEET_TEST_PYTHON`; without it the test says so and passes.

mod common;

use std::process::Command;

use common::{AgentProcess, testdata};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_over_http_sees_a_triton_compatible_server() {
    let Some(python) = std::env::var_os("EDGEFLEET_TEST_PYTHON") else {
        eprintln!("EDGEFLEET_TEST_PYTHON is not set: the tritonclient run is left to tests/run.sh.");
        return;
    };
    let model = |name: &str| format!("{name}={}", testdata().join(format!("{name}.onnx")).display());
    let models = [model("mlp"), model("fp16"), model("bytes")];
    let agent = AgentProcess::serve(
        &["--backend", "tract", "--model", &models[0], "--model", &models[1], "--model", &models[2]],
        &[],
    );
    agent.wait_ready(&reqwest::Client::new()).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/triton_http.py");
    let host = agent.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let out = Command::new(python).arg(script).arg(&host).arg(testdata()).output().expect("run python");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tritonclient over HTTP: ok"));
}
