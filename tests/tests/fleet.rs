//! Fleet mode end to end: a real controller and a real agent process. Enroll, deploy, swap
//! under load with zero failed requests, refuse a version whose self-test fails, roll back by a
//! newer document, refuse a tampered artifact, and survive a restart. (Replayed and corrupted
//! documents from a hostile network: `fleet_links.rs`.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::controller::{ADMIN, ControllerProcess};
use common::mosquitto::MosquittoSetup;
use common::{AgentProcess, served_version, strs, testdata, until};
use edgefleet_shared::compress::compress;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    testdata().join(name).to_string_lossy().into_owned()
}

const IRIS_ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];

fn device_status(c: &ControllerProcess, id: &str) -> Value {
    c.cli_json(&["device", "show", id])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_embedded_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(&dir.path().join("controller"));
    scenario(&dir, c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_mosquitto() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = MosquittoSetup::new(&dir.path().join("broker"), &dir.path().join("controller"), false);
    let _broker = setup.start();
    let mut c = ControllerProcess::start_with(&dir.path().join("controller"), &strs(&setup.controller_args()));
    c.agent_extra = setup.agent_args();
    scenario(&dir, c).await;
}

async fn scenario(dir: &tempfile::TempDir, c: ControllerProcess) {
    for _ in 0..2 {
        c.cli_json(&[
            "model",
            "push",
            &fixture("iris_logreg.onnx"),
            "--name",
            "iris",
            "--baseline",
            &fixture("iris_baseline.csv"),
        ]);
    }
    let trust = c.trust_file(dir.path());
    let token =
        c.cli_json(&["device", "token", "create", "--label", "site=lab"])["token"].as_str().expect("token").to_owned();
    let data = dir.path().join("agent");
    let mut args = c.agent_args(&trust, &data, 1);
    args.extend(["--enroll-token".to_owned(), token]);
    let args = strs(&args);
    let agent = AgentProcess::run(&args);
    let http = reqwest::Client::new();
    let mut id = String::new();
    until("enrollment", 30, async || {
        let list = c.cli_json(&["device", "list"]);
        id = list[0]["id"].as_str().unwrap_or_default().to_owned();
        !id.is_empty()
    })
    .await;
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("device.key")).expect("key").permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    let t0 = Instant::now();
    c.cli_json(&["deploy", "iris:1", "--selector", "site=lab"]);
    until("v1 serving", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;
    let deploy_to_serving = t0.elapsed();

    // 32 clients infer continuously while v2 rolls in: not one request may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, saw_v2) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (http, url, stop, ok, failed, saw_v2) = (
                http.clone(),
                agent.url("/v2/models/iris/infer"),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                saw_v2.clone(),
            );
            tokio::spawn(async move {
                let body = json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]});
                while !stop.load(Ordering::Relaxed) {
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == StatusCode::OK => {
                            if r.headers()["x-edgefleet-model-version"] == "2" {
                                saw_v2.store(true, Ordering::Relaxed);
                            }
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    c.cli_json(&["deploy", "iris:2", "--device", &id]);
    until("clients to see v2", 60, async || saw_v2.load(Ordering::Relaxed)).await;
    // Keep the load on through the watch window and the commit.
    until("v2 committed", 60, async || device_status(&c, &id)["status"]["active"]["version"] == 2).await;

    // v3 loads but fails its golden self-test (nondeterministic): v2 keeps serving.
    c.cli_json(&[
        "model",
        "push",
        &fixture("iris_noisy.onnx"),
        "--name",
        "iris",
        "--baseline",
        &fixture("iris_baseline.csv"),
    ]);
    c.cli_json(&["deploy", "iris:3", "--device", &id]);
    until("v3 refused", 60, async || {
        let s = device_status(&c, &id);
        s["status"]["last_activation"]["model"]["version"] == 3 && s["status"]["last_activation"]["ok"] == false
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    until("latency in the status", 30, async || device_status(&c, &id)["status"]["latency_p99_ms"].is_f64()).await;
    let status = device_status(&c, &id);
    assert!(status["status"]["last_activation"]["error"].as_str().expect("error").starts_with("self_test"), "{status}");
    let (p50, p99) = (status["status"]["latency_p50_ms"].as_f64(), status["status"]["latency_p99_ms"].as_f64());
    assert!(p50.zip(p99).is_some_and(|(a, b)| a > 0.0 && a <= b), "{status}");
    assert_eq!(status["status"]["active"]["version"], 2);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the swaps ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert_eq!(served_version(&http, &agent).await.as_deref(), Some("2"));

    // An operator rollback to v1 is a new document with a higher sequence.
    let issued = c.cli_json(&["deploy", "iris:1", "--device", &id]);
    assert!(issued[0]["sequence"].as_u64().expect("sequence") >= 4);
    until("rollback to v1", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;

    // Tampering at the controller: v4's stored model bytes are swapped for another model.
    let v4 = c.cli_json(&["model", "push", &fixture("iris_logreg.onnx"), "--name", "iris", "--param", "build=4"]);
    assert_eq!(v4["version"], 4);
    let model = v4["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["name"] == "model.onnx")
        .expect("model")
        .clone();
    let sha = model["sha256"].as_str().expect("sha");
    let stored = dir.path().join("controller/artifacts").join(&sha[..2]).join(format!("{}.zst", &sha[2..]));
    let evil = compress(&std::fs::read(fixture("mlp.onnx")).expect("read"), 3).expect("compress");
    std::fs::write(&stored, &evil).expect("tamper");
    c.cli_json(&["deploy", "iris:4", "--device", &id]);
    let refused = async || {
        let s = device_status(&c, &id);
        s["status"]["last_refusal"]["class"].as_str().is_some_and(|c| c == "hash_mismatch" || c == "too_long")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !refused().await {
        assert!(Instant::now() < deadline, "tamper not refused: {}\n{}", device_status(&c, &id), agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_version(&http, &agent).await.as_deref(), Some("1"), "still serving the verified version");

    // Restart: the agent serves its verified active version again before talking to anyone.
    drop(agent);
    let agent = AgentProcess::run(&args);
    until("restored v1", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;
    eprintln!("deploy to serving on loopback: {deploy_to_serving:?}");
    assert!(ADMIN.len() > 16);
}
