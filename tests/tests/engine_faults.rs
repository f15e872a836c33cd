//! A model whose engine panics on some inputs (tract's `Gather` on an id past the end of its
//! table, a real ONNX model): the request that panics gets a JSON error, the model keeps serving
//! everything else, requests queued behind it answer within `server.request_timeout_ms`, and a
//! request that waits too long gets 504 instead of hanging.
//!
//! The same scenario runs on the `release-edge` agent (the profile devices ship) when
//! `EDGEFLEET_EDGE_AGENT` names it; the workspace test script builds it and sets the variable.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{AgentProcess, metric, testdata};
use reqwest::StatusCode;
use serde_json::{Value, json};

const DEADLINE_MS: u64 = 5_000;

fn ids_request(ids: [i64; 4]) -> Value {
    json!({"inputs": [{"name": "ids", "shape": [1, 4], "datatype": "INT64", "data": ids}]})
}

/// The mean embedding onnxruntime computed for ids [0, 1, 2, 3] (first row of the reference).
fn expected_row() -> Vec<f64> {
    let text = std::fs::read_to_string(testdata().join("embedding.reference.json")).expect("reference");
    let reference: Value = serde_json::from_str(&text).expect("json");
    reference["outputs"][0]["data"].as_array().expect("data")[..3].iter().map(|v| v.as_f64().expect("f64")).collect()
}

fn assert_row(body: &Value, want: &[f64]) {
    let got: Vec<f64> =
        body["outputs"][0]["data"].as_array().expect("data").iter().map(|v| v.as_f64().expect("f64")).collect();
    assert_eq!(got.len(), want.len(), "{body}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
    }
}

fn serve_embedding(binary: Option<&Path>) -> AgentProcess {
    let model = format!("emb={}", testdata().join("embedding.onnx").display());
    let args =
        ["--backend", "tract", "--workers", "1", "--request-timeout-ms", &DEADLINE_MS.to_string(), "--model", &model];
    match binary {
        Some(bin) => AgentProcess::serve_with_binary(bin, &args),
        None => AgentProcess::serve(&args, &[]),
    }
}

async fn panicking_request_fails_alone(agent: &AgentProcess) {
    let client = reqwest::Client::new();
    agent.wait_ready(&client).await;
    let url = agent.url("/v2/models/emb/infer");
    let want = expected_row();

    // The panic first, then 20 requests queued behind it on the model's only worker.
    let started = Instant::now();
    let bad = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.post(&url).json(&ids_request([0, 1, 2, 9])).send().await }
    });
    let queued: Vec<_> = (0..20)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.post(&url).json(&ids_request([0, 1, 2, 3])).send().await })
        })
        .collect();

    let bad = bad.await.expect("task").expect("an answer, not a hang");
    assert_eq!(bad.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = bad.json().await.expect("a JSON error body");
    let message = body["error"].as_str().expect("error text");
    assert!(message.contains("panicked") && message.contains("out of range"), "{message}");
    for task in queued {
        let resp = task.await.expect("task").expect("an answer, not a hang");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_row(&resp.json().await.expect("json"), &want);
    }
    assert!(started.elapsed() < Duration::from_millis(DEADLINE_MS), "took {:?}", started.elapsed());

    // The next request answers correctly and the model still reports ready.
    let next = client.post(&url).json(&ids_request([0, 1, 2, 3])).send().await.expect("next");
    assert_eq!(next.status(), StatusCode::OK);
    assert_row(&next.json().await.expect("json"), &want);
    let ready = client.get(agent.url("/v2/models/emb/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), StatusCode::OK);
    let index: Value =
        client.get(agent.url("/v2/repository/index")).send().await.expect("index").json().await.expect("json");
    assert_eq!(index[0]["state"], "READY", "{index}");
    let text = client.get(agent.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert_eq!(metric(&text, "edgefleet_agent_engine_panics_total{model=\"emb\""), Some(1.0), "{text}");
    assert_eq!(metric(&text, "edgefleet_agent_inference_workers{model=\"emb\""), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_that_panics_the_engine_fails_alone_and_the_model_keeps_serving() {
    panicking_request_fails_alone(&serve_embedding(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_release_edge_agent_contains_engine_panics_too() {
    let Some(binary) = std::env::var_os("EDGEFLEET_EDGE_AGENT").map(PathBuf::from) else {
        eprintln!("EDGEFLEET_EDGE_AGENT is not set: the release-edge run is left to the workspace test script.");
        return;
    };
    assert!(binary.is_file(), "EDGEFLEET_EDGE_AGENT={} is not a file", binary.display());
    panicking_request_fails_alone(&serve_embedding(Some(&binary))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_stuck_behind_a_slow_one_get_504_within_the_deadline() {
    let model = format!("slow={}", testdata().join("iris_slow.onnx").display());
    let agent = AgentProcess::serve(
        &["--backend", "tract", "--workers", "1", "--request-timeout-ms", "1000", "--model", &model],
        &[],
    );
    let client = reqwest::Client::new();
    agent.wait_ready(&client).await;
    let url = agent.url("/v2/models/slow/infer");
    // Many seconds of engine time in one request (256 layers of 512x512 per row), holding the
    // only worker.
    let rows = 20_000;
    let heavy =
        json!({"inputs": [{"name": "X", "shape": [rows, 4], "datatype": "FP32", "data": vec![0.25f32; rows * 4]}]});
    let light = json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": vec![0.25f32; 4]}]});
    let first = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.post(&url).json(&heavy).send().await.map(|r| r.status()) }
    });
    // The worker records a run's rows as it starts it (warm-up is not counted), so a row sum of
    // `rows` means the heavy request holds the worker, not merely that it is being uploaded.
    common::until("the heavy request to run", 30, async || {
        let text = client.get(agent.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        metric(&text, "edgefleet_agent_inference_batch_rows_sum{model=\"slow\"").unwrap_or(0.0) >= rows as f64
    })
    .await;
    let started = Instant::now();
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), light.clone());
            tokio::spawn(async move { client.post(&url).json(&body).send().await })
        })
        .collect();
    for task in waiting {
        let resp = task.await.expect("task").expect("an answer");
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        let body: Value = resp.json().await.expect("json");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("request_timeout_ms")), "{body}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    let first = first.await.expect("task").expect("answer");
    assert!(first == StatusCode::GATEWAY_TIMEOUT || first == StatusCode::OK, "{first}");
    let text = client.get(agent.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let timeouts = text
        .lines()
        .find(|l| l.starts_with("edgefleet_agent_inference_errors_total{") && l.contains("reason=\"timeout\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(timeouts.unwrap_or(0.0) >= 5.0, "{text}");
}
