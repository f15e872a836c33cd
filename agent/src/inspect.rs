//! `edgefleet-agent verify`: the offline answer to "why does my device refuse this update?".
//!
//! It runs exactly the checks the agent runs on a deployment document (the shared verifier),
//! optionally against artifact files, and reports the verified document or the precise refusal.

use std::fs;
use std::path::{Path, PathBuf};

use edgefleet_shared::deployment::DeploymentDocument;
use edgefleet_shared::signature::DocumentSignature;
use edgefleet_shared::trust::TrustStore;
use edgefleet_shared::verify::{
    ArtifactError, VerifyError, verify_artifact, verify_compressed_artifact, verify_deployment,
};

/// What to check.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// Trust file (`trust.json`).
    pub trust: PathBuf,
    /// This device's id.
    pub device_id: String,
    /// Last sequence the device accepted, if any.
    pub last_sequence: Option<u64>,
    /// Document bytes file.
    pub document: PathBuf,
    /// Detached signature file.
    pub signature: PathBuf,
    /// Directory with the artifacts (`NAME.zst` as transferred, or `NAME` uncompressed).
    pub artifacts: Option<PathBuf>,
    /// Time to check expiry against (unix seconds).
    pub now: u64,
}

/// Why verification could not say yes.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// An input file is missing or unreadable (exit 66).
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The signature file is not a signature.
    #[error("{path} is not a signature file: {reason}")]
    BadSignatureFile {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The document is refused (exit 1).
    #[error("refused [{class}]: {0}", class = .0.class())]
    Refused(VerifyError),
    /// An artifact is refused (exit 1).
    #[error("artifact refused [{class}]: {0}", class = .0.class())]
    Artifact(ArtifactError),
    /// An artifact the document names is not in the directory (exit 1).
    #[error("artifact {name} not found in {dir} (looked for {name}.zst and {name})")]
    MissingArtifact {
        /// Artifact name.
        name: String,
        /// Directory.
        dir: PathBuf,
    },
}

impl InspectError {
    /// Exit code: 1 for a refusal, 66 (`EX_NOINPUT`) for unusable input files.
    pub fn exit_code(&self) -> u8 {
        match self {
            InspectError::Read { .. } | InspectError::BadSignatureFile { .. } => 66,
            _ => 1,
        }
    }
}

/// One artifact that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactCheck {
    /// Name.
    pub name: String,
    /// File that was checked.
    pub file: PathBuf,
    /// Whether it was the compressed transfer form.
    pub compressed: bool,
}

/// A document and artifacts that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The document.
    pub document: DeploymentDocument,
    /// Artifacts checked (empty without `--artifacts`).
    pub artifacts: Vec<ArtifactCheck>,
}

fn read(path: &Path) -> Result<Vec<u8>, InspectError> {
    fs::read(path).map_err(|source| InspectError::Read { path: path.into(), source })
}

/// Runs the checks.
pub fn verify(req: &VerifyRequest) -> Result<Verified, InspectError> {
    let trust = TrustStore::from_bytes(&read(&req.trust)?).map_err(InspectError::Refused)?;
    let document = read(&req.document)?;
    let signature: DocumentSignature = serde_json::from_slice(&read(&req.signature)?)
        .map_err(|e| InspectError::BadSignatureFile { path: req.signature.clone(), reason: e.to_string() })?;
    let doc = verify_deployment(&document, &signature, &trust, &req.device_id, req.last_sequence, req.now)
        .map_err(InspectError::Refused)?;
    let mut artifacts = Vec::new();
    if let Some(dir) = &req.artifacts {
        for a in &doc.artifacts {
            let packed = dir.join(format!("{}.zst", a.name));
            let plain = dir.join(&a.name);
            let (file, compressed) = if packed.is_file() {
                (packed, true)
            } else if plain.is_file() {
                (plain, false)
            } else {
                return Err(InspectError::MissingArtifact { name: a.name.clone(), dir: dir.clone() });
            };
            let f = fs::File::open(&file).map_err(|source| InspectError::Read { path: file.clone(), source })?;
            let reader = std::io::BufReader::new(f);
            let checked = if compressed {
                verify_compressed_artifact(a, reader, std::io::sink())
            } else {
                verify_artifact(a, reader)
            };
            checked.map_err(InspectError::Artifact)?;
            artifacts.push(ArtifactCheck { name: a.name.clone(), file, compressed });
        }
    }
    Ok(Verified { document: doc, artifacts })
}

/// Unix seconds as RFC 3339, for people reading the report.
pub fn rfc3339(unix_secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs)).to_string()
}
