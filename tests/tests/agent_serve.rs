//! `edgefleet-agent serve` as a real process: load, concurrency, shutdown, exit codes, backends.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{AgentProcess, binary, metric, testdata};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn model_arg(name: &str) -> String {
    format!("{name}={}", testdata().join(format!("{name}.onnx")).display())
}

fn mlp_request(seed: usize) -> Value {
    let data: Vec<f32> = (0..16).map(|i| ((i + seed) as f32 * 0.21).sin()).collect();
    json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": data}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_clients_for_ten_seconds_see_no_errors() {
    let agent = AgentProcess::serve(&["--backend", "tract", "--workers", "2", "--model", &model_arg("mlp")], &[]);
    let client = reqwest::Client::new();
    agent.wait_ready(&client).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let tasks: Vec<_> = (0..32)
        .map(|c| {
            let client = client.clone();
            let url = agent.url("/v2/models/mlp/infer");
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                let mut i = 0;
                while Instant::now() < deadline {
                    i += 1;
                    match client.post(&url).json(&mlp_request(c * 1000 + i)).send().await {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let body: Value = r.json().await.expect("json");
                            assert_eq!(body["outputs"][0]["shape"], json!([1, 4]));
                            ok += 1;
                        }
                        Ok(r) => failed.push(format!("HTTP {}", r.status())),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        let (ok, failed) = t.await.expect("client task");
        assert!(failed.is_empty(), "errors under load: {:?}", &failed[..failed.len().min(5)]);
        total += ok;
    }
    assert!(total > 32 * 10, "only {total} requests in 10 s");
    let metrics = client.get(agent.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert_eq!(metric(&metrics, "edgefleet_agent_inference_requests_total{model=\"mlp\""), Some(total as f64));
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let mut agent = AgentProcess::serve(&["--backend", "tract", "--model", &model_arg("slow")], &[]);
    let client = reqwest::Client::new();
    agent.wait_ready(&client).await;
    let rows = 1024;
    let body =
        json!({"inputs": [{"name": "x", "shape": [rows, 256], "datatype": "FP32", "data": vec![0.25f32; rows * 256]}]});
    let slow = tokio::spawn({
        let client = client.clone();
        let url = agent.url("/v2/models/slow/infer");
        async move { client.post(url).json(&body).send().await.map(|r| r.status()) }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client.get(agent.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        if metric(&text, "edgefleet_agent_inference_in_flight_requests{model=\"slow\"").unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "slow request never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    agent.terminate();
    let status = slow.await.expect("task").expect("in-flight request completes");
    assert_eq!(status, StatusCode::OK, "the in-flight request finishes on shutdown");
    let exit = agent.wait_exit(Duration::from_secs(30));
    assert!(exit.success(), "exit status {exit:?}\n{}", agent.log());
    assert!(client.get(agent.url("/v2/health/live")).send().await.is_err(), "no longer accepting");
}

#[test]
fn bad_configuration_exits_64_with_a_message() {
    let out = Command::new(binary("edgefleet-agent"))
        .args(["serve", "--model", "m=/nonexistent/model.onnx"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file /nonexistent/model.onnx"));

    let out =
        Command::new(binary("edgefleet-agent")).args(["serve", "--model", "no-equals-sign"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected NAME=PATH"));
}

#[test]
fn an_operator_tract_lacks_is_named_with_the_way_out() {
    let out = Command::new(binary("edgefleet-agent"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "off",
            "--backend",
            "tract",
            "--model",
            &model_arg("det"),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tract does not implement the ONNX operator Det") && stderr.contains("ONNX Runtime"),
        "{stderr}"
    );
}

#[test]
fn a_model_that_fails_to_load_stops_standalone_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").expect("write");
    let out = Command::new(binary("edgefleet-agent"))
        .args(["serve", "--listen", "127.0.0.1:0", "--grpc-listen", "off", "--backend", "tract", "--model"])
        .arg(format!("junk={}", junk.display()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("edgefleet-agent: model \"junk\" failed to load: cannot load model"), "{stderr}");
    assert_eq!(last.matches("cannot load model").count(), 1, "the cause once, not twice: {last}");
    // No "listening" line: scripts waiting for it must not think the agent serves.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn print_default_config_is_a_valid_config() {
    let out = Command::new(binary("edgefleet-agent")).arg("print-default-config").output().expect("run");
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    let mut text = String::from_utf8(out.stdout).expect("utf-8");
    text.push_str(&format!("\n[[models]]\nname = \"mlp\"\npath = \"{}\"\n", testdata().join("mlp.onnx").display()));
    std::fs::write(&path, text).expect("write");
    let mut agent = AgentProcess::serve(&["--config", path.to_str().expect("utf-8 path")], &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        agent.wait_ready(&client).await;
        let r = client.post(agent.url("/v2/models/mlp/infer")).json(&mlp_request(1)).send().await.expect("infer");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-edgefleet-model-version"], "1");
    });
    agent.terminate();
    assert!(agent.wait_exit(Duration::from_secs(30)).success());
}

#[cfg(feature = "ort")]
mod ort_backend {
    use super::*;
    use common::ort_library;

    #[tokio::test]
    async fn ort_serves_magika_and_falls_back_from_cuda_with_a_warning() {
        let lib = ort_library();
        let agent = AgentProcess::serve(
            &["--backend", "ort", "--ort-library", lib.to_str().expect("utf-8"), "--model", &model_arg("magika")],
            &[],
        );
        let client = reqwest::Client::new();
        agent.wait_ready(&client).await;
        let meta: Value =
            client.get(agent.url("/v2/models/magika")).send().await.expect("GET").json().await.expect("json");
        assert_eq!(meta["platform"], "onnxruntime_onnx");
        assert_eq!(meta["inputs"][0]["shape"], json!([-1, 2048]));
        assert_eq!(meta["outputs"][0]["shape"], json!([-1, 214]));
        let reference: Value =
            serde_json::from_slice(&std::fs::read(testdata().join("magika.reference.json")).expect("read"))
                .expect("json");
        let r =
            client.post(agent.url("/v2/models/magika/infer")).json(&reference["request"]).send().await.expect("POST");
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.expect("json");
        let got = body["outputs"][0]["data"].as_array().expect("data");
        let want = reference["outputs"][0]["data"].as_array().expect("data");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g.as_f64().expect("f") - w.as_f64().expect("f")).abs() < 1e-4);
        }
        // This CPU-only ONNX Runtime cannot use CUDA, which the default config asks for first.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut log = String::new();
        while !log.contains("CUDA was requested but is not available") {
            assert!(Instant::now() < deadline, "no CUDA fallback warning in:\n{log}");
            log.push_str(&agent.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `auto` with the library times both engines on each model and serves it on the faster:
    /// Magika (convolutions; tract is slower on it, far slower in this debug build) goes to ONNX
    /// Runtime, and the log names both times.
    #[tokio::test]
    async fn auto_serves_a_model_on_the_engine_that_timed_faster() {
        let lib = ort_library();
        let agent = AgentProcess::serve(&["--model", &model_arg("magika")], &[("ORT_DYLIB_PATH", lib.as_path())]);
        let client = reqwest::Client::new();
        agent.wait_ready(&client).await;
        let meta: Value =
            client.get(agent.url("/v2/models/magika")).send().await.expect("GET").json().await.expect("json");
        assert_eq!(meta["platform"], "onnxruntime_onnx");
        let log = agent.log();
        let line = log.lines().find(|l| l.contains("timed both engines")).unwrap_or_else(|| panic!("{log}"));
        assert!(
            line.contains("tract_us=Some(")
                && line.contains("ort_us=Some(")
                && line.contains("engine=\"onnxruntime_onnx\""),
            "{line}"
        );
        let text = client.get(agent.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        assert!(
            text.contains("edgefleet_agent_model_engine{model=\"magika\",version=\"1\",engine=\"onnxruntime_onnx\"} 1"),
            "{text}"
        );
    }

    /// `det.onnx` uses `Det`, which tract does not implement: `auto` serves it on ONNX Runtime
    /// (and says so in the model's metadata) instead of failing.
    #[tokio::test]
    async fn auto_falls_back_to_onnx_runtime_for_a_model_tract_cannot_run() {
        let lib = ort_library();
        let agent = AgentProcess::serve(&["--model", &model_arg("det")], &[("ORT_DYLIB_PATH", lib.as_path())]);
        let client = reqwest::Client::new();
        agent.wait_ready(&client).await;
        let meta: Value =
            client.get(agent.url("/v2/models/det")).send().await.expect("GET").json().await.expect("json");
        assert_eq!(meta["platform"], "onnxruntime_onnx");
        let text = client.get(agent.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        assert!(
            text.contains("edgefleet_agent_model_engine{model=\"det\",version=\"1\",engine=\"onnxruntime_onnx\"} 1"),
            "{text}"
        );
        let body = json!({"inputs": [{"name": "x", "shape": [2, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 2, 0, 0, 3]}]});
        let r = client.post(agent.url("/v2/models/det/infer")).json(&body).send().await.expect("POST");
        assert_eq!(r.status(), StatusCode::OK);
        let answer: Value = r.json().await.expect("json");
        let got: Vec<f64> =
            answer["outputs"][0]["data"].as_array().expect("data").iter().filter_map(Value::as_f64).collect();
        assert!(got.len() == 2 && (got[0] + 2.0).abs() < 1e-5 && (got[1] - 6.0).abs() < 1e-5, "{answer}");
    }

    /// FP16 in and out on ONNX Runtime too (tract's answer is in agent/tests/http_api.rs).
    #[tokio::test]
    async fn onnx_runtime_serves_fp16() {
        let lib = ort_library();
        let agent = AgentProcess::serve(
            &["--backend", "ort", "--ort-library", lib.to_str().expect("utf-8"), "--model", &model_arg("fp16")],
            &[],
        );
        let client = reqwest::Client::new();
        agent.wait_ready(&client).await;
        let body = json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP16", "data": [0.5, -3, 1000]}]});
        let r = client.post(agent.url("/v2/models/fp16/infer")).json(&body).send().await.expect("POST");
        assert_eq!(r.status(), StatusCode::OK);
        let answer: Value = r.json().await.expect("json");
        assert_eq!(answer["outputs"][0]["datatype"], "FP16");
        assert_eq!(answer["outputs"][0]["data"], json!([1.0, -6.0, 2000.0]), "{answer}");
    }

    /// BYTES in and out on ONNX Runtime (strings), beside an FP32 input.
    #[tokio::test]
    async fn onnx_runtime_serves_bytes() {
        let lib = ort_library();
        let agent = AgentProcess::serve(
            &["--backend", "ort", "--ort-library", lib.to_str().expect("utf-8"), "--model", &model_arg("bytes")],
            &[],
        );
        let client = reqwest::Client::new();
        agent.wait_ready(&client).await;
        let body = json!({"inputs": [
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["héllo", "world"]},
            {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}
        ]});
        let r = client.post(agent.url("/v2/models/bytes/infer")).json(&body).send().await.expect("POST");
        assert_eq!(r.status(), StatusCode::OK);
        let answer: Value = r.json().await.expect("json");
        let echo = answer["outputs"].as_array().expect("outputs").iter().find(|o| o["name"] == "echo").cloned();
        assert_eq!(echo.expect("echo")["data"], json!(["héllo", "world"]), "{answer}");
    }

    /// The tiny MLP runs in microseconds on either engine: which one wins depends on the
    /// machine and the build, so the test reads both times from the log and checks that the one
    /// serving is the one the rule picks.
    #[tokio::test]
    async fn auto_on_a_tiny_model_serves_on_the_engine_its_timings_pick() {
        let lib = ort_library();
        let agent = AgentProcess::serve(&["--model", &model_arg("mlp")], &[("ORT_DYLIB_PATH", lib.as_path())]);
        let client = reqwest::Client::new();
        agent.wait_ready(&client).await;
        let meta: Value =
            client.get(agent.url("/v2/models/mlp")).send().await.expect("GET").json().await.expect("json");
        let log = agent.log();
        let line = log.lines().find(|l| l.contains("timed both engines")).unwrap_or_else(|| panic!("{log}"));
        let us = |key: &str| -> f64 {
            let start = line.find(&format!("{key}=Some(")).unwrap_or_else(|| panic!("{key} in {line}")) + key.len() + 6;
            line[start..].split(')').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
        };
        let (tract, ort) = (us("tract_us"), us("ort_us"));
        let expected = if ort * 1.1 < tract { "onnxruntime_onnx" } else { "tract_onnx" };
        assert_eq!(meta["platform"], expected, "tract {tract} µs, ONNX Runtime {ort} µs: {line}");
    }
}
