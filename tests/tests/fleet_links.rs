//! The fleet link against a hostile network: a man in the middle between agent and controller
//! (`common::proxy`) stalls, floods, corrupts and replays desired-state answers. Status keeps
//! flowing, SIGTERM is handled at once, answers are read only up to their cap, a corrupted copy
//! cannot hide the genuine document, an older document is refused; and a newer document ends
//! a watch window at once.

mod common;

use std::time::{Duration, Instant};

use common::controller::ControllerProcess;
use common::proxy::{Desired, Proxy};
use common::{AgentProcess, served_version, strs, testdata, until};

fn push_iris(c: &ControllerProcess, times: usize) {
    for _ in 0..times {
        c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    }
}

/// An agent that reaches the controller through `proxy` only (the controller has no broker).
async fn agent_behind(c: &ControllerProcess, proxy: &Proxy, dir: &std::path::Path) -> (AgentProcess, String) {
    let trust = c.trust_file(dir);
    let token = c.cli_json(&["device", "token", "create"])["token"].as_str().expect("token").to_owned();
    let mut args = c.agent_args(&trust, &dir.join("agent"), 0);
    let at = args.iter().position(|a| a == "--controller").expect("--controller") + 1;
    args[at] = proxy.url.clone();
    args.extend(["--enroll-token".to_owned(), token]);
    let agent = AgentProcess::run(&strs(&args));
    let id = enrolled(c).await;
    (agent, id)
}

/// The id of the (only) device, once it enrolled.
async fn enrolled(c: &ControllerProcess) -> String {
    let mut id = String::new();
    until("enrollment", 30, async || {
        id = c.cli_json(&["device", "list"])[0]["id"].as_str().unwrap_or_default().to_owned();
        !id.is_empty()
    })
    .await;
    id
}

fn device(c: &ControllerProcess, id: &str) -> serde_json::Value {
    c.cli_json(&["device", "show", id])
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_answer_holds_up_neither_status_nor_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start_with(&dir.path().join("controller"), &["--no-mqtt"]);
    let proxy = Proxy::start(&c.base).await;
    proxy.set_desired(Desired::Stall);
    let (mut agent, id) = agent_behind(&c, &proxy, dir.path()).await;
    until("a stalled desired-state answer", 30, async || proxy.stalled() >= 1).await;

    // Status reports (over HTTP, through the same proxy) keep coming while polls are stalled.
    let uptime = |d: serde_json::Value| d["status"]["uptime_secs"].as_u64().unwrap_or(0);
    until("a status report", 30, async || device(&c, &id)["status"].is_object()).await;
    let first = uptime(device(&c, &id));
    until("three more seconds of status", 30, async || uptime(device(&c, &id)) >= first + 3).await;
    assert!(proxy.stalled() >= 1, "the poll was still stalled meanwhile");

    let started = Instant::now();
    agent.terminate();
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "SIGTERM took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endless_answer_is_refused_at_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start_with(&dir.path().join("controller"), &["--no-mqtt"]);
    push_iris(&c, 1);
    let proxy = Proxy::start(&c.base).await;
    let (agent, id) = agent_behind(&c, &proxy, dir.path()).await;
    let polls = proxy.desired_requests();
    until("a few ordinary polls", 30, async || proxy.desired_requests() >= polls + 3).await;
    let before = rss_bytes(agent.child.id());

    proxy.set_desired(Desired::Endless);
    let endless = proxy.desired_requests();
    let mut log = String::new();
    until("five endless answers refused", 60, async || {
        log.push_str(&agent.log());
        proxy.desired_requests() >= endless + 6 && log.contains("exceeds 1048576 bytes")
    })
    .await;
    let grown = rss_bytes(agent.child.id()).saturating_sub(before);
    assert!(grown < 8 << 20, "RSS grew by {grown} bytes");

    // The link is fine once the answers are.
    proxy.set_desired(Desired::Forward);
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    let http = reqwest::Client::new();
    until("v1 served", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;
    eprintln!("RSS growth over the endless answers: {grown} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_copy_hides_nothing_and_a_replay_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start_with(&dir.path().join("controller"), &["--no-mqtt"]);
    push_iris(&c, 2);
    let proxy = Proxy::start(&c.base).await;
    let (agent, id) = agent_behind(&c, &proxy, dir.path()).await;
    let http = reqwest::Client::new();

    // The first answer carrying the document has one signature bit flipped; the next is genuine.
    proxy.set_desired(Desired::CorruptOnce);
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    until("v1 served", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;
    let status = device(&c, &id);
    assert_eq!(status["status"]["last_refusal"]["class"], "bad_signature", "{status}");

    // A replay of that (genuine, older) document after v2 is refused.
    let first = proxy.forwarded_desired().into_iter().next().expect("a forwarded document");
    c.cli_json(&["deploy", "iris:2", "--device", &id]);
    until("v2 served", 60, async || served_version(&http, &agent).await.as_deref() == Some("2")).await;
    proxy.set_desired(Desired::Serve(first));
    until("the replay refused", 60, async || device(&c, &id)["status"]["last_refusal"]["class"] == "older_sequence")
        .await;
    assert_eq!(served_version(&http, &agent).await.as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_document_ends_the_watch_window_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(&dir.path().join("controller"));
    push_iris(&c, 2);
    let trust = c.trust_file(dir.path());
    let token = c.cli_json(&["device", "token", "create"])["token"].as_str().expect("token").to_owned();
    // A 30 s watch window.
    let mut args = c.agent_args(&trust, &dir.path().join("agent"), 30);
    args.extend(["--enroll-token".to_owned(), token]);
    let agent = AgentProcess::run(&strs(&args));
    let id = enrolled(&c).await;
    let http = reqwest::Client::new();
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    until("v1 swapped in", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;

    // v1 is in its watch window; v2 must not wait for it.
    let deployed = Instant::now();
    c.cli_json(&["deploy", "iris:2", "--device", &id]);
    until("v2 served", 30, async || served_version(&http, &agent).await.as_deref() == Some("2")).await;
    let took = deployed.elapsed();
    assert!(took < Duration::from_secs(2), "v2 served {took:?} after its deploy");
    // v1 was committed when v2 arrived (it served cleanly); v2 is now watched in turn.
    until("v1 committed when superseded", 30, async || {
        let s = device(&c, &id);
        s["status"]["active"]["version"] == 1 && s["status"]["last_activation"]["ok"] == true
    })
    .await;
    eprintln!("deploy of v2 during v1's watch window to serving: {took:?}");
}
