//! Ingest: signed frames from `PREFIX/devices/{id}/telemetry`, stored by group commit.
//!
//! Each frame is checked against the key the device enrolled with and must name that device (a
//! group's signatures are checked together by Ed25519 batch verification, one by one only when
//! the batch fails);
//! `(device, sequence)` is recorded in the same transaction as the data, so a batch the broker
//! delivers twice (QoS 1) or an attacker replays is stored once and refused after. Batches
//! pruned by retention leave a per-device floor below which every sequence is refused.
//!
//! The MQTT worker hands over every frame waiting in its queue at once ([`Telemetry::ingest_many`]):
//! one transaction for all of them — each frame in its own savepoint, so a refused one leaves the
//! others — with the window histograms merged in memory and written once per window, and one
//! commit (one fsync) before any of them is acknowledged to the broker.

use std::collections::{BTreeMap, HashMap};

use crate::sql::{Connection, OptionalExtension as _, params};
use edgefleet_shared::keys::PublicKey;
use edgefleet_shared::telemetry::{FrameError, ModelTelemetry, TelemetryBatch};

use super::window::{WindowCounts, merge, window_start};
use super::{Refusal, Telemetry, TelemetryError};

/// What became of an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// The batch's sequence.
    pub sequence: u64,
    /// Sampled rows stored.
    pub samples: u64,
    /// Rows counted in histograms.
    pub rows: u64,
}

fn refused(class: Refusal, message: impl Into<String>) -> TelemetryError {
    TelemetryError::Refused { class, message: message.into() }
}

/// (model, version, device group, window start): one row of `telemetry_windows`.
type WindowKey = (String, i64, String, i64);

/// What one group's transaction keeps between its frames.
struct Group {
    /// Enrolled devices seen so far: their key and device group, or why they are refused.
    devices: HashMap<String, Result<(PublicKey, String), String>>,
    /// Each device's replay floor (the highest pruned sequence), as read once per group.
    floors: HashMap<String, Option<i64>>,
    /// The windows the group touched, with their counts so far (written at the end).
    windows: BTreeMap<WindowKey, WindowCounts>,
    group_label: String,
    received: u64,
    retention: u64,
    window: u64,
}

impl Telemetry {
    /// Verifies and stores one frame from `device` (a group of one).
    pub async fn ingest(&self, device: String, frame: Vec<u8>) -> Result<Ingested, TelemetryError> {
        let mut results = self.ingest_many(vec![(device, frame)]).await;
        results.pop().unwrap_or_else(|| Err(TelemetryError::Commit("no result".into())))
    }

    /// Verifies and stores `(device, frame)`s in one transaction, each frame its own savepoint;
    /// returns one result per frame, in order. When it returns, every `Ok` is durable. Every
    /// outcome is counted in `edgefleet_controller_telemetry_batches_total{result=...}`.
    pub async fn ingest_many(&self, frames: Vec<(String, Vec<u8>)>) -> Vec<Result<Ingested, TelemetryError>> {
        let count = frames.len();
        let group = Group {
            devices: HashMap::new(),
            floors: HashMap::new(),
            windows: BTreeMap::new(),
            group_label: self.config.group_label.clone(),
            received: self.clock.now(),
            retention: self.config.retention_days * 86_400,
            window: self.config.window_secs,
        };
        let stored = self
            .db
            .call(move |conn| -> Result<Vec<Result<Ingested, TelemetryError>>, TelemetryError> {
                let mut group = group;
                let mut tx = conn.transaction()?;
                let senders: Vec<_> = frames.iter().map(|(device, _)| device_of(&tx, &mut group, device)).collect();
                let mut decoded = decode_all(&frames, &senders).into_iter();
                let mut results = Vec::with_capacity(frames.len());
                for ((device, _), sender) in frames.iter().zip(senders) {
                    let savepoint = tx.savepoint()?;
                    let result = sender.and_then(|(_, device_group)| {
                        let batch = decoded
                            .next()
                            .unwrap_or(Err(FrameError::Signature))
                            .map_err(|e| refused(Refusal::from(&e), e.to_string()))?;
                        ingest_one(&savepoint, &mut group, device, &device_group, batch)
                    });
                    match &result {
                        Ok(_) => savepoint.commit()?,
                        // Dropping the savepoint rolls back what the refused frame wrote.
                        Err(_) => drop(savepoint),
                    }
                    results.push(result);
                }
                write_windows(&tx, &group.windows)?;
                tx.commit()?;
                Ok(results)
            })
            .await;
        let results = match stored {
            Ok(results) => results,
            Err(e) => {
                let message = e.to_string();
                (0..count).map(|_| Err(TelemetryError::Commit(message.clone()))).collect()
            }
        };
        for result in &results {
            match result {
                Ok(i) => {
                    metrics::counter!(crate::metric::TELEMETRY_BATCHES, "result" => "accepted").increment(1);
                    metrics::counter!(crate::metric::TELEMETRY_SAMPLES).increment(i.samples);
                    metrics::counter!(crate::metric::TELEMETRY_ROWS).increment(i.rows);
                }
                Err(TelemetryError::Refused { class, .. }) => {
                    metrics::counter!(crate::metric::TELEMETRY_BATCHES, "result" => class.as_str()).increment(1);
                }
                Err(_) => metrics::counter!(crate::metric::TELEMETRY_BATCHES, "result" => "error").increment(1),
            }
        }
        results
    }

    /// Deletes what is older than the retention, keeping each device's highest deleted batch
    /// number as its replay floor, and trims sampled rows to the per-version cap.
    pub async fn prune(&self) -> Result<u64, TelemetryError> {
        let cutoff = self.clock.now().saturating_sub(self.config.retention_days * 86_400) as i64;
        let cap = self.config.max_samples_per_version as i64;
        let now = self.clock.now() as i64;
        self.db
            .call(move |conn| -> Result<u64, TelemetryError> {
                let tx = conn.transaction()?;
                let greatest = tx.dialect().greatest("telemetry_floor.sequence", "excluded.sequence");
                tx.execute(
                    &format!(
                        "INSERT INTO telemetry_floor (device_id, sequence)
                         SELECT device_id, MAX(sequence) FROM telemetry_batches WHERE received_at < ?1 GROUP BY device_id
                         ON CONFLICT(device_id) DO UPDATE SET sequence = {greatest}"
                    ),
                    params![cutoff],
                )?;
                let mut deleted =
                    tx.execute("DELETE FROM telemetry_batches WHERE received_at < ?1", params![cutoff])?;
                deleted += tx.execute("DELETE FROM telemetry_samples WHERE at_ms < ?1", params![cutoff * 1000])?;
                deleted += tx.execute("DELETE FROM telemetry_windows WHERE window_start < ?1", params![cutoff])?;
                deleted += tx.execute("DELETE FROM device_metrics WHERE at < ?1", params![cutoff])?;
                deleted += tx.execute("DELETE FROM sessions WHERE expires_at < ?1", params![now])?;
                deleted += tx.execute(
                    "DELETE FROM telemetry_samples WHERE id IN (
                        SELECT id FROM (
                            SELECT id, ROW_NUMBER() OVER (PARTITION BY model, version ORDER BY at_ms DESC, id DESC) AS n
                            FROM telemetry_samples) ranked WHERE n > ?1)",
                    params![cap],
                )?;
                tx.commit()?;
                Ok(deleted as u64)
            })
            .await
    }
}

/// The key and device group of an enrolled, active device.
fn device_of(conn: &Connection, group: &mut Group, device: &str) -> Result<(PublicKey, String), TelemetryError> {
    if let Some(known) = group.devices.get(device) {
        return known.clone().map_err(|m| refused(Refusal::UnknownDevice, m));
    }
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT public_key, labels FROM devices WHERE id = ?1 AND decommissioned_at IS NULL",
            params![device],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let found = match row {
        None => Err(format!("unknown device {device:?}")),
        Some((key, labels)) => match PublicKey::from_base64(&key) {
            None => Err("unreadable device key".to_owned()),
            Some(key) => {
                let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
                Ok((key, labels.get(&group.group_label).cloned().unwrap_or_else(|| "default".into())))
            }
        },
    };
    group.devices.insert(device.to_owned(), found.clone());
    found.map_err(|m| refused(Refusal::UnknownDevice, m))
}

/// Every frame of a known sender decoded, their signatures checked together (one batch
/// verification for the group); one result per known sender, in order.
fn decode_all(
    frames: &[(String, Vec<u8>)],
    senders: &[Result<(PublicKey, String), TelemetryError>],
) -> Vec<Result<TelemetryBatch, FrameError>> {
    let known: Vec<(&[u8], &str, &PublicKey)> = frames
        .iter()
        .zip(senders)
        .filter_map(|((device, frame), sender)| sender.as_ref().ok().map(|(key, _)| (&frame[..], &device[..], key)))
        .collect();
    TelemetryBatch::decode_many(&known)
}

/// Stores one verified batch inside the group's transaction (in its own savepoint); its
/// histograms go into the group's windows only once everything else of it is stored.
fn ingest_one(
    conn: &Connection,
    group: &mut Group,
    device: &str,
    device_group: &str,
    batch: TelemetryBatch,
) -> Result<Ingested, TelemetryError> {
    if !stores_exactly(&batch) {
        return Err(refused(Refusal::Malformed, "a version, time, class or label above 2^63 - 1"));
    }
    let floor = match group.floors.get(device) {
        Some(floor) => *floor,
        None => {
            let floor: Option<i64> = conn
                .prepare_cached("SELECT sequence FROM telemetry_floor WHERE device_id = ?1")?
                .query_row(params![device], |r| r.get(0))
                .optional()?;
            group.floors.insert(device.to_owned(), floor);
            floor
        }
    };
    let seq = i64::try_from(batch.sequence).map_err(|_| refused(Refusal::Malformed, "sequence out of range"))?;
    if floor.is_some_and(|f| seq <= f) {
        return Err(refused(Refusal::Replay, format!("batch {seq} is older than the retained history")));
    }
    let samples = batch.sample_count() as u64;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO telemetry_batches (device_id, sequence, received_at, samples) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![device, seq, group.received as i64, samples as i64])?;
    if inserted == 0 {
        return Err(refused(Refusal::Duplicate, format!("batch {seq} of {device} was already stored")));
    }
    let window_start = window_start(batch.end, group.received, group.retention, group.window) as i64;
    let mut keys = Vec::with_capacity(batch.models.len());
    for m in &batch.models {
        store_samples(conn, m, device, device_group, seq, window_start)?;
        let key = (m.model.clone(), m.version as i64, device_group.to_owned(), window_start);
        if !group.windows.contains_key(&key) {
            let counts = stored_window(conn, &key)?;
            group.windows.insert(key.clone(), counts);
        }
        keys.push(key);
    }
    let mut rows = 0;
    for (m, key) in batch.models.iter().zip(&keys) {
        if let Some(counts) = group.windows.get_mut(key) {
            merge(counts, m);
        }
        rows += m.rows;
    }
    Ok(Ingested { sequence: batch.sequence, samples, rows })
}

/// A window's stored counts (zero when it has none yet).
fn stored_window(
    conn: &Connection,
    (model, version, group, start): &WindowKey,
) -> Result<WindowCounts, TelemetryError> {
    let existing: Option<(i64, String, String, i64, i64)> = conn
        .prepare_cached(
            "SELECT rows, features, output_classes, labeled, correct FROM telemetry_windows
             WHERE model = ?1 AND version = ?2 AND device_group = ?3 AND window_start = ?4",
        )?
        .query_row(params![model, version, group, start], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    Ok(match existing {
        Some((rows, features, classes, labeled, correct)) => WindowCounts {
            rows: rows as u64,
            features: serde_json::from_str(&features).unwrap_or_default(),
            classes: serde_json::from_str(&classes).unwrap_or_default(),
            labeled: labeled as u64,
            correct: correct as u64,
        },
        None => WindowCounts::default(),
    })
}

/// Writes the group's windows ([`merge`]d counts) back, one row each.
fn write_windows(conn: &Connection, windows: &BTreeMap<WindowKey, WindowCounts>) -> Result<(), TelemetryError> {
    let stored = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut upsert = conn.prepare_cached(
        "INSERT INTO telemetry_windows (model, version, device_group, window_start, rows, features, output_classes, labeled, correct)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(model, version, device_group, window_start) DO UPDATE SET
            rows = excluded.rows, features = excluded.features, output_classes = excluded.output_classes,
            labeled = excluded.labeled, correct = excluded.correct",
    )?;
    for ((model, version, group, start), counts) in windows {
        upsert.execute(params![
            model,
            version,
            group,
            start,
            stored(counts.rows),
            serde_json::to_string(&counts.features).unwrap_or_default(),
            serde_json::to_string(&counts.classes).unwrap_or_default(),
            stored(counts.labeled),
            stored(counts.correct)
        ])?;
    }
    Ok(())
}

/// Whether every number the batch stores fits SQLite's signed 64-bit integers.
fn stores_exactly(batch: &TelemetryBatch) -> bool {
    let fits = |v: u64| i64::try_from(v).is_ok();
    batch.models.iter().all(|m| {
        fits(m.version)
            && m.samples.iter().all(|s| fits(s.at_ms) && s.predicted.is_none_or(fits))
            && m.feedback.iter().all(|f| fits(f.label))
    })
}

/// Stores sampled rows, then attaches this batch's labels to rows with the same request id.
fn store_samples(
    conn: &Connection,
    m: &ModelTelemetry,
    device: &str,
    group: &str,
    seq: i64,
    window_start: i64,
) -> Result<(), TelemetryError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO telemetry_samples (model, version, device_id, device_group, batch_sequence, request_id, at_ms,
                                        inputs, outputs, predicted, low_confidence, window_start)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for s in &m.samples {
        insert.execute(params![
            m.model,
            m.version as i64,
            device,
            group,
            seq,
            s.request_id,
            s.at_ms as i64,
            serde_json::to_string(&s.inputs).unwrap_or_default(),
            serde_json::to_string(&s.outputs).unwrap_or_default(),
            s.predicted.map(|p| p as i64),
            s.low_confidence,
            window_start
        ])?;
    }
    let mut label = conn.prepare_cached(
        "UPDATE telemetry_samples SET label = ?1 WHERE device_id = ?2 AND request_id = ?3 AND model = ?4",
    )?;
    for f in &m.feedback {
        label.execute(params![f.label as i64, device, f.request_id, m.model])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use edgefleet_shared::clock::ManualClock;
    use edgefleet_shared::keys::{FileKey, Signer as _};
    use edgefleet_shared::telemetry::Sample;

    use super::*;
    use crate::config::{RetrainConfig, TelemetryConfig};
    use crate::db::Db;

    const NOW: u64 = 1_800_000_000;

    fn batch(device: &str, sequence: u64, rows: u64) -> TelemetryBatch {
        let sample = Sample {
            request_id: Some(format!("r{sequence}")),
            at_ms: NOW * 1000,
            inputs: vec![1.0, 2.0],
            outputs: vec![0.9, 0.1],
            predicted: Some(0),
            low_confidence: false,
        };
        let m = ModelTelemetry {
            model: "m".into(),
            version: 1,
            rows,
            output_classes: vec![rows],
            samples: vec![sample],
            ..Default::default()
        };
        TelemetryBatch::new(device, sequence, (NOW - 1, NOW), vec![m])
    }

    #[tokio::test]
    async fn a_group_stores_its_good_frames_once_and_refuses_the_rest_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("c.db")).expect("db");
        let (key, forger) = (FileKey::from_seed([1; 32]), FileKey::from_seed([2; 32]));
        let device = edgefleet_shared::fleet::device_id(&key.public_key());
        let (id, pk) = (device.clone(), key.public_key().to_base64());
        db.call_blocking(move |c| {
            c.execute(
                "INSERT INTO devices (id, public_key, labels, enrolled_at) VALUES (?1, ?2, '{}', 0)",
                params![id, pk],
            )
        })
        .expect("device");
        let telemetry = Telemetry::new(
            db.clone(),
            TelemetryConfig::default(),
            RetrainConfig::default(),
            dir.path().join("snapshots"),
            reqwest::Client::new(),
            ManualClock::at(NOW).shared(),
        );
        let frame = |b: TelemetryBatch, k: &FileKey| (device.clone(), b.encode(k));
        let results = telemetry
            .ingest_many(vec![
                frame(batch(&device, 1, 10), &key),
                frame(batch(&device, 2, 20), &forger),
                frame(batch(&device, 1, 10), &key),
                ("someone-else".into(), batch("someone-else", 9, 5).encode(&key)),
                frame(batch(&device, 3, 30), &key),
            ])
            .await;
        let classes: Vec<Result<u64, &'static str>> = results
            .iter()
            .map(|r| match r {
                Ok(i) => Ok(i.sequence),
                Err(TelemetryError::Refused { class, .. }) => Err(class.as_str()),
                Err(e) => panic!("{e}"),
            })
            .collect();
        assert_eq!(classes, vec![Ok(1), Err("signature"), Err("duplicate"), Err("unknown_device"), Ok(3)]);
        let (batches, samples, rows): (i64, i64, i64) = db
            .call_blocking(|c| {
                c.query_row(
                    "SELECT (SELECT COUNT(*) FROM telemetry_batches), (SELECT COUNT(*) FROM telemetry_samples),
                            (SELECT SUM(rows) FROM telemetry_windows)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .expect("counts");
        assert_eq!((batches, samples, rows), (2, 2, 40), "the refused frames left nothing behind");
        // A later group adds to the same window.
        let later = telemetry.ingest_many(vec![frame(batch(&device, 4, 2), &key)]).await;
        assert!(later[0].is_ok());
        let rows: i64 =
            db.call_blocking(|c| c.query_row("SELECT rows FROM telemetry_windows", [], |r| r.get(0))).expect("rows");
        assert_eq!(rows, 42);
    }
}
