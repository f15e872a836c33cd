//! Devices: enrollment ([`enrollment`]), status, the signed per-device deployment documents
//! ([`documents`]) and the declarative fleets that decide them ([`fleets`]).

mod documents;
mod enrollment;
mod fleets;
mod lifecycle;
mod reconcile;

use std::sync::Arc;

use crate::sql::{Dialect, OptionalExtension, params};
use edgefleet_shared::api::console::DeviceMetricPoint;
use edgefleet_shared::api::fleet::DeviceInfo;
use edgefleet_shared::deployment::ModelRef;
use edgefleet_shared::fleet::DeviceStatus;
use edgefleet_shared::keys::PublicKey;
use edgefleet_shared::signature::SignedEnvelope;

use crate::db::{Db, DbError, now};
use crate::keyring::KeyRing;
use crate::registry::RegistryError;

pub(crate) use documents::{can_run, matching_devices, required_engines, version_artifacts};
pub(crate) use fleets::{adopt, template};

/// Fleet failures, each mapping to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed, but a value is out of range (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Enrollment token or device signature refused (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Unknown device, model or version (404).
    #[error("{0}")]
    NotFound(String),
    /// Authenticated, but not allowed, e.g. a decommissioned device's key (403).
    #[error("{0}")]
    Forbidden(String),
    /// Conflicts with the current state, e.g. a second rollout of one model (409).
    #[error("{0}")]
    Conflict(String),
    /// Registry lookup failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Database failure (500).
    #[error(transparent)]
    Db(#[from] DbError),
    /// The device CA failed (500).
    #[error("device CA: {0}")]
    Ca(String),
}

impl From<crate::sql::Error> for FleetError {
    fn from(e: crate::sql::Error) -> Self {
        FleetError::Db(DbError::from(e))
    }
}

/// Fleet service settings.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Lifetime of a deployment document.
    pub document_ttl_secs: u64,
    /// A device is online if seen within this many seconds.
    pub online_window_secs: u64,
    /// Broker URL handed to agents at enrollment.
    pub mqtt_url: Option<String>,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Largest delta offered, as a share of the compressed artifact (0: none).
    pub delta_max_share: f64,
}

/// The fleet service.
#[derive(Debug, Clone)]
pub struct Fleet {
    db: Db,
    keys: Arc<KeyRing>,
    settings: Arc<FleetSettings>,
    /// Ids of devices decommissioned, for live connections to close at once.
    decommissioned: tokio::sync::broadcast::Sender<String>,
}

impl Fleet {
    /// A fleet service over `db`, signing documents with the ring's keys.
    pub fn new(db: Db, keys: Arc<KeyRing>, settings: FleetSettings) -> Self {
        Fleet { db, keys, settings: Arc::new(settings), decommissioned: tokio::sync::broadcast::channel(64).0 }
    }

    /// Ids of devices as they are decommissioned (a lagging receiver must look devices up
    /// again: it may have missed one).
    pub fn decommissions(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.decommissioned.subscribe()
    }

    /// The signing keys and trust sets.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Stores a device's status report.
    pub async fn record_status(&self, device_id: String, status: DeviceStatus) -> Result<(), FleetError> {
        self.db
            .call(move |conn| -> Result<(), FleetError> {
                // On SQLite the status and its metrics point share one commit (one fsync, not
                // two). PostgreSQL's transactions take the replicas' writer lock, which two
                // autocommit statements (each durable on its own) do not need.
                if conn.dialect() == Dialect::Sqlite {
                    let tx = conn.transaction()?;
                    store_status(&tx, &device_id, &status, now())?;
                    tx.commit()?;
                } else {
                    store_status(conn, &device_id, &status, now())?;
                }
                Ok(())
            })
            .await
    }

    /// The current signed document of a device, if any.
    pub async fn desired(&self, device_id: String) -> Result<Option<SignedEnvelope>, FleetError> {
        self.db
            .call(move |conn| -> Result<Option<SignedEnvelope>, FleetError> {
                let env: Option<String> = conn
                    .query_row("SELECT envelope FROM desired WHERE device_id = ?1", params![device_id], |r| r.get(0))
                    .optional()?;
                Ok(env.and_then(|e| serde_json::from_str(&e).ok()))
            })
            .await
    }

    /// Checks an envelope signed by `device`'s key (status over MQTT); returns the signed bytes.
    pub async fn verify_device_envelope(
        &self,
        device: String,
        envelope: SignedEnvelope,
    ) -> Result<Vec<u8>, FleetError> {
        self.db
            .call(move |conn| -> Result<Vec<u8>, FleetError> {
                let key: Option<String> = conn
                    .query_row(
                        "SELECT public_key FROM devices WHERE id = ?1 AND decommissioned_at IS NULL",
                        params![device],
                        |r| r.get(0),
                    )
                    .optional()?;
                let key = key
                    .and_then(|k| PublicKey::from_base64(&k))
                    .ok_or_else(|| FleetError::Unauthorized(format!("unknown device {device:?}")))?;
                let bytes =
                    envelope.document_bytes().ok_or_else(|| FleetError::BadRequest("document is not base64".into()))?;
                let sig = envelope.signature.bytes().unwrap_or_default();
                if envelope.signature.key_id != key.key_id() || !key.verify(&bytes, &sig) {
                    return Err(FleetError::Unauthorized(format!("status not signed by device {device:?}")));
                }
                Ok(bytes)
            })
            .await
    }

    /// Records that a device dropped off (its MQTT last will): offline until its next contact,
    /// its last contact kept.
    pub async fn mark_offline(&self, device: String) -> Result<(), FleetError> {
        self.db
            .call(move |conn| -> Result<(), FleetError> {
                conn.execute("UPDATE devices SET offline_at = ?1 WHERE id = ?2", params![now(), device])?;
                Ok(())
            })
            .await
    }

    /// A device's newest stored error rate and latency points (a day's worth), oldest first
    /// (404 for an unknown device).
    pub async fn metrics(&self, device: String) -> Result<Vec<DeviceMetricPoint>, FleetError> {
        self.db
            .call(move |conn| -> Result<Vec<DeviceMetricPoint>, FleetError> {
                let known: i64 =
                    conn.query_row("SELECT COUNT(*) FROM devices WHERE id = ?1", params![device], |r| r.get(0))?;
                if known == 0 {
                    return Err(FleetError::NotFound(format!("no device {device:?}")));
                }
                let points = conn
                    .prepare(
                        "SELECT at, requests, error_rate, latency_p50_ms, latency_p99_ms FROM device_metrics
                         WHERE device_id = ?1 ORDER BY at DESC LIMIT ?2",
                    )?
                    .query_map(params![device, METRICS_POINTS], |r| {
                        Ok(DeviceMetricPoint {
                            at: r.get::<_, i64>(0)?.max(0) as u64,
                            requests: r.get::<_, i64>(1)?.max(0) as u64,
                            error_rate: r.get(2)?,
                            latency_p50_ms: r.get(3)?,
                            latency_p99_ms: r.get(4)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(points.into_iter().rev().collect())
            })
            .await
    }

    /// How recently a device must have been seen to count as online.
    pub fn online_window_secs(&self) -> u64 {
        self.settings.online_window_secs
    }

    /// All devices, or one.
    pub async fn devices(&self, only: Option<String>) -> Result<Vec<DeviceInfo>, FleetError> {
        let window = self.settings.online_window_secs as i64;
        self.db
            .call(move |conn| -> Result<Vec<DeviceInfo>, FleetError> {
                let mut stmt = conn.prepare(
                    "SELECT d.id, d.labels, d.enrolled_at, d.last_seen, d.status, s.model, s.version, s.sequence,
                            d.decommissioned_at, d.decommission_reason, d.offline_at
                     FROM devices d LEFT JOIN desired s ON s.device_id = d.id
                     WHERE CAST(?1 AS TEXT) IS NULL OR d.id = ?1 ORDER BY d.id",
                )?;
                let rows = stmt
                    .query_map(params![only], |r| {
                        let last_seen: Option<i64> = r.get(3)?;
                        let model: Option<String> = r.get(5)?;
                        let version: Option<i64> = r.get(6)?;
                        Ok(DeviceInfo {
                            id: r.get(0)?,
                            labels: serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or_default(),
                            enrolled_at: r.get::<_, i64>(2)? as u64,
                            last_seen: last_seen.map(|t| t as u64),
                            online: r.get::<_, Option<i64>>(10)?.is_none()
                                && last_seen.is_some_and(|t| now() - t <= window),
                            // An empty desired set is stored as model "" (it names no model).
                            desired: model
                                .filter(|m| !m.is_empty())
                                .zip(version)
                                .map(|(name, v)| ModelRef { name, version: v as u64 }),
                            desired_sequence: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
                            status: r.get::<_, Option<String>>(4)?.and_then(|s| serde_json::from_str(&s).ok()),
                            decommissioned_at: r.get::<_, Option<i64>>(8)?.map(|t| t as u64),
                            decommission_reason: r.get(9)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(id) = &only
                    && rows.is_empty()
                {
                    return Err(FleetError::NotFound(format!("unknown device {id:?}")));
                }
                Ok(rows)
            })
            .await
    }
}

/// Records `status` as `device`'s, unless the stored one is newer: statuses taken by several
/// replicas through a shared subscription are handled in any order, and a report from before a
/// document arrived must not overwrite the one that says it was activated. Newer means a higher
/// (last accepted document sequence, last activation's sequence); both only grow for a device
/// id. The device counts as seen either way.
fn store_status(conn: &crate::sql::Connection, device: &str, status: &DeviceStatus, at: i64) -> crate::sql::Result<()> {
    let order =
        (status.last_sequence.unwrap_or(0) as i64, status.last_activation.as_ref().map_or(0, |a| a.sequence) as i64);
    let d = conn.dialect();
    let updated = conn.execute(
        &format!(
            "UPDATE devices SET
                 status = CASE WHEN status IS NULL
                     OR (COALESCE({}, 0), COALESCE({}, 0)) <= (?5, ?6)
                     THEN ?1 ELSE status END,
                 last_seen = ?2, offline_at = NULL, trust_version = COALESCE(?3, trust_version)
             WHERE id = ?4",
            d.json_int("status", "last_sequence"),
            d.json_int("status", "last_activation.sequence"),
        ),
        params![
            serde_json::to_string(status).unwrap_or_default(),
            at,
            status.trust_version.map(|v| v as i64),
            device,
            order.0,
            order.1
        ],
    )?;
    if updated == 0 {
        return Ok(());
    }
    // A point a minute of its error rate and latency, for the console's device page.
    conn.execute(
        "INSERT INTO device_metrics (device_id, at, requests, error_rate, latency_p50_ms, latency_p99_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (device_id, at) DO NOTHING",
        params![
            device,
            at - at.rem_euclid(METRICS_STEP_SECS),
            status.requests as i64,
            status.error_rate,
            status.latency_p50_ms,
            status.latency_p99_ms
        ],
    )
    .map(drop)
}

/// Seconds between two stored points of a device's error rate and latency.
pub const METRICS_STEP_SECS: i64 = 60;

/// Points [`Fleet::metrics`] answers with: a day of them.
const METRICS_POINTS: i64 = 1_440;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_status_handled_late_does_not_overwrite_a_newer_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("c.db")).expect("db");
        db.call_blocking(|conn| {
            conn.execute("INSERT INTO devices (id, public_key, labels, enrolled_at) VALUES ('d', 'k', '{}', 0)", [])
                .expect("device");
            let report = |sequence: u64, activated: Option<u64>, uptime_secs: u64| DeviceStatus {
                uptime_secs,
                last_sequence: Some(sequence),
                last_activation: activated.map(|s| edgefleet_shared::fleet::ActivationReport {
                    model: edgefleet_shared::deployment::ModelRef { name: "m".into(), version: 1 },
                    sequence: s,
                    ok: true,
                    error: None,
                    at: 0,
                    duration_ms: 0,
                    delta_bytes_saved: 0,
                }),
                ..DeviceStatus::default()
            };
            let stored = |conn: &crate::sql::Connection| -> (u64, i64) {
                conn.query_row("SELECT status, last_seen FROM devices WHERE id = 'd'", [], |r| {
                    let status: DeviceStatus = serde_json::from_str(&r.get::<_, String>(0)?).expect("status");
                    Ok((status.uptime_secs, r.get(1)?))
                })
                .expect("row")
            };
            store_status(conn, "d", &report(2, Some(2), 40), 100).expect("activated");
            store_status(conn, "d", &report(1, Some(1), 39), 101).expect("stale");
            store_status(conn, "d", &report(2, Some(1), 39), 102).expect("stale activation");
            assert_eq!(stored(conn), (40, 102), "kept the newer status, saw the device");
            store_status(conn, "d", &report(2, Some(2), 70), 103).expect("periodic");
            assert_eq!(stored(conn).0, 70, "same order: the later report wins");
            // An agent restarted (uptime from 0) with the same document is newer.
            store_status(conn, "d", &report(2, Some(2), 1), 104).expect("restart");
            assert_eq!(stored(conn).0, 1);
        });
    }
}
