//! A model only ONNX Runtime can run (`det.onnx`, tract lacks `Det`): the controller (with its
//! `ort` feature and the library) registers it as needing ONNX Runtime, deploys it to an agent
//! that reports ONNX Runtime, refuses it at deploy time for a tract-only agent, and leaves that
//! agent out of a rollout's waves; a
//! scikit-learn classifier with string labels exported with skl2onnx's defaults the same way.
#![cfg(feature = "ort")]

mod common;

use common::controller::{ADMIN, ControllerProcess};
use common::{AgentProcess, ort_library, output, python_client, sklearn_expected, strs, testdata, until};
use serde_json::{Value, json};

/// POSTs an infer request and reads the answer.
async fn infer(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    http.post(url).json(body).send().await.expect("POST").json().await.expect("json")
}

fn engines_of(c: &ControllerProcess, id: &str) -> Value {
    c.cli_json(&["device", "show", id])["status"]["engines"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_onnx_runtime_only_model_goes_only_where_onnx_runtime_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = ort_library();
    let c = ControllerProcess::start_with_env(
        &dir.path().join("controller"),
        &["--mqtt-listen", "127.0.0.1:0"],
        &[("ORT_DYLIB_PATH", lib.as_path())],
    );
    let pushed = c.cli_json(&["model", "push", &testdata().join("det.onnx").to_string_lossy(), "--name", "det"]);
    assert_eq!(pushed["manifest"]["engines"], json!(["onnxruntime_onnx"]), "{pushed}");

    let token = c.cli_json(&["device", "token", "create", "--uses", "2", "--label", "fleet=engines"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let trust = c.trust_file(dir.path());
    let agent = |name: &str| {
        let mut args = c.agent_args(&trust, &dir.path().join(name), 0);
        args.extend(["--enroll-token".to_owned(), token.clone()]);
        // agent_args pins `--backend tract`; both agents here run `auto`, one with the library.
        let backend = args.iter().position(|a| a == "--backend").expect("--backend") + 1;
        args[backend] = "auto".into();
        args
    };
    let with_ort = AgentProcess::run_with_env(&strs(&agent("a-ort")), &[("ORT_DYLIB_PATH", lib.as_path())]);
    let tract_only = AgentProcess::run(&strs(&agent("b-tract")));
    let id_of = |data: &str| common::device::TestDevice::from_agent_dir(&dir.path().join(data)).id;
    until("both devices report their engines", 60, async || {
        ["a-ort", "b-tract"].iter().all(|d| {
            std::fs::metadata(dir.path().join(d).join("device.key")).is_ok() && engines_of(&c, &id_of(d)).is_array()
        })
    })
    .await;
    let (ort_id, tract_id) = (id_of("a-ort"), id_of("b-tract"));
    assert_eq!(engines_of(&c, &ort_id), json!(["tract_onnx", "onnxruntime_onnx"]));
    assert_eq!(engines_of(&c, &tract_id), json!(["tract_onnx"]));

    let refused = c.cli(ADMIN, &["deploy", "det:1", "--device", &tract_id]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("409") && err.contains("runs only on onnxruntime_onnx") && err.contains(&tract_id), "{err}");

    c.cli_json(&["deploy", "det:1", "--device", &ort_id]);
    let http = reqwest::Client::new();
    let body = json!({"inputs": [{"name": "x", "shape": [1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]});
    until("det:1 served on ONNX Runtime", 60, async || {
        let Ok(r) = http.post(with_ort.url("/v2/models/det/infer")).json(&body).send().await else { return false };
        r.status() == 200
    })
    .await;
    let meta: Value = http.get(with_ort.url("/v2/models/det")).send().await.expect("GET").json().await.expect("json");
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    let answer = infer(&http, &with_ort.url("/v2/models/det/infer"), &body).await;
    let det = answer["outputs"][0]["data"][0].as_f64().expect("det");
    assert!((det + 2.0).abs() < 1e-5, "{answer}");
    // A selector over both issues the document only to the one that can run it.
    let issued = c.cli_json(&["deploy", "det:1", "--selector", "fleet=engines"]);
    let reached: Vec<&str> =
        issued.as_array().expect("issued").iter().filter_map(|i| i["device_id"].as_str()).collect();
    assert_eq!(reached, vec![ort_id.as_str()], "{issued}");

    // A rollout over both sizes its waves over the devices that can run the version: the
    // tract-only one is not in it, so it cannot fail it.
    c.cli_json(&["model", "push", &testdata().join("det.onnx").to_string_lossy(), "--name", "det"]);
    let rollout =
        c.cli_json(&["rollout", "create", "det:2", "--selector", "fleet=engines", "--waves", "100", "--bake", "1s"]);
    let id = rollout["id"].to_string();
    until("the rollout completes", 60, async || c.cli_json(&["rollout", "status", &id])["state"] == "completed").await;
    let done = c.cli_json(&["rollout", "status", &id]);
    assert_eq!(done["measurements"]["devices"], 1, "{done}");
    assert_eq!(done["waves"][0]["devices"], json!([ort_id.clone()]), "{done}");

    // scikit-learn with string class labels, exported with skl2onnx's defaults (ZipMap, string
    // labels): registered on ONNX Runtime, deployed, and answering scikit-learn's own labels.
    let pushed =
        c.cli_json(&["model", "push", &testdata().join("iris_strings.onnx").to_string_lossy(), "--name", "sk"]);
    assert_eq!(pushed["manifest"]["engines"], json!(["onnxruntime_onnx"]), "{pushed}");
    assert_eq!(pushed["manifest"]["outputs"][0]["datatype"], "BYTES", "{pushed}");
    c.cli_json(&["deploy", "sk:1", "--device", &ort_id]);
    until("sk:1 ready", 60, async || {
        http.get(with_ort.url("/v2/models/sk/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let (expected, body) = sklearn_expected("iris_strings");
    let answer = infer(&http, &with_ort.url("/v2/models/sk/infer"), &body).await;
    assert_eq!(output(&answer, "output_label").expect("labels")["data"], expected["labels"], "{answer}");
    // The same labels through tritonclient over HTTP (JSON and binary) and gRPC.
    let host = with_ort.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let grpc = with_ort.grpc.clone().expect("gRPC listens");
    let expected_file = testdata().join("iris_strings.expected.json");
    if let Some(out) = python_client("triton_sklearn.py", &[&host, &grpc, "sk", &expected_file.to_string_lossy()]) {
        assert!(out.contains("answers the trainer's labels"), "{out}");
    }
    drop(tract_only);
}
