//! The deployment document: what the controller tells one device (or a group) to run.
//!
//! It names the model version and every artifact's digests and exact sizes, the devices it is
//! for, a sequence number that only increases, and an expiry. The controller signs its exact
//! bytes; devices verify those bytes before parsing them ([`crate::verify`]).

use serde::{Deserialize, Serialize};

use crate::keys::Signer;
use crate::signature::DocumentSignature;

/// `kind` of a deployment document.
pub const DEPLOYMENT_KIND: &str = "edgefleet.deployment/v1";

/// One file of the model version, as the device will fetch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployedArtifact {
    /// File name inside the version (`model.onnx`, `bundle.json`); a plain name, never a path.
    pub name: String,
    /// SHA-256 (hex) of the uncompressed bytes: the content address.
    pub sha256: String,
    /// Exact uncompressed size in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the zstd-compressed bytes as transferred.
    pub compressed_sha256: String,
    /// Exact compressed size in bytes.
    pub compressed_size: u64,
    /// A smaller way to the same bytes for a device that holds `base_sha256`: a zstd frame made
    /// with that base as its reference prefix. The result must still match `sha256` and `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<ArtifactDelta>,
}

/// A delta from an artifact the device already holds to this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactDelta {
    /// SHA-256 (hex) of the uncompressed base the delta was made against.
    pub base_sha256: String,
    /// SHA-256 (hex) of the delta bytes as transferred (also its download address).
    pub sha256: String,
    /// Exact size of the delta bytes.
    pub size: u64,
}

/// Model name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
}

/// The signed instruction to run a model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentDocument {
    /// Always [`DEPLOYMENT_KIND`].
    pub kind: String,
    /// Id of the key that signs this document (must equal the signature's).
    pub key_id: String,
    /// Per-device counter; a device accepts only a sequence above the last it accepted.
    pub sequence: u64,
    /// Unix seconds when issued.
    pub issued_at: u64,
    /// Unix seconds after which the device refuses it (freeze protection).
    pub expires_at: u64,
    /// Device ids this document is for.
    pub devices: Vec<String>,
    /// The (first) model version to run; absent in a document that names no model at all (the
    /// device is to serve nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// Every file of that version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<DeployedArtifact>,
    /// Run the version in shadow beside the active one instead of activating it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
    /// The other models the device serves, each with its own lifecycle; with `model`, the whole
    /// set: a fleet-managed model named in neither is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<DesiredModel>,
}

/// One more model the device serves beside [`DeploymentDocument::model`], with the same fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredModel {
    /// The model version to run.
    pub model: ModelRef,
    /// Every file of that version.
    pub artifacts: Vec<DeployedArtifact>,
    /// Run the version in shadow beside the active one instead of activating it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
}

/// Shadow evaluation: the device loads the version beside the one it serves and mirrors a share
/// of live requests to it, off the request path, reporting how often the two agree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// Share of requests mirrored, in (0, 1].
    pub share: f64,
}

impl Eq for ShadowSpec {}

impl DeploymentDocument {
    /// Serialises to the bytes that get signed (compact JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Serialises and signs.
    pub fn sign(&self, signer: &dyn Signer) -> (Vec<u8>, DocumentSignature) {
        let bytes = self.to_bytes();
        let sig = DocumentSignature::sign(&bytes, signer);
        (bytes, sig)
    }

    /// The artifact with this name, of the first model.
    pub fn artifact(&self, name: &str) -> Option<&DeployedArtifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// Every model the document names, the first one first.
    pub fn desired(&self) -> Vec<DesiredModel> {
        let first = self.model.clone().map(|model| DesiredModel {
            model,
            artifacts: self.artifacts.clone(),
            shadow: self.shadow,
        });
        first.into_iter().chain(self.models.iter().cloned()).collect()
    }

    /// The artifacts of every model.
    pub fn all_artifacts(&self) -> impl Iterator<Item = &DeployedArtifact> {
        self.artifacts.iter().chain(self.models.iter().flat_map(|m| &m.artifacts))
    }

    /// Each model named, with this document's sequence: how a device handles each model on its
    /// own. They are views of the verified document, never signed themselves.
    pub fn split(&self) -> Vec<ModelDeployment> {
        self.desired()
            .into_iter()
            .map(|m| ModelDeployment {
                sequence: self.sequence,
                model: m.model,
                artifacts: m.artifacts,
                shadow: m.shadow,
            })
            .collect()
    }

    /// This document naming `models` (the first goes in `model`; none: the device serves nothing).
    pub fn with_models(mut self, models: Vec<DesiredModel>) -> DeploymentDocument {
        let mut models = models.into_iter();
        match models.next() {
            Some(first) => {
                self.model = Some(first.model);
                self.artifacts = first.artifacts;
                self.shadow = first.shadow;
            }
            None => {
                self.model = None;
                self.artifacts = Vec::new();
                self.shadow = None;
            }
        }
        self.models = models.collect();
        self
    }
}

/// One model of a verified document, with the document's sequence: what a device prepares,
/// watches and keeps for that model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDeployment {
    /// Sequence of the document it came from.
    pub sequence: u64,
    /// The model version to run.
    pub model: ModelRef,
    /// Every file of that version.
    pub artifacts: Vec<DeployedArtifact>,
    /// Run the version in shadow beside the active one instead of activating it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
}
