//! Fleet mode end to end: a real controller and a real agent process per test. Enroll, deploy,
//! swap under load with zero failed requests (over the embedded broker and over Mosquitto),
//! refuse a version whose self-test fails, roll back by a newer document, refuse a tampered
//! artifact, and survive a restart: one test each, so one failure does not hide the others.
//! (Replayed and corrupted documents from a hostile network: `fleet_links.rs`.)

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

/// A controller with iris v1 and v2 pushed, and one enrolled agent serving v1.
struct Fleet {
    dir: tempfile::TempDir,
    c: ControllerProcess,
    agent: AgentProcess,
    args: Vec<String>,
    id: String,
    http: reqwest::Client,
}

impl Fleet {
    async fn start() -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = ControllerProcess::start(&dir.path().join("controller"));
        Fleet::with(dir, c).await
    }

    async fn with(dir: tempfile::TempDir, c: ControllerProcess) -> Fleet {
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
        let token = c.cli_json(&["device", "token", "create", "--label", "site=lab"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let data = dir.path().join("agent");
        let mut args = c.agent_args(&trust, &data, 1);
        args.extend(["--enroll-token".to_owned(), token]);
        let agent = AgentProcess::run(&strs(&args));
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
        assert_eq!(key_mode & 0o777, 0o600, "the device key is private");
        let http = reqwest::Client::new();
        let t0 = Instant::now();
        c.cli_json(&["deploy", "iris:1", "--selector", "site=lab"]);
        until("v1 serving", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;
        eprintln!("deploy to serving on loopback: {:?}", t0.elapsed());
        Fleet { dir, c, agent, args, id, http }
    }

    fn status(&self) -> Value {
        device_status(&self.c, &self.id)
    }

    async fn serving(&self) -> Option<String> {
        served_version(&self.http, &self.agent).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_under_load_without_a_failed_request() {
    swap_under_load(&Fleet::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_under_load_over_mosquitto() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = MosquittoSetup::new(&dir.path().join("broker"), &dir.path().join("controller"), false);
    let _broker = setup.start();
    let mut c = ControllerProcess::start_with(&dir.path().join("controller"), &strs(&setup.controller_args()));
    c.agent_extra = setup.agent_args();
    swap_under_load(&Fleet::with(dir, c).await).await;
}

/// 32 clients infer continuously while v2 rolls in, through its watch window and commit: not
/// one request may fail; the status then reports latencies.
async fn swap_under_load(f: &Fleet) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, saw_v2) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (http, url, stop, ok, failed, saw_v2) = (
                f.http.clone(),
                f.agent.url("/v2/models/iris/infer"),
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
    f.c.cli_json(&["deploy", "iris:2", "--device", &f.id]);
    until("clients to see v2", 60, async || saw_v2.load(Ordering::Relaxed)).await;
    until("v2 committed", 60, async || f.status()["status"]["active"]["version"] == 2).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "requests failed during the swap ({ok} succeeded)");
    assert!(ok > 100, "{ok} requests");
    assert_eq!(f.serving().await.as_deref(), Some("2"));
    until("latency in the status", 30, async || f.status()["status"]["latency_p99_ms"].is_f64()).await;
    let status = f.status();
    let (p50, p99) = (status["status"]["latency_p50_ms"].as_f64(), status["status"]["latency_p99_ms"].as_f64());
    assert!(p50.zip(p99).is_some_and(|(a, b)| a > 0.0 && a <= b), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_failing_its_self_test_is_refused_and_the_active_one_keeps_serving() {
    let f = Fleet::start().await;
    // v3 loads but fails its golden self-test (nondeterministic): v1 keeps serving. The
    // registry refuses such a model unless told to let the devices' self-test judge it.
    let push =
        ["model", "push", &fixture("iris_noisy.onnx"), "--name", "iris", "--baseline", &fixture("iris_baseline.csv")];
    let refused = f.c.cli(ADMIN, &push);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not deterministic"), "{refused:?}");
    let mut allowed = push.to_vec();
    allowed.extend(["--allow-nondeterministic", "--allow-schema-change"]);
    f.c.cli_json(&allowed);
    f.c.cli_json(&["deploy", "iris:3", "--device", &f.id]);
    until("v3 refused", 60, async || {
        let s = f.status();
        s["status"]["last_activation"]["model"]["version"] == 3 && s["status"]["last_activation"]["ok"] == false
    })
    .await;
    let status = f.status();
    assert!(status["status"]["last_activation"]["error"].as_str().expect("error").starts_with("self_test"), "{status}");
    assert_eq!(status["status"]["active"]["version"], 1);
    assert_eq!(f.serving().await.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_rollback_is_a_newer_document() {
    let f = Fleet::start().await;
    f.c.cli_json(&["deploy", "iris:2", "--device", &f.id]);
    until("v2 committed", 60, async || f.status()["status"]["active"]["version"] == 2).await;
    let issued = f.c.cli_json(&["deploy", "iris:1", "--device", &f.id]);
    assert!(issued[0]["sequence"].as_u64().expect("sequence") >= 3, "{issued}");
    until("rollback to v1", 60, async || f.serving().await.as_deref() == Some("1")).await;
    until("v1 committed", 60, async || f.status()["status"]["active"]["version"] == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_artifact_is_refused() {
    let f = Fleet::start().await;
    // Tampering at the controller: v3's stored model bytes are swapped for another model.
    let v3 = f.c.cli_json(&["model", "push", &fixture("iris_logreg.onnx"), "--name", "iris", "--param", "build=3"]);
    assert_eq!(v3["version"], 3);
    let model = v3["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["name"] == "model.onnx")
        .expect("model")
        .clone();
    let sha = model["sha256"].as_str().expect("sha");
    let stored = f.dir.path().join("controller/artifacts").join(&sha[..2]).join(format!("{}.zst", &sha[2..]));
    let evil = compress(&std::fs::read(fixture("mlp.onnx")).expect("read"), 3).expect("compress");
    std::fs::write(&stored, &evil).expect("tamper");
    f.c.cli_json(&["deploy", "iris:3", "--device", &f.id]);
    let refused = async || {
        let s = f.status();
        s["status"]["last_refusal"]["class"].as_str().is_some_and(|c| c == "hash_mismatch" || c == "too_long")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !refused().await {
        assert!(Instant::now() < deadline, "tamper not refused: {}\n{}", f.status(), f.agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(f.serving().await.as_deref(), Some("1"), "still serving the verified version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_serves_its_verified_version_before_reaching_the_controller() {
    let Fleet { dir, c, agent, args, http, .. } = Fleet::start().await;
    drop(agent);
    drop(c);
    let agent = AgentProcess::run(&strs(&args));
    until("restored v1 with the controller down", 60, async || {
        served_version(&http, &agent).await.as_deref() == Some("1")
    })
    .await;
    drop(dir);
}
