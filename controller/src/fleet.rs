//! Devices: enrollment tokens, enrollment, device-signed request checks, status, and the
//! signed per-device deployment documents (desired state).
//!
//! Each device has its own document sequence; every document issued to it (a deploy, an
//! operator rollback, a refresh before expiry) takes the next number, so a device can refuse
//! anything it has seen or anything older.

use std::collections::BTreeMap;
use std::sync::Arc;

use edgefleet_shared::bundle::{BUNDLE_FILE, MODEL_FILE};
use edgefleet_shared::deployment::{DEPLOYMENT_KIND, DeployedArtifact, DeploymentDocument, ModelRef, ShadowSpec};
use edgefleet_shared::fleet::{self, DeviceStatus, EnrollRequest, EnrollResponse, RequestAuthError};
use edgefleet_shared::keys::{PublicKey, Signer as _};
use edgefleet_shared::signature::SignedEnvelope;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::auth::{hash_token, new_token};
use crate::db::{self, Db, DbError, now};
use crate::keyring::KeyRing;
use crate::registry::{RegistryError, resolve_version};

/// Fleet failures, each mapping to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Enrollment token or device signature refused (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Unknown device, model or version (404).
    #[error("{0}")]
    NotFound(String),
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

impl From<rusqlite::Error> for FleetError {
    fn from(e: rusqlite::Error) -> Self {
        FleetError::Db(DbError::from(e))
    }
}

/// A new enrollment token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentToken {
    /// Id.
    pub id: i64,
    /// The token; only its hash is kept.
    pub token: String,
    /// Enrollments left.
    pub uses: u32,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
    /// Labels every device enrolled with it gets.
    pub labels: BTreeMap<String, String>,
}

/// A device as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceInfo {
    /// Id (`dev-` + key id).
    pub id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub enrolled_at: u64,
    /// Unix seconds of the last authenticated contact.
    pub last_seen: Option<u64>,
    /// Whether it was seen within the online window.
    pub online: bool,
    /// Model version the controller wants it to run.
    #[schema(value_type = Option<Object>)]
    pub desired: Option<ModelRef>,
    /// Sequence of its current document.
    pub desired_sequence: Option<u64>,
    /// What it last reported.
    #[schema(value_type = Option<Object>)]
    pub status: Option<DeviceStatus>,
}

/// Where deployment documents go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Model name.
    pub model: String,
    /// Version number or alias.
    pub version: String,
    /// One device…
    pub device: Option<String>,
    /// …or every device whose labels include all of these.
    pub selector: Option<BTreeMap<String, String>>,
}

/// One issued document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Issued {
    /// Device.
    pub device_id: String,
    /// Its new sequence.
    pub sequence: u64,
    /// Model version.
    pub version: u64,
    /// Unix seconds.
    pub expires_at: u64,
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
}

/// The fleet service.
#[derive(Debug, Clone)]
pub struct Fleet {
    db: Db,
    keys: Arc<KeyRing>,
    settings: Arc<FleetSettings>,
}

impl Fleet {
    /// A fleet service over `db`, signing documents with the ring's keys.
    pub fn new(db: Db, keys: Arc<KeyRing>, settings: FleetSettings) -> Self {
        Fleet { db, keys, settings: Arc::new(settings) }
    }

    /// The signing keys and trust sets.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// A device's enrolled public key, if it is enrolled.
    pub async fn device_key(&self, device_id: String) -> Result<Option<PublicKey>, FleetError> {
        self.db
            .call(move |conn| -> Result<Option<PublicKey>, FleetError> {
                let key: Option<String> = conn
                    .query_row("SELECT public_key FROM devices WHERE id = ?1", params![device_id], |r| r.get(0))
                    .optional()?;
                Ok(key.and_then(|k| PublicKey::from_base64(&k)))
            })
            .await
    }

    /// A broker client certificate for an enrolled device's key.
    pub async fn mqtt_certificate(
        &self,
        ca: &crate::device_ca::DeviceCa,
        device_id: String,
    ) -> Result<edgefleet_shared::fleet::MqttCertificate, FleetError> {
        let key = self
            .device_key(device_id.clone())
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("unknown device {device_id:?}")))?;
        let issued = ca.issue_device(&device_id, &key).map_err(|e| FleetError::Ca(e.to_string()))?;
        Ok(edgefleet_shared::fleet::MqttCertificate {
            certificate_pem: issued.certificate_pem,
            expires_at: issued.expires_at,
        })
    }

    /// Creates an enrollment token.
    pub async fn create_token(
        &self,
        uses: u32,
        ttl_secs: u64,
        labels: BTreeMap<String, String>,
        actor: String,
    ) -> Result<EnrollmentToken, FleetError> {
        if uses == 0 {
            return Err(FleetError::BadRequest("uses must be at least 1".into()));
        }
        check_labels(&labels)?;
        let token = new_token().map_err(|e| FleetError::BadRequest(format!("cannot generate a token: {e}")))?;
        let expires_at = now() as u64 + ttl_secs;
        let (t, l) = (token.clone(), labels.clone());
        let id = self
            .db
            .call(move |conn| -> Result<i64, FleetError> {
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO enrollment_tokens (hash, uses_left, expires_at, labels, created_at, created_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        hash_token(&t),
                        uses,
                        expires_at as i64,
                        serde_json::to_string(&l).unwrap_or_default(),
                        now(),
                        actor
                    ],
                )?;
                let id = tx.last_insert_rowid();
                db::audit(
                    &tx,
                    &actor,
                    "device.token.create",
                    &format!("enrollment-token:{id}"),
                    serde_json::json!({"uses": uses, "labels": l}),
                )?;
                tx.commit()?;
                Ok(id)
            })
            .await?;
        Ok(EnrollmentToken { id, token, uses, expires_at, labels })
    }

    /// Enrolls a device with a token: records its public key and labels. Enrolling the same key
    /// again (a device that lost its state file) returns the same id and consumes a use.
    pub async fn enroll(&self, req: EnrollRequest) -> Result<EnrollResponse, FleetError> {
        let key = PublicKey::from_base64(&req.public_key)
            .ok_or_else(|| FleetError::BadRequest("public_key is not a base64 Ed25519 key".into()))?;
        check_labels(&req.labels)?;
        let settings = self.settings.clone();
        self.db
            .call(move |conn| -> Result<EnrollResponse, FleetError> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let row: Option<(i64, i64, i64, String)> = tx
                    .query_row(
                        "SELECT id, uses_left, expires_at, labels FROM enrollment_tokens WHERE hash = ?1",
                        params![hash_token(&req.token)],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                let Some((token_id, uses_left, expires_at, token_labels)) = row else {
                    return Err(FleetError::Unauthorized("unknown enrollment token".into()));
                };
                if uses_left <= 0 {
                    return Err(FleetError::Unauthorized("enrollment token has no uses left".into()));
                }
                if expires_at <= now() {
                    return Err(FleetError::Unauthorized("enrollment token expired".into()));
                }
                let mut labels = req.labels.clone();
                let token_labels: BTreeMap<String, String> = serde_json::from_str(&token_labels).unwrap_or_default();
                labels.extend(token_labels);
                let id = fleet::device_id(&key);
                tx.execute("UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ?1", params![token_id])?;
                tx.execute(
                    "INSERT INTO devices (id, public_key, labels, enrolled_at, enrollment_token) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, enrollment_token = excluded.enrollment_token",
                    params![id, key.to_base64(), serde_json::to_string(&labels).unwrap_or_default(), now(), token_id],
                )?;
                db::audit(&tx, &format!("enrollment-token:{token_id}"), "device.enroll", &id, serde_json::json!({"labels": labels}))?;
                tx.commit()?;
                tracing::info!(device = %id, "Device enrolled.");
                Ok(EnrollResponse { device_id: id, mqtt_url: settings.mqtt_url.clone(), topic_prefix: settings.topic_prefix.clone(), labels })
            })
            .await
    }

    /// Checks a device-signed request and records the contact.
    pub async fn authenticate(
        &self,
        device_id: String,
        method: String,
        path_and_query: String,
        timestamp: u64,
        body_digest_input: Vec<u8>,
        signature: String,
    ) -> Result<(), FleetError> {
        self.db
            .call(move |conn| -> Result<(), FleetError> {
                let key: Option<String> = conn
                    .query_row("SELECT public_key FROM devices WHERE id = ?1", params![device_id], |r| r.get(0))
                    .optional()?;
                let key = key
                    .and_then(|k| PublicKey::from_base64(&k))
                    .ok_or_else(|| FleetError::Unauthorized(format!("unknown device {device_id:?}")))?;
                fleet::verify_request(
                    &key,
                    &method,
                    &path_and_query,
                    timestamp,
                    &body_digest_input,
                    &signature,
                    now() as u64,
                )
                .map_err(|e: RequestAuthError| FleetError::Unauthorized(e.to_string()))?;
                conn.execute("UPDATE devices SET last_seen = ?1 WHERE id = ?2", params![now(), device_id])?;
                Ok(())
            })
            .await
    }

    /// Stores a device's status report.
    pub async fn record_status(&self, device_id: String, status: DeviceStatus) -> Result<(), FleetError> {
        self.db
            .call(move |conn| -> Result<(), FleetError> {
                conn.execute(
                    "UPDATE devices SET status = ?1, last_seen = ?2, trust_version = COALESCE(?3, trust_version)
                     WHERE id = ?4",
                    params![
                        serde_json::to_string(&status).unwrap_or_default(),
                        now(),
                        status.trust_version.map(|v| v as i64),
                        device_id
                    ],
                )?;
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

    /// Every device's current document, for republishing.
    pub async fn all_desired(&self) -> Result<Vec<(String, SignedEnvelope)>, FleetError> {
        self.db
            .call(|conn| -> Result<Vec<(String, SignedEnvelope)>, FleetError> {
                let rows: Vec<(String, String)> = conn
                    .prepare("SELECT device_id, envelope FROM desired ORDER BY device_id")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                Ok(rows.into_iter().filter_map(|(d, e)| serde_json::from_str(&e).ok().map(|e| (d, e))).collect())
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
                    .query_row("SELECT public_key FROM devices WHERE id = ?1", params![device], |r| r.get(0))
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

    /// Records that a device dropped off (its MQTT last will).
    pub async fn mark_offline(&self, device: String) -> Result<(), FleetError> {
        self.db
            .call(move |conn| -> Result<(), FleetError> {
                conn.execute("UPDATE devices SET last_seen = NULL WHERE id = ?1", params![device])?;
                Ok(())
            })
            .await
    }

    /// Whether `sha256` is an artifact of the device's current document.
    pub async fn may_download(&self, device_id: String, sha256: String) -> Result<bool, FleetError> {
        Ok(self.desired(device_id).await?.and_then(|env| env.document_bytes()).is_some_and(|bytes| {
            serde_json::from_slice::<DeploymentDocument>(&bytes)
                .is_ok_and(|d| d.artifacts.iter().any(|a| a.sha256 == sha256))
        }))
    }

    /// Issues documents for a model version to one device or every device matching a selector.
    pub async fn deploy(&self, req: DeployRequest, actor: String) -> Result<Vec<Issued>, FleetError> {
        if req.device.is_some() == req.selector.is_some() {
            return Err(FleetError::BadRequest("give exactly one of device or selector".into()));
        }
        let this = self.clone();
        self.db
            .call(move |conn| -> Result<Vec<Issued>, FleetError> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let (_, version) = resolve_version(&tx, &req.model, &req.version)?;
                let artifacts = version_artifacts(&tx, &req.model, version)?;
                let targets: Vec<String> = match (&req.device, &req.selector) {
                    (Some(id), _) => {
                        let exists: bool =
                            tx.query_row("SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?1)", params![id], |r| {
                                r.get(0)
                            })?;
                        if !exists {
                            return Err(FleetError::NotFound(format!("unknown device {id:?}")));
                        }
                        vec![id.clone()]
                    }
                    (None, Some(selector)) => matching_devices(&tx, selector)?,
                    (None, None) => Vec::new(),
                };
                let model = ModelRef { name: req.model.clone(), version };
                let mut issued = Vec::with_capacity(targets.len());
                for device in &targets {
                    issued.push(this.issue(&tx, device, &model, &artifacts, None)?);
                }
                db::audit(
                    &tx,
                    &actor,
                    "deploy",
                    &format!("{}:{version}", req.model),
                    serde_json::json!({"devices": targets, "selector": req.selector}),
                )?;
                tx.commit()?;
                Ok(issued)
            })
            .await
    }

    /// Re-signs, with the next sequence, documents that pass half their lifetime (so devices
    /// that follow the controller never see their document expire) and documents signed by a
    /// key other than the one the device should get now (after a key rotation).
    pub async fn refresh_expiring(&self) -> Result<Vec<String>, FleetError> {
        let this = self.clone();
        self.db
            .call(move |conn| -> Result<Vec<String>, FleetError> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let horizon = now() + (this.settings.document_ttl_secs / 2) as i64;
                let at = now() as u64;
                let mut due: Vec<(String, String, i64, String)> = Vec::new();
                {
                    let mut stmt = tx.prepare(
                        "SELECT s.device_id, s.model, s.version, s.envelope, s.expires_at, s.key_id, d.trust_version
                         FROM desired s JOIN devices d ON d.id = s.device_id",
                    )?;
                    let mut rows = stmt.query([])?;
                    while let Some(r) = rows.next()? {
                        let (expires_at, key_id, trust_version): (i64, Option<String>, Option<i64>) =
                            (r.get(4)?, r.get(5)?, r.get(6)?);
                        let wanted = this.keys.signer_for(trust_version.map(|v| v as u64), at).key_id();
                        if expires_at <= horizon || key_id.as_deref() != Some(wanted.as_str()) {
                            due.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
                        }
                    }
                }
                for (device, model, version, envelope) in &due {
                    let artifacts = version_artifacts(&tx, model, *version as u64)?;
                    // The refreshed document keeps what the current one asks (e.g. shadow).
                    let shadow = serde_json::from_str::<SignedEnvelope>(envelope)
                        .ok()
                        .and_then(|e| serde_json::from_slice::<DeploymentDocument>(&e.document_bytes()?).ok())
                        .and_then(|d| d.shadow);
                    let model = ModelRef { name: model.clone(), version: *version as u64 };
                    this.issue(&tx, device, &model, &artifacts, shadow)?;
                }
                tx.commit()?;
                Ok(due.into_iter().map(|(d, ..)| d).collect())
            })
            .await
    }

    /// Signs and stores the next document for `device` (inside the caller's transaction).
    pub(crate) fn issue(
        &self,
        tx: &Connection,
        device: &str,
        model: &ModelRef,
        artifacts: &[DeployedArtifact],
        shadow: Option<ShadowSpec>,
    ) -> Result<Issued, FleetError> {
        let last: Option<i64> = tx
            .query_row("SELECT sequence FROM desired WHERE device_id = ?1", params![device], |r| r.get(0))
            .optional()?;
        let sequence = last.map_or(1, |s| s as u64 + 1);
        let issued_at = now() as u64;
        let trust_version: Option<i64> = tx
            .query_row("SELECT trust_version FROM devices WHERE id = ?1", params![device], |r| r.get(0))
            .optional()?
            .flatten();
        let signer = self.keys.signer_for(trust_version.map(|v| v as u64), issued_at);
        let doc = DeploymentDocument {
            kind: DEPLOYMENT_KIND.into(),
            key_id: signer.key_id(),
            sequence,
            issued_at,
            expires_at: issued_at + self.settings.document_ttl_secs,
            devices: vec![device.to_owned()],
            model: model.clone(),
            artifacts: artifacts.to_vec(),
            shadow,
        };
        let envelope = SignedEnvelope::sign(&doc.to_bytes(), signer.as_ref());
        tx.execute(
            "INSERT INTO desired (device_id, sequence, model, version, envelope, issued_at, expires_at, key_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (device_id) DO UPDATE SET sequence = excluded.sequence, model = excluded.model,
                 version = excluded.version, envelope = excluded.envelope, issued_at = excluded.issued_at,
                 expires_at = excluded.expires_at, key_id = excluded.key_id",
            params![
                device,
                sequence as i64,
                model.name,
                model.version as i64,
                serde_json::to_string(&envelope).unwrap_or_default(),
                issued_at as i64,
                doc.expires_at as i64,
                doc.key_id
            ],
        )?;
        Ok(Issued { device_id: device.to_owned(), sequence, version: model.version, expires_at: doc.expires_at })
    }

    /// All devices, or one.
    pub async fn devices(&self, only: Option<String>) -> Result<Vec<DeviceInfo>, FleetError> {
        let window = self.settings.online_window_secs as i64;
        self.db
            .call(move |conn| -> Result<Vec<DeviceInfo>, FleetError> {
                let mut stmt = conn.prepare(
                    "SELECT d.id, d.labels, d.enrolled_at, d.last_seen, d.status, s.model, s.version, s.sequence
                     FROM devices d LEFT JOIN desired s ON s.device_id = d.id
                     WHERE ?1 IS NULL OR d.id = ?1 ORDER BY d.id",
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
                            online: last_seen.is_some_and(|t| now() - t <= window),
                            desired: model.zip(version).map(|(name, v)| ModelRef { name, version: v as u64 }),
                            desired_sequence: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
                            status: r.get::<_, Option<String>>(4)?.and_then(|s| serde_json::from_str(&s).ok()),
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

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), FleetError> {
    for (k, v) in labels {
        if k.is_empty()
            || k.len() > 63
            || v.len() > 255
            || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        {
            return Err(FleetError::BadRequest(format!(
                "label {k:?}={v:?}: keys are 1-63 of [A-Za-z0-9-_./], values up to 255 bytes"
            )));
        }
    }
    Ok(())
}

pub(crate) fn version_artifacts(
    conn: &Connection,
    model: &str,
    version: u64,
) -> Result<Vec<DeployedArtifact>, FleetError> {
    let rows: Vec<DeployedArtifact> = conn
        .prepare(
            "SELECT va.name, a.sha256, a.size, a.compressed_sha256, a.compressed_size
             FROM version_artifacts va JOIN artifacts a ON a.sha256 = va.sha256
             JOIN models m ON m.id = va.model_id
             WHERE m.name = ?1 AND va.version = ?2 ORDER BY va.name",
        )?
        .query_map(params![model, version as i64], |r| {
            Ok(DeployedArtifact {
                name: r.get(0)?,
                sha256: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                compressed_sha256: r.get(3)?,
                compressed_size: r.get::<_, i64>(4)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    if !rows.iter().any(|a| a.name == MODEL_FILE) || !rows.iter().any(|a| a.name == BUNDLE_FILE) {
        return Err(FleetError::NotFound(format!("{model}:{version} has no stored artifacts")));
    }
    Ok(rows)
}

pub(crate) fn matching_devices(
    conn: &Connection,
    selector: &BTreeMap<String, String>,
) -> Result<Vec<String>, FleetError> {
    let all: Vec<(String, String)> = conn
        .prepare("SELECT id, labels FROM devices ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(all
        .into_iter()
        .filter(|(_, labels)| {
            let labels: BTreeMap<String, String> = serde_json::from_str(labels).unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|(id, _)| id)
        .collect())
}
