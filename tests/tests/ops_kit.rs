//! The operations kit under `ops/`, against a real controller and agent scraped by a real
//! Prometheus (Debian's `prometheus`, which `tests/run.sh` installs): the alert rules pass
//! `promtool check rules`, both daemons' `/metrics` pass `promtool check metrics`, every
//! dashboard query and alert expression evaluates, every metric they name is one the daemons
//! export (docs/metrics.md), and every alert's condition, produced for real (drifted traffic
//! that makes a retrain request, a failed activation, an aborted rollout, refused telemetry, an
//! agent gone, a spool overflowing on a device cut off from its broker), makes its expression
//! true.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::controller::ControllerProcess;
use common::device::TestDevice;
use common::{AgentProcess, strs, testdata, until};
use edgefleet_shared::fleet::topics;
use rumqttc::{Event, Packet, QoS};
use serde_json::Value;

fn tool(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(path.exists(), "{name} is not installed: apt-get install -y prometheus (as tests/run.sh does)");
    path
}

fn ops(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops").join(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `targets` (`host:port`) every second and evaluates the kit's alert rules.
    async fn start(dir: &Path, targets: &[&str]) -> Prometheus {
        let port = free_port();
        let jobs: String = targets
            .iter()
            .enumerate()
            .map(|(i, t)| format!("  - job_name: job{i}\n    static_configs:\n      - targets: [\"{t}\"]\n"))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{jobs}",
            ops("prometheus/edgefleet-alerts.yml").display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus");
        let p = Prometheus { child, base: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        until("prometheus ready", 60, async || {
            http.get(format!("{}/-/ready", p.base)).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        until("both targets scraped", 60, async || p.query("up == 1").await.len() == targets.len()).await;
        p
    }

    /// The result vector of an instant query; panics when Prometheus refuses the expression.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let url = format!("{}/api/v1/query", self.base);
        let answer: Value = reqwest::Client::new()
            .get(url)
            .query(&[("query", expr)])
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Every alerting rule loaded, by name, with its expression.
    async fn alerts(&self) -> Vec<(String, String)> {
        let answer: Value =
            reqwest::get(format!("{}/api/v1/rules", self.base)).await.expect("rules").json().await.expect("json");
        let groups = answer["data"]["groups"].as_array().cloned().unwrap_or_default();
        groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["type"] == "alerting")
            .map(|r| (r["name"].as_str().unwrap_or("").to_owned(), r["query"].as_str().unwrap_or("").to_owned()))
            .collect()
    }
}

/// Every `edgefleet_*` metric an expression names, without histogram suffixes.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("edgefleet_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        names.push(name.trim_end_matches("_bucket").to_owned());
        rest = &tail[end..];
    }
    names
}

fn promtool_check_metrics(text: &str) -> String {
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn firing(p: &Prometheus, alerts: &[(String, String)], name: &str) {
    let expr = &alerts.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no alert {name}")).1;
    until(&format!("{name}'s condition"), 60, async || !p.query(expr).await.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_and_dashboards_hold_against_live_metrics() {
    let out = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(ops("prometheus/edgefleet-alerts.yml"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let dir = tempfile::tempdir().expect("tempdir");
    let mqtt_port = free_port();
    // Drift windows of 4 s judged after 2 s, and a retraining policy of two drifted windows of 40
    // rows, as in `edgefleet demo`, so drift is flagged within seconds.
    let controller_config = dir.path().join("controller.toml");
    std::fs::write(
        &controller_config,
        "[telemetry]\nwindow_secs = 4\nsettle_secs = 2\n\n[retrain.policy]\nwindows = 2\nmin_rows = 40\n",
    )
    .expect("config");
    let listen = format!("127.0.0.1:{mqtt_port}");
    let config_arg = controller_config.display().to_string();
    let c = ControllerProcess::start_with(
        &dir.path().join("controller"),
        &["--mqtt-listen", &listen, "--config", &config_arg],
    );
    let iris = testdata().join("iris_logreg.onnx");
    let baseline = testdata().join("iris_baseline.csv");
    c.cli_json(&[
        "model",
        "push",
        &iris.to_string_lossy(),
        "--name",
        "iris",
        "--baseline",
        &baseline.to_string_lossy(),
    ]);
    let token =
        c.cli_json(&["device", "token", "create", "--label", "site=ops"])["token"].as_str().expect("t").to_owned();
    let data = dir.path().join("agent");
    let agent_config = dir.path().join("agent.toml");
    let sampling = "[telemetry]\nflush_interval_secs = 1\nsample_rate = 1.0\nsamples_per_minute = 100000\nsamples_per_hour = 1000000\n";
    std::fs::write(&agent_config, sampling).expect("config");
    let mut args = c.agent_args(&c.trust_file(dir.path()), &data, 1);
    args.extend(["--enroll-token".to_owned(), token, "--config".to_owned(), agent_config.display().to_string()]);
    let mut agent = AgentProcess::run(&strs(&args));
    until("the device online", 60, async || c.cli_json(&["device", "list"])[0]["online"] == true).await;
    let id = c.cli_json(&["device", "list"])[0]["id"].as_str().expect("id").to_owned();
    c.cli_json(&["deploy", "iris:1", "--device", &id]);
    until("v1 active", 60, async || c.cli_json(&["device", "show", &id])["status"]["active"]["version"] == 1).await;

    // A second device whose broker is unreachable, with the smallest spool: its telemetry piles
    // up and the oldest batches are dropped.
    let token =
        c.cli_json(&["device", "token", "create", "--label", "site=cut"])["token"].as_str().expect("t").to_owned();
    let config = dir.path().join("cut-off.toml");
    std::fs::write(&config, "[telemetry]\nflush_interval_secs = 1\nsample_rate = 1.0\nspool_max_bytes = 4096\n")
        .expect("config");
    let mut args = c.agent_args(&c.trust_file(dir.path()), &dir.path().join("cut-off"), 1);
    let closed = format!("mqtt://127.0.0.1:{}", free_port());
    args.extend(["--enroll-token".to_owned(), token, "--mqtt".to_owned(), closed, "--config".to_owned()]);
    args.push(config.display().to_string());
    let cut_off = AgentProcess::run(&strs(&args));
    until("both devices enrolled", 60, async || {
        c.cli_json(&["device", "list"]).as_array().is_some_and(|l| l.len() == 2)
    })
    .await;
    c.cli_json(&["deploy", "iris:1", "--selector", "site=cut"]);

    for url in [c.url("/metrics"), agent.url("/metrics"), cut_off.url("/metrics")] {
        let text = reqwest::get(&url).await.expect("metrics").text().await.expect("text");
        let said = promtool_check_metrics(&text);
        assert!(said.trim().is_empty(), "promtool on {url}: {said}");
    }

    let host = |base: &str| base.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let targets = [host(&c.base), host(&agent.base), host(&cut_off.base)];
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("dir");
    let p = Prometheus::start(&prom_dir, &[&targets[0], &targets[1], &targets[2]]).await;

    // Every dashboard query and alert expression evaluates, over metrics the daemons export.
    let catalog =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md")).expect("docs");
    let mut exprs = Vec::new();
    for board in ["grafana/edgefleet-agent.json", "grafana/edgefleet-controller.json"] {
        let json: Value = serde_json::from_slice(&std::fs::read(ops(board)).expect("dashboard")).expect("json");
        for panel in json["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                exprs.push(target["expr"].as_str().expect("expr").replace("$__rate_interval", "10s"));
            }
        }
    }
    let alerts = p.alerts().await;
    assert_eq!(alerts.len(), 6, "{alerts:?}");
    exprs.extend(alerts.iter().map(|(_, e)| e.clone()));
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(catalog.contains(&format!("`{name}`")), "{name} (in {expr}) is not a metric the daemons export");
        }
        p.query(expr).await;
    }
    for (name, expr) in &alerts {
        assert!(p.query(expr).await.is_empty(), "{name} holds before anything happened");
    }

    // The cut-off device serves and samples every request into a spool that overflows.
    let http = reqwest::Client::new();
    let body = serde_json::json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    until("traffic on the cut-off device until its spool drops", 60, async || {
        for _ in 0..20 {
            let _ = http.post(cut_off.url("/v2/models/iris/infer")).json(&body).send().await;
        }
        !p.query(&alerts.iter().find(|(n, _)| n == "EdgefleetTelemetrySpoolDropping").expect("alert").1)
            .await
            .is_empty()
    })
    .await;

    // Inputs far from the training data (every measurement reads longer): drift is flagged over
    // two windows and the policy makes a retrain request.
    until("drifted traffic until a retrain request", 90, async || {
        for i in 0..20 {
            let x = [6.6 + i as f32 * 0.05, 4.5, 3.9 + i as f32 * 0.1, 1.4];
            let drifted =
                serde_json::json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": x}]});
            let _ = http.post(agent.url("/v2/models/iris/infer")).json(&drifted).send().await;
        }
        !p.query(&alerts.iter().find(|(n, _)| n == "EdgefleetRetrainRequested").expect("alert").1).await.is_empty()
    })
    .await;

    // A version that fails its self-test on the device: the activation fails.
    let noisy = testdata().join("iris_noisy.onnx");
    let push = [
        "model",
        "push",
        &noisy.to_string_lossy(),
        "--name",
        "iris",
        "--allow-nondeterministic",
        "--allow-schema-change",
    ];
    c.cli_json(&push);
    c.cli_json(&["deploy", "iris:2", "--device", &id]);
    firing(&p, &alerts, "EdgefleetActivationFailures").await;

    // A rollout aborted by the operator.
    let rollout =
        c.cli_json(&["rollout", "create", "iris:1", "--selector", "site=ops", "--waves", "100", "--bake", "1h"]);
    c.cli_json(&["rollout", "abort", &rollout["id"].to_string()]);
    firing(&p, &alerts, "EdgefleetRolloutAborted").await;

    // The agent gone: its last will marks the device offline at once.
    agent.child.kill().expect("kill");
    agent.child.wait().expect("reap");
    firing(&p, &alerts, "EdgefleetDevicesOffline").await;

    // Telemetry the controller refuses (not a frame), on the device's own topic (the agent is gone:
    // its session is not taken over).
    let device = TestDevice::from_agent_dir(&data);
    let (client, mut events) = device.mqtt("127.0.0.1", mqtt_port, None);
    client
        .publish(
            topics::telemetry(edgefleet_shared::fleet::DEFAULT_TOPIC_PREFIX, &id),
            QoS::AtLeastOnce,
            false,
            b"EFT1 forged".to_vec(),
        )
        .await
        .expect("queue");
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.poll()).await.expect("no PUBACK in time") {
            Ok(Event::Incoming(Packet::PubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    firing(&p, &alerts, "EdgefleetIngestRefusals").await;
}
