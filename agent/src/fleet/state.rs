//! What the device remembers across restarts: its id, the last document sequence it accepted,
//! and for each model its active and previous versions (A/B slots), pending document, shadow
//! and last activation; the last refusal.
//!
//! Written with temp file + fsync + rename (and a directory fsync), so a `kill -9` at any point
//! leaves either the old state or the new one, never a mix.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use edgefleet_shared::deployment::{DeployedArtifact, DeploymentDocument, ModelDeployment, ModelRef};
use edgefleet_shared::fleet::{ActivationReport, Refusal};
use serde::{Deserialize, Serialize};

/// A model version installed in a slot directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Model version.
    pub model: ModelRef,
    /// Sequence of the document it came from.
    pub sequence: u64,
    /// Its artifacts, as the signed document declared them.
    pub artifacts: Vec<DeployedArtifact>,
}

/// The persisted device state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Id assigned at enrollment.
    pub device_id: Option<String>,
    /// Broker handed out at enrollment.
    pub mqtt_url: Option<String>,
    /// Topic prefix handed out at enrollment.
    pub topic_prefix: Option<String>,
    /// Highest document sequence accepted.
    pub last_sequence: Option<u64>,
    /// SHA-256 of the last accepted document's bytes: the same document seen again (after a
    /// restart, or on every poll) is known, not a replay.
    pub last_document_sha256: Option<String>,
    /// Every fleet-managed model, by name: its own slots and activation.
    #[serde(default)]
    pub models: BTreeMap<String, ModelSlots>,
    /// Last refused document.
    pub last_refusal: Option<Refusal>,
    /// Last activation attempt, of any model.
    pub last_activation: Option<ActivationReport>,
    /// The single model of a state file written before `models` existed: read once, moved into
    /// `models` by [`StateFile::load`], never written again.
    #[serde(default, rename = "pending", skip_serializing)]
    legacy_pending: Option<DeploymentDocument>,
    #[serde(default, rename = "active", skip_serializing)]
    legacy_active: Option<Slot>,
    #[serde(default, rename = "previous", skip_serializing)]
    legacy_previous: Option<Slot>,
    #[serde(default, rename = "shadow", skip_serializing)]
    legacy_shadow: Option<ShadowSlot>,
}

/// One model's slots (A/B: active and previous), its document waiting to activate, its shadow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSlots {
    /// A document part accepted but not yet activated; a restart resumes its activation.
    #[serde(default)]
    pub pending: Option<ModelDeployment>,
    /// Serving.
    #[serde(default)]
    pub active: Option<Slot>,
    /// Kept for rollback.
    #[serde(default)]
    pub previous: Option<Slot>,
    /// A version running in shadow beside the active one.
    #[serde(default)]
    pub shadow: Option<ShadowSlot>,
    /// This model's last activation attempt.
    #[serde(default)]
    pub last_activation: Option<ActivationReport>,
}

impl DeviceState {
    /// Moves a single-model state (written before `models` existed) into `models`.
    fn migrate(&mut self) {
        let (pending, active, previous, shadow) = (
            self.legacy_pending.take().and_then(|d| d.split().into_iter().next()),
            self.legacy_active.take(),
            self.legacy_previous.take(),
            self.legacy_shadow.take(),
        );
        let name = [active.as_ref(), previous.as_ref()]
            .into_iter()
            .flatten()
            .map(|s| s.model.name.clone())
            .chain(pending.as_ref().map(|d| d.model.name.clone()))
            .next();
        let Some(name) = name else { return };
        let last_activation = self.last_activation.clone().filter(|a| a.model.name == name);
        let shadow = shadow.filter(|s| s.slot.model.name == name);
        let previous = previous.filter(|p| p.model.name == name);
        self.models.insert(name, ModelSlots { pending, active, previous, shadow, last_activation });
    }
}

/// A shadow version and the share of requests mirrored to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowSlot {
    /// Its slot.
    pub slot: Slot,
    /// Share of requests mirrored.
    pub share: f64,
}

/// State file errors.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {source}")]
pub struct StateError {
    path: PathBuf,
    source: std::io::Error,
}

/// The state file.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file in `dir`.
    pub fn new(dir: &Path) -> Self {
        StateFile { path: dir.join("state.json") }
    }

    /// Reads the state; a missing file is a fresh device.
    pub fn load(&self) -> Result<DeviceState, StateError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                let mut state: DeviceState =
                    serde_json::from_slice(&bytes).map_err(|e| self.err(std::io::Error::other(e)))?;
                state.migrate();
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeviceState::default()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Replaces the state atomically and durably.
    pub fn save(&self, state: &DeviceState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| self.err(std::io::Error::other(e)))?;
        write_atomic(&self.path, &bytes).map_err(|e| self.err(e))
    }

    fn err(&self, source: std::io::Error) -> StateError {
        StateError { path: self.path.clone(), source }
    }
}

/// Writes `bytes` to `path` via a synced temp file and a rename, then syncs the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_missing_file_is_fresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().expect("fresh"), DeviceState::default());
        let state = DeviceState { device_id: Some("dev-1".into()), last_sequence: Some(4), ..DeviceState::default() };
        file.save(&state).expect("save");
        assert_eq!(file.load().expect("load"), state);
        assert!(!dir.path().join("state.tmp").exists());
    }

    #[test]
    fn a_single_model_state_file_moves_into_models() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot =
            |v: u64| Slot { model: ModelRef { name: "iris".into(), version: v }, sequence: v, artifacts: vec![] };
        let old = serde_json::json!({
            "device_id": "dev-1", "mqtt_url": null, "topic_prefix": "ef", "last_sequence": 3,
            "last_document_sha256": null, "pending": null, "active": slot(3), "previous": slot(2),
            "last_refusal": null, "last_activation": null, "shadow": null
        });
        std::fs::write(dir.path().join("state.json"), serde_json::to_vec(&old).expect("json")).expect("write");
        let file = StateFile::new(dir.path());
        let state = file.load().expect("load");
        let iris = &state.models["iris"];
        assert_eq!((iris.active.clone(), iris.previous.clone()), (Some(slot(3)), Some(slot(2))));
        file.save(&state).expect("save");
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).expect("read")).expect("json");
        assert!(written.get("active").is_none(), "legacy fields are not written again");
        assert_eq!(file.load().expect("reload"), state);
    }
}
