//! The broker authenticates every client and authorizes every topic, on the embedded broker
//! (its gate) and on Mosquitto set up by `edgefleet-controller mosquitto-config`: an anonymous
//! client is refused; device A cannot subscribe to B's telemetry or desired state, cannot publish
//! on B's status or telemetry, cannot publish any desired state; and nothing A does marks B
//! offline, while B's own (signed) last will does.

mod common;

use std::time::Duration;

use common::controller::ControllerProcess;
use common::device::TestDevice;
use common::mosquitto::{Broker, MosquittoSetup};
use common::{strs, testdata, until};
use edgefleet_shared::fleet::{DeviceStatus, OFFLINE_KIND, OfflineNotice, topics};
use edgefleet_shared::signature::SignedEnvelope;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode};

const P: &str = edgefleet_shared::fleet::DEFAULT_TOPIC_PREFIX;

/// Polls until the connection is acknowledged; panics on a refusal.
async fn connected(events: &mut EventLoop) {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.poll()).await.expect("no CONNACK in time") {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return,
            Ok(_) => {}
            Err(e) => panic!("connection refused: {e}"),
        }
    }
}

/// Whether the broker refuses the connection (an error before any CONNACK that lets it in).
async fn refused(events: &mut EventLoop) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.poll()).await.expect("no answer in time") {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == rumqttc::ConnectReturnCode::Success => {
                panic!("the broker let the client in")
            }
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
}

/// Subscribes and reports whether the broker granted it (a failure code or a closed
/// connection is a refusal); messages that arrive meanwhile are returned too.
async fn subscribe(client: &AsyncClient, events: &mut EventLoop, topic: &str) -> (bool, Vec<String>) {
    client.subscribe(topic, QoS::AtLeastOnce).await.expect("queue subscribe");
    let mut delivered = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.poll()).await.expect("no SUBACK in time") {
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                return (ack.return_codes.iter().all(|c| !matches!(c, SubscribeReasonCode::Failure)), delivered);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => delivered.push(p.topic),
            Ok(_) => {}
            Err(_) => return (false, delivered),
        }
    }
}

fn signed_status(device: &TestDevice, uptime: u64) -> Vec<u8> {
    let status = DeviceStatus { agent_version: "test".into(), uptime_secs: uptime, ..DeviceStatus::default() };
    let env = SignedEnvelope::sign(&serde_json::to_vec(&status).expect("json"), &device.key);
    serde_json::to_vec(&env).expect("json")
}

fn offline_notice(signer: &TestDevice, naming: &str) -> Vec<u8> {
    let notice = OfflineNotice { kind: OFFLINE_KIND.into(), device: naming.into(), connected_at: 1 };
    let env = SignedEnvelope::sign(&serde_json::to_vec(&notice).expect("json"), &signer.key);
    serde_json::to_vec(&env).expect("json")
}

async fn counter(c: &ControllerProcess, name: &str) -> f64 {
    let text = reqwest::get(c.url("/metrics")).await.expect("metrics").text().await.expect("text");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn online(c: &ControllerProcess, id: &str) -> bool {
    c.cli_json(&["device", "show", id])["online"] == true
}

/// Drives a connection until `acks` publishes were acknowledged or it ends.
async fn drive(mut events: EventLoop, acks: usize) {
    let mut seen = 0;
    while seen < acks {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => seen += 1,
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// The document sequence in a retained desired-state payload, if it is a signed envelope.
fn sequence(payload: &[u8]) -> Option<u64> {
    let env: SignedEnvelope = serde_json::from_slice(payload).ok()?;
    let doc: serde_json::Value = serde_json::from_slice(&env.document_bytes()?).ok()?;
    doc["sequence"].as_u64()
}

async fn scenario(c: &ControllerProcess, broker: &Broker) {
    let host = "127.0.0.1";
    let token = c.cli_json(&["device", "token", "create", "--uses", "2"])["token"].as_str().expect("token").to_owned();
    let (a, b) = (TestDevice::enroll(c, &token).await, TestDevice::enroll(c, &token).await);
    c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);

    // An anonymous client is refused.
    let mut options = MqttOptions::new("anonymous", host, broker.port);
    if let Some(tls) = broker.tls_anonymous() {
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
    }
    let (_anon, mut anon_events) = AsyncClient::new(options, 4);
    eprintln!("anonymous: {}", refused(&mut anon_events).await);

    // B is online, reports status and follows its desired state.
    let (b_client, mut b_events) = b.mqtt(host, broker.port, broker.tls(c, &b).await);
    connected(&mut b_events).await;
    let (granted, _) = subscribe(&b_client, &mut b_events, &topics::desired(P, &b.id)).await;
    assert!(granted, "B may subscribe to its own desired state");
    let (to_test, mut b_received) = tokio::sync::mpsc::unbounded_channel();
    let b_task = tokio::spawn(async move {
        while let Ok(e) = b_events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e {
                let _ = to_test.send(p.payload.to_vec());
            }
        }
    });
    b_client.publish(topics::status(P, &b.id), QoS::AtMostOnce, false, signed_status(&b, 1)).await.expect("status");
    until("B online", 30, async || online(c, &b.id)).await;
    c.cli_json(&["deploy", "iris:1", "--device", &b.id]);
    let first =
        tokio::time::timeout(Duration::from_secs(20), b_received.recv()).await.expect("B's document").expect("open");
    assert_eq!(sequence(&first), Some(1));
    let a_tls = broker.tls(c, &a).await;

    // A cannot subscribe to B's telemetry or desired state: the gate refuses the subscription
    // and closes the connection; Mosquitto's plugin refuses it and the connection goes on. A
    // receives nothing: on Mosquitto, B publishes telemetry and B's document is retained, then a
    // document for A itself is the barrier (delivered after anything sent before it).
    for topic in [topics::telemetry(P, &b.id), topics::desired(P, &b.id), format!("{P}/devices/+/telemetry")] {
        let (client, mut events) = a.mqtt(host, broker.port, a_tls.clone());
        connected(&mut events).await;
        let (granted, mut delivered) = subscribe(&client, &mut events, &topic).await;
        assert!(!granted, "the broker let A subscribe to {topic}");
        if broker.mosquitto.is_some() {
            let (own, more) = subscribe(&client, &mut events, &topics::desired(P, &a.id)).await;
            assert!(own, "A may subscribe to its own desired state");
            delivered.extend(more);
            b_client
                .publish(topics::telemetry(P, &b.id), QoS::AtLeastOnce, false, b"EFT1 from B".to_vec())
                .await
                .expect("B publishes");
            c.cli_json(&["deploy", "iris:1", "--device", &a.id]);
            loop {
                match tokio::time::timeout(Duration::from_secs(20), events.poll()).await.expect("A's own document") {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics::desired(P, &a.id) => break,
                    Ok(Event::Incoming(Packet::Publish(p))) => delivered.push(p.topic),
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(delivered.is_empty(), "A received {delivered:?} through {topic}");
    }

    // A cannot publish on B's status or telemetry, nor any desired state or trust; none of it
    // reaches the controller or B (on Mosquitto the publish is dropped; the gate closes the
    // connection). A's own status, published after it on the same connection, shows the broker
    // handled everything A sent before.
    let rejected_before = counter(c, "edgefleet_controller_status_rejected_total").await;
    let reports_before = counter(c, "edgefleet_controller_status_reports_total").await;
    let forbidden = [
        (topics::status(P, &b.id), b"offline".to_vec(), false),
        (topics::status(P, &b.id), offline_notice(&a, &b.id), false),
        (topics::status(P, &b.id), signed_status(&a, 99), false),
        (topics::telemetry(P, &b.id), b"EFT1 forged".to_vec(), false),
        (topics::desired(P, &b.id), b"{\"forged\": true}".to_vec(), true),
        (topics::trust(P), b"{\"rotations\": []}".to_vec(), true),
    ];
    let attempts = forbidden.len() as f64;
    for (topic, payload, retain) in forbidden {
        let (client, mut events) = a.mqtt(host, broker.port, a_tls.clone());
        connected(&mut events).await;
        client.publish(&topic, QoS::AtLeastOnce, retain, payload).await.expect("queue");
        client.publish(topics::status(P, &a.id), QoS::AtLeastOnce, false, signed_status(&a, 7)).await.expect("queue");
        drive(events, 2).await;
    }
    if broker.mosquitto.is_some() {
        until("A's own statuses", 30, async || {
            counter(c, "edgefleet_controller_status_reports_total").await - reports_before >= attempts
        })
        .await;
    } else {
        let reports = counter(c, "edgefleet_controller_status_reports_total").await - reports_before;
        assert_eq!(reports, 0.0, "the gate closed each connection at the forbidden publish");
        let denied = counter(c, "edgefleet_controller_broker_denied_total").await;
        assert!(denied >= 3.0 + attempts, "denials counted: {denied}");
    }
    assert_eq!(
        counter(c, "edgefleet_controller_status_rejected_total").await,
        rejected_before,
        "a forbidden publish reached the controller"
    );
    assert!(online(c, &b.id), "B was marked offline on A's word");
    // A newer document for B: everything B received before it is the controller's.
    c.cli_json(&["deploy", "iris:1", "--device", &b.id]);
    loop {
        let got = tokio::time::timeout(Duration::from_secs(20), b_received.recv()).await.expect("B's next document");
        let payload = got.expect("open");
        let seq =
            sequence(&payload).unwrap_or_else(|| panic!("B received a forgery: {}", String::from_utf8_lossy(&payload)));
        if seq == 2 {
            break;
        }
    }

    // A's own topic with a notice naming B is refused by the controller; B stays online.
    let (client, events) = a.mqtt(host, broker.port, a_tls.clone());
    client.publish(topics::status(P, &a.id), QoS::AtLeastOnce, false, offline_notice(&a, &b.id)).await.expect("queue");
    drive(events, 1).await;
    until("the foreign notice refused", 30, async || {
        counter(c, "edgefleet_controller_status_rejected_total").await > rejected_before
    })
    .await;
    assert!(online(c, &b.id), "B was marked offline by A's notice");

    // A with a last will on B's status topic: refused at connect by the gate; on Mosquitto the
    // will is not A's to publish. The connection then drops without a DISCONNECT.
    let mut options = a.mqtt_options(host, broker.port, a_tls.clone());
    options.set_last_will(LastWill::new(topics::status(P, &b.id), offline_notice(&a, &b.id), QoS::AtLeastOnce, false));
    let (will_client, mut will_events) = AsyncClient::new(options, 4);
    if broker.mosquitto.is_some() {
        connected(&mut will_events).await;
        // A status after the will's chance to fire: the controller has seen whatever it sent.
        let (client, events) = a.mqtt(host, broker.port, a_tls.clone());
        drop((will_client, will_events));
        let reports = counter(c, "edgefleet_controller_status_reports_total").await;
        client.publish(topics::status(P, &a.id), QoS::AtLeastOnce, false, signed_status(&a, 8)).await.expect("queue");
        drive(events, 1).await;
        until("A's status", 30, async || counter(c, "edgefleet_controller_status_reports_total").await > reports).await;
    } else {
        eprintln!("foreign will: {}", refused(&mut will_events).await);
    }
    assert!(online(c, &b.id), "B was marked offline by a will on A's connection");

    // B's own will, signed by B, does mark it offline: the mechanism works at all.
    b_task.abort();
    drop(b_client);
    until("B offline by its own will", 60, async || !online(c, &b.id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_the_embedded_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let c =
        ControllerProcess::start_with(&dir.path().join("controller"), &["--mqtt-listen", &format!("127.0.0.1:{port}")]);
    scenario(&c, &Broker { port, mosquitto: None }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_mosquitto() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = MosquittoSetup::new(&dir.path().join("broker"), &dir.path().join("controller"), false);
    let running = setup.start();
    let c = ControllerProcess::start_with(&dir.path().join("controller"), &strs(&setup.controller_args()));
    let port = setup.port;
    scenario(&c, &Broker { port, mosquitto: Some((setup, running)) }).await;
}
