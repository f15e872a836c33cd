//! Staged rollouts over 20 real agent processes on the real MQTT/HTTP paths, with traffic.
//!
//! 1. A healthy version goes out in waves 10, 50, 100 %: each wave holds exactly the first
//!    ⌈P·N/100⌉ devices in rollout order; the controller is killed with SIGKILL mid-rollout,
//!    restarted on the same data and ports, and the rollout runs to completion. No request fails.
//! 2. A slow candidate fails its latency gate in the first wave (2 of 20 devices): the rollout
//!    aborts, those devices go back to the previous version, the others never receive it.
//! 3. A rollout at bake 0 is timed (printed with the controller's CPU time and RSS).
//! 4. Shadow: a candidate that disagrees with the active version is stopped before promotion
//!    (no device ever serves it); one that agrees is promoted and served everywhere.
//! 5. A device enrolling during a rollout joins it; an operator's abort sends devices back.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::controller::ControllerProcess;
use common::{AgentProcess, strs, testdata, until};
use edgefleet_shared::fleet::wave_members;
use serde_json::{Value, json};

const AGENTS: usize = 20;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

fn active_versions(c: &ControllerProcess) -> Vec<(String, Option<u64>)> {
    c.cli_json(&["device", "list"])
        .as_array()
        .expect("list")
        .iter()
        .map(|d| (d["id"].as_str().unwrap_or_default().to_owned(), d["status"]["active"]["version"].as_u64()))
        .collect()
}

async fn all_on(c: &ControllerProcess, version: u64, secs: u64) {
    until(&format!("all {AGENTS} devices on version {version}"), secs, async || {
        let now = active_versions(c);
        now.len() == AGENTS && now.iter().all(|(_, v)| *v == Some(version))
    })
    .await;
}

/// Sends iris rows (cycling through the reference data) round-robin to every agent until
/// stopped; counts answers and failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// The iris reference rows, as request bodies.
fn iris_bodies() -> Vec<Value> {
    let text = std::fs::read_to_string(testdata().join("iris_baseline.csv")).expect("iris_baseline.csv");
    text.lines()
        .skip(1)
        .map(|line| {
            let row: Vec<f32> = line.split(',').map(|v| v.parse().expect("number")).collect();
            json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]})
        })
        .collect()
}

impl Traffic {
    fn start(urls: Vec<String>) -> Traffic {
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let bodies = iris_bodies();
            let mut next = 0;
            while !s.load(Ordering::Relaxed) {
                for url in &urls {
                    next = (next + 1) % bodies.len();
                    let answer = http.post(url).json(&bodies[next]).send().await;
                    if answer.is_ok_and(|r| r.status().is_success()) {
                        o.fetch_add(1, Ordering::Relaxed);
                    } else {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Traffic { stop, ok, failed, task }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("traffic task");
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// User + system CPU seconds of a process, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn wave_sets(rollout: &Value) -> Vec<BTreeSet<String>> {
    rollout["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| w["devices"].as_array().expect("devices").iter().map(|d| d.as_str().expect("id").to_owned()).collect())
        .collect()
}

/// The devices a cumulative wave plan puts in each wave: each wave's members not in the wave
/// before it.
fn expected_sets(devices: &[String], waves: &[u8]) -> Vec<BTreeSet<String>> {
    let mut before = BTreeSet::new();
    waves
        .iter()
        .map(|&p| {
            let all: BTreeSet<String> = wave_members(devices, p).into_iter().collect();
            let new = all.difference(&before).cloned().collect();
            before = all;
            new
        })
        .collect()
}

/// A controller on fixed ports (so it can restart), iris v1 (logreg), v2 (the same), v3 (slow),
/// and 20 enrolled agents labelled group=field, all serving v1.
struct TestFleet {
    c: ControllerProcess,
    agents: Vec<AgentProcess>,
    devices: Vec<String>,
    data: std::path::PathBuf,
    ports: [String; 4],
    trust: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestFleet {
    async fn start() -> TestFleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("controller");
        let ports = [
            "--listen".to_owned(),
            format!("127.0.0.1:{}", free_port()),
            "--mqtt-listen".to_owned(),
            format!("127.0.0.1:{}", free_port()),
        ];
        let c = ControllerProcess::start_with(&data, &strs(&ports));
        let iris = testdata().join("iris_logreg.onnx").to_string_lossy().into_owned();
        let slow = testdata().join("iris_slow.onnx").to_string_lossy().into_owned();
        for path in [&iris, &iris] {
            c.cli_json(&["model", "push", path, "--name", "iris"]);
        }
        // The slow variant has other outputs than the logistic regression.
        c.cli_json(&["model", "push", &slow, "--name", "iris", "--allow-schema-change"]);
        let trust = c.trust_file(dir.path());
        let token = c.cli_json(&["device", "token", "create", "--uses", "20", "--label", "group=field"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let agents: Vec<AgentProcess> = (0..AGENTS)
            .map(|i| {
                let mut args = c.agent_args(&trust, &dir.path().join(format!("agent-{i}")), 0);
                args.extend(["--enroll-token".to_owned(), token.clone()]);
                AgentProcess::run(&strs(&args))
            })
            .collect();
        until("20 enrolled devices", 120, async || active_versions(&c).len() == AGENTS).await;
        let devices: Vec<String> = active_versions(&c).into_iter().map(|(id, _)| id).collect();
        c.cli_json(&["deploy", "iris:1", "--selector", "group=field"]);
        all_on(&c, 1, 120).await;
        TestFleet { c, agents, devices, data, ports, trust, _dir: dir }
    }

    /// Starts traffic and waits until every device reports requests on its version: the
    /// baselines latency and output-distribution gates compare against.
    async fn traffic(&self) -> Traffic {
        let traffic = Traffic::start(self.agents.iter().map(|a| a.url("/v2/models/iris/infer")).collect());
        until("every device to report traffic", 60, async || {
            let list = self.c.cli_json(&["device", "list"]);
            list.as_array().expect("list").iter().all(|d| d["status"]["active_requests"].as_u64() > Some(20))
        })
        .await;
        traffic
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_gates_abort_and_a_controller_kill() {
    let fleet = TestFleet::start().await;
    let traffic = fleet.traffic().await;
    let TestFleet { mut c, agents: _agents, devices, data, ports, _dir, .. } = fleet;

    // 1. Healthy: waves 10, 50, 100 %, with a kill -9 of the controller once wave 2 is out.
    let created = c.cli_json(&[
        "rollout",
        "create",
        "iris:2",
        "--selector",
        "group=field",
        "--waves",
        "10,50,100",
        "--bake",
        "2s",
        "--gate",
        "error_rate<0.01",
        "--gate",
        "activation_failure_rate<0.01",
        "--gate",
        "psi<0.2",
        "--min-requests",
        "10",
    ]);
    let id = created["id"].as_i64().expect("id").to_string();
    until("the rollout's second wave", 120, async || {
        c.cli_json(&["rollout", "status", &id])["wave"].as_u64() >= Some(2)
    })
    .await;
    c.child.kill().expect("kill -9");
    c.child.wait().expect("reap");
    drop(c);
    let c = ControllerProcess::start_with(&data, &strs(&ports));
    until("the rollout to complete after the restart", 180, async || {
        c.cli_json(&["rollout", "status", &id])["state"] == "completed"
    })
    .await;
    all_on(&c, 2, 60).await;
    let done = c.cli_json(&["rollout", "status", &id]);
    assert_eq!(wave_sets(&done), expected_sets(&devices, &[10, 50, 100]), "{done}");
    let audit = c.cli_json(&["audit", "--limit", "200"]).to_string();
    for action in ["rollout.create", "rollout.advance", "rollout.complete"] {
        assert!(audit.contains(action), "{action} not audited");
    }

    // 2. A slow candidate fails its latency gate in the first wave with devices.
    let before: Vec<(String, u64)> = c
        .cli_json(&["device", "list"])
        .as_array()
        .expect("list")
        .iter()
        .map(|d| (d["id"].as_str().expect("id").to_owned(), d["desired_sequence"].as_u64().expect("sequence")))
        .collect();
    let created = c.cli_json(&[
        "rollout",
        "create",
        "iris:3",
        "--selector",
        "group=field",
        "--waves",
        "10,50,100",
        "--bake",
        "1s",
        "--gate",
        "p99_ms<1",
        "--gate",
        "psi<0.2",
        "--min-requests",
        "10",
    ]);
    let id = created["id"].as_i64().expect("id").to_string();
    until("the slow candidate's rollout to abort", 180, async || {
        c.cli_json(&["rollout", "status", &id])["state"] == "aborted"
    })
    .await;
    let aborted = c.cli_json(&["rollout", "status", &id]);
    assert!(aborted["reason"].as_str().unwrap_or_default().contains("p99_ms<1"), "{aborted}");
    // Its predictions are distributed unlike the logistic regression's, too.
    // (The default activation gate comes first: it is kept beside the operator's gates.)
    assert_eq!(aborted["gates"][0]["gate"], "activation_failure_rate<0.1", "{aborted}");
    let psi = aborted["gates"].as_array().expect("gates").iter().find(|g| g["gate"] == "psi<0.2").expect("psi gate");
    assert_eq!(psi["passed"].as_bool(), Some(false), "{aborted}");
    eprintln!("slow candidate: {aborted}");
    let reached: BTreeSet<String> = wave_sets(&aborted).into_iter().flatten().collect();
    let expected: BTreeSet<String> = wave_members(&devices, 10).into_iter().collect();
    assert_eq!(expected.len(), 2, "10% of 20 devices");
    assert_eq!(reached, expected, "only the first wave received the candidate: {aborted}");
    all_on(&c, 2, 120).await;
    let after = c.cli_json(&["device", "list"]);
    for (device, sequence) in &before {
        let now = after.as_array().expect("list").iter().find(|d| d["id"] == device.as_str()).expect("device");
        let bumped = now["desired_sequence"].as_u64().expect("sequence") - sequence;
        // In the wave: the candidate, then the way back. Outside: nothing.
        assert_eq!(bumped, if reached.contains(device) { 2 } else { 0 }, "{device}: {now}");
    }

    // 3. For the record: a healthy rollout over all devices at bake 0, timed, with the
    // controller's CPU time and RSS.
    let cpu_before = cpu_secs(c.child.id());
    let started = std::time::Instant::now();
    let created = c.cli_json(&[
        "rollout",
        "create",
        "iris:1",
        "--selector",
        "group=field",
        "--waves",
        "10,50,100",
        "--bake",
        "0s",
    ]);
    let id = created["id"].as_i64().expect("id").to_string();
    until("the bake-0 rollout", 120, async || c.cli_json(&["rollout", "status", &id])["state"] == "completed").await;
    all_on(&c, 1, 60).await;
    eprintln!(
        "rollout of {AGENTS} devices in 3 waves at bake 0: {:.2} s to all serving; controller CPU {:.2} s, RSS {} kB",
        started.elapsed().as_secs_f64(),
        cpu_secs(c.child.id()) - cpu_before,
        rss_kb(c.child.id())
    );

    let (ok, failed) = traffic.stop().await;
    assert!(ok > 100, "only {ok} requests answered");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_verdicts_late_enrollment_and_operator_abort() {
    let fleet = TestFleet::start().await;
    let traffic = fleet.traffic().await;
    let c = &fleet.c;

    // The slow model's answers disagree with the logistic regression's on most iris rows.
    let created = c.cli_json(&[
        "rollout",
        "create",
        "iris:3",
        "--selector",
        "group=field",
        "--strategy",
        "shadow",
        "--waves",
        "50,100",
        "--bake",
        "1s",
        "--gate",
        "agreement>0.9",
        "--min-requests",
        "20",
        "--shadow-share",
        "1",
    ]);
    let id = created["id"].as_i64().expect("id").to_string();
    until("the disagreeing shadow to be stopped", 180, async || {
        c.cli_json(&["rollout", "status", &id])["state"] == "aborted"
    })
    .await;
    let stopped = c.cli_json(&["rollout", "status", &id]);
    assert!(stopped["reason"].as_str().unwrap_or_default().contains("agreement>0.9"), "{stopped}");
    // The gate's value as judged (the live measurements end with the shadows).
    let agreement = stopped["gates"][0]["value"].as_f64().expect("agreement measured");
    assert!(agreement < 0.9, "{stopped}");
    eprintln!("disagreeing shadow stopped at agreement {agreement:.3}");
    // Never promoted: every device still serves v1, and its shadow is gone.
    until("the shadows to end", 60, async || {
        c.cli_json(&["device", "list"]).as_array().expect("list").iter().all(|d| d["status"]["shadow"].is_null())
    })
    .await;
    assert!(active_versions(c).iter().all(|(_, v)| *v == Some(1)));

    // The same model as the active one agrees on every row: promoted, then served everywhere.
    let created = c.cli_json(&[
        "rollout",
        "create",
        "iris:2",
        "--selector",
        "group=field",
        "--strategy",
        "shadow",
        "--waves",
        "50,100",
        "--bake",
        "1s",
        "--gate",
        "agreement>0.97",
        "--min-requests",
        "20",
        "--shadow-share",
        "0.5",
    ]);
    let id = created["id"].as_i64().expect("id").to_string();
    until("the agreeing shadow to be promoted and completed", 180, async || {
        c.cli_json(&["rollout", "status", &id])["state"] == "completed"
    })
    .await;
    all_on(c, 2, 60).await;
    let done = c.cli_json(&["rollout", "status", &id]);
    let audit = c.cli_json(&["audit", "--limit", "200"]).to_string();
    assert!(audit.contains("rollout.promote"), "promotion not audited: {done}");
    // A device that enrolls while a rollout runs joins it at the current wave; an operator's
    // abort sends back every device that had a version before, and takes the model off the
    // newcomer, which had none (it then serves nothing).
    let created =
        c.cli_json(&["rollout", "create", "iris:1", "--selector", "group=field", "--waves", "100", "--bake", "1h"]);
    let id = created["id"].as_i64().expect("id").to_string();
    all_on(c, 1, 60).await;
    let token = c.cli_json(&["device", "token", "create", "--label", "group=field"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut args = c.agent_args(&fleet.trust, &fleet._dir.path().join("late"), 0);
    args.extend(["--enroll-token".to_owned(), token]);
    let _late = AgentProcess::run(&strs(&args));
    let mut late_id = String::new();
    until("the late device to join the running rollout", 60, async || {
        let joined: Vec<String> = wave_sets(&c.cli_json(&["rollout", "status", &id])).into_iter().flatten().collect();
        late_id = joined.into_iter().find(|d| !fleet.devices.contains(d)).unwrap_or_default();
        !late_id.is_empty()
    })
    .await;
    until("the late device to serve the candidate", 60, async || {
        active_versions(c).iter().any(|(d, v)| d == &late_id && *v == Some(1))
    })
    .await;
    let aborted = c.cli_json(&["rollout", "abort", &id]);
    assert_eq!(aborted["state"], "aborted", "{aborted}");
    until("the 20 devices back on v2", 60, async || {
        active_versions(c).iter().all(|(d, v)| *v == if d == &late_id { None } else { Some(2) })
    })
    .await;
    let (ok, failed) = traffic.stop().await;
    assert!(ok > 100, "only {ok} requests answered");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
}
