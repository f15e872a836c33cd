//! Delta downloads: when a document offers a delta for an artifact and the device holds its
//! base (found by digest among its slots, and checked), the delta is downloaded (an interrupted
//! transfer fails the activation, whose retry resumes it by `Range` like a full artifact), applied through the capped decoder with the artifact's signed
//! size as the cap, and accepted only if the result hashes to the signed digest. Any failure
//! (no base, a refused or corrupt delta, a mismatching result) falls back to the full artifact,
//! and is counted (`edgefleet_agent_delta_downloads_total{result}`, and the status report).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use edgefleet_shared::deployment::{DeployedArtifact, ModelRef};
use edgefleet_shared::fleet::DeltaReport;
use edgefleet_shared::verify::{sha256_hex, verify_delta_artifact};

use super::activate::Layout;
use super::link::{Link, LinkError};

/// What deltas did since the agent started.
#[derive(Debug, Default)]
pub struct DeltaStats {
    applied: AtomicU64,
    fallbacks: AtomicU64,
    bytes_saved: AtomicU64,
    last_fallback: Mutex<Option<String>>,
    /// Bytes saved per version being fetched, until its activation is reported.
    saved: Mutex<HashMap<(String, u64), u64>>,
}

impl DeltaStats {
    /// For the status report.
    pub fn report(&self) -> DeltaReport {
        DeltaReport {
            applied: self.applied.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            last_fallback: self.last_fallback.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            bytes_saved: self.bytes_saved.load(Ordering::Relaxed),
        }
    }

    /// The bytes deltas saved fetching `model`; what was noted for its other versions (fetches a
    /// newer document cancelled) is forgotten with it.
    pub fn take_saved(&self, model: &ModelRef) -> u64 {
        let mut saved = self.saved.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let this = saved.remove(&(model.name.clone(), model.version)).unwrap_or(0);
        saved.retain(|(name, _), _| *name != model.name);
        this
    }

    fn applied(&self, model: &ModelRef, saved: u64) {
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.bytes_saved.fetch_add(saved, Ordering::Relaxed);
        *self
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((model.name.clone(), model.version))
            .or_default() += saved;
        metrics::counter!(crate::metric::DELTA_DOWNLOADS, "result" => "applied").increment(1);
    }

    fn fallback(&self, why: String) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric::DELTA_DOWNLOADS, "result" => "fallback").increment(1);
        *self.last_fallback.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
    }
}

/// The file holding `sha256` in one of `model`'s complete slots, by their `.complete` markers
/// (the artifact lists their documents named).
fn find_base(layout: &Layout, model: &str, sha256: &str) -> Option<PathBuf> {
    let dir = layout.models(model);
    std::fs::read_dir(dir).ok()?.filter_map(Result::ok).find_map(|slot| {
        let marker = std::fs::read(slot.path().join(".complete")).ok()?;
        let listed: Vec<DeployedArtifact> = serde_json::from_slice(&marker).ok()?;
        let a = listed.into_iter().find(|a| a.sha256 == sha256)?;
        Some(slot.path().join(a.name))
    })
}

/// Why a delta was not used.
enum NotUsed {
    /// The link broke mid-transfer: the activation fails and is retried, resuming the delta.
    Interrupted(LinkError),
    /// Anything else: the full artifact is downloaded instead.
    Fallback(String),
}

impl From<String> for NotUsed {
    fn from(why: String) -> Self {
        NotUsed::Fallback(why)
    }
}

/// Makes `artifact` at `out` from its delta: `Ok(true)` when done, `Ok(false)` when the caller
/// must download it whole (no delta offered, no base held, a refused, corrupt or mismatching
/// delta); an interrupted transfer is an error, so the activation is retried and resumes the
/// delta rather than spending the full download. Blocking parts run off the reactor.
pub async fn fetch_by_delta(
    link: &Link,
    layout: &Layout,
    model: &ModelRef,
    artifact: &DeployedArtifact,
    out: &Path,
    stats: &DeltaStats,
) -> Result<bool, LinkError> {
    let Some(delta) = &artifact.delta else { return Ok(false) };
    match apply(link, layout, &model.name, artifact, out).await {
        Ok(()) => {
            stats.applied(model, artifact.compressed_size.saturating_sub(delta.size));
            tracing::info!(artifact = %artifact.name, delta_bytes = delta.size, full_bytes = artifact.compressed_size,
                "Artifact made from its delta.");
            Ok(true)
        }
        Err(NotUsed::Interrupted(e)) => Err(e),
        Err(NotUsed::Fallback(why)) => {
            tracing::warn!(artifact = %artifact.name, reason = %why, "Delta not used; downloading the full artifact.");
            let _ = tokio::fs::remove_file(out).await;
            stats.fallback(why);
            Ok(false)
        }
    }
}

async fn apply(
    link: &Link,
    layout: &Layout,
    model: &str,
    artifact: &DeployedArtifact,
    out: &Path,
) -> Result<(), NotUsed> {
    let Some(delta) = artifact.delta.clone() else { return Err("no delta offered".to_owned().into()) };
    let base_path = {
        let (layout, model, base) = (layout.clone(), model.to_owned(), delta.base_sha256.clone());
        tokio::task::spawn_blocking(move || find_base(&layout, &model, &base))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the base is not held".to_owned())?
    };
    let part = layout.staging().join(format!("{}.delta.part", delta.sha256));
    match link.download_delta(artifact, &delta, &part).await {
        Ok(()) => {}
        // Kept: the activation's retry resumes it.
        Err(e @ LinkError::Transport(_)) => return Err(NotUsed::Interrupted(e)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(format!("delta download: {e}").into());
        }
    }
    // The base is read only now, after the transfer, so it is not held in memory meanwhile.
    let (artifact, out_path, part2, base_sha) = (artifact.clone(), out.to_owned(), part.clone(), delta.base_sha256);
    let verified = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let base =
            std::fs::read(&base_path).map_err(|e| format!("cannot read the base {}: {e}", base_path.display()))?;
        if sha256_hex(&base) != base_sha {
            return Err(format!("the base {} does not match its digest", base_path.display()));
        }
        let input = std::io::BufReader::new(std::fs::File::open(&part2).map_err(|e| e.to_string())?);
        let mut output = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
        verify_delta_artifact(&artifact, &base, input, &mut output).map_err(|e| e.to_string())?;
        output.sync_all().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?;
    // Used or refused, the delta is not kept: a refused one must not be resumed.
    let _ = tokio::fs::remove_file(&part).await;
    Ok(verified?)
}
