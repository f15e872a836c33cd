//! Telemetry ingest rate (BENCHMARKS.md §7): signed, compressed batches verified, de-duplicated
//! and stored into a real SQLite database (WAL, synchronous=FULL), one transaction per batch,
//! as the controller's MQTT task does.
//!
//! Run: `cargo bench -p edgefleet-controller --bench ingest`. Prints batches/s and samples/s for
//! batches of 10, 100 and 1,000 sampled iris rows.
#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a benchmark binary reports on stdout")]

use std::time::Instant;

use edgefleet_controller::config::{RetrainConfig, TelemetryConfig};
use edgefleet_controller::db::Db;
use edgefleet_controller::telemetry::Telemetry;
use edgefleet_shared::keys::{FileKey, Signer as _};
use edgefleet_shared::telemetry::{FeatureCounts, ModelTelemetry, Sample, TELEMETRY_KIND, TelemetryBatch};

fn batch(device: &str, sequence: u64, samples: usize, now: u64) -> TelemetryBatch {
    let sample = |i: usize| Sample {
        request_id: Some(format!("req-{sequence}-{i}")),
        at_ms: now * 1000 + i as u64,
        inputs: vec![5.1 + (i % 7) as f32 * 0.1, 3.5, 1.4 + (i % 5) as f32 * 0.2, 0.2],
        outputs: vec![0.97, 0.02, 0.01],
        predicted: Some(0),
        low_confidence: false,
    };
    TelemetryBatch {
        kind: TELEMETRY_KIND.into(),
        device: device.into(),
        sequence,
        start: now - 60,
        end: now,
        models: vec![ModelTelemetry {
            model: "iris".into(),
            version: 1,
            rows: samples as u64 * 100,
            features: (0..4).map(|_| FeatureCounts { counts: vec![10; 10], missing: 0 }).collect(),
            output_classes: vec![40, 30, 30],
            samples: (0..samples).map(sample).collect(),
            feedback: Vec::new(),
            labeled: 0,
            correct: 0,
        }],
        samples_capped: 0,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("controller.db")).unwrap();
    let key = FileKey::from_seed([3; 32]);
    let device = edgefleet_shared::fleet::device_id(&key.public_key());
    let (id, pk) = (device.clone(), key.public_key().to_base64());
    db.call_blocking(move |conn| {
        conn.execute(
            "INSERT INTO devices (id, public_key, labels, enrolled_at) VALUES (?1, ?2, '{}', 0)",
            rusqlite::params![id, pk],
        )
    })
    .unwrap();
    let telemetry = Telemetry::new(
        db,
        TelemetryConfig::default(),
        RetrainConfig::default(),
        dir.path().join("snapshots"),
        reqwest::Client::new(),
        edgefleet_shared::clock::system(),
    );
    let now = edgefleet_shared::clock::unix_secs();
    let mut sequence = 0;
    for (samples, batches) in [(10usize, 2000usize), (100, 500), (1000, 60)] {
        let batches = if quick { batches / 10 } else { batches };
        let frames: Vec<Vec<u8>> = (0..batches)
            .map(|_| {
                sequence += 1;
                batch(&device, sequence, samples, now).encode(&key)
            })
            .collect();
        let bytes: usize = frames.iter().map(Vec::len).sum();
        let started = Instant::now();
        for frame in frames {
            telemetry.ingest(device.clone(), frame).await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "ingest samples_per_batch={samples:<5} batches={batches:<5} frame_bytes_avg={:<6} batches_per_s={:>8.0} samples_per_s={:>9.0}",
            bytes / batches,
            batches as f64 / secs,
            (batches * samples) as f64 / secs
        );
    }
}
