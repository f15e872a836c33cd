//! The signed per-device deployment documents: issuing them (deploy, refresh before expiry,
//! re-signing after a key rotation), reading them back, and which devices a selector names.
//!
//! Each device has its own document sequence; every document issued to it (a deploy, an
//! operator rollback, a refresh) takes the next number, so a device can refuse anything it has
//! seen or anything older.

use std::collections::BTreeMap;

use crate::sql::{Connection, OptionalExtension, params};
use edgefleet_shared::api::fleet::{DeployRequest, Issued, UndeployRequest};
use edgefleet_shared::bundle::{BUNDLE_FILE, MODEL_FILE};
use edgefleet_shared::deployment::{
    DEPLOYMENT_KIND, DeployedArtifact, DeploymentDocument, DesiredModel, ModelRef, ShadowSpec,
};
use edgefleet_shared::keys::Signer as _;
use edgefleet_shared::signature::SignedEnvelope;

use super::{Fleet, FleetError};
use crate::db::{self, now};
use crate::registry::resolve_version;

impl Fleet {
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

    /// Whether `sha256` is an artifact of the device's current document.
    pub async fn may_download(&self, device_id: String, sha256: String) -> Result<bool, FleetError> {
        self.names(device_id, move |a| a.sha256 == sha256).await
    }

    /// Whether the device's current document offers the delta `sha256`.
    pub async fn may_download_delta(&self, device_id: String, sha256: String) -> Result<bool, FleetError> {
        self.names(device_id, move |a| a.delta.as_ref().is_some_and(|d| d.sha256 == sha256)).await
    }

    /// Whether an artifact of the device's current document is `wanted`.
    async fn names(&self, device_id: String, wanted: impl Fn(&DeployedArtifact) -> bool) -> Result<bool, FleetError> {
        Ok(self.desired(device_id).await?.and_then(|env| env.document_bytes()).is_some_and(|bytes| {
            serde_json::from_slice::<DeploymentDocument>(&bytes).is_ok_and(|d| d.all_artifacts().any(&wanted))
        }))
    }

    /// Issues documents for a model version to one device or every device matching a selector:
    /// the version joins (or replaces that model's version in) each device's desired set.
    pub async fn deploy(&self, req: DeployRequest, actor: String) -> Result<Vec<Issued>, FleetError> {
        if req.device.is_some() == req.selector.is_some() {
            return Err(FleetError::BadRequest("give exactly one of device or selector".into()));
        }
        let this = self.clone();
        self.db
            .call(move |conn| -> Result<Vec<Issued>, FleetError> {
                let tx = conn.transaction()?;
                let (_, version) = resolve_version(&tx, &req.model, &req.version)?;
                version_artifacts(&tx, &req.model, version)?;
                let targets = targets(&tx, req.device.as_deref(), req.selector.as_ref())?;
                // Only to devices whose engines can run it (a version only ONNX Runtime runs).
                let required = required_engines(&tx, &req.model, version)?;
                let (targets, unable): (Vec<String>, Vec<String>) =
                    targets.into_iter().partition(|d| can_run(&tx, d, &required).unwrap_or(true));
                if !unable.is_empty() && (req.device.is_some() || targets.is_empty()) {
                    return Err(FleetError::Conflict(format!(
                        "{}:{version} runs only on {}, which {} do(es) not report (an agent built with --features ort \
                         and the ONNX Runtime library)",
                        req.model,
                        required.join(", "),
                        unable.join(", ")
                    )));
                }
                if !unable.is_empty() {
                    tracing::warn!(model = %req.model, version, devices = ?unable, "Left out devices that cannot run this version.");
                }
                let model = ModelRef { name: req.model.clone(), version };
                let mut issued = Vec::with_capacity(targets.len());
                for device in &targets {
                    issued.push(this.issue(&tx, device, &model, None)?);
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

    /// Takes a model off one device or every device matching a selector: each gets a document
    /// without it (its other models unchanged), and its agent unloads it and deletes its slots.
    pub async fn undeploy(&self, req: UndeployRequest, actor: String) -> Result<Vec<Issued>, FleetError> {
        if req.device.is_some() == req.selector.is_some() {
            return Err(FleetError::BadRequest("give exactly one of device or selector".into()));
        }
        let this = self.clone();
        self.db
            .call(move |conn| -> Result<Vec<Issued>, FleetError> {
                let tx = conn.transaction()?;
                let mut issued = Vec::new();
                for device in targets(&tx, req.device.as_deref(), req.selector.as_ref())? {
                    let models = desired_models(&tx, &device)?;
                    if !models.iter().any(|(m, ..)| m.name == req.model) {
                        if req.device.is_some() {
                            return Err(FleetError::NotFound(format!("device {device:?} is not given {}", req.model)));
                        }
                        continue;
                    }
                    issued.push(this.withdraw(&tx, &device, &req.model)?);
                }
                db::audit(
                    &tx,
                    &actor,
                    "undeploy",
                    &req.model,
                    serde_json::json!({"devices": issued.iter().map(|i| &i.device_id).collect::<Vec<_>>(),
                                       "selector": req.selector}),
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
                let tx = conn.transaction()?;
                let horizon = now() + (this.settings.document_ttl_secs / 2) as i64;
                let at = now() as u64;
                let mut due: Vec<String> = Vec::new();
                {
                    let mut stmt = tx.prepare(
                        "SELECT s.device_id, s.expires_at, s.key_id, d.trust_version
                         FROM desired s JOIN devices d ON d.id = s.device_id",
                    )?;
                    let rows = stmt.query_map([], |r| {
                        let (expires_at, key_id, trust_version): (i64, Option<String>, Option<i64>) =
                            (r.get(1)?, r.get(2)?, r.get(3)?);
                        let wanted = this.keys.signer_for(trust_version.map(|v| v as u64), at).key_id();
                        let stale = expires_at <= horizon || key_id.as_deref() != Some(wanted.as_str());
                        Ok(if stale { Some(r.get(0)?) } else { None })
                    })?;
                    for row in rows {
                        due.extend(row?);
                    }
                }
                // The refreshed document keeps what the current one asks (every model, shadows).
                for device in &due {
                    this.sign_set(&tx, device)?;
                }
                tx.commit()?;
                Ok(due)
            })
            .await
    }

    /// Sets `device`'s desired version of `model.name` (with a shadow, or activated) and signs
    /// its next document, naming its whole set (inside the caller's transaction).
    pub(crate) fn issue(
        &self,
        tx: &Connection,
        device: &str,
        model: &ModelRef,
        shadow: Option<ShadowSpec>,
    ) -> Result<Issued, FleetError> {
        tx.execute(
            "INSERT INTO desired_models (device_id, model, version, shadow_share) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (device_id, model) DO UPDATE SET version = excluded.version, shadow_share = excluded.shadow_share",
            params![device, model.name, model.version as i64, shadow.map(|s| s.share)],
        )?;
        let issued = self.sign_set(tx, device)?;
        Ok(Issued { version: model.version, ..issued })
    }

    /// Takes `name` out of `device`'s desired set and signs its next document (naming no model
    /// when it was the last: the device then serves nothing).
    pub(crate) fn withdraw(&self, tx: &Connection, device: &str, name: &str) -> Result<Issued, FleetError> {
        let version: Option<i64> = tx
            .query_row(
                "SELECT version FROM desired_models WHERE device_id = ?1 AND model = ?2",
                params![device, name],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute("DELETE FROM desired_models WHERE device_id = ?1 AND model = ?2", params![device, name])?;
        let issued = self.sign_set(tx, device)?;
        Ok(Issued { version: version.unwrap_or_default() as u64, ..issued })
    }

    /// Signs and stores the next document for `device`, naming every model of its desired set.
    pub(super) fn sign_set(&self, tx: &Connection, device: &str) -> Result<Issued, FleetError> {
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
        let mut models = Vec::new();
        for (model, shadow) in desired_models(tx, device)? {
            let artifacts = version_artifacts(tx, &model.name, model.version)?;
            let artifacts = crate::delta::offer(tx, device, &model, &artifacts, self.settings.delta_max_share)?;
            models.push(DesiredModel { model, artifacts, shadow });
        }
        let header = DeploymentDocument {
            kind: DEPLOYMENT_KIND.into(),
            key_id: signer.key_id(),
            sequence,
            issued_at,
            expires_at: issued_at + self.settings.document_ttl_secs,
            devices: vec![device.to_owned()],
            model: None,
            artifacts: Vec::new(),
            shadow: None,
            models: Vec::new(),
        };
        let doc = header.with_models(models);
        // The row's model and version are the first model's; an empty set stores "" and 0.
        let first = doc.model.clone().unwrap_or(ModelRef { name: String::new(), version: 0 });
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
                first.name,
                first.version as i64,
                serde_json::to_string(&envelope).unwrap_or_default(),
                issued_at as i64,
                doc.expires_at as i64,
                doc.key_id
            ],
        )?;
        Ok(Issued { device_id: device.to_owned(), sequence, version: first.version, expires_at: doc.expires_at })
    }
}

/// `device`'s desired set: each model's version and shadow, by model name.
pub(crate) fn desired_models(
    conn: &Connection,
    device: &str,
) -> Result<Vec<(ModelRef, Option<ShadowSpec>)>, FleetError> {
    let rows: Vec<(String, i64, Option<f64>)> = conn
        .prepare("SELECT model, version, shadow_share FROM desired_models WHERE device_id = ?1 ORDER BY model")?
        .query_map(params![device], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(name, version, share)| {
            (ModelRef { name, version: version as u64 }, share.map(|share| ShadowSpec { share }))
        })
        .collect())
}

/// The devices a request names: one (which must exist and be in service) or a selector's.
fn targets(
    conn: &Connection,
    device: Option<&str>,
    selector: Option<&BTreeMap<String, String>>,
) -> Result<Vec<String>, FleetError> {
    match (device, selector) {
        (Some(id), _) => {
            let row: Option<Option<i64>> = conn
                .query_row("SELECT decommissioned_at FROM devices WHERE id = ?1", params![id], |r| r.get(0))
                .optional()?;
            match row {
                None => Err(FleetError::NotFound(format!("unknown device {id:?}"))),
                Some(Some(_)) => Err(FleetError::Conflict(format!("device {id:?} is decommissioned"))),
                Some(None) => Ok(vec![id.to_owned()]),
            }
        }
        (None, Some(selector)) => matching_devices(conn, selector),
        (None, None) => Ok(Vec::new()),
    }
}

pub(crate) fn version_artifacts(
    conn: &Connection,
    model: &str,
    version: u64,
) -> Result<Vec<DeployedArtifact>, FleetError> {
    let rows: Vec<DeployedArtifact> = crate::registry::stored_artifacts(conn, model, version)?
        .into_iter()
        .map(|a| DeployedArtifact {
            name: a.name,
            sha256: a.sha256,
            size: a.size,
            compressed_sha256: a.compressed_sha256,
            compressed_size: a.compressed_size,
            delta: None,
        })
        .collect();
    if !rows.iter().any(|a| a.name == MODEL_FILE) || !rows.iter().any(|a| a.name == BUNDLE_FILE) {
        return Err(FleetError::NotFound(format!("{model}:{version} has no stored artifacts")));
    }
    Ok(rows)
}

/// The engines a version needs, one of which a device must run (empty: any engine).
pub(crate) fn required_engines(conn: &Connection, model: &str, version: u64) -> Result<Vec<String>, FleetError> {
    // Only the field, not the whole manifest (baseline profile included): rollouts ask every step.
    let engines: Option<String> = conn.query_row(
        &format!(
            "SELECT {} FROM versions v JOIN models m ON m.id = v.model_id WHERE m.name = ?1 AND v.version = ?2",
            conn.dialect().json_text("v.manifest", "engines")
        ),
        params![model, version as i64],
        |r| r.get(0),
    )?;
    Ok(engines.and_then(|e| serde_json::from_str(&e).ok()).unwrap_or_default())
}

/// Whether `device` reports an engine in `required` (a device that has not reported its
/// engines yet may: its activation says otherwise).
pub(crate) fn can_run(conn: &Connection, device: &str, required: &[String]) -> Result<bool, FleetError> {
    if required.is_empty() {
        return Ok(true);
    }
    let engines: Option<String> = conn
        .query_row(
            &format!("SELECT {} FROM devices WHERE id = ?1", conn.dialect().json_text("status", "engines")),
            params![device],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let engines: Vec<String> = engines.and_then(|e| serde_json::from_str(&e).ok()).unwrap_or_default();
    Ok(engines.is_empty() || engines.iter().any(|e| required.contains(e)))
}

pub(crate) fn matching_devices(
    conn: &Connection,
    selector: &BTreeMap<String, String>,
) -> Result<Vec<String>, FleetError> {
    let all: Vec<(String, String)> = conn
        .prepare("SELECT id, labels FROM devices WHERE decommissioned_at IS NULL ORDER BY id")?
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
