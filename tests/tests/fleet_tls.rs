//! Fleet mode over TLS. The controller serves HTTPS and its embedded broker accepts only TLS,
//! with a certificate from a test CA made here with rcgen. An agent provisioned with that CA
//! enrolls, follows a deployment over `mqtts://` and serves it; one without the CA refuses the
//! controller's certificate and never enrolls. Plain TCP off loopback is refused at start.

mod common;

use std::process::Command;
use std::time::Duration;

use common::controller::{ADMIN, ControllerProcess};
use common::pki::TestPki;
use common::{AgentProcess, binary, metric, served_version, strs, testdata, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_deploy_and_serve_over_https_and_mqtts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path(), &["localhost", "127.0.0.1"]);
    let mut extra = vec!["--mqtt-listen".to_owned(), "127.0.0.1:0".to_owned()];
    extra.extend(pki.controller_args());
    let mut c = ControllerProcess::start_with(&dir.path().join("controller"), &strs(&extra));
    assert!(c.base.starts_with("https://"), "{}", c.base);
    c.ca_file = Some(pki.ca.clone());

    // The CLI checks the certificate too: without the CA it cannot reach the controller.
    let untrusting = Command::new(binary("edgefleet"))
        .args(["--controller", &c.base, "--token", ADMIN, "model", "list"])
        .output()
        .expect("run edgefleet");
    assert_eq!(untrusting.status.code(), Some(69), "{}", String::from_utf8_lossy(&untrusting.stderr));
    assert!(String::from_utf8_lossy(&untrusting.stderr).contains("certificate"));

    c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    let trust = c.trust_file(dir.path());
    let token = c.cli_json(&["device", "token", "create"])["token"].as_str().expect("token").to_owned();

    // An agent without the CA refuses the controller's certificate and keeps retrying.
    let mut args = c.agent_args(&trust, &dir.path().join("stranger"), 0);
    args.extend(["--enroll-token".to_owned(), token.clone()]);
    let stranger = AgentProcess::run(&strs(&args));
    let mut seen = String::new();
    until("the agent to refuse an unknown issuer", 60, async || {
        seen.push_str(&stranger.log());
        seen.contains("UnknownIssuer")
    })
    .await;
    assert!(c.cli_json(&["device", "list"]).as_array().expect("list").is_empty(), "the stranger enrolled");
    drop(stranger);

    let mut args = c.agent_args(&trust, &dir.path().join("agent"), 0);
    args.extend(["--enroll-token".to_owned(), token, "--ca-file".to_owned(), pki.ca.to_string_lossy().into_owned()]);
    let agent = AgentProcess::run(&strs(&args));
    let http = reqwest::Client::new();
    let mut id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let list = c.cli_json(&["device", "list"]);
        id = list[0]["id"].as_str().unwrap_or_default().to_owned();
        let text = match http.get(agent.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if !id.is_empty() && metric(&text, "edgefleet_agent_mqtt_connected") == Some(1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no MQTT connection over TLS; agent log:\n{}\ncontroller log:\n{}",
            agent.log(),
            c.stderr.try_iter().collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let state = std::fs::read_to_string(dir.path().join("agent").join("state.json")).expect("state file");
    assert!(state.contains("mqtts://127.0.0.1:"), "the controller advertised a TLS broker: {state}");

    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    until("v1 served after a deployment over TLS", 60, async || {
        served_version(&http, &agent).await.as_deref() == Some("1")
    })
    .await;
    let shown = c.cli_json(&["device", "show", &id]);
    assert_eq!(shown["online"], true, "{shown}");
}

fn exit_of(binary_name: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(binary(binary_name))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "{binary_name} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn plain_tcp_off_loopback_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("controller").to_string_lossy().into_owned();
    let (code, err) = exit_of(
        "edgefleet-controller",
        &["serve", "--data-dir", &data, "--listen", "0.0.0.0:0", "--mqtt-listen", "127.0.0.1:0"],
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("0.0.0.0:0") && err.contains("insecure"), "{err}");

    let trust = dir.path().join("trust.json").to_string_lossy().into_owned();
    let agent_data = dir.path().join("agent").to_string_lossy().into_owned();
    let args = ["run", "--controller", "http://192.0.2.10:7700", "--trust", &trust, "--data-dir", &agent_data];
    let (code, err) = exit_of("edgefleet-agent", &args);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("http://192.0.2.10:7700") && err.contains("insecure"), "{err}");

    let (code, err) = exit_of("edgefleet", &["--controller", "http://192.0.2.10:7700", "model", "list"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("insecure"), "{err}");
}
