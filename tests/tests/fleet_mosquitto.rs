//! Fleet mode against an external broker (Mosquitto, set up by `mosquitto-config`: certificates
//! and topic ACLs): documents arrive over MQTT, status goes back over it, a broker outage falls
//! back to HTTP polling, and the agent reconnects.
//!
//! Needs `mosquitto` on PATH or in /usr/sbin (`.ci/run` installs it with apt).

mod common;

use std::time::Instant;

use common::controller::ControllerProcess;
use common::mosquitto::MosquittoSetup;
use common::{AgentProcess, served_version, strs, testdata, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_through_mosquitto_with_an_outage_covered_by_http_polling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = MosquittoSetup::new(&dir.path().join("broker"), &dir.path().join("controller"), false);
    let broker = setup.start();
    let mut c = ControllerProcess::start_with(&dir.path().join("controller"), &strs(&setup.controller_args()));
    c.agent_extra = setup.agent_args();
    for _ in 0..3 {
        c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    }
    let trust = c.trust_file(dir.path());
    let token = c.cli_json(&["device", "token", "create"])["token"].as_str().expect("token").to_owned();
    let data = dir.path().join("agent");
    // A poll interval of 1 s: while MQTT is up the agent polls only every 10th tick.
    let mut args = c.agent_args(&trust, &data, 0);
    args.extend(["--enroll-token".to_owned(), token]);
    let agent = AgentProcess::run(&strs(&args));
    let http = reqwest::Client::new();
    let mut id = String::new();
    until("enrollment and an MQTT status report", 60, async || {
        let list = c.cli_json(&["device", "list"]);
        id = list[0]["id"].as_str().unwrap_or_default().to_owned();
        !id.is_empty() && list[0]["online"] == true
    })
    .await;
    // Reading the log consumes it: the next "MQTT connected." found is a reconnection.
    until("the agent's MQTT connection", 60, async || agent.log().contains("MQTT connected.")).await;

    let started = Instant::now();
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    until("v1 over MQTT", 60, async || served_version(&http, &agent).await.as_deref() == Some("1")).await;
    let over_mqtt = started.elapsed();

    drop(broker);
    c.cli_json(&["deploy", "iris:2", "--device", &id]);
    until("v2 over HTTP polling while the broker is down", 60, async || {
        served_version(&http, &agent).await.as_deref() == Some("2")
    })
    .await;

    let _broker = setup.start();
    let mut log = String::new();
    until("the agent to reconnect", 60, async || {
        log.push_str(&agent.log());
        log.contains("MQTT connected.")
    })
    .await;
    c.cli_json(&["deploy", "iris:3", "--device", &id]);
    until("v3 after the broker returned", 60, async || served_version(&http, &agent).await.as_deref() == Some("3"))
        .await;
    eprintln!("deploy to serving over MQTT: {over_mqtt:?}");
}

/// A device decommissioned while its agent is connected: Mosquitto closes the connection, and
/// the agent, reconnecting with its still-valid certificate, finds its subscriptions refused. It
/// does not count the link as up (its telemetry would be acknowledged and dropped): it says so and
/// retries with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_subscriptions_are_refused_does_not_count_the_link_as_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = MosquittoSetup::new(&dir.path().join("broker"), &dir.path().join("controller"), false);
    let _broker = setup.start();
    let mut c = ControllerProcess::start_with(&dir.path().join("controller"), &strs(&setup.controller_args()));
    c.agent_extra = setup.agent_args();
    let trust = c.trust_file(dir.path());
    let token = c.cli_json(&["device", "token", "create"])["token"].as_str().expect("token").to_owned();
    let mut args = c.agent_args(&trust, &dir.path().join("agent"), 0);
    args.extend(["--enroll-token".to_owned(), token]);
    let agent = AgentProcess::run(&strs(&args));
    until("the agent's MQTT connection", 60, async || agent.log().contains("MQTT connected.")).await;
    let id = c.cli_json(&["device", "list"])[0]["id"].as_str().expect("id").to_owned();
    c.cli_json(&["device", "decommission", &id]);
    let mut log = String::new();
    until("the refusal noticed", 60, async || {
        log.push_str(&agent.log());
        log.contains("refused this device's subscriptions")
    })
    .await;
    let text = reqwest::get(agent.url("/metrics")).await.expect("metrics").text().await.expect("text");
    let value =
        |name: &str| -> Option<f64> { text.lines().find(|l| l.starts_with(name))?.rsplit(' ').next()?.parse().ok() };
    assert!(value("edgefleet_agent_mqtt_subscriptions_refused_total").is_some_and(|v| v >= 1.0), "{text}");
    assert_eq!(value("edgefleet_agent_mqtt_connected"), Some(0.0), "a refused link is not up");
}
