//! Ingest: one MQTT message (a signed frame from `PREFIX/devices/{id}/telemetry`) at a time.
//!
//! The frame is checked against the key the device enrolled with and must name that device;
//! `(device, sequence)` is recorded in the same transaction as the data, so a batch the broker
//! delivers twice (QoS 1) or an attacker replays is stored once and refused after. Batches
//! pruned by retention leave a per-device floor below which every sequence is refused.

use std::collections::BTreeMap;

use edgefleet_shared::keys::PublicKey;
use edgefleet_shared::telemetry::{ModelTelemetry, TelemetryBatch};
use rusqlite::{OptionalExtension as _, Transaction, params};

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

impl Telemetry {
    /// Verifies and stores one frame from `device`. Every refusal is counted in
    /// `edgefleet_controller_telemetry_batches_total{result=...}`.
    pub async fn ingest(&self, device: String, frame: Vec<u8>) -> Result<Ingested, TelemetryError> {
        let (window, group_label) = (self.config.window_secs, self.config.group_label.clone());
        let retention = self.config.retention_days * 86_400;
        let received = self.clock.now();
        let result = self
            .db
            .call(move |conn| -> Result<Ingested, TelemetryError> {
                let row: Option<(String, String)> = conn
                    .query_row("SELECT public_key, labels FROM devices WHERE id = ?1 AND decommissioned_at IS NULL", params![device], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                let (key, labels) = row.ok_or_else(|| refused(Refusal::UnknownDevice, format!("unknown device {device:?}")))?;
                let key = PublicKey::from_base64(&key).ok_or_else(|| refused(Refusal::UnknownDevice, "unreadable device key"))?;
                let batch = TelemetryBatch::decode(&frame, &device, &key).map_err(|e| refused(Refusal::from(&e), e.to_string()))?;
                if !stores_exactly(&batch) {
                    return Err(refused(Refusal::Malformed, "a version, time, class or label above 2^63 - 1"));
                }
                let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
                let group = labels.get(&group_label).cloned().unwrap_or_else(|| "default".into());
                let tx = conn.transaction()?;
                let floor: Option<i64> = tx
                    .query_row("SELECT sequence FROM telemetry_floor WHERE device_id = ?1", params![device], |r| r.get(0))
                    .optional()?;
                let seq = i64::try_from(batch.sequence).map_err(|_| refused(Refusal::Malformed, "sequence out of range"))?;
                if floor.is_some_and(|f| seq <= f) {
                    return Err(refused(Refusal::Replay, format!("batch {seq} is older than the retained history")));
                }
                let samples = batch.sample_count() as u64;
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO telemetry_batches (device_id, sequence, received_at, samples) VALUES (?1, ?2, ?3, ?4)",
                    params![device, seq, received as i64, samples as i64],
                )?;
                if inserted == 0 {
                    return Err(refused(Refusal::Duplicate, format!("batch {seq} of {device} was already stored")));
                }
                let window_start = window_start(batch.end, received, retention, window) as i64;
                let mut rows = 0;
                for m in &batch.models {
                    merge_window(&tx, m, &group, window_start)?;
                    store_samples(&tx, m, &device, &group, seq, window_start)?;
                    rows += m.rows;
                }
                tx.commit()?;
                Ok(Ingested { sequence: batch.sequence, samples, rows })
            })
            .await;
        match &result {
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
        result
    }

    /// Deletes what is older than the retention, keeping each device's highest deleted batch
    /// number as its replay floor, and trims sampled rows to the per-version cap.
    pub async fn prune(&self) -> Result<u64, TelemetryError> {
        let cutoff = self.clock.now().saturating_sub(self.config.retention_days * 86_400) as i64;
        let cap = self.config.max_samples_per_version as i64;
        self.db
            .call(move |conn| -> Result<u64, TelemetryError> {
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO telemetry_floor (device_id, sequence)
                     SELECT device_id, MAX(sequence) FROM telemetry_batches WHERE received_at < ?1 GROUP BY device_id
                     ON CONFLICT(device_id) DO UPDATE SET sequence = MAX(sequence, excluded.sequence)",
                    params![cutoff],
                )?;
                let mut deleted =
                    tx.execute("DELETE FROM telemetry_batches WHERE received_at < ?1", params![cutoff])?;
                deleted += tx.execute("DELETE FROM telemetry_samples WHERE at_ms < ?1", params![cutoff * 1000])?;
                deleted += tx.execute("DELETE FROM telemetry_windows WHERE window_start < ?1", params![cutoff])?;
                deleted += tx.execute(
                    "DELETE FROM telemetry_samples WHERE id IN (
                        SELECT id FROM (
                            SELECT id, ROW_NUMBER() OVER (PARTITION BY model, version ORDER BY at_ms DESC, id DESC) AS n
                            FROM telemetry_samples) WHERE n > ?1)",
                    params![cap],
                )?;
                tx.commit()?;
                Ok(deleted as u64)
            })
            .await
    }
}

/// Adds a batch's histograms into its window row ([`merge`]).
fn merge_window(
    tx: &Transaction<'_>,
    m: &ModelTelemetry,
    group: &str,
    window_start: i64,
) -> Result<(), TelemetryError> {
    let version = m.version as i64;
    let existing: Option<(i64, String, String, i64, i64)> = tx
        .query_row(
            "SELECT rows, features, output_classes, labeled, correct FROM telemetry_windows
             WHERE model = ?1 AND version = ?2 AND device_group = ?3 AND window_start = ?4",
            params![m.model, version, group, window_start],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let mut counts = match existing {
        Some((rows, features, classes, labeled, correct)) => WindowCounts {
            rows: rows as u64,
            features: serde_json::from_str(&features).unwrap_or_default(),
            classes: serde_json::from_str(&classes).unwrap_or_default(),
            labeled: labeled as u64,
            correct: correct as u64,
        },
        None => WindowCounts::default(),
    };
    merge(&mut counts, m);
    let stored = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO telemetry_windows (model, version, device_group, window_start, rows, features, output_classes, labeled, correct)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(model, version, device_group, window_start) DO UPDATE SET
            rows = excluded.rows, features = excluded.features, output_classes = excluded.output_classes,
            labeled = excluded.labeled, correct = excluded.correct",
        params![
            m.model,
            version,
            group,
            window_start,
            stored(counts.rows),
            serde_json::to_string(&counts.features).unwrap_or_default(),
            serde_json::to_string(&counts.classes).unwrap_or_default(),
            stored(counts.labeled),
            stored(counts.correct)
        ],
    )?;
    Ok(())
}

/// Stores sampled rows, then attaches this batch's labels to rows with the same request id.
/// Whether every number the batch stores fits SQLite's signed 64-bit integers.
fn stores_exactly(batch: &TelemetryBatch) -> bool {
    let fits = |v: u64| i64::try_from(v).is_ok();
    batch.models.iter().all(|m| {
        fits(m.version)
            && m.samples.iter().all(|s| fits(s.at_ms) && s.predicted.is_none_or(fits))
            && m.feedback.iter().all(|f| fits(f.label))
    })
}

fn store_samples(
    tx: &Transaction<'_>,
    m: &ModelTelemetry,
    device: &str,
    group: &str,
    seq: i64,
    window_start: i64,
) -> Result<(), TelemetryError> {
    let mut insert = tx.prepare_cached(
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
    let mut label = tx.prepare_cached(
        "UPDATE telemetry_samples SET label = ?1 WHERE device_id = ?2 AND request_id = ?3 AND model = ?4",
    )?;
    for f in &m.feedback {
        label.execute(params![f.label as i64, device, f.request_id, m.model])?;
    }
    Ok(())
}
