//! A device cannot speak for another. The broker lets a device publish only on its own topics
//! (see `broker_acl.rs`); on its own telemetry topic, frames signed by another device's key,
//! naming another device, replayed, or malformed are refused and counted by the controller; a
//! frame signed by the device itself is stored once. Clients that are not enrolled devices do
//! not get onto the broker at all.

mod common;

use std::net::TcpListener;

use common::controller::ControllerProcess;
use common::device::TestDevice;
use common::telemetry::{agent_config, fleet};
use common::{metric, until};
use edgefleet_shared::keys::FileKey;
use edgefleet_shared::telemetry::{ModelTelemetry, TelemetryBatch};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn batch(device: &str, sequence: u64) -> TelemetryBatch {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let iris =
        ModelTelemetry { model: "iris".into(), version: 1, rows: 5, output_classes: vec![5], ..Default::default() };
    TelemetryBatch::new(device, sequence, (now - 1, now), vec![iris])
}

async fn refused(http: &reqwest::Client, c: &ControllerProcess, class: &str) -> f64 {
    let text = http.get(c.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    metric(&text, &format!("edgefleet_controller_telemetry_batches_total{{result=\"{class}\"}}")).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_malformed_batches_are_refused_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    let c = ControllerProcess::start_with(&dir.path().join("controller"), &["--mqtt-listen", &listen]);
    let http = reqwest::Client::new();
    let conf = agent_config(dir.path(), 1 << 20);
    let mut agents = fleet(&c, dir.path(), &[conf.clone(), conf], &http).await;
    let key_b = FileKey::load(&agents[1].1.join("device.key")).expect("key B");
    let id_b = edgefleet_shared::fleet::device_id(&edgefleet_shared::keys::Signer::public_key(&key_b));
    // Device A is compromised: its agent is gone and an attacker holds its key (and so its
    // broker login).
    let (agent_a, data_a) = agents.remove(0);
    drop(agent_a);
    let a = TestDevice::from_agent_dir(&data_a);
    let (key_a, id_a) = (&a.key, a.id.clone());

    // Someone without an enrolled key does not get onto the broker.
    let mut stranger = MqttOptions::new("not-enrolled", "127.0.0.1", port);
    stranger.set_credentials("not-enrolled", "v1.0.AAAA");
    let (_s, mut stranger_events) = AsyncClient::new(stranger, 4);
    let refused_at_connect = loop {
        match stranger_events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => panic!("an unknown client was let in: {ack:?}"),
            Ok(_) => continue,
            Err(e) => break e.to_string(),
        }
    };
    assert!(refused_at_connect.contains("BadUserNamePassword"), "{refused_at_connect}");

    let (client, mut events) = a.mqtt("127.0.0.1", port, None);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let topic = |device: &str| format!("edgefleet/v1/devices/{device}/telemetry");
    let publish = async |device: &str, frame: Vec<u8>| {
        client.publish(topic(device), QoS::AtLeastOnce, false, frame).await.expect("publish");
    };

    // B signs a batch naming A, on A's topic: the signature does not verify with A's key.
    publish(&id_a, batch(&id_a, 1_000_000).encode(&key_b)).await;
    until("forged batch refused", 30, async || refused(&http, &c, "signature").await >= 1.0).await;
    // A signs a batch naming B, on A's topic: A cannot speak for B.
    publish(&id_a, batch(&id_b, 1_000_001).encode(key_a)).await;
    until("wrong-device batch refused", 30, async || refused(&http, &c, "wrong_device").await >= 1.0).await;
    // Garbage.
    publish(&id_a, b"EFT1 not a frame".to_vec()).await;
    until("malformed batch refused", 30, async || refused(&http, &c, "malformed").await >= 1.0).await;

    // A's own batch is stored; the same frame again is a replay.
    let own = batch(&id_a, 2_000_000).encode(key_a);
    let accepted_before = refused(&http, &c, "accepted").await;
    publish(&id_a, own.clone()).await;
    until("own batch accepted", 30, async || refused(&http, &c, "accepted").await >= accepted_before + 1.0).await;
    publish(&id_a, own).await;
    until("replay refused", 30, async || refused(&http, &c, "duplicate").await >= 1.0).await;
    // The controller handles its messages in order: both copies are handled by now.
    let report = c.cli_json(&["drift", "report", "iris:1", "--window", "1h"]);
    assert_eq!(report["output"]["current_counts"][0].as_u64(), Some(5), "the accepted batch counted once: {report}");
}
