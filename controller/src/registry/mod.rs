//! The model registry: immutable versions with lineage, aliases, and the push pipeline.
//!
//! A push validates the model off the async threads, stores the model and its manifest in the
//! artifact store (content-addressed, so an aborted push leaves at most an unreferenced
//! file), then records the version in one SQLite transaction: either the whole version exists
//! afterwards, or none of it.

mod deltas;

use std::path::PathBuf;
use std::sync::Arc;

use crate::sql::{Connection, OptionalExtension, params};
use edgefleet_shared::api::models::{ArtifactInfo, ModelSummary, PushMetadata, VersionInfo};
use edgefleet_shared::bundle::{ArtifactEntry, BUNDLE_FILE, BUNDLE_KIND, BundleManifest, Lineage, MODEL_FILE};
use edgefleet_shared::keys::Signer;
use edgefleet_shared::names::ModelName;
use edgefleet_shared::signature::DocumentSignature;

use crate::analytics::profile::ProfileOptions;
use crate::db::{self, Db, DbError, now};
use crate::store::{ArtifactStore, StoreError, StoredArtifact};
use crate::validate::sandbox::Validator;
use crate::validate::{BaselineData, ValidationError};

/// Registry failures, each mapping to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The model or baseline does not pass validation (422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A value is out of its range (422).
    #[error("{0}")]
    OutOfRange(String),
    /// No such model, version or alias (404).
    #[error("{0}")]
    NotFound(String),
    /// The version exists already, or is not above the latest (409).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database failed (500).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<crate::sql::Error> for RegistryError {
    fn from(e: crate::sql::Error) -> Self {
        RegistryError::Db(DbError::from(e))
    }
}

/// A push, as received.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// Model name.
    pub name: String,
    /// The ONNX bytes.
    pub model: Vec<u8>,
    /// Reference data.
    pub baseline: Option<BaselineData>,
    /// Lineage and options.
    pub meta: PushMetadata,
}

/// The registry service.
#[derive(Debug, Clone)]
pub struct Registry {
    db: Db,
    store: Arc<dyn ArtifactStore>,
    signer: Arc<dyn SignerDebug>,
    scratch: PathBuf,
    profile: ProfileOptions,
    validator: Arc<Validator>,
    /// One delta job at a time (each holds two models and a window in memory); a job waiting
    /// for it finds what the one before made.
    deltas: Arc<std::sync::Mutex<()>>,
}

/// A [`Signer`] that can be debug-printed (without its secret).
pub trait SignerDebug: Signer + std::fmt::Debug {}
impl<T: Signer + std::fmt::Debug> SignerDebug for T {}

/// The highest version number: 2^53 - 1, exact in every JSON client and in SQLite's INTEGER.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

impl Registry {
    /// A registry over `db` and `store`, signing with `signer`; `scratch` holds temp files.
    pub fn new(
        db: Db,
        store: Arc<dyn ArtifactStore>,
        signer: Arc<dyn SignerDebug>,
        scratch: PathBuf,
        profile: ProfileOptions,
        validator: Validator,
    ) -> Self {
        Registry { db, store, signer, scratch, profile, validator: Arc::new(validator), deltas: Arc::default() }
    }

    /// Validates and registers a new version.
    pub async fn push(&self, req: PushRequest, actor: String) -> Result<VersionInfo, RegistryError> {
        for (what, v) in [("version", req.meta.version), ("parent_version", req.meta.parent_version)] {
            if let Some(v) = v
                && !(1..=MAX_VERSION).contains(&v)
            {
                return Err(RegistryError::OutOfRange(format!(
                    "{what} {v} is out of range: versions are 1 to {MAX_VERSION} (2^53 - 1, exact in every JSON client)"
                )));
            }
        }
        ModelName::new(req.name.as_str()).map_err(|e| RegistryError::BadRequest(format!("model {e}")))?;
        if let Some(h) = &req.meta.dataset_sha256
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(RegistryError::BadRequest(format!("dataset hash {h:?} is not 64 hex digits (SHA-256)")));
        }
        if let Some(source) = &req.meta.source {
            source.check().map_err(RegistryError::BadRequest)?;
        }
        if req.model.is_empty() {
            return Err(RegistryError::BadRequest("the model file is empty".into()));
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.push_blocking(req, &actor))
            .await
            .map_err(|e| RegistryError::Db(DbError::Task(e.to_string())))?
    }

    fn push_blocking(&self, req: PushRequest, actor: &str) -> Result<VersionInfo, RegistryError> {
        std::fs::create_dir_all(&self.scratch)
            .map_err(|source| StoreError::Io { path: self.scratch.clone(), source })?;
        let tmp = tempfile::Builder::new()
            .suffix(".onnx")
            .tempfile_in(&self.scratch)
            .map_err(|source| StoreError::Io { path: self.scratch.clone(), source })?;
        // skl2onnx's default ZipMap output becomes a plain probabilities tensor (validate::zipmap).
        let (model_bytes, mut warnings) = match crate::validate::zipmap::strip(&req.model) {
            Ok(Some(rewritten)) => (std::borrow::Cow::Owned(rewritten.bytes), rewritten.notes),
            Ok(None) => (std::borrow::Cow::Borrowed(&req.model[..]), Vec::new()),
            Err(e) => return Err(ValidationError::Model(e).into()),
        };
        std::fs::write(tmp.path(), &model_bytes)
            .map_err(|source| StoreError::Io { path: tmp.path().into(), source })?;
        let validated = self.validator.validate(tmp.path(), req.baseline.as_ref(), &self.profile, &self.scratch)?;
        if let Some(how) = &validated.nondeterministic {
            if !req.meta.allow_nondeterministic {
                return Err(RegistryError::Invalid(ValidationError::Nondeterministic(format!(
                    "{how}; devices could never pass its self-test \
                     (allow_nondeterministic / --allow-nondeterministic skips this check, e.g. for randomness only the controller's engine shows)"
                ))));
            }
            warnings.push(format!("the model is not deterministic (allowed): {how}"));
        }
        let model = self.store.put(&model_bytes)?;

        self.db.call_blocking(|conn| -> Result<VersionInfo, RegistryError> {
            let tx = conn.transaction()?;
            let model_id = match tx
                .query_row("SELECT id FROM models WHERE name = ?1", params![req.name], |r| r.get::<_, i64>(0))
                .optional()?
            {
                Some(id) => id,
                None => {
                    tx.query_row(
                        "INSERT INTO models (name, created_at, created_by) VALUES (?1, ?2, ?3) RETURNING id",
                        params![req.name, now(), actor],
                        |r| r.get(0),
                    )?
                }
            };
            let latest: Option<i64> =
                tx.query_row("SELECT MAX(version) FROM versions WHERE model_id = ?1", params![model_id], |r| r.get(0))?;
            let latest = latest.unwrap_or(0) as u64;
            let version = match req.meta.version {
                Some(v) if v <= latest => {
                    return Err(RegistryError::Conflict(format!(
                        "model {:?} already has version {latest}; versions are immutable and increase (asked for {v})",
                        req.name
                    )));
                }
                Some(0) => return Err(RegistryError::BadRequest("versions start at 1".into())),
                Some(v) => v,
                None => latest + 1,
            };
            if let Some(previous) = latest_manifest(&tx, model_id, latest)? {
                let mut breaks = crate::validate::schema::incompatibilities(&previous.inputs, &validated.inputs, "input");
                breaks.extend(crate::validate::schema::incompatibilities(&previous.outputs, &validated.outputs, "output"));
                if !breaks.is_empty() {
                    let list = breaks.join("; ");
                    if !req.meta.allow_schema_change {
                        return Err(RegistryError::Conflict(format!(
                            "this version would break callers of {}:{latest}: {list}. Push with --allow-schema-change \
                             (allow_schema_change) if the apps are updated too",
                            req.name
                        )));
                    }
                    warnings.push(format!("schema changed from version {latest} (allowed): {list}"));
                }
            }
            let same: Vec<i64> = tx
                .prepare("SELECT version FROM versions WHERE model_id = ?1 AND model_sha256 = ?2 ORDER BY version")?
                .query_map(params![model_id, model.sha256], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if !same.is_empty() {
                let list: Vec<String> = same.iter().map(ToString::to_string).collect();
                warnings.push(format!(
                    "the same model bytes are already version(s) {} of {:?}: a new version was made anyway",
                    list.join(", "),
                    req.name
                ));
            }
            if let Some(p) = req.meta.parent_version {
                let exists: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM versions WHERE model_id = ?1 AND version = ?2)",
                    params![model_id, p as i64],
                    |r| r.get(0),
                )?;
                if !exists {
                    return Err(RegistryError::NotFound(format!("parent version {p} of model {:?} does not exist", req.name)));
                }
            }
            let manifest = BundleManifest {
                kind: BUNDLE_KIND.into(),
                name: req.name.clone(),
                version,
                inputs: validated.inputs.clone(),
                outputs: validated.outputs.clone(),
                preprocessing: req.meta.preprocessing.clone(),
                lineage: Lineage {
                    parent_version: req.meta.parent_version,
                    dataset_sha256: req.meta.dataset_sha256.as_ref().map(|h| h.to_ascii_lowercase()),
                    code_commit: req.meta.code_commit.clone(),
                    params: req.meta.params.clone(),
                    metrics: req.meta.metrics.clone(),
                    created_at: now() as u64,
                    source: req.meta.source.clone(),
                },
                artifacts: vec![ArtifactEntry { name: MODEL_FILE.into(), sha256: model.sha256.clone(), size: model.size }],
                baseline: validated.baseline.clone(),
                self_test: validated.self_test.clone(),
                engines: validated.engines.clone(),
            };
            let bundle_bytes = manifest.to_bytes();
            let bundle = self.store.put(&bundle_bytes)?;
            let signature = DocumentSignature::sign(&bundle_bytes, self.signer.as_ref());
            tx.execute(
                "INSERT INTO versions (model_id, version, manifest, bundle_sha256, model_sha256, signature,
                     dataset_sha256, code_commit, parent_version, created_at, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    model_id,
                    version as i64,
                    String::from_utf8_lossy(&bundle_bytes),
                    bundle.sha256,
                    model.sha256,
                    serde_json::to_string(&signature).unwrap_or_default(),
                    manifest.lineage.dataset_sha256,
                    manifest.lineage.code_commit,
                    manifest.lineage.parent_version.map(|v| v as i64),
                    manifest.lineage.created_at as i64,
                    actor,
                ],
            )?;
            for (name, a) in [(MODEL_FILE, &model), (BUNDLE_FILE, &bundle)] {
                insert_artifact(&tx, a)?;
                tx.execute(
                    "INSERT INTO version_artifacts (model_id, version, name, sha256) VALUES (?1, ?2, ?3, ?4)",
                    params![model_id, version as i64, name, a.sha256],
                )?;
            }
            db::audit(
                &tx,
                actor,
                "model.push",
                &format!("{}:{version}", req.name),
                serde_json::json!({"model_sha256": model.sha256, "bundle_sha256": bundle.sha256, "dataset_sha256": manifest.lineage.dataset_sha256, "warnings": warnings}),
            )?;
            tx.commit()?;
            tracing::info!(model = %req.name, version, %actor, "Version registered.");
            Ok(VersionInfo {
                name: req.name.clone(),
                version,
                aliases: Vec::new(),
                created_by: actor.to_owned(),
                created_at: manifest.lineage.created_at,
                bundle_sha256: bundle.sha256.clone(),
                artifacts: vec![artifact_info(MODEL_FILE, &model), artifact_info(BUNDLE_FILE, &bundle)],
                manifest,
                signature,
                warnings,
                deltas: Vec::new(),
            })
        })
        .map(|mut info| {
            info.deltas = self.make_deltas(&info);
            info
        })
    }

    /// All models.
    pub async fn list(&self) -> Result<Vec<ModelSummary>, RegistryError> {
        self.db
            .call(|conn| {
                let names: Vec<String> = conn
                    .prepare("SELECT name FROM models ORDER BY name")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                names.iter().map(|n| summary(conn, n)).collect()
            })
            .await
    }

    /// One model.
    pub async fn model(&self, name: String) -> Result<ModelSummary, RegistryError> {
        self.db.call(move |conn| summary(conn, &name)).await
    }

    /// One version; `reference` is a number or an alias.
    pub async fn version(&self, name: String, reference: String) -> Result<VersionInfo, RegistryError> {
        self.db.call(move |conn| version_info(conn, &name, &reference)).await
    }

    /// Points `alias` at `version`, atomically replacing where it pointed before.
    pub async fn set_alias(
        &self,
        name: String,
        alias: String,
        version: u64,
        actor: String,
    ) -> Result<ModelSummary, RegistryError> {
        if ModelName::new(alias.as_str()).is_err() || alias.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RegistryError::BadRequest(format!(
                "alias {alias:?} must be a name (letters, digits, '-', '_', '.'), not a number"
            )));
        }
        self.db
            .call(move |conn| {
                let tx = conn.transaction()?;
                let model_id = model_id(&tx, &name)?;
                version_exists(&tx, model_id, &name, version)?;
                let previous: Option<i64> = tx
                    .query_row(
                        "SELECT version FROM aliases WHERE model_id = ?1 AND alias = ?2",
                        params![model_id, alias],
                        |r| r.get(0),
                    )
                    .optional()?;
                tx.execute(
                    "INSERT INTO aliases (model_id, alias, version, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version,
                         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                    params![model_id, alias, version as i64, now(), actor],
                )?;
                db::audit(
                    &tx,
                    &actor,
                    "model.alias",
                    &format!("{name}@{alias}"),
                    serde_json::json!({"version": version, "previous": previous}),
                )?;
                tx.commit()?;
                summary(conn, &name)
            })
            .await
    }

    /// Removes an alias.
    pub async fn delete_alias(&self, name: String, alias: String, actor: String) -> Result<(), RegistryError> {
        self.db
            .call(move |conn| {
                let tx = conn.transaction()?;
                let model_id = model_id(&tx, &name)?;
                let n =
                    tx.execute("DELETE FROM aliases WHERE model_id = ?1 AND alias = ?2", params![model_id, alias])?;
                if n == 0 {
                    return Err(RegistryError::NotFound(format!("model {name:?} has no alias {alias:?}")));
                }
                db::audit(&tx, &actor, "model.alias.delete", &format!("{name}@{alias}"), serde_json::json!({}))?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// Facts about a stored artifact.
    pub async fn artifact(&self, sha256: String) -> Result<ArtifactInfo, RegistryError> {
        self.db
            .call(move |conn| {
                conn.query_row(
                    "SELECT sha256, size, compressed_sha256, compressed_size FROM artifacts WHERE sha256 = ?1",
                    params![sha256],
                    |r| {
                        Ok(ArtifactInfo {
                            name: String::new(),
                            sha256: r.get(0)?,
                            size: r.get::<_, i64>(1)? as u64,
                            compressed_sha256: r.get(2)?,
                            compressed_size: r.get::<_, i64>(3)? as u64,
                        })
                    },
                )
                .optional()?
                .ok_or_else(|| RegistryError::NotFound(format!("no artifact {sha256}")))
            })
            .await
    }

    /// The artifact store.
    pub fn store(&self) -> &Arc<dyn ArtifactStore> {
        &self.store
    }
}

fn insert_artifact(conn: &Connection, a: &StoredArtifact) -> crate::sql::Result<()> {
    conn.execute(
        "INSERT INTO artifacts (sha256, size, compressed_sha256, compressed_size, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        params![a.sha256, a.size as i64, a.compressed_sha256, a.compressed_size as i64, now()],
    )?;
    Ok(())
}

fn artifact_info(name: &str, a: &StoredArtifact) -> ArtifactInfo {
    ArtifactInfo {
        name: name.into(),
        sha256: a.sha256.clone(),
        size: a.size,
        compressed_sha256: a.compressed_sha256.clone(),
        compressed_size: a.compressed_size,
    }
}

fn model_id(conn: &Connection, name: &str) -> Result<i64, RegistryError> {
    conn.query_row("SELECT id FROM models WHERE name = ?1", params![name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| RegistryError::NotFound(format!("unknown model {name:?}")))
}

fn version_exists(conn: &Connection, model_id: i64, name: &str, version: u64) -> Result<(), RegistryError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM versions WHERE model_id = ?1 AND version = ?2)",
        params![model_id, version as i64],
        |r| r.get(0),
    )?;
    if exists { Ok(()) } else { Err(RegistryError::NotFound(format!("model {name:?} has no version {version}"))) }
}

fn summary(conn: &Connection, name: &str) -> Result<ModelSummary, RegistryError> {
    let id = model_id(conn, name)?;
    let created_at: i64 = conn.query_row("SELECT created_at FROM models WHERE id = ?1", params![id], |r| r.get(0))?;
    let versions = conn
        .prepare("SELECT version FROM versions WHERE model_id = ?1 ORDER BY version")?
        .query_map(params![id], |r| r.get::<_, i64>(0).map(|v| v as u64))?
        .collect::<Result<_, _>>()?;
    let aliases = conn
        .prepare("SELECT alias, version FROM aliases WHERE model_id = ?1 ORDER BY alias")?
        .query_map(params![id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    Ok(ModelSummary { name: name.into(), versions, aliases, created_at: created_at as u64 })
}

/// Resolves a version number or alias of `name`.
pub fn resolve_version(conn: &Connection, name: &str, reference: &str) -> Result<(i64, u64), RegistryError> {
    let id = model_id(conn, name)?;
    let version = match reference.parse::<u64>() {
        Ok(v) if v > MAX_VERSION => {
            return Err(RegistryError::NotFound(format!(
                "model {name:?} has no version {v} (versions are at most {MAX_VERSION})"
            )));
        }
        Ok(v) => v,
        Err(_) => conn
            .query_row("SELECT version FROM aliases WHERE model_id = ?1 AND alias = ?2", params![id, reference], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|v| v as u64)
            .ok_or_else(|| RegistryError::NotFound(format!("model {name:?} has no version or alias {reference:?}")))?,
    };
    version_exists(conn, id, name, version)?;
    Ok((id, version))
}

/// The stored artifacts of `model:version`, by name.
pub(crate) fn stored_artifacts(conn: &Connection, model: &str, version: u64) -> crate::sql::Result<Vec<ArtifactInfo>> {
    conn.prepare_cached(
        "SELECT va.name, a.sha256, a.size, a.compressed_sha256, a.compressed_size
         FROM version_artifacts va JOIN artifacts a ON a.sha256 = va.sha256
         JOIN models m ON m.id = va.model_id
         WHERE m.name = ?1 AND va.version = ?2 ORDER BY va.name",
    )?
    .query_map(params![model, version as i64], |r| {
        Ok(ArtifactInfo {
            name: r.get(0)?,
            sha256: r.get(1)?,
            size: r.get::<_, i64>(2)? as u64,
            compressed_sha256: r.get(3)?,
            compressed_size: r.get::<_, i64>(4)? as u64,
        })
    })?
    .collect()
}

/// The manifest of `version` of a model (none for version 0: the model is new).
fn latest_manifest(conn: &Connection, model_id: i64, version: u64) -> Result<Option<BundleManifest>, RegistryError> {
    if version == 0 {
        return Ok(None);
    }
    let text: String = conn.query_row(
        "SELECT manifest FROM versions WHERE model_id = ?1 AND version = ?2",
        params![model_id, version as i64],
        |r| r.get(0),
    )?;
    BundleManifest::from_bytes(text.as_bytes())
        .map(Some)
        .map_err(|e| RegistryError::Db(DbError::Task(format!("stored manifest unreadable: {e}"))))
}

fn version_info(conn: &Connection, name: &str, reference: &str) -> Result<VersionInfo, RegistryError> {
    let (id, version) = resolve_version(conn, name, reference)?;
    let (manifest, bundle_sha256, signature, created_at, created_by): (String, String, String, i64, String) = conn.query_row(
        "SELECT manifest, bundle_sha256, signature, created_at, created_by FROM versions WHERE model_id = ?1 AND version = ?2",
        params![id, version as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    let aliases = conn
        .prepare("SELECT alias FROM aliases WHERE model_id = ?1 AND version = ?2 ORDER BY alias")?
        .query_map(params![id, version as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let artifacts = stored_artifacts(conn, name, version)?;
    let manifest = BundleManifest::from_bytes(manifest.as_bytes())
        .map_err(|e| RegistryError::Db(DbError::Task(format!("stored manifest unreadable: {e}"))))?;
    let signature = serde_json::from_str(&signature)
        .map_err(|e| RegistryError::Db(DbError::Task(format!("stored signature unreadable: {e}"))))?;
    Ok(VersionInfo {
        deltas: Vec::new(),
        name: name.into(),
        version,
        aliases,
        created_by,
        created_at: created_at as u64,
        bundle_sha256,
        artifacts,
        manifest,
        signature,
        warnings: Vec::new(),
    })
}
