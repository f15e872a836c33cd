//! The device lifecycle after enrollment, on the real controller: a decommissioned (stolen)
//! device loses its documents, its live broker connection, its broker rights and its enrollment
//! at once, on the embedded broker and on Mosquitto (where its certificate still passes TLS but
//! authorizes nothing); a relabelled device moves between selectors; enrollment tokens are listed
//! and revoked; `device list` filters.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::controller::{ADMIN, ControllerProcess};
use common::device::TestDevice;
use common::mosquitto::{Broker, MosquittoSetup};
use common::{binary, strs, testdata, until};
use edgefleet_shared::fleet::topics;
use edgefleet_shared::keys::Signer as _;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};

const P: &str = edgefleet_shared::fleet::DEFAULT_TOPIC_PREFIX;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// Polls until the broker acknowledges the connection (true) or refuses or closes it (false).
async fn admitted(events: &mut EventLoop) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.poll()).await.expect("no answer in time") {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => return ack.code == rumqttc::ConnectReturnCode::Success,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Polls until the connection ends; panics if it is still up after `secs`.
async fn closed_within(events: &mut EventLoop, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, events.poll()).await.expect("the connection stayed open") {
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

async fn status_of(r: reqwest::Response) -> (u16, String) {
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> =
        list.as_array().expect("list").iter().map(|d| d["id"].as_str().expect("id").to_owned()).collect();
    ids.sort();
    ids
}

/// Whether the audit log has `action` on `target`.
fn audited(c: &ControllerProcess, action: &str, target: &str) -> bool {
    c.cli_json(&["audit"]).as_array().expect("audit").iter().any(|e| e["action"] == action && e["target"] == target)
}

fn enroll_body(token: &str, device: &TestDevice) -> serde_json::Value {
    serde_json::json!({"token": token, "public_key": device.key.public_key().to_base64()})
}

/// Whether the broker grants a subscription (false also for a connection it closes).
async fn subscribed(client: &AsyncClient, events: &mut EventLoop, topic: &str) -> bool {
    client.subscribe(topic, QoS::AtLeastOnce).await.expect("queue subscribe");
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.poll()).await.expect("no SUBACK in time") {
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                return ack.return_codes.iter().all(|c| !matches!(c, SubscribeReasonCode::Failure));
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Publishes on `topic` at QoS 1 and drives the connection until the broker acknowledged it (or
/// closed the connection).
async fn published(client: &AsyncClient, mut events: EventLoop, topic: &str, payload: Vec<u8>) {
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.expect("queue publish");
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.poll()).await.expect("no PUBACK in time") {
            Ok(Event::Incoming(Packet::PubAck(_))) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// `edgefleet_controller_broker_access_changes_total` for one change and result.
async fn access_changes(c: &ControllerProcess, change: &str, result: &str) -> f64 {
    let text = reqwest::get(c.url("/metrics")).await.expect("metrics").text().await.expect("text");
    let labels = [format!("change=\"{change}\""), format!("result=\"{result}\"")];
    text.lines()
        .filter(|l| l.starts_with("edgefleet_controller_broker_access_changes_total"))
        .filter(|l| labels.iter().all(|want| l.contains(want.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn signed_status(device: &TestDevice) -> Vec<u8> {
    let status = edgefleet_shared::fleet::DeviceStatus { agent_version: "test".into(), ..Default::default() };
    let env =
        edgefleet_shared::signature::SignedEnvelope::sign(&serde_json::to_vec(&status).expect("json"), &device.key);
    serde_json::to_vec(&env).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decommissioned_device_loses_documents_broker_and_enrollment_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let c =
        ControllerProcess::start_with(&dir.path().join("controller"), &["--mqtt-listen", &format!("127.0.0.1:{port}")]);
    decommission_scenario(&c, &Broker { port, mosquitto: None }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decommissioned_device_loses_its_rights_on_mosquitto_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = MosquittoSetup::new(&dir.path().join("broker"), &dir.path().join("controller"), false);
    let running = setup.start();
    let c = ControllerProcess::start_with(&dir.path().join("controller"), &strs(&setup.controller_args()));
    let port = setup.port;
    decommission_scenario(&c, &Broker { port, mosquitto: Some((setup, running)) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decommission_while_mosquitto_is_down_takes_effect_when_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = MosquittoSetup::new(&dir.path().join("broker"), &dir.path().join("controller"), false);
    let running = setup.start();
    let owned = setup.controller_args();
    let args = strs(&owned);
    let c = ControllerProcess::start_with(&dir.path().join("controller"), &args);
    let token = c.cli_json(&["device", "token", "create", "--uses", "1"])["token"].as_str().expect("token").to_owned();
    let device = TestDevice::enroll(&c, &token).await;
    let broker = Broker { port: setup.port, mosquitto: Some((setup, running)) };
    let tls = broker.tls(&c, &device).await;
    let (setup, running) = broker.mosquitto.expect("mosquitto");

    // Decommissioned while the broker is down, and the controller restarted before it is back:
    // only the reconciliation at the next connect can take the device's rights away.
    running.stop();
    c.cli_json(&["device", "decommission", &device.id]);
    c.stop();
    let _back = setup.start();
    let c = ControllerProcess::start_with(&dir.path().join("controller"), &args);
    until("the reconciliation's revocation", 60, async || access_changes(&c, "revoke", "ok").await >= 1.0).await;
    let (client, mut events) = device.mqtt("127.0.0.1", setup.port, tls.clone());
    assert!(admitted(&mut events).await, "TLS still accepts the certificate");
    assert!(
        !subscribed(&client, &mut events, &topics::desired(P, &device.id)).await,
        "the device kept its rights after the broker came back"
    );
}

async fn decommission_scenario(c: &ControllerProcess, broker: &Broker) {
    let port = broker.port;
    let http = reqwest::Client::new();
    let token = c.cli_json(&["device", "token", "create", "--uses", "3", "--label", "fleet=test"]);
    let secret = token["token"].as_str().expect("token").to_owned();
    let (stolen, kept) = (TestDevice::enroll(c, &secret).await, TestDevice::enroll(c, &secret).await);
    c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    c.cli_json(&["deploy", "iris:1", "--selector", "fleet=test"]);
    let desired = format!("/api/v1/devices/{}/desired", stolen.id);
    let (code, _) = status_of(stolen.request(c, reqwest::Method::GET, &desired).send().await.expect("get")).await;
    assert_eq!(code, 200, "before: the device fetches its document");

    // The device is connected to the broker, following its desired state (on Mosquitto with
    // the certificate it was given, which the thief keeps).
    let (stolen_tls, kept_tls) = (broker.tls(c, &stolen).await, broker.tls(c, &kept).await);
    let (client, mut events) = stolen.mqtt("127.0.0.1", port, stolen_tls.clone());
    assert!(admitted(&mut events).await, "before: the broker lets the device in");
    assert!(subscribed(&client, &mut events, &topics::desired(P, &stolen.id)).await, "before: it may subscribe");

    let shown = c.cli_json(&["device", "decommission", &stolen.id, "--reason", "stolen from site 4"]);
    assert!(shown["decommissioned_at"].as_u64().is_some(), "{shown}");
    assert_eq!(shown["decommission_reason"], "stolen from site 4");
    assert!(shown["desired"].is_null(), "its document is withdrawn: {shown}");

    // At once: the live connection is closed and the broker lets the device do nothing more.
    closed_within(&mut events, 10).await;
    let (again, mut again_events) = stolen.mqtt("127.0.0.1", port, stolen_tls.clone());
    match &broker.mosquitto {
        None => assert!(!admitted(&mut again_events).await, "the broker let a decommissioned device in"),
        Some((setup, _)) => {
            // Its certificate still passes TLS until it expires, but authorizes nothing: no
            // subscription, and its publishes reach nobody. A watcher with the controller's rights
            // sees the kept device's status, published after the stolen one's was acknowledged,
            // and nothing from the stolen device before it.
            let mut watch = MqttOptions::new("test-watcher", "127.0.0.1", port);
            watch.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
                setup.controller_tls(),
            )));
            let (watcher, mut watched) = AsyncClient::new(watch, 16);
            assert!(admitted(&mut watched).await);
            assert!(subscribed(&watcher, &mut watched, &topics::status(P, "+")).await);
            assert!(admitted(&mut again_events).await, "TLS still accepts the certificate");
            assert!(
                !subscribed(&again, &mut again_events, &topics::desired(P, &stolen.id)).await,
                "a decommissioned device may subscribe to its desired state"
            );
            published(&again, again_events, &topics::status(P, &stolen.id), signed_status(&stolen)).await;
            let (k, k_events) = kept.mqtt("127.0.0.1", port, kept_tls.clone());
            let mut k_events = k_events;
            assert!(admitted(&mut k_events).await);
            published(&k, k_events, &topics::status(P, &kept.id), signed_status(&kept)).await;
            let first = loop {
                match tokio::time::timeout(Duration::from_secs(20), watched.poll()).await.expect("a status") {
                    Ok(Event::Incoming(Packet::Publish(p))) => break p.topic,
                    Ok(_) => {}
                    Err(e) => panic!("watcher: {e}"),
                }
            };
            assert_eq!(first, topics::status(P, &kept.id), "the broker forwarded the decommissioned device's status");
            until("the revocation counted", 10, async || access_changes(c, "revoke", "ok").await == 1.0).await;
        }
    }
    // Its key no longer authenticates anything over HTTP.
    let (code, body) = status_of(stolen.request(c, reqwest::Method::GET, &desired).send().await.expect("get")).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("decommissioned"), "{body}");
    let cert = format!("/api/v1/devices/{}/mqtt-certificate", stolen.id);
    let (code, _) = status_of(stolen.request(c, reqwest::Method::POST, &cert).send().await.expect("post")).await;
    assert_eq!(code, 401, "no broker certificate for a decommissioned key");
    // Its key cannot enroll again, even with a valid token.
    let r = http.post(c.url("/api/v1/enroll")).json(&enroll_body(&secret, &stolen)).send().await.expect("enroll");
    let (code, body) = status_of(r).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cannot enroll again"), "{body}");
    // No deployment or rollout reaches it.
    let out = c.cli(ADMIN, &["deploy", "iris:1", "--device", &stolen.id]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("decommissioned"));
    let issued = c.cli_json(&["deploy", "iris:1", "--selector", "fleet=test"]);
    let reached: Vec<&str> =
        issued.as_array().expect("issued").iter().filter_map(|i| i["device_id"].as_str()).collect();
    assert_eq!(reached, vec![kept.id.as_str()], "a selector no longer reaches it");
    // The other device is untouched.
    let kept_desired = format!("/api/v1/devices/{}/desired", kept.id);
    let (code, _) = status_of(kept.request(c, reqwest::Method::GET, &kept_desired).send().await.expect("get")).await;
    assert_eq!(code, 200);
    let (k, mut kept_events) = kept.mqtt("127.0.0.1", port, kept_tls);
    assert!(admitted(&mut kept_events).await);
    assert!(subscribed(&k, &mut kept_events, &topics::desired(P, &kept.id)).await, "the kept device keeps its rights");

    // The census on /metrics counts it (set at each scrape, so a fresh controller has it too).
    let text = reqwest::get(c.url("/metrics")).await.expect("metrics").text().await.expect("text");
    for line in [
        "edgefleet_controller_devices{state=\"decommissioned\"} 1",
        "edgefleet_controller_model_versions 1",
        "edgefleet_controller_rollouts{state=\"running\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
    }

    // Listed only when asked for; audited; a second decommission is a conflict.
    assert_eq!(ids(&c.cli_json(&["device", "list"])), vec![kept.id.clone()]);
    assert_eq!(ids(&c.cli_json(&["device", "list", "--state", "decommissioned"])), vec![stolen.id.clone()]);
    assert!(audited(c, "device.decommission", &stolen.id));
    let out = c.cli(ADMIN, &["device", "decommission", &stolen.id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already decommissioned"));

    // Enrollment tokens: listed without their secret, revoked for good.
    let tokens = c.cli_json(&["device", "token", "list"]);
    let listed = &tokens.as_array().expect("tokens")[0];
    assert_eq!(
        (listed["id"].clone(), listed["devices"].clone(), listed["uses_left"].clone()),
        (token["id"].clone(), 2.into(), 1.into())
    );
    assert!(!tokens.to_string().contains(&secret), "a listing never shows the secret");
    let id = token["id"].to_string();
    c.cli_json(&["device", "token", "revoke", &id]);
    let fresh = TestDevice { id: String::new(), key: edgefleet_shared::keys::FileKey::generate().expect("key") };
    let r = http.post(c.url("/api/v1/enroll")).json(&enroll_body(&secret, &fresh)).send().await.expect("enroll");
    let (code, body) = status_of(r).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
    assert!(c.cli_json(&["device", "token", "list"])[0]["revoked_at"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relabelled_device_moves_between_selectors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(&dir.path().join("controller"));
    let token = c.cli_json(&["device", "token", "create", "--uses", "2", "--label", "site=north"]);
    let secret = token["token"].as_str().expect("token");
    let (a, b) = (TestDevice::enroll(&c, secret).await, TestDevice::enroll(&c, secret).await);
    c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    let both = vec![a.id.clone(), b.id.clone()];
    let mut sorted = both.clone();
    sorted.sort();
    assert_eq!(ids(&c.cli_json(&["device", "list", "--label", "site=north"])), sorted);

    let moved = c.cli_json(&["device", "label", &b.id, "site=south", "rack=7"]);
    assert_eq!(moved["labels"], serde_json::json!({"site": "south", "rack": "7"}), "{moved}");
    assert_eq!(ids(&c.cli_json(&["device", "list", "--label", "site=north"])), vec![a.id.clone()]);
    assert_eq!(ids(&c.cli_json(&["device", "list", "--label", "site=south", "--label", "rack=7"])), vec![b.id.clone()]);
    let issued = |selector: &str| -> Vec<String> {
        let list = c.cli_json(&["deploy", "iris:1", "--selector", selector]);
        list.as_array().expect("issued").iter().map(|i| i["device_id"].as_str().expect("id").to_owned()).collect()
    };
    assert_eq!(issued("site=south"), vec![b.id.clone()], "the deployment follows the new label");
    assert_eq!(issued("site=north"), vec![a.id.clone()]);

    let removed = c.cli_json(&["device", "label", &b.id, "--remove", "rack"]);
    assert_eq!(removed["labels"], serde_json::json!({"site": "south"}));
    assert!(ids(&c.cli_json(&["device", "list", "--label", "rack=7"])).is_empty());
    // Filters by state and by time offline: neither device has reported yet.
    assert!(ids(&c.cli_json(&["device", "list", "--state", "online"])).is_empty());
    assert_eq!(ids(&c.cli_json(&["device", "list", "--state", "offline", "--offline-for", "1m"])).len(), 2);
    assert!(audited(&c, "device.relabel", &b.id));

    // Refusals are clear.
    let bad = c.cli(ADMIN, &["device", "label", &b.id, "bad key=1"]);
    assert_eq!(bad.status.code(), Some(1), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("keys are 1-63"));
    let unknown = c.cli(ADMIN, &["device", "label", "dev-nope", "a=b"]);
    assert_eq!(unknown.status.code(), Some(1));
    let r =
        reqwest::Client::new().get(c.url("/api/v1/devices?state=gone")).bearer_auth(ADMIN).send().await.expect("list");
    let (code, body) = status_of(r).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.starts_with("{\"error\""), "{body}");

    // A reader that goes away mid-output (`| head`) ends the CLI quietly, not in a panic.
    let mut child = Command::new(binary("edgefleet"))
        .args(["--controller", &c.base, "--token", ADMIN, "audit"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read");
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
