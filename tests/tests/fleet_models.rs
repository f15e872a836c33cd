//! Several fleet-managed models on one agent, end to end: a real controller and a real agent
//! serving the iris classifier and the MLP. Rolling iris forward under load on both fails no
//! request and leaves the MLP's answers unchanged; an iris version failing its self-test rolls
//! back iris only; taking the MLP off the device answers 404 once its in-flight requests are done
//! and deletes its slots; a desired state over the device's `max_models_bytes` is refused.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::controller::ControllerProcess;
use common::{AgentProcess, served_version, strs, testdata, until};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    testdata().join(name).to_string_lossy().into_owned()
}

const IRIS_ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];

fn iris_body() -> Value {
    json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]})
}

fn mlp_body() -> Value {
    let data: Vec<f32> = (0..16).map(|i| (i as f32 * 0.21).sin()).collect();
    json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": data}]})
}

/// The agent's report about one model.
fn model_status(c: &ControllerProcess, id: &str, name: &str) -> Value {
    let device = c.cli_json(&["device", "show", id]);
    device["status"]["models"].as_array().into_iter().flatten().find(|m| m["name"] == name).cloned().unwrap_or_default()
}

/// A controller with iris v1, v2 and the MLP v1 pushed, and one agent enrolled with extra `args`.
fn controller(dir: &Path) -> ControllerProcess {
    let c = ControllerProcess::start(&dir.join("controller"));
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
    c.cli_json(&["model", "push", &fixture("mlp.onnx"), "--name", "mlp", "--baseline", &fixture("mlp_baseline.csv")]);
    c
}

async fn enroll(c: &ControllerProcess, dir: &Path, extra: &[&str]) -> (AgentProcess, String) {
    let trust = c.trust_file(dir);
    let token =
        c.cli_json(&["device", "token", "create", "--label", "site=lab"])["token"].as_str().expect("token").to_owned();
    let mut args = c.agent_args(&trust, &dir.join("agent"), 1);
    args.extend(["--enroll-token".to_owned(), token]);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let agent = AgentProcess::run(&strs(&args));
    let mut id = String::new();
    until("enrollment", 30, async || {
        id = c.cli_json(&["device", "list"])[0]["id"].as_str().unwrap_or_default().to_owned();
        !id.is_empty()
    })
    .await;
    (agent, id)
}

/// Clients inferring without pause on one model, counting answers by class.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    not_found: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `clients` loops posting `body` to `url`; an answer `check` refuses counts as failed.
    fn start(
        url: String,
        body: Value,
        clients: usize,
        check: impl Fn(&str, &Value) -> bool + Send + Sync + 'static,
    ) -> Load {
        let (stop, ok, not_found, failed) = (Arc::default(), Arc::default(), Arc::default(), Arc::default());
        let check = Arc::new(check);
        let http = reqwest::Client::new();
        let clients = (0..clients)
            .map(|_| {
                let (http, url, body, check) = (http.clone(), url.clone(), body.clone(), check.clone());
                let (stop, ok, not_found, failed): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) =
                    (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&not_found), Arc::clone(&failed));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let answer = http.post(&url).json(&body).timeout(Duration::from_secs(10)).send().await;
                        let counter = match answer {
                            Ok(r) if r.status() == StatusCode::OK => {
                                let version =
                                    r.headers()["x-edgefleet-model-version"].to_str().unwrap_or("").to_owned();
                                match r.json::<Value>().await {
                                    Ok(v) if check(&version, &v) => &ok,
                                    _ => &failed,
                                }
                            }
                            Ok(r) if r.status() == StatusCode::NOT_FOUND => &not_found,
                            _ => &failed,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load { stop, ok, not_found, failed, clients }
    }

    /// Stops the clients: (ok, not found, failed).
    async fn stop(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("client");
        }
        (self.ok.load(Ordering::Relaxed), self.not_found.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_models_roll_fail_and_leave_independently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = controller(dir.path());
    let (agent, id) = enroll(&c, dir.path(), &[]).await;
    let http = reqwest::Client::new();
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    c.cli_json(&["deploy", "mlp:1", "--device", &id]);
    until("iris v1 serving", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;
    let mlp_url = agent.url("/v2/models/mlp/infer");
    let mut mlp_answer = Value::Null;
    until("mlp v1 serving", 60, async || {
        let r = http.post(&mlp_url).json(&mlp_body()).send().await;
        match r {
            Ok(r) if r.status() == StatusCode::OK => {
                mlp_answer = r.json::<Value>().await.expect("json")["outputs"].clone();
                true
            }
            _ => false,
        }
    })
    .await;
    until("both reported", 30, async || {
        ["iris", "mlp"].iter().all(|m| model_status(&c, &id, m)["last_activation"]["ok"] == true)
    })
    .await;

    // iris v1 → v2 under load on both models: no failed request, the MLP's answers unchanged.
    let saw_v2 = Arc::new(AtomicBool::new(false));
    let seen = saw_v2.clone();
    let iris = Load::start(agent.url("/v2/models/iris/infer"), iris_body(), 12, move |version, _| {
        if version == "2" {
            seen.store(true, Ordering::Relaxed);
        }
        version == "1" || version == "2"
    });
    let expected = mlp_answer.clone();
    let mlp =
        Load::start(mlp_url.clone(), mlp_body(), 12, move |version, v| version == "1" && v["outputs"] == expected);
    let mlp_sequence = model_status(&c, &id, "mlp")["last_activation"]["sequence"].clone();
    c.cli_json(&["deploy", "iris:2", "--device", &id]);
    until("clients to see iris v2", 60, async || saw_v2.load(Ordering::Relaxed)).await;
    until("iris v2 committed", 60, async || model_status(&c, &id, "iris")["active"]["version"] == 2).await;
    let (iris_ok, iris_404, iris_failed) = iris.stop().await;
    let (mlp_ok, mlp_404, mlp_failed) = mlp.stop().await;
    assert_eq!((iris_failed, iris_404), (0, 0), "iris requests failed during its swap ({iris_ok} succeeded)");
    assert_eq!((mlp_failed, mlp_404), (0, 0), "mlp requests failed or changed during iris's swap ({mlp_ok} succeeded)");
    assert!(iris_ok > 100 && mlp_ok > 100, "{iris_ok} iris and {mlp_ok} mlp requests");
    let mlp_now = model_status(&c, &id, "mlp");
    assert_eq!(mlp_now["active"]["version"], 1, "{mlp_now}");
    assert_eq!(mlp_now["last_activation"]["sequence"], mlp_sequence, "the MLP was not activated again: {mlp_now}");

    // iris v3 fails its self-test: iris goes on with v2, the MLP is not touched.
    c.cli_json(&[
        "model",
        "push",
        &fixture("iris_noisy.onnx"),
        "--name",
        "iris",
        "--baseline",
        &fixture("iris_baseline.csv"),
        "--allow-nondeterministic",
        "--allow-schema-change",
    ]);
    c.cli_json(&["deploy", "iris:3", "--device", &id]);
    until("iris v3 refused", 60, async || {
        let iris = model_status(&c, &id, "iris");
        iris["last_activation"]["model"]["version"] == 3 && iris["last_activation"]["ok"] == false
    })
    .await;
    let iris_now = model_status(&c, &id, "iris");
    assert!(iris_now["last_activation"]["error"].as_str().expect("error").starts_with("self_test"), "{iris_now}");
    assert_eq!(iris_now["active"]["version"], 2, "{iris_now}");
    assert_eq!(served_version(&http, &agent).await.as_deref(), Some("2"));
    let r = http.post(&mlp_url).json(&mlp_body()).send().await.expect("mlp");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["outputs"], mlp_answer);
    assert_eq!(model_status(&c, &id, "mlp")["last_activation"]["sequence"], mlp_sequence);

    // The MLP leaves the device under load: every answer is the MLP's or 404, never an error,
    // and once it is gone it stays gone; its slots are deleted; iris keeps serving.
    let slots = dir.path().join("agent").join("models").join("mlp");
    assert!(slots.join("1").join("model.onnx").is_file(), "the MLP's slot is on disk");
    let expected = mlp_answer.clone();
    let mlp = Load::start(mlp_url.clone(), mlp_body(), 8, move |version, v| version == "1" && v["outputs"] == expected);
    let removed = c.cli_json(&["undeploy", "mlp", "--device", &id]);
    assert_eq!(removed[0]["device_id"], id.as_str(), "{removed}");
    until("the MLP answers 404", 60, async || {
        http.post(&mlp_url).json(&mlp_body()).send().await.is_ok_and(|r| r.status() == StatusCode::NOT_FOUND)
    })
    .await;
    let (ok, not_found, failed) = mlp.stop().await;
    assert_eq!(failed, 0, "requests to the leaving MLP failed ({ok} answered, {not_found} not found)");
    assert!(ok > 0 && not_found > 0, "{ok} answered, {not_found} not found");
    until("the MLP's slots deleted", 30, async || !slots.exists()).await;
    let device = c.cli_json(&["device", "show", &id]);
    let names: Vec<&str> =
        device["status"]["models"].as_array().expect("models").iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["iris"], "{device}");
    assert_eq!(served_version(&http, &agent).await.as_deref(), Some("2"));
    let index: Value =
        http.post(agent.url("/v2/repository/index")).send().await.expect("index").json().await.expect("json");
    assert!(!index.to_string().contains("\"mlp\""), "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_desired_state_over_the_device_budget_is_refused_and_a_smaller_one_is_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = controller(dir.path());
    let bytes = |reference: &str| -> u64 {
        let version = c.cli_json(&["model", "show", reference]);
        version["artifacts"].as_array().expect("artifacts").iter().filter_map(|a| a["size"].as_u64()).sum()
    };
    // Room for iris (its model and bundle) but not for the MLP beside it.
    let budget = (bytes("iris:1") + bytes("mlp:1") / 2).to_string();
    let (agent, id) = enroll(&c, dir.path(), &["--max-models-bytes", &budget]).await;
    let http = reqwest::Client::new();
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    until("iris v1 serving", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;
    let issued = c.cli_json(&["deploy", "mlp:1", "--device", &id]);
    let refused_sequence = issued[0]["sequence"].clone();
    until("the larger set refused", 60, async || {
        let status = c.cli_json(&["device", "show", &id])["status"].clone();
        status["last_refusal"]["class"] == "over_budget" && status["last_refusal"]["sequence"] == refused_sequence
    })
    .await;
    let status = c.cli_json(&["device", "show", &id])["status"].clone();
    assert!(status["last_refusal"]["message"].as_str().expect("message").contains("max_models_bytes"), "{status}");
    let r = http.post(agent.url("/v2/models/mlp/infer")).json(&mlp_body()).send().await.expect("mlp");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the MLP was not taken");
    assert_eq!(served_version(&http, &agent).await.as_deref(), Some("1"), "iris keeps serving");
    // The next document without the MLP (a newer sequence) is taken.
    c.cli_json(&["undeploy", "mlp", "--device", &id]);
    c.cli_json(&["deploy", "iris:2", "--device", &id]);
    until("iris v2 serving", 60, async || served_version(&http, &agent).await.as_deref() == Some("2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_models_share_the_repository_and_the_fleet_never_replaces_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = controller(dir.path());
    let config = dir.path().join("agent.toml");
    let local = format!("[[models]]\nname = \"mlp\"\nversion = \"local\"\npath = \"{}\"\n", fixture("mlp.onnx"));
    std::fs::write(&config, local).expect("config");
    let (agent, id) = enroll(&c, dir.path(), &["--config", config.to_str().expect("utf-8 path")]).await;
    let http = reqwest::Client::new();
    let mlp_version = async || -> Option<String> {
        let r = http.post(agent.url("/v2/models/mlp/infer")).json(&mlp_body()).send().await.ok()?;
        (r.status() == StatusCode::OK)
            .then(|| r.headers()["x-edgefleet-model-version"].to_str().unwrap_or("").to_owned())
    };
    until("the local mlp serving", 30, async || mlp_version().await.as_deref() == Some("local")).await;
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    until("iris from the fleet beside it", 60, async || served_version(&http, &agent).await.as_deref() == Some("1"))
        .await;
    let issued = c.cli_json(&["deploy", "mlp:1", "--device", &id]);
    let sequence = issued[0]["sequence"].clone();
    until("the fleet's mlp refused", 60, async || {
        let status = c.cli_json(&["device", "show", &id])["status"].clone();
        status["last_refusal"]["class"] == "name_conflict" && status["last_refusal"]["sequence"] == sequence
    })
    .await;
    assert_eq!(mlp_version().await.as_deref(), Some("local"), "the local model keeps serving");
    assert_eq!(served_version(&http, &agent).await.as_deref(), Some("1"), "iris keeps serving");
    // Taking the fleet's mlp back off leaves the local one alone.
    c.cli_json(&["undeploy", "mlp", "--device", &id]);
    c.cli_json(&["deploy", "iris:2", "--device", &id]);
    until("iris v2", 60, async || served_version(&http, &agent).await.as_deref() == Some("2")).await;
    assert_eq!(mlp_version().await.as_deref(), Some("local"));
}
