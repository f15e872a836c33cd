//! The bundle manifest (`bundle.json`): everything a device needs to know about a model version
//! besides the model bytes — schema, lineage, baseline profile, golden self-test.
//!
//! The manifest is itself an artifact of the version, so the signed deployment document pins
//! its digest like the model's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::inference::{Datatype, TensorMetadata};
use crate::names::{ModelName, check_file_name};
use crate::profile::BaselineProfile;
use crate::verify::VerifyError;

/// `kind` of a bundle manifest.
pub const BUNDLE_KIND: &str = "edgefleet.bundle/v1";
/// File name of the manifest among a version's artifacts.
pub const BUNDLE_FILE: &str = "bundle.json";
/// File name of the model among a version's artifacts.
pub const MODEL_FILE: &str = "model.onnx";

/// Where a version came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// Version this one was derived from.
    pub parent_version: Option<u64>,
    /// SHA-256 (hex) of the training dataset (e.g. a retraining snapshot's).
    pub dataset_sha256: Option<String>,
    /// Commit of the training code.
    pub code_commit: Option<String>,
    /// Training parameters.
    pub params: BTreeMap<String, String>,
    /// Evaluation metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Unix seconds when the version was registered.
    pub created_at: u64,
    /// The external registry it was imported from (e.g. an MLflow model version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<LineageSource>,
}

/// Where an imported version came from: a fixed version in an external registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageSource {
    /// The registry: `mlflow`.
    pub system: String,
    /// Its server (for MLflow the tracking URI, without credentials).
    pub uri: String,
    /// What was imported, pinned to one version (`models:/NAME/VERSION`, `runs:/RUN_ID/PATH`).
    pub reference: String,
    /// The training run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// A page showing it in the registry's UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Datasets the run consumed, with the registry's digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<SourceDataset>,
}

/// A dataset a training run consumed, as its registry records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDataset {
    /// Name.
    pub name: String,
    /// The registry's digest of it.
    pub digest: String,
    /// Its role in the run (`training`, `evaluation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

impl LineageSource {
    /// Longest text of any field.
    pub const MAX_TEXT: usize = 2048;
    /// Most datasets.
    pub const MAX_DATASETS: usize = 64;

    /// Checks sizes and that the link is a web address.
    pub fn check(&self) -> Result<(), String> {
        let datasets = self.datasets.iter().flat_map(|d| [&d.name, &d.digest].into_iter().chain(&d.context));
        let texts = [&self.system, &self.uri, &self.reference].into_iter().chain(&self.run_id).chain(&self.link);
        if let Some(t) = texts.chain(datasets).find(|t| t.len() > Self::MAX_TEXT || t.chars().any(char::is_control)) {
            return Err(format!(
                "source field {:?} is over {} bytes or has control characters",
                t.chars().take(64).collect::<String>(),
                Self::MAX_TEXT
            ));
        }
        if self.system.is_empty() || self.uri.is_empty() || self.reference.is_empty() {
            return Err("source needs system, uri and reference".into());
        }
        if self.datasets.len() > Self::MAX_DATASETS {
            return Err(format!("source names {} datasets (at most {})", self.datasets.len(), Self::MAX_DATASETS));
        }
        if let Some(link) = &self.link
            && !(link.starts_with("https://") || link.starts_with("http://"))
        {
            return Err(format!("source link {link:?} is not an http(s) address"));
        }
        Ok(())
    }
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactEntry {
    /// File name (a plain name, never a path).
    pub name: String,
    /// SHA-256 (hex) of the uncompressed bytes.
    pub sha256: String,
    /// Uncompressed size in bytes.
    pub size: u64,
}

/// A named tensor with flat data, for golden inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenTensor {
    /// Input or output name.
    pub name: String,
    /// Element type.
    pub datatype: Datatype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major elements as JSON numbers or booleans.
    pub data: Vec<serde_json::Value>,
}

/// One golden case: inputs and the outputs the registry computed for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestCase {
    /// Inputs, one per model input.
    pub inputs: Vec<GoldenTensor>,
    /// Expected outputs, one per model output.
    pub outputs: Vec<GoldenTensor>,
}

/// The golden self-test a device runs before switching to a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTest {
    /// Allowed absolute difference (plus the same relative to the expected value) per element.
    pub tolerance: f64,
    /// Cases.
    pub cases: Vec<SelfTestCase>,
}

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// Always [`BUNDLE_KIND`].
    pub kind: String,
    /// Model name.
    pub name: String,
    /// Version, increasing per model.
    pub version: u64,
    /// Model inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Model outputs.
    pub outputs: Vec<TensorMetadata>,
    /// Free-form preprocessing notes for app developers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<String>,
    /// Where it came from.
    pub lineage: Lineage,
    /// The model files (the manifest does not list itself).
    pub artifacts: Vec<ArtifactEntry>,
    /// Training-data profile, when reference data was given.
    pub baseline: Option<BaselineProfile>,
    /// Golden self-test.
    pub self_test: SelfTest,
    /// The engines (platform names, e.g. `onnxruntime_onnx`) the registry validated it on, when
    /// not the default tract: a device must run one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<String>,
}

impl BundleManifest {
    /// Parses and checks a manifest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VerifyError> {
        let m: BundleManifest =
            serde_json::from_slice(bytes).map_err(|e| VerifyError::Malformed(format!("bundle.json: {e}")))?;
        if m.kind != BUNDLE_KIND {
            return Err(VerifyError::Malformed(format!("bundle kind {:?} is not {BUNDLE_KIND}", m.kind)));
        }
        ModelName::new(m.name.as_str())?;
        for a in &m.artifacts {
            check_file_name(&a.name)?;
        }
        Ok(m)
    }

    /// Deterministic pretty JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_checked_for_size_links_and_control_characters() {
        let good = LineageSource {
            system: "mlflow".into(),
            uri: "http://mlflow:5000".into(),
            reference: "models:/iris/2".into(),
            run_id: Some("r1".into()),
            link: Some("http://mlflow:5000/#/models/iris/versions/2".into()),
            datasets: vec![SourceDataset { name: "iris".into(), digest: "9e010c66".into(), context: None }],
        };
        good.check().expect("valid");
        let refused = |f: &dyn Fn(&mut LineageSource)| {
            let mut s = good.clone();
            f(&mut s);
            s.check().expect_err("refused")
        };
        assert!(refused(&|s| s.link = Some("javascript:alert(1)".into())).contains("not an http(s) address"));
        assert!(refused(&|s| s.reference = "models:/a\u{1b}[2J".into()).contains("control characters"));
        assert!(refused(&|s| s.datasets[0].digest = "x".repeat(LineageSource::MAX_TEXT + 1)).contains("over"));
        assert!(refused(&|s| s.system.clear()).contains("needs system"));
        assert!(refused(&|s| s.datasets = vec![s.datasets[0].clone(); 65]).contains("datasets"));
    }
}
