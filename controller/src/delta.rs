//! Delta updates: ship only what changed.
//!
//! At push, the controller makes a zstd delta (the new model compressed with an earlier
//! version's model as its reference prefix, as `zstd --patch-from`) from the previous version
//! and from the declared parent, and before a deployment or rollout from every version of the
//! model that devices run; it stores each under its own digest and records it by the pair of
//! digests. When it signs a document for a device that applies deltas and holds one of those
//! bases (its active or previous version), the artifact names the delta beside the full
//! artifact, if the delta is at most `fleet.delta_max_share` of the compressed artifact. The
//! device accepts what the delta makes only if it hashes to the signed digest, and falls back to
//! the full artifact otherwise: the trust rules do not change.

use std::time::Instant;

use crate::sql::{Connection, OptionalExtension as _, params};
use edgefleet_shared::bundle::MODEL_FILE;
use edgefleet_shared::compress::{DELTA_LEVEL, decompress_capped, delta_compress};
use edgefleet_shared::deployment::{ArtifactDelta, DeployedArtifact, ModelRef};
use edgefleet_shared::fleet::DeviceStatus;

use crate::db::now;
use crate::store::{ArtifactStore, Object, StoreError};

/// At most this many held versions get a delta made before a deployment (the newest ones), so a
/// deploy waits for a bounded amount of compression.
pub const MAX_DEPLOY_BASES: usize = 4;

/// A delta made at push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    /// The base version it applies to.
    pub base_version: u64,
    /// SHA-256 of the delta bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The full artifact's compressed size, for comparison.
    pub full_size: u64,
}

/// Why a delta could not be made (the push itself stands).
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] crate::sql::Error),
    /// A stored artifact did not decompress.
    #[error("artifact {0} does not decompress: {1}")]
    Corrupt(String, String),
    /// Compressing failed.
    #[error("cannot make the delta: {0}")]
    Compress(std::io::Error),
}

/// The versions of `model` a delta to `version` is made from: the latest one before it and the
/// declared parent, each once.
pub fn bases(conn: &Connection, model: &str, version: u64, parent: Option<u64>) -> crate::sql::Result<Vec<u64>> {
    let previous: Option<i64> = conn.query_row(
        "SELECT MAX(v.version) FROM versions v JOIN models m ON m.id = v.model_id WHERE m.name = ?1 AND v.version < ?2",
        params![model, version as i64],
        |r| r.get(0),
    )?;
    let mut out: Vec<u64> = previous.map(|v| v as u64).into_iter().collect();
    if let Some(p) = parent
        && p != version
        && !out.contains(&p)
    {
        out.push(p);
    }
    Ok(out)
}

fn model_artifact(conn: &Connection, model: &str, version: u64) -> crate::sql::Result<Option<(String, u64, u64)>> {
    conn.query_row(
        "SELECT a.sha256, a.size, a.compressed_size FROM version_artifacts va
         JOIN models m ON m.id = va.model_id JOIN artifacts a ON a.sha256 = va.sha256
         WHERE m.name = ?1 AND va.version = ?2 AND va.name = ?3",
        params![model, version as i64, MODEL_FILE],
        |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
    )
    .optional()
}

fn load(store: &dyn ArtifactStore, sha256: &str, size: u64) -> Result<Vec<u8>, DeltaError> {
    let packed = store.read(Object::Artifact(sha256))?;
    let mut out = Vec::with_capacity(size as usize);
    decompress_capped(&packed[..], size, &mut out)
        .map_err(|e| DeltaError::Corrupt(sha256.to_owned(), e.to_string()))?;
    Ok(out)
}

/// Versions of `model` that live devices applying deltas hold (active or previous): the bases a
/// deployment of another version can use.
pub fn held_versions(conn: &Connection, model: &str) -> crate::sql::Result<Vec<u64>> {
    let d = conn.dialect();
    let (deltas, active, previous) =
        (d.json_text("status", "deltas"), d.json_text("status", "active.name"), d.json_text("status", "previous.name"));
    let mut stmt = conn.prepare(&format!(
        "SELECT DISTINCT v FROM (
             SELECT {} AS v FROM devices
             WHERE decommissioned_at IS NULL AND {deltas} IS NOT NULL AND {active} = ?1
             UNION
             SELECT {} FROM devices
             WHERE decommissioned_at IS NULL AND {deltas} IS NOT NULL AND {previous} = ?1) held
         WHERE v IS NOT NULL ORDER BY v",
        d.json_int("status", "active.version"),
        d.json_int("status", "previous.version"),
    ))?;
    stmt.query_map(params![model], |r| r.get::<_, i64>(0).map(|v| v as u64))?.collect()
}

/// Makes (or finds) the deltas to `model:version`'s model artifact from each of the `bases`
/// versions. Blocking (run it off the async reactor); the database is held only to read and
/// record, never while compressing.
pub fn make(
    db: &crate::db::Db,
    store: &dyn ArtifactStore,
    model: &str,
    version: u64,
    bases: &[u64],
) -> Result<Vec<Made>, DeltaError> {
    struct Job {
        base_version: u64,
        base: (String, u64),
        known: Option<(String, u64)>,
    }
    let planned = db.call_blocking(|conn| -> Result<_, DeltaError> {
        let Some(target) = model_artifact(conn, model, version)? else { return Ok(None) };
        let mut jobs = Vec::new();
        for &base_version in bases {
            if base_version == version {
                continue;
            }
            let Some((sha, size, _)) = model_artifact(conn, model, base_version)? else { continue };
            if sha == target.0 {
                continue;
            }
            let known: Option<(Option<String>, i64)> = conn
                .query_row(
                    "SELECT delta_sha256, delta_size FROM deltas WHERE base_sha256 = ?1 AND target_sha256 = ?2",
                    params![sha, target.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match known {
                // Tried before and not worth keeping.
                Some((None, _)) => {}
                Some((Some(delta), k)) => {
                    jobs.push(Job { base_version, base: (sha, size), known: Some((delta, k as u64)) });
                }
                None => jobs.push(Job { base_version, base: (sha, size), known: None }),
            }
        }
        Ok(Some((target, jobs)))
    })?;
    let Some(((target_sha, target_size, full_size), jobs)) = planned else { return Ok(Vec::new()) };
    let mut target: Option<Vec<u8>> = None;
    let mut made = Vec::new();
    for job in jobs {
        if let Some((sha256, size)) = job.known {
            made.push(Made { base_version: job.base_version, sha256, size, full_size });
            continue;
        }
        let started = Instant::now();
        let base = load(store, &job.base.0, job.base.1)?;
        let target = match &target {
            Some(t) => t,
            None => target.insert(load(store, &target_sha, target_size)?),
        };
        let delta = delta_compress(&base, target, DELTA_LEVEL).map_err(DeltaError::Compress)?;
        if delta.len() as u64 >= full_size {
            tracing::info!(%model, version, base_version = job.base_version, delta_bytes = delta.len(),
                full_bytes = full_size, "No delta kept: it is not smaller than the full artifact.");
            db.call_blocking(|conn| {
                conn.execute(
                    "INSERT INTO deltas (base_sha256, target_sha256, delta_sha256, delta_size, created_at)
                     VALUES (?1, ?2, NULL, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![job.base.0, target_sha, delta.len() as i64, now()],
                )
            })?;
            continue;
        }
        let (delta_sha, size) = store.put_blob(&delta)?;
        db.call_blocking(|conn| {
            conn.execute(
                "INSERT INTO deltas (base_sha256, target_sha256, delta_sha256, delta_size, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![job.base.0, target_sha, delta_sha, size as i64, now()],
            )
        })?;
        tracing::info!(%model, version, base_version = job.base_version, delta_bytes = size, full_bytes = full_size,
            ms = started.elapsed().as_millis() as u64, "Delta made.");
        made.push(Made { base_version: job.base_version, sha256: delta_sha, size, full_size });
    }
    Ok(made)
}

/// The delta a device holding `held` (the digest of its copy of the artifact) should get for
/// `target`, if the cache has one (`cached`: its digest and size) no bigger than `max_share` of
/// the compressed artifact.
pub fn choose(
    target: &DeployedArtifact,
    held: &str,
    cached: Option<(String, u64)>,
    max_share: f64,
) -> Option<ArtifactDelta> {
    let (sha256, size) = cached?;
    (held != target.sha256 && size > 0 && (size as f64) <= max_share * target.compressed_size as f64)
        .then(|| ArtifactDelta { base_sha256: held.to_owned(), sha256, size })
}

/// `artifacts` for `device`, each with the delta it should get (inside the caller's transaction):
/// only for a device that reports applying deltas, from the versions of the same model it holds
/// (active first, then previous).
pub fn offer(
    conn: &Connection,
    device: &str,
    model: &ModelRef,
    artifacts: &[DeployedArtifact],
    max_share: f64,
) -> crate::sql::Result<Vec<DeployedArtifact>> {
    let mut out = artifacts.to_vec();
    if max_share <= 0.0 {
        return Ok(out);
    }
    let status: Option<String> =
        conn.query_row("SELECT status FROM devices WHERE id = ?1", params![device], |r| r.get(0)).optional()?.flatten();
    let Some(status) = status.and_then(|s| serde_json::from_str::<DeviceStatus>(&s).ok()) else { return Ok(out) };
    if status.deltas.is_none() {
        return Ok(out);
    }
    let Some(this_model) = status.model(&model.name) else { return Ok(out) };
    let held: Vec<u64> = [this_model.active, this_model.previous]
        .into_iter()
        .flatten()
        .filter(|m| m.version != model.version)
        .map(|m| m.version)
        .collect();
    for a in out.iter_mut() {
        for &version in &held {
            let base: Option<String> = conn
                .query_row(
                    "SELECT va.sha256 FROM version_artifacts va JOIN models m ON m.id = va.model_id
                     WHERE m.name = ?1 AND va.version = ?2 AND va.name = ?3",
                    params![model.name, version as i64, a.name],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(base) = base else { continue };
            let cached: Option<(String, u64)> = conn
                .query_row(
                    "SELECT delta_sha256, delta_size FROM deltas
                     WHERE base_sha256 = ?1 AND target_sha256 = ?2 AND delta_sha256 IS NOT NULL",
                    params![base, a.sha256],
                    |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
                )
                .optional()?;
            if let Some(d) = choose(a, &base, cached, max_share) {
                a.delta = Some(d);
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(sha: &str, compressed_size: u64) -> DeployedArtifact {
        DeployedArtifact {
            name: MODEL_FILE.into(),
            sha256: sha.into(),
            size: compressed_size * 2,
            compressed_sha256: "c".into(),
            compressed_size,
            delta: None,
        }
    }

    #[test]
    fn a_delta_is_offered_only_when_small_enough_and_from_another_artifact() {
        let target = artifact("new", 1000);
        let d = choose(&target, "old", Some(("d".into(), 500)), 0.5).expect("at the share");
        assert_eq!(d, ArtifactDelta { base_sha256: "old".into(), sha256: "d".into(), size: 500 });
        assert_eq!(choose(&target, "old", Some(("d".into(), 501)), 0.5), None, "over the share");
        assert_eq!(choose(&target, "old", None, 0.5), None, "none made");
        assert_eq!(choose(&target, "new", Some(("d".into(), 10)), 0.5), None, "the device holds the target already");
        assert_eq!(choose(&target, "old", Some(("d".into(), 10)), 0.0), None, "deltas off");
    }
}
