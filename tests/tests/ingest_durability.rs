//! Group commit keeps ingest durable: a controller killed with SIGKILL while it ingests a stream
//! of QoS 1 telemetry from Mosquitto (persistent sessions, as in production) loses no batch.
//! The controller acknowledges a batch to the broker only after the transaction holding it
//! committed, so after a restart every published batch is stored exactly once: the broker
//! redelivers what was not acknowledged, and what was stored but not yet acknowledged comes
//! back as a duplicate and is refused.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::controller::ControllerProcess;
use common::device::TestDevice;
use common::mosquitto::MosquittoSetup;
use common::telemetry::iris_batch;
use common::{strs, until};
use rumqttc::{Event, Packet, QoS};

/// Batches published (Mosquitto queues up to 1,000 per offline session by default).
const BATCHES: u64 = 800;
/// Sampled rows per batch.
const SAMPLES: usize = 10;

/// (batches, samples, distinct sequences) stored, read-only.
fn stored(data: &Path) -> (u64, u64, u64) {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(data.join("controller.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return (0, 0, 0);
    };
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM telemetry_batches), (SELECT COUNT(*) FROM telemetry_samples),
                (SELECT COUNT(DISTINCT batch_sequence) FROM telemetry_samples)",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
    )
    .unwrap_or((0, 0, 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_during_ingest_loses_no_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("controller");
    let setup = MosquittoSetup::new(&dir.path().join("mq"), &data, true);
    let _mosquitto = setup.start();
    let args = setup.controller_args();
    let c = ControllerProcess::start_with(&data, &strs(&args));
    let token = c.cli_json(&["device", "token", "create"])["token"].as_str().expect("token").to_owned();
    let device = TestDevice::enroll(&c, &token).await;
    let (client, mut events) = setup.device_client(&c, &device).await;
    let acked = Arc::new(AtomicU64::new(0));
    let counter = acked.clone();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let frames: Vec<Vec<u8>> =
        (1..=BATCHES).map(|seq| iris_batch(&device.id, seq, SAMPLES).encode(&device.key)).collect();
    let topic = format!("edgefleet/v1/devices/{}/telemetry", device.id);
    let publisher = tokio::spawn(async move {
        for frame in frames {
            client.publish(topic.clone(), QoS::AtLeastOnce, false, frame).await.expect("publish");
        }
        client
    });

    // Kill -9 once ingest is under way.
    until("ingest under way", 60, async || stored(&data).0 >= 40).await;
    let mut c = c;
    c.child.kill().expect("kill -9");
    let _ = c.child.wait();
    let at_kill = stored(&data);
    eprintln!("stored when killed: {at_kill:?} of {BATCHES} batches");
    assert!(at_kill.0 < BATCHES, "the kill came after the whole stream was stored: {at_kill:?}");
    let _client = publisher.await.expect("publisher");
    until("every batch reached the broker", 60, async || acked.load(Ordering::Relaxed) == BATCHES).await;
    drop(c);

    // A restart: the broker redelivers; every batch is stored, each once.
    let c = ControllerProcess::start_with(&data, &strs(&args));
    until("every batch stored after the restart", 120, async || stored(&data).0 == BATCHES).await;
    let (batches, samples, sequences) = stored(&data);
    assert_eq!((batches, samples, sequences), (BATCHES, BATCHES * SAMPLES as u64, BATCHES));
    drop(c);
}
