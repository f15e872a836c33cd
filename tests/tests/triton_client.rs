//! NVIDIA's tritonclient (Python) against a real agent, over HTTP and gRPC: metadata, model
//! configuration, inference with FP32, FP16 and BYTES (HTTP in both encodings), statistics
//! (`tests/clients/triton_http.py`, `tests/clients/triton_grpc.py`). Needs the clients' virtual
//! environment, which `tests/run.sh` creates and names in `EDGEFLEET_TEST_PYTHON`; without it the
//! test says so and passes.

mod common;

use common::{AgentProcess, python_client, testdata};

fn agent() -> AgentProcess {
    let model = |name: &str| format!("{name}={}", testdata().join(format!("{name}.onnx")).display());
    let models = [model("mlp"), model("fp16"), model("bytes")];
    AgentProcess::serve(
        &["--backend", "tract", "--model", &models[0], "--model", &models[1], "--model", &models[2]],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_over_http_sees_a_triton_compatible_server() {
    let agent = agent();
    agent.wait_ready(&reqwest::Client::new()).await;
    let host = agent.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    if let Some(out) = python_client("triton_http.py", &[&host, &testdata().to_string_lossy()]) {
        assert!(out.contains("tritonclient over HTTP: ok"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_over_grpc_sees_a_triton_compatible_server() {
    let agent = agent();
    agent.wait_ready(&reqwest::Client::new()).await;
    let grpc = agent.grpc.clone().expect("gRPC listens");
    if let Some(out) = python_client("triton_grpc.py", &[&grpc, &testdata().to_string_lossy()]) {
        assert!(out.contains("tritonclient over gRPC: ok"), "{out}");
    }
}
