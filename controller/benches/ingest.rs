//! Telemetry ingest rate (BENCHMARKS.md §7): signed, compressed batches verified, de-duplicated
//! and stored into a real SQLite database (WAL, synchronous=FULL) by `Telemetry::ingest_many`,
//! one transaction (one fsync) per group, as the controller's MQTT worker does with the
//! messages waiting in its queue.
//!
//! Run: `cargo bench -p edgefleet-controller --bench ingest`. Prints batches/s and samples/s for
//! batches of 10, 100 and 1,000 sampled iris rows, one at a time and in groups of 16 and 256
//! (`-- --only SAMPLES,GROUP` runs one of them).
#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a benchmark binary reports on stdout")]

use std::time::Instant;

use edgefleet_controller::config::{RetrainConfig, TelemetryConfig};
use edgefleet_controller::db::Db;
use edgefleet_controller::telemetry::Telemetry;
use edgefleet_shared::keys::{FileKey, Signer as _};
use edgefleet_shared::telemetry::{FeatureCounts, ModelTelemetry, Sample, TelemetryBatch};

fn batch(device: &str, sequence: u64, samples: usize, now: u64) -> TelemetryBatch {
    let sample = |i: usize| Sample {
        request_id: Some(format!("req-{sequence}-{i}")),
        at_ms: now * 1000 + i as u64,
        inputs: vec![5.1 + (i % 7) as f32 * 0.1, 3.5, 1.4 + (i % 5) as f32 * 0.2, 0.2],
        outputs: vec![0.97, 0.02, 0.01],
        predicted: Some(0),
        low_confidence: false,
    };
    let iris = ModelTelemetry {
        model: "iris".into(),
        version: 1,
        rows: samples as u64 * 100,
        features: (0..4).map(|_| FeatureCounts { counts: vec![10; 10], missing: 0 }).collect(),
        output_classes: vec![40, 30, 30],
        samples: (0..samples).map(sample).collect(),
        ..Default::default()
    };
    TelemetryBatch::new(device, sequence, (now - 60, now), vec![iris])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only SAMPLES,GROUP` runs one configuration (e.g. under `perf record`).
    let only: Option<(usize, usize)> = args.iter().position(|a| a == "--only").and_then(|i| {
        let (s, g) = args.get(i + 1)?.split_once(',')?;
        Some((s.parse().ok()?, g.parse().ok()?))
    });
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("controller.db")).unwrap();
    let key = FileKey::from_seed([3; 32]);
    let device = edgefleet_shared::fleet::device_id(&key.public_key());
    let (id, pk) = (device.clone(), key.public_key().to_base64());
    db.call_blocking(move |conn| {
        conn.execute(
            "INSERT INTO devices (id, public_key, labels, enrolled_at) VALUES (?1, ?2, '{}', 0)",
            edgefleet_controller::sql::params![id, pk],
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
    for (samples, batches) in [(10usize, 4096usize), (100, 1024), (1000, 128)] {
        let batches = if quick { batches / 8 } else { batches };
        // One frame at a time (the old path), and groups as the MQTT worker forms them from its
        // queue under load.
        for group in [1usize, 16, 256] {
            if only.is_some_and(|o| o != (samples, group)) {
                continue;
            }
            let frames: Vec<(String, Vec<u8>)> = (0..batches)
                .map(|_| {
                    sequence += 1;
                    (device.clone(), batch(&device, sequence, samples, now).encode(&key))
                })
                .collect();
            let bytes: usize = frames.iter().map(|(_, f)| f.len()).sum();
            let started = Instant::now();
            let mut frames = frames.into_iter().peekable();
            while frames.peek().is_some() {
                let chunk: Vec<_> = frames.by_ref().take(group).collect();
                for result in telemetry.ingest_many(chunk).await {
                    result.unwrap();
                }
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "ingest samples_per_batch={samples:<5} group={group:<4} batches={batches:<5} frame_bytes_avg={:<6} batches_per_s={:>8.0} samples_per_s={:>9.0}",
                bytes / batches,
                batches as f64 / secs,
                (batches * samples) as f64 / secs
            );
        }
    }
}
