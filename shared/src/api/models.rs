//! Registry: models, versions, artifacts, aliases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bundle::{BUNDLE_FILE, BundleManifest};
use crate::signature::DocumentSignature;

/// Lineage and options of a push (the `metadata` part of the upload).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct PushMetadata {
    /// Evaluation metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Training parameters.
    pub params: BTreeMap<String, String>,
    /// SHA-256 (hex) of the training data.
    pub dataset_sha256: Option<String>,
    /// Commit of the training code.
    pub code_commit: Option<String>,
    /// Version this one derives from.
    pub parent_version: Option<u64>,
    /// Explicit version number (must be above the latest); next free when absent.
    pub version: Option<u64>,
    /// Preprocessing notes for app developers.
    pub preprocessing: Option<String>,
    /// Accept inputs or outputs that break callers of the latest version (else 409).
    pub allow_schema_change: bool,
    /// Accept a model whose outputs differ between two runs on the controller (else 422); the
    /// devices' self-test still runs.
    pub allow_nondeterministic: bool,
    /// The external registry version this one is imported from (`edgefleet model import`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub source: Option<crate::bundle::LineageSource>,
}

/// A version as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionInfo {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Aliases pointing here.
    pub aliases: Vec<String>,
    /// Who pushed it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: u64,
    /// SHA-256 of `bundle.json`.
    pub bundle_sha256: String,
    /// Artifacts with digests and sizes (uncompressed and as stored).
    pub artifacts: Vec<ArtifactInfo>,
    /// The bundle manifest.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub manifest: BundleManifest,
    /// Controller signature over the exact `bundle.json` bytes.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub signature: DocumentSignature,
    /// What the push accepted but the operator should know (the same bytes as another version,
    /// a schema change allowed by `allow_schema_change`); only in the push's answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Deltas the push made from earlier versions to this one's model; only in the push's answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<DeltaInfo>,
}

/// A delta from an earlier version's model to this one's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeltaInfo {
    /// The version a device must hold to use it.
    pub base_version: u64,
    /// SHA-256 of the delta bytes (its address in the store).
    pub sha256: String,
    /// Delta bytes.
    pub size: u64,
    /// The compressed model's bytes, which a device without the base downloads.
    pub full_size: u64,
}

impl VersionInfo {
    /// Uncompressed size of `bundle.json`.
    pub fn manifest_size(&self) -> u64 {
        self.artifacts.iter().find(|a| a.name == BUNDLE_FILE).map_or(0, |a| a.size)
    }
}

/// One stored artifact of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ArtifactInfo {
    /// File name in the version.
    pub name: String,
    /// SHA-256 of the uncompressed bytes (download path `/api/v1/artifacts/{sha256}`).
    pub sha256: String,
    /// Uncompressed size.
    pub size: u64,
    /// SHA-256 of the compressed bytes served.
    pub compressed_sha256: String,
    /// Compressed size.
    pub compressed_size: u64,
}

/// A model with its versions and aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelSummary {
    /// Name.
    pub name: String,
    /// Versions, ascending.
    pub versions: Vec<u64>,
    /// Alias → version.
    pub aliases: BTreeMap<String, u64>,
    /// Unix seconds of the first push.
    pub created_at: u64,
}

/// Body of `PUT /aliases/{alias}`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    /// Version the alias should point at.
    pub version: u64,
}
