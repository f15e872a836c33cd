//! What the device remembers across restarts: its id, the last document sequence it accepted,
//! the active and previous versions (A/B slots), and its last refusal and activation.
//!
//! Written with temp file + fsync + rename (and a directory fsync), so a `kill -9` at any point
//! leaves either the old state or the new one, never a mix.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use edgefleet_shared::deployment::{DeployedArtifact, ModelRef};
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
    /// A document accepted but not yet activated; a restart resumes its activation.
    pub pending: Option<edgefleet_shared::deployment::DeploymentDocument>,
    /// Serving.
    pub active: Option<Slot>,
    /// Kept for rollback.
    pub previous: Option<Slot>,
    /// Last refused document.
    pub last_refusal: Option<Refusal>,
    /// Last activation attempt.
    pub last_activation: Option<ActivationReport>,
    /// A version running in shadow beside the active one.
    #[serde(default)]
    pub shadow: Option<ShadowSlot>,
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
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.err(std::io::Error::other(e))),
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
}
