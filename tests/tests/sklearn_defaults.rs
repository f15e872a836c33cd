//! A scikit-learn classifier exported with skl2onnx's defaults (a ZipMap of {class: probability}
//! per row) is pushed, deployed to an agent and answers with scikit-learn's own labels and
//! probabilities (`tests/testdata/iris_zipmap.expected.json`, written and checked against
//! onnxruntime by `tests/fixtures/make_fixtures.py`), over KServe JSON and through tritonclient
//! over HTTP and gRPC (`tests/clients/triton_sklearn.py`). The same for a LightGBM classifier
//! exported with onnxmltools' defaults (`wine_lgbm`).

mod common;

use common::controller::{ADMIN, ControllerProcess};
use common::{AgentProcess, output, python_client, sklearn_expected, strs, testdata, until};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zipmap_classifier_is_pushed_deployed_and_answers_like_scikit_learn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(&dir.path().join("controller"));
    let pushed = c.cli(
        ADMIN,
        &["--output", "json", "model", "push", &testdata().join("iris_zipmap.onnx").to_string_lossy(), "--name", "sk"],
    );
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    assert!(String::from_utf8_lossy(&pushed.stderr).contains("was a ZipMap"), "the rewrite is reported");
    let version: Value = serde_json::from_slice(&pushed.stdout).expect("json");
    let outputs = &version["manifest"]["outputs"];
    assert_eq!(outputs[1], json!({"name": "output_probability", "datatype": "FP32", "shape": [-1, 3]}), "{version}");

    let token = c.cli_json(&["device", "token", "create"])["token"].as_str().expect("token").to_owned();
    let trust = c.trust_file(dir.path());
    let mut args = c.agent_args(&trust, &dir.path().join("agent"), 0);
    args.extend(["--enroll-token".to_owned(), token]);
    let agent = AgentProcess::run(&strs(&args));
    until("the device enrolled", 60, async || c.cli_json(&["device", "list"]).as_array().is_some_and(|l| l.len() == 1))
        .await;
    let id = c.cli_json(&["device", "list"])[0]["id"].as_str().expect("id").to_owned();
    c.cli_json(&["deploy", "sk:1", "--device", &id]);
    let http = reqwest::Client::new();
    until("sk:1 ready", 60, async || {
        http.get(agent.url("/v2/models/sk/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    answers_like_the_trainer(&agent, "sk", "iris_zipmap", ["output_label", "output_probability"]).await;

    // LightGBM through onnxmltools, with its defaults (a ZipMap again, outputs named differently).
    let pushed =
        c.cli(ADMIN, &["model", "push", &testdata().join("wine_lgbm.onnx").to_string_lossy(), "--name", "lgbm"]);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    assert!(String::from_utf8_lossy(&pushed.stderr).contains("\"probabilities\" was a ZipMap"));
    c.cli_json(&["deploy", "lgbm:1", "--device", &id]);
    until("lgbm:1 ready", 60, async || {
        http.get(agent.url("/v2/models/lgbm/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    answers_like_the_trainer(&agent, "lgbm", "wine_lgbm", ["label", "probabilities"]).await;
}

/// `model` on `agent` answers the trainer's labels and probabilities for `fixture`'s rows, over
/// KServe JSON and through tritonclient (HTTP and gRPC).
async fn answers_like_the_trainer(agent: &AgentProcess, model: &str, fixture: &str, [label, probability]: [&str; 2]) {
    let (expected, body) = sklearn_expected(fixture);
    let url = agent.url(&format!("/v2/models/{model}/infer"));
    let r = reqwest::Client::new().post(url).json(&body).send().await.expect("infer");
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(output(&answer, label).expect("labels")["data"], expected["labels"], "{answer}");
    let got: Vec<f64> = output(&answer, probability).expect("probabilities")["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let want: Vec<f64> = expected["probabilities"]
        .as_array()
        .expect("probabilities")
        .iter()
        .flat_map(|r| r.as_array().expect("row").iter().filter_map(Value::as_f64))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "probability {g} vs scikit-learn's {w}");
    }
    let host = agent.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let grpc = agent.grpc.clone().expect("gRPC listens");
    let file = testdata().join(format!("{fixture}.expected.json"));
    let args = [host.as_str(), &grpc, model, &file.to_string_lossy(), label, probability];
    if let Some(out) = python_client("triton_sklearn.py", &args) {
        assert!(out.contains("answers the trainer's labels"), "{out}");
    }
}
