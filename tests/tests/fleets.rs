//! Declarative fleets end to end, with a real controller and real agents: a fleet created for
//! `site=x` gives its models to agents that enroll after it, a relabelled agent leaving the fleet
//! drops them, a device matching two fleets is a conflict shown on both (and changed by neither),
//! and a rollout of a fleet's model makes the fleet serve the new version once it completes.

mod common;

use common::controller::{ADMIN, ControllerProcess};
use common::{AgentProcess, served_version_at, testdata, until};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    testdata().join(name).to_string_lossy().into_owned()
}

fn mlp_body() -> Value {
    let data: Vec<f32> = (0..16).map(|i| (i as f32 * 0.21).sin()).collect();
    json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": data}]})
}

async fn iris(http: &reqwest::Client, agent: &AgentProcess) -> Option<String> {
    served_version_at(http, &agent.url("/v2/models/iris/infer")).await
}

async fn mlp_status(http: &reqwest::Client, agent: &AgentProcess) -> StatusCode {
    let r = http.post(agent.url("/v2/models/mlp/infer")).json(&mlp_body()).send().await;
    r.map_or(StatusCode::SERVICE_UNAVAILABLE, |r| r.status())
}

fn controller(dir: &std::path::Path) -> ControllerProcess {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_reaches_devices_that_enroll_later_and_leaves_those_relabelled_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = controller(dir.path());
    let created =
        c.cli_json(&["fleet", "create", "edge-x", "--selector", "site=x", "--model", "iris:1", "--model", "mlp:1"]);
    assert_eq!(created["devices"], json!([]), "{created}");
    let http = reqwest::Client::new();
    let mut agents = Vec::new();
    for n in 0..3 {
        let (agent, id) = c.enroll_agent(dir.path(), &format!("agent-{n}"), &["site=x"], &[]).await;
        let enrolled = std::time::Instant::now();
        until(&format!("{id} serving the fleet's models"), 30, async || {
            iris(&http, &agent).await.as_deref() == Some("1") && mlp_status(&http, &agent).await == StatusCode::OK
        })
        .await;
        let took = enrolled.elapsed();
        eprintln!("{id}: enrolled to serving both fleet models in {took:?}");
        assert!(took < std::time::Duration::from_secs(10), "{id} took {took:?}");
        agents.push((agent, id));
    }
    let (other, other_id) = c.enroll_agent(dir.path(), "agent-y", &["site=y"], &[]).await;
    until("the fleet reporting its devices serving", 30, async || {
        c.cli_json(&["fleet", "show", "edge-x"])["serving"].as_array().is_some_and(|s| s.len() == 3)
    })
    .await;
    let shown = c.cli_json(&["fleet", "show", "edge-x"]);
    let mut members: Vec<&str> = agents.iter().map(|(_, id)| id.as_str()).collect();
    members.sort_unstable();
    assert_eq!(shown["devices"], json!(members), "{shown}");
    assert_eq!(iris(&http, &other).await, None, "a device outside the fleet gets nothing");

    // One agent leaves the fleet by its labels: it drops both models; the others keep them.
    let (leaving, leaving_id) = &agents[0];
    c.cli_json(&["device", "label", leaving_id, "site=z"]);
    until("the relabelled agent dropping the fleet's models", 30, async || {
        iris(&http, leaving).await.is_none() && mlp_status(&http, leaving).await == StatusCode::NOT_FOUND
    })
    .await;
    until("its slots deleted", 30, async || !dir.path().join("agent-0").join("models").join("iris").exists()).await;
    for (agent, _) in &agents[1..] {
        assert_eq!(iris(&http, agent).await.as_deref(), Some("1"));
    }
    let shown = c.cli_json(&["fleet", "list"]);
    assert_eq!(shown[0]["devices"].as_array().map(Vec::len), Some(2), "{shown}");

    // A second fleet overlapping the first on one device: a conflict on both, nobody changes it.
    c.cli_json(&["device", "label", &other_id, "site=x"]);
    until("the new member served", 30, async || iris(&http, &other).await.as_deref() == Some("1")).await;
    c.cli_json(&["device", "label", &other_id, "ring=canary"]);
    c.cli_json(&["fleet", "create", "canary", "--selector", "ring=canary", "--model", "iris:2"]);
    for name in ["edge-x", "canary"] {
        let shown = c.cli_json(&["fleet", "show", name]);
        assert_eq!(shown["conflicts"][0]["device"], other_id.as_str(), "{name}: {shown}");
        assert_eq!(shown["conflicts"][0]["fleets"], json!(["canary", "edge-x"]), "{name}: {shown}");
    }
    let text = c.cli(ADMIN, &["fleet", "show", "canary"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("conflict"), "{text:?}");
    assert_eq!(iris(&http, &other).await.as_deref(), Some("1"), "no silent winner");
    c.cli_json(&["fleet", "delete", "canary"]);

    // A new iris version for the fleet goes through a rollout; the fleet changes when it completes.
    // (The API refuses to change the version in place; `fleet update` starts the rollout.)
    let patch = http
        .patch(c.url("/api/v1/fleets/edge-x"))
        .bearer_auth(ADMIN)
        .json(&json!({"models": ["iris:2", "mlp:1"]}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status(), StatusCode::CONFLICT);
    assert!(patch.json::<Value>().await.expect("json")["error"].as_str().is_some_and(|e| e.contains("rollout")));
    let updated = c.cli_json(&[
        "fleet",
        "update",
        "edge-x",
        "--model",
        "iris:2",
        "--model",
        "mlp:1",
        "--strategy",
        "direct",
        "--bake",
        "1s",
        "--min-requests",
        "0",
    ]);
    assert_eq!(
        updated["fleet"]["models"][0],
        json!({"name": "iris", "version": 1}),
        "not before the rollout completes: {updated}"
    );
    let id = updated["rollout"]["id"].to_string();
    until("the fleet rollout completed", 60, async || c.cli_json(&["rollout", "status", &id])["state"] == "completed")
        .await;
    until("the fleet serving iris v2", 30, async || {
        c.cli_json(&["fleet", "show", "edge-x"])["models"]
            .as_array()
            .is_some_and(|m| m.contains(&json!({"name": "iris", "version": 2})))
    })
    .await;
    for (agent, _) in agents[1..].iter().chain([&(other, other_id.clone())]) {
        until("a member on iris v2", 30, async || iris(&http, agent).await.as_deref() == Some("2")).await;
    }
}

/// A fleet rollout over 12 agents in 3 sites with `--group-by site --max-unavailable 1`: sampled
/// from the controller's view (a device is activating from the moment it is given the candidate
/// until it reports serving it), no site ever has two devices activating, the sites proceed side
/// by side, and every device ends on the candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_rollout_keeps_each_site_within_its_disruption_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = controller(dir.path());
    c.cli_json(&["fleet", "create", "plant", "--selector", "fleet=plant", "--model", "iris:1"]);
    let http = reqwest::Client::new();
    let mut agents = Vec::new();
    for n in 0..12 {
        let site = format!("site=s{}", n % 3);
        agents.push(c.enroll_agent(dir.path(), &format!("agent-{n}"), &["fleet=plant", &site], &[]).await);
    }
    for (agent, id) in &agents {
        until(&format!("{id} on v1"), 60, async || iris(&http, agent).await.as_deref() == Some("1")).await;
    }
    until("every device reporting v1", 30, async || {
        c.cli_json(&["fleet", "show", "plant"])["serving"].as_array().is_some_and(|s| s.len() == 12)
    })
    .await;
    let rollout = c.cli_json(&[
        "rollout",
        "create",
        "iris:2",
        "--fleet",
        "plant",
        "--strategy",
        "direct",
        "--bake",
        "1s",
        "--min-requests",
        "0",
        "--group-by",
        "site",
        "--max-unavailable",
        "1",
    ]);
    let id = rollout["id"].to_string();
    let started = std::time::Instant::now();
    let mut timeline: Vec<(u128, [usize; 3])> = Vec::new();
    loop {
        let devices: Value = http
            .get(c.url("/api/v1/devices"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("devices")
            .json()
            .await
            .expect("json");
        let mut activating = [0usize; 3];
        let mut on_v2 = 0;
        for d in devices.as_array().expect("devices") {
            let site =
                d["labels"]["site"].as_str().and_then(|s| s.strip_prefix('s')).and_then(|s| s.parse::<usize>().ok());
            let active = d["status"]["models"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["name"] == "iris")
                .map(|m| m["active"]["version"].clone());
            let serving_v2 = active == Some(json!(2));
            on_v2 += usize::from(serving_v2);
            if let Some(site) = site
                && d["desired"]["version"] == 2
                && !serving_v2
            {
                activating[site] += 1;
            }
        }
        timeline.push((started.elapsed().as_millis(), activating));
        assert!(activating.iter().all(|&n| n <= 1), "two devices of one site activating at once: {timeline:?}");
        if on_v2 == 12 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "rollout not done: {timeline:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let changes: Vec<&(u128, [usize; 3])> =
        timeline.iter().enumerate().filter(|(i, s)| *i == 0 || timeline[i - 1].1 != s.1).map(|(_, s)| s).collect();
    eprintln!(
        "{} samples; (ms since rollout create, devices activating per site) at each change: {changes:?}",
        timeline.len()
    );
    assert!(
        timeline.iter().any(|(_, a)| a.iter().filter(|&&n| n == 1).count() >= 2),
        "the budget is per site: sites activate side by side ({changes:?})"
    );
    until("the rollout completed", 60, async || c.cli_json(&["rollout", "status", &id])["state"] == "completed").await;
    for (agent, id) in &agents {
        assert_eq!(iris(&http, agent).await.as_deref(), Some("2"), "{id}");
    }
}
