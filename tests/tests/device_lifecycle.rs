//! The device lifecycle after enrollment, on the real controller and its embedded broker: a
//! decommissioned (stolen) device loses its documents, its live broker connection, its broker
//! login and its enrollment at once; a relabelled device moves between selectors; enrollment
//! tokens are listed and revoked; `device list` filters.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::controller::{ADMIN, ControllerProcess};
use common::device::TestDevice;
use common::{binary, testdata};
use edgefleet_shared::fleet::topics;
use edgefleet_shared::keys::Signer as _;
use rumqttc::{Event, EventLoop, Packet, QoS};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decommissioned_device_loses_documents_broker_and_enrollment_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let c =
        ControllerProcess::start_with(&dir.path().join("controller"), &["--mqtt-listen", &format!("127.0.0.1:{port}")]);
    let http = reqwest::Client::new();
    let token = c.cli_json(&["device", "token", "create", "--uses", "3", "--label", "fleet=test"]);
    let secret = token["token"].as_str().expect("token").to_owned();
    let (stolen, kept) = (TestDevice::enroll(&c, &secret).await, TestDevice::enroll(&c, &secret).await);
    c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    c.cli_json(&["deploy", "iris:1", "--selector", "fleet=test"]);
    let desired = format!("/api/v1/devices/{}/desired", stolen.id);
    let (code, _) = status_of(stolen.request(&c, reqwest::Method::GET, &desired).send().await.expect("get")).await;
    assert_eq!(code, 200, "before: the device fetches its document");

    // The device is connected to the broker, following its desired state.
    let (client, mut events) = stolen.mqtt("127.0.0.1", port, None);
    assert!(admitted(&mut events).await, "before: the broker lets the device in");
    client.subscribe(topics::desired(P, &stolen.id), QoS::AtLeastOnce).await.expect("subscribe");

    let shown = c.cli_json(&["device", "decommission", &stolen.id, "--reason", "stolen from site 4"]);
    assert!(shown["decommissioned_at"].as_u64().is_some(), "{shown}");
    assert_eq!(shown["decommission_reason"], "stolen from site 4");
    assert!(shown["desired"].is_null(), "its document is withdrawn: {shown}");

    // At once: the live connection is closed, a new login refused.
    closed_within(&mut events, 10).await;
    let (_again, mut again) = stolen.mqtt("127.0.0.1", port, None);
    assert!(!admitted(&mut again).await, "the broker let a decommissioned device in");
    // Its key no longer authenticates anything over HTTP.
    let (code, body) = status_of(stolen.request(&c, reqwest::Method::GET, &desired).send().await.expect("get")).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("decommissioned"), "{body}");
    let cert = format!("/api/v1/devices/{}/mqtt-certificate", stolen.id);
    let (code, _) = status_of(stolen.request(&c, reqwest::Method::POST, &cert).send().await.expect("post")).await;
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
    let (code, _) = status_of(kept.request(&c, reqwest::Method::GET, &kept_desired).send().await.expect("get")).await;
    assert_eq!(code, 200);
    let (_k, mut kept_events) = kept.mqtt("127.0.0.1", port, None);
    assert!(admitted(&mut kept_events).await);

    // Listed only when asked for; audited; a second decommission is a conflict.
    assert_eq!(ids(&c.cli_json(&["device", "list"])), vec![kept.id.clone()]);
    assert_eq!(ids(&c.cli_json(&["device", "list", "--state", "decommissioned"])), vec![stolen.id.clone()]);
    assert!(audited(&c, "device.decommission", &stolen.id));
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
