//! Rollouts that could not finish now say so: gates the strategy cannot measure and selectors
//! that match nothing are refused at create (unless `--allow-empty`); a shadow rollout of the
//! version the devices already run completes; a completed shadow rollout counts its devices as
//! serving; a device that never reports fails (or pauses) its wave at the wave deadline; waves
//! are numbered in JSON as in the table, gate values rounded, and the default activation gate
//! kept beside the operator's.

mod common;

use std::time::Duration;

use common::controller::{ADMIN, ControllerProcess};
use common::{AgentProcess, served_version, strs, testdata, until};
use serde_json::{Value, json};

fn status(c: &ControllerProcess, id: &str) -> Value {
    c.cli_json(&["rollout", "status", id])
}

fn refused(c: &ControllerProcess, args: &[&str]) -> String {
    let mut all = vec!["rollout", "create"];
    all.extend_from_slice(args);
    let out = c.cli(ADMIN, &all);
    assert_eq!(out.status.code(), Some(1), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn create(c: &ControllerProcess, args: &[&str]) -> String {
    let mut all = vec!["rollout", "create"];
    all.extend_from_slice(args);
    c.cli_json(&all)["id"].as_i64().expect("id").to_string()
}

async fn state(c: &ControllerProcess, id: &str, want: &str) -> Value {
    until(&format!("rollout {id} {want}"), 90, async || status(c, id)["state"] == want).await;
    status(c, id)
}

/// A controller with iris v1 and v2 (the same logistic regression) and two agents labelled
/// `label`, both serving v1.
async fn two_agents_on_v1(dir: &std::path::Path, label: &str) -> (ControllerProcess, Vec<AgentProcess>) {
    let c = ControllerProcess::start(&dir.join("controller"));
    for _ in 0..2 {
        c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    }
    let trust = c.trust_file(dir);
    let token = c.cli_json(&["device", "token", "create", "--uses", "2", "--label", label])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let agents: Vec<AgentProcess> = ["a", "b"]
        .iter()
        .map(|n| {
            let mut args = c.agent_args(&trust, &dir.join(n), 0);
            args.extend(["--enroll-token".to_owned(), token.clone()]);
            AgentProcess::run(&strs(&args))
        })
        .collect();
    let http = reqwest::Client::new();
    until("two devices", 60, async || c.cli_json(&["device", "list"]).as_array().is_some_and(|l| l.len() == 2)).await;
    c.cli_json(&["deploy", "iris:1", "--selector", label]);
    for agent in &agents {
        until("v1", 60, async || served_version(&http, agent).await.as_deref() == Some("1")).await;
    }
    // And the controller knows it (a rollout started before the status reports arrive would not
    // count the devices as on v1 already).
    until("v1 in every status", 30, async || {
        let list = c.cli_json(&["device", "list"]);
        list.as_array().expect("list").iter().all(|d| d["status"]["active"]["version"] == 1)
    })
    .await;
    (c, agents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollouts_that_could_not_finish_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, agents) = two_agents_on_v1(dir.path(), "site=x").await;
    let http = reqwest::Client::new();

    // Refused at create: gates the strategy cannot measure, and a selector that matches nothing.
    let err = refused(&c, &["iris:2", "--selector", "site=x", "--strategy", "shadow", "--gate", "psi<0.2"]);
    assert!(err.contains("psi<0.2") && err.contains("cannot be measured"), "{err}");
    let err = refused(&c, &["iris:2", "--selector", "site=x", "--gate", "agreement>0.9"]);
    assert!(err.contains("agreement>0.9") && err.contains("only shadow"), "{err}");
    let err = refused(&c, &["iris:2", "--selector", "site=nowhere"]);
    assert!(err.contains("matches no enrolled device") && err.contains("--allow-empty"), "{err}");
    let waiting =
        create(&c, &["iris:2", "--selector", "site=nowhere", "--allow-empty", "--waves", "100", "--bake", "0s"]);
    until("the empty rollout to reach its last wave", 30, async || status(&c, &waiting)["wave"] == 1).await;
    assert_eq!(status(&c, &waiting)["state"], "running", "an empty rollout never completes");
    c.cli_json(&["rollout", "abort", &waiting]);

    // A shadow rollout of the version every device already runs completes.
    let same = create(
        &c,
        &[
            "iris:1",
            "--selector",
            "site=x",
            "--strategy",
            "shadow",
            "--waves",
            "100",
            "--bake",
            "1s",
            "--gate",
            "agreement>0.9",
        ],
    );
    let done = state(&c, &same, "completed").await;
    assert_eq!(done["measurements"]["already"], 2, "{done}");
    assert_eq!(done["waves"][0]["activated"], 2, "{done}");

    // A shadow rollout that agrees is promoted; completed, it counts its devices as serving.
    let traffic = {
        let (http, urls) = (http.clone(), agents.iter().map(|a| a.url("/v2/models/iris/infer")).collect::<Vec<_>>());
        tokio::spawn(async move {
            let body =
                json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
            loop {
                for url in &urls {
                    let _ = http.post(url).json(&body).send().await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let shadow = create(
        &c,
        &[
            "iris:2",
            "--selector",
            "site=x",
            "--strategy",
            "shadow",
            "--shadow-share",
            "1",
            "--waves",
            "100",
            "--bake",
            "1s",
            "--gate",
            "agreement>0.9",
            "--min-requests",
            "5",
        ],
    );
    let done = state(&c, &shadow, "completed").await;
    assert_eq!(
        (done["waves"][0]["activated"].as_u64(), done["measurements"]["activated"].as_u64()),
        (Some(2), Some(2)),
        "{done}"
    );
    traffic.abort();

    // JSON waves are numbered as the table; the default activation gate is kept.
    let numbered = create(
        &c,
        &[
            "iris:1",
            "--selector",
            "site=x",
            "--waves",
            "100",
            "--bake",
            "1s",
            "--gate",
            "error_rate<0.5",
            "--min-requests",
            "1",
        ],
    );
    let s = status(&c, &numbered);
    assert_eq!((s["wave"].as_u64(), s["waves"][0]["wave"].as_u64()), (Some(1), Some(1)), "{s}");
    assert_eq!(s["plan"]["gates"], json!(["activation_failure_rate<0.1", "error_rate<0.5"]));
    c.cli_json(&["rollout", "abort", &numbered]);

    // A device that never reports: at the wave deadline it counts as failed, and the default
    // gate aborts the rollout (or, with --on-timeout pause, the rollout pauses).
    let mut agents = agents;
    drop(agents.remove(1));
    let silent =
        create(&c, &["iris:2", "--selector", "site=x", "--waves", "100", "--bake", "1s", "--wave-timeout", "4s"]);
    let aborted = state(&c, &silent, "aborted").await;
    let reason = aborted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("activation_failure_rate<0.1 (measured 0.5)") && reason.contains("did not report"),
        "{aborted}"
    );
    let paused = create(
        &c,
        &[
            "iris:2",
            "--selector",
            "site=x",
            "--waves",
            "100",
            "--bake",
            "1s",
            "--wave-timeout",
            "4s",
            "--on-timeout",
            "pause",
        ],
    );
    let stopped = state(&c, &paused, "paused").await;
    assert!(
        stopped["reason"].as_str().unwrap_or_default().contains("did not activate or fail by the wave deadline"),
        "{stopped}"
    );
    c.cli_json(&["rollout", "abort", &paused]);
    let table = c.cli(ADMIN, &["rollout", "status", &silent]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("0.5") && !text.contains("0.5000"), "gate values are rounded: {text}");
}

/// Iris rows, one per class, so a device's predictions spread over all three classes.
const ROWS: [[f32; 4]; 3] = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 4.5, 1.5], [7.2, 3.2, 6.0, 2.0]];

async fn infer(http: &reqwest::Client, agent: &AgentProcess, row: [f32; 4]) {
    let body = json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]});
    let r = http.post(agent.url("/v2/models/iris/infer")).json(&body).send().await.expect("infer");
    assert_eq!(r.status(), 200);
}

/// The case that once aborted a rollout of a near-identical model ("psi measured 5.83"): each
/// device's "before" class counts come from a single request, the candidate's from many. The
/// PSI gate now waits for enough predictions on both sides; at the wave deadline the rollout
/// pauses saying which side lacks data, and never aborts on a handful of samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_near_identical_model_with_a_sparse_before_side_is_not_aborted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, agents) = two_agents_on_v1(dir.path(), "site=sparse").await;
    let http = reqwest::Client::new();
    // The "before" side: v1 answered exactly the requests `served_version` sent, a handful.
    until("v1 traffic in every status", 30, async || {
        let list = c.cli_json(&["device", "list"]);
        list.as_array().expect("list").iter().all(|d| d["status"]["active_requests"].as_u64() >= Some(1))
    })
    .await;

    let id = create(
        &c,
        &[
            "iris:2",
            "--selector",
            "site=sparse",
            "--waves",
            "100",
            "--bake",
            "2s",
            "--wave-timeout",
            "12s",
            "--gate",
            "psi<0.2",
            "--min-requests",
            "20",
        ],
    );
    for agent in &agents {
        until("v2", 60, async || served_version(&http, agent).await.as_deref() == Some("2")).await;
    }
    // The candidate's side: plenty, over all three classes.
    for i in 0..90 {
        for agent in &agents {
            infer(&http, agent, ROWS[i % 3]).await;
        }
    }
    let psi_of = |s: &Value| s["gates"].as_array().and_then(|g| g.iter().find(|g| g["gate"] == "psi<0.2").cloned());
    until("the candidate's predictions counted and the gate evaluated", 30, async || {
        let s = status(&c, &id);
        s["state"] != "running" || (s["measurements"]["classified"].as_u64() >= Some(40) && psi_of(&s).is_some())
    })
    .await;
    let pending = status(&c, &id);
    if pending["state"] == "running" {
        let psi = psi_of(&pending).expect("psi");
        assert!(psi["passed"].is_null(), "psi judged on a sparse before side: {pending}");
        assert!(psi["waiting"].as_str().is_some_and(|w| w.contains("before side")), "{pending}");
        let table = String::from_utf8_lossy(&c.cli(ADMIN, &["rollout", "status", &id]).stdout).into_owned();
        assert!(table.contains("WAITING FOR") && table.contains("before side"), "{table}");
    }
    let paused = state(&c, &id, "paused").await;
    let reason = paused["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("lack data") && reason.contains("psi<0.2") && reason.contains("before side"), "{paused}");
    for agent in &agents {
        assert_eq!(served_version(&http, agent).await.as_deref(), Some("2"), "a paused rollout keeps the candidate");
    }
}
