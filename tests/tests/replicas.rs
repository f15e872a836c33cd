//! Two controller replicas on one database and artifact store, behind one external broker
//! (Mosquitto with its dynamic-security plugin): status and telemetry reach them through a shared
//! subscription, so each batch is handled by one replica and stored once, and both take a share;
//! background work runs in the replica holding the lease, and when that replica is killed with
//! SIGKILL in the middle of a rollout's wave, the other takes the lease over and finishes the
//! rollout, each wave advanced once. Operators and agents talk to either replica.

mod common;

use std::path::Path;
use std::time::Duration;

use common::controller::{ControllerProcess, LEADS, kill_leader_mid_rollout};
use common::device::TestDevice;
use common::mosquitto::MosquittoSetup;
use common::telemetry::iris_batch;
use common::{metric, strs, testdata, until};
use rumqttc::{Event, Packet, QoS};

const DEVICES: u64 = 4;
const BATCHES: u64 = 100;

/// (batches, distinct (device, sequence) pairs, samples) in the shared database, read-only.
fn stored(data: &Path) -> (u64, u64, u64) {
    let open =
        rusqlite::Connection::open_with_flags(data.join("controller.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY);
    let Ok(conn) = open else { return (0, 0, 0) };
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM telemetry_batches),
                (SELECT COUNT(*) FROM (SELECT DISTINCT device_id, sequence FROM telemetry_batches)),
                (SELECT COUNT(*) FROM telemetry_samples)",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
    )
    .unwrap_or((0, 0, 0))
}

async fn accepted(c: &ControllerProcess) -> f64 {
    let text = reqwest::get(c.url("/metrics")).await.expect("metrics").text().await.expect("text");
    metric(&text, "edgefleet_controller_telemetry_batches_total{result=\"accepted\"}").unwrap_or(0.0)
}

/// Publishes `BATCHES` telemetry batches of a new device through Mosquitto, QoS 1.
async fn publish(c: &ControllerProcess, setup: &MosquittoSetup, token: &str) -> tokio::task::JoinHandle<()> {
    let device = TestDevice::enroll(c, token).await;
    let (client, mut events) = setup.device_client(c, &device).await;
    let frames: Vec<Vec<u8>> = (1..=BATCHES).map(|seq| iris_batch(&device.id, seq, 1).encode(&device.key)).collect();
    let topic = format!("edgefleet/v1/devices/{}/telemetry", device.id);
    tokio::spawn(async move {
        let mut acked = 0;
        let sender = tokio::spawn(async move {
            for frame in frames {
                client.publish(topic.clone(), QoS::AtLeastOnce, false, frame).await.expect("publish");
            }
            client
        });
        while acked < BATCHES {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        drop(sender.await);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_split_telemetry_and_one_finishes_the_rollout_of_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("controller");
    let setup = MosquittoSetup::new(&dir.path().join("mq"), &data, false);
    let _mosquitto = setup.start();
    let args = |name: &str| {
        setup.controller_args_with(
            &dir.path().join(format!("{name}.toml")),
            &format!("client_id = \"replica-{name}\"\nshared_group = \"edgefleet\"\n"),
            &format!("[server]\nreplica_id = \"{name}\"\nlease_secs = 3\n"),
        )
    };
    let a = ControllerProcess::start_with(&data, &strs(&args("a")));
    until("replica a holds the lease", 30, async || a.stderr.try_iter().any(|l| l.contains(LEADS))).await;
    let mut b = ControllerProcess::start_with(&data, &strs(&args("b")));
    b.agent_extra = setup.agent_args();

    // Telemetry through the shared subscription: every batch stored once, both replicas busy.
    let token = a.cli_json(&["device", "token", "create", "--uses", "10"])["token"].as_str().expect("token").to_owned();
    let mut publishers = Vec::new();
    for _ in 0..DEVICES {
        publishers.push(publish(&a, &setup, &token).await);
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    let total = DEVICES * BATCHES;
    until("every batch stored", 60, async || stored(&data).0 == total).await;
    assert_eq!(stored(&data), (total, total, total), "each batch once, with its one sample");
    let (by_a, by_b) = (accepted(&a).await, accepted(&b).await);
    eprintln!("batches stored by replica a: {by_a}, by replica b: {by_b}");
    assert_eq!(by_a + by_b, total as f64, "each batch handled by one replica");
    assert!(by_a > 0.0 && by_b > 0.0, "both replicas took a share: {by_a} + {by_b}");

    // A rollout in three waves to three agents (talking to b), started through a, the lease
    // holder; a is killed with SIGKILL while the first wave bakes, and b finishes the rollout.
    a.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    let mut agents = Vec::new();
    for name in ["r1", "r2", "r3"] {
        agents.push(b.enroll_agent(dir.path(), name, &["fleet=r"], &[]).await.0);
    }
    let created =
        a.cli_json(&["rollout", "create", "iris:1", "--selector", "fleet=r", "--waves", "34,67,100", "--bake", "4s"]);
    let id = created["id"].to_string();
    let took = kill_leader_mid_rollout(a, &b, &id).await;
    eprintln!("the rollout completed {took:.1} s after its owner was killed");
    for agent in &agents {
        agent.wait_serving("iris", "1").await;
    }
    let log: Vec<String> = b.stderr.try_iter().collect();
    assert!(log.iter().any(|l| l.contains(LEADS)), "{}", log.join("\n"));
    let audit = b.cli_json(&["audit", "--limit", "500"]);
    let advanced = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|r| r["action"] == "rollout.advance" && r["target"].as_str() == Some(id.as_str()))
        .count();
    assert_eq!(advanced, 2, "waves two and three, each advanced once: {audit}");
}
