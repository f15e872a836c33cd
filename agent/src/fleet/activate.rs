//! Activation: fetch → verify → decompress → load → warm up → golden self-test, run as a task
//! beside the fleet loop, which then swaps atomically, watches ([`super::watch`]) and commits or
//! rolls back to the previous version.
//!
//! Model files land in `models/NAME/VERSION/` only once every artifact verified: they are
//! written to a temp directory, a `.complete` marker is written last, and the directory is
//! renamed into place. A slot without the marker is never loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use edgefleet_engine::tensor::Tensor;
use edgefleet_shared::bundle::{BUNDLE_FILE, BundleManifest, GoldenTensor, MODEL_FILE};
use edgefleet_shared::deployment::{DeployedArtifact, ModelDeployment};
use edgefleet_shared::verify::{ArtifactError, verify_artifact, verify_compressed_artifact};
use tokio::sync::oneshot;

use super::link::{Link, LinkError};
use super::state::Slot;
use crate::config::FleetConfig;
use crate::config::ModelSource;
use crate::engine::BackendConfig;
use crate::repository::{ServedModel, prepare};
use crate::telemetry::Hub;
use crate::worker::{Job, PoolConfig};

/// Why an activation failed, by stage.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// Download failed (controller or network); the document stays pending and is retried on
    /// every poll, and after a restart.
    #[error("download: {0}")]
    Download(LinkError),
    /// An artifact is not what the document declares.
    #[error("verify: {0}")]
    Verify(ArtifactError),
    /// Local files could not be written.
    #[error("storage: {0}")]
    Storage(String),
    /// The model did not load or warm up.
    #[error("load: {0}")]
    Load(String),
    /// The golden self-test failed.
    #[error("self_test: {0}")]
    SelfTest(String),
    /// The watch window saw too many errors.
    #[error("watch: {0}")]
    Watch(String),
}

impl ActivationError {
    /// Refusal class for artifact problems (`hash_mismatch`, ...), when this is one. `fetch`
    /// files every artifact problem, including one found mid-download, under `Verify`.
    pub fn refusal_class(&self) -> Option<&'static str> {
        match self {
            ActivationError::Verify(e) => Some(e.class()),
            _ => None,
        }
    }
}

/// The directory layout under the data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Layout under `root`.
    pub fn new(root: &Path) -> Self {
        Layout { root: root.to_owned() }
    }
    /// Device key.
    pub fn device_key(&self) -> PathBuf {
        self.root.join("device.key")
    }
    pub(super) fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
    /// Where a model's slots live.
    pub fn models(&self, name: &str) -> PathBuf {
        self.root.join("models").join(name)
    }
    /// Slot directory of a version.
    pub fn slot(&self, name: &str, version: u64) -> PathBuf {
        self.models(name).join(version.to_string())
    }
}

/// The shadow's CPU budget: one worker, and mirrors beyond a short queue are skipped.
pub const SHADOW_POOL: PoolConfig = PoolConfig { workers: 1, queue_capacity: 2, batching: None, inline_below_us: 0 };

/// What an activation task needs, owned, so it runs beside the fleet loop.
#[derive(Debug, Clone)]
pub struct Context {
    /// The controller link (downloads).
    pub link: Link,
    /// Where slots live.
    pub layout: Layout,
    /// Worker settings.
    pub fleet: FleetConfig,
    /// Engine settings.
    pub backend: BackendConfig,
    /// Telemetry recorders, when telemetry is on.
    pub telemetry: Option<Arc<Hub>>,
    /// What deltas did, for the status report.
    pub deltas: Arc<super::delta::DeltaStats>,
}

impl Context {
    /// Fetches, verifies, loads and self-tests `doc`'s version, ready to swap in (or to run as a
    /// shadow, on the shadow's budget).
    pub async fn prepare(&self, doc: &ModelDeployment, shadow: bool) -> Result<Arc<ServedModel>, ActivationError> {
        let slot = fetch(&self.link, &self.layout, doc, &self.deltas).await?;
        let model = if shadow {
            load_with(&slot, &doc.model, SHADOW_POOL, &self.backend).await?
        } else {
            load(&slot, &doc.model, &self.fleet, &self.backend).await?
        };
        self_test(&slot, &model, &doc.model).await?;
        if !shadow {
            attach_telemetry(self.telemetry.as_deref(), &slot, &model, &doc.model);
        }
        Ok(model)
    }
}

/// Gives a version about to serve its telemetry recorder, binned over its bundle's baseline.
pub fn attach_telemetry(
    hub: Option<&Hub>,
    slot: &Path,
    model: &ServedModel,
    doc_model: &edgefleet_shared::deployment::ModelRef,
) {
    let Some(hub) = hub else { return };
    let baseline = std::fs::read(slot.join(BUNDLE_FILE))
        .ok()
        .and_then(|b| BundleManifest::from_bytes(&b).ok())
        .and_then(|m| m.baseline);
    let _ = model.telemetry.set(hub.recorder(&doc_model.name, doc_model.version, baseline.as_ref()));
}

/// Downloads and verifies a document's artifacts into its slot (no-op if already complete): by
/// delta where one is offered and works, else whole.
pub async fn fetch(
    link: &Link,
    layout: &Layout,
    doc: &ModelDeployment,
    deltas: &super::delta::DeltaStats,
) -> Result<PathBuf, ActivationError> {
    let slot = layout.slot(&doc.model.name, doc.model.version);
    if slot_complete(&slot, &doc.artifacts).await {
        return Ok(slot);
    }
    let storage = |e: std::io::Error| ActivationError::Storage(e.to_string());
    tokio::fs::create_dir_all(layout.staging()).await.map_err(storage)?;
    let tmp = slot.with_extension("incoming");
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    tokio::fs::create_dir_all(&tmp).await.map_err(storage)?;
    for a in &doc.artifacts {
        let by_delta = super::delta::fetch_by_delta(link, layout, &doc.model, a, &tmp.join(&a.name), deltas).await;
        if by_delta.map_err(ActivationError::Download)? {
            continue;
        }
        let part = layout.staging().join(format!("{}.part", a.compressed_sha256));
        link.download(a, &part).await.map_err(|e| match e {
            LinkError::Artifact(a) => ActivationError::Verify(a),
            other => ActivationError::Download(other),
        })?;
        let (artifact, part2, out) = (a.clone(), part.clone(), tmp.join(&a.name));
        let verified = tokio::task::spawn_blocking(move || -> Result<(), ActivationError> {
            let input = std::io::BufReader::new(std::fs::File::open(&part2).map_err(storage)?);
            let mut output = std::fs::File::create(&out).map_err(storage)?;
            verify_compressed_artifact(&artifact, input, &mut output).map_err(ActivationError::Verify)?;
            output.sync_all().map_err(storage)
        })
        .await
        .map_err(|e| ActivationError::Storage(e.to_string()))?;
        if let Err(e) = verified {
            // A tampered or truncated download must not be resumed: start over next time.
            let _ = tokio::fs::remove_file(&part).await;
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            return Err(e);
        }
        let _ = tokio::fs::remove_file(&part).await;
    }
    let marker = serde_json::to_vec(&doc.artifacts).unwrap_or_default();
    super::state::write_atomic(&tmp.join(".complete"), &marker).map_err(storage)?;
    let _ = tokio::fs::remove_dir_all(&slot).await;
    tokio::fs::rename(&tmp, &slot).await.map_err(storage)?;
    // The rename is durable only once the parent directory is synced: without it a power cut
    // after state.json names this version can leave the slot missing.
    if let Some(parent) = slot.parent() {
        tokio::fs::File::open(parent).await.map_err(storage)?.sync_all().await.map_err(storage)?;
    }
    Ok(slot)
}

/// Whether a slot holds every artifact, complete and matching its digest.
pub async fn slot_complete(slot: &Path, artifacts: &[DeployedArtifact]) -> bool {
    if !slot.join(".complete").is_file() {
        return false;
    }
    let (slot, artifacts) = (slot.to_owned(), artifacts.to_vec());
    tokio::task::spawn_blocking(move || {
        artifacts.iter().all(|a| {
            std::fs::File::open(slot.join(&a.name))
                .map(std::io::BufReader::new)
                .is_ok_and(|f| verify_artifact(a, f).is_ok())
        })
    })
    .await
    .unwrap_or(false)
}

/// Loads a slot's model and warms it up (not yet serving).
pub async fn load(
    slot: &Path,
    doc_model: &edgefleet_shared::deployment::ModelRef,
    config: &FleetConfig,
    backend: &BackendConfig,
) -> Result<Arc<ServedModel>, ActivationError> {
    let pool = PoolConfig {
        workers: config.workers,
        queue_capacity: config.queue_capacity,
        batching: None,
        inline_below_us: config.inline_below_us,
    };
    load_with(slot, doc_model, pool, backend).await
}

/// [`load`] with explicit worker settings (a shadow runs on one worker and a short queue).
pub async fn load_with(
    slot: &Path,
    doc_model: &edgefleet_shared::deployment::ModelRef,
    pool: PoolConfig,
    backend: &BackendConfig,
) -> Result<Arc<ServedModel>, ActivationError> {
    let source = ModelSource {
        name: doc_model.name.clone(),
        version: doc_model.version.to_string(),
        path: slot.join(MODEL_FILE),
        pool,
    };
    prepare(source, backend).await.map_err(|e| ActivationError::Load(e.to_string()))
}

/// Runs the bundle's golden cases through the model's workers and compares within tolerance.
pub async fn self_test(
    slot: &Path,
    model: &ServedModel,
    expected: &edgefleet_shared::deployment::ModelRef,
) -> Result<(), ActivationError> {
    let bytes = tokio::fs::read(slot.join(BUNDLE_FILE))
        .await
        .map_err(|e| ActivationError::SelfTest(format!("bundle.json: {e}")))?;
    let bundle = BundleManifest::from_bytes(&bytes).map_err(|e| ActivationError::SelfTest(e.to_string()))?;
    if bundle.name != expected.name || bundle.version != expected.version {
        return Err(ActivationError::SelfTest(format!(
            "bundle is {}:{}, the document names {}:{}",
            bundle.name, bundle.version, expected.name, expected.version
        )));
    }
    if bundle.self_test.cases.is_empty() {
        return Err(ActivationError::SelfTest("the bundle has no golden cases".into()));
    }
    let sig = model.engine.signature();
    for (n, case) in bundle.self_test.cases.iter().enumerate() {
        let inputs =
            sig.inputs
                .iter()
                .map(|spec| {
                    let g = case.inputs.iter().find(|g| g.name == spec.name).ok_or_else(|| {
                        ActivationError::SelfTest(format!("case {n}: no golden input {:?}", spec.name))
                    })?;
                    golden_tensor(g).map_err(|e| ActivationError::SelfTest(format!("case {n}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        model
            .pool
            .try_submit(Job { inputs, enqueued: Instant::now(), reply })
            .map_err(|e| ActivationError::SelfTest(e.to_string()))?;
        let result = answer.await.map_err(|_| ActivationError::SelfTest("worker stopped".into()))?;
        let outputs = result.outputs.map_err(|e| ActivationError::SelfTest(format!("case {n}: {e}")))?;
        for (spec, got) in sig.outputs.iter().zip(&outputs) {
            let Some(want) = case.outputs.iter().find(|g| g.name == spec.name) else { continue };
            let want = golden_tensor(want).map_err(|e| ActivationError::SelfTest(format!("case {n}: {e}")))?;
            got.matches_golden(&want, bundle.self_test.tolerance)
                .map_err(|e| ActivationError::SelfTest(format!("case {n}, output {:?}: {e}", spec.name)))?;
        }
    }
    Ok(())
}

fn golden_tensor(g: &GoldenTensor) -> Result<Tensor, String> {
    Tensor::from_json(g.datatype, g.shape.clone(), &serde_json::Value::Array(g.data.clone()))
        .map_err(|e| format!("{}: {e}", g.name))
}

/// The slot a state entry points to, if it is complete on disk.
pub async fn existing_slot(layout: &Layout, slot: &Slot) -> Option<PathBuf> {
    let dir = layout.slot(&slot.model.name, slot.model.version);
    slot_complete(&dir, &slot.artifacts).await.then_some(dir)
}

/// Removes slot directories of `name` other than the versions to keep.
pub async fn collect_garbage(layout: &Layout, name: &str, keep: &[u64]) {
    let dir = layout.root.join("models").join(name);
    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else { return };
    while let Ok(Some(e)) = entries.next_entry().await {
        let file = e.file_name();
        let keep_it = file.to_str().and_then(|n| n.parse::<u64>().ok()).is_some_and(|v| keep.contains(&v));
        if !keep_it {
            let _ = tokio::fs::remove_dir_all(e.path()).await;
        }
    }
}

/// Deletes every slot of a model no longer wanted: its directory is renamed out of `models/`
/// at once (a re-added model starts from an empty directory) and deleted in the background.
pub fn remove_model_files(layout: &Layout, name: &str) {
    let dir = layout.models(name);
    let trash = layout.staging().join(format!(
        "removed-{name}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    let moved = std::fs::create_dir_all(layout.staging()).and_then(|()| std::fs::rename(&dir, &trash));
    match moved {
        Ok(()) => {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = std::fs::remove_dir_all(&trash) {
                    tracing::warn!(path = %trash.display(), error = %e, "Cannot delete a removed model's slots.");
                }
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %dir.display(), error = %e, "Cannot remove a model's slots."),
    }
}

/// Removes every partial download in staging but the `wanted` ones (the pending document's).
pub async fn sweep_staging(layout: &Layout, wanted: &[String]) {
    let Ok(mut entries) = tokio::fs::read_dir(layout.staging()).await else { return };
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("removed-") {
            // A removed model's slots whose deletion was interrupted.
            let _ = tokio::fs::remove_dir_all(e.path()).await;
        } else if name.ends_with(".part") && !wanted.contains(&name) {
            tracing::debug!(file = %name, "Partial download of a replaced document removed.");
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}
