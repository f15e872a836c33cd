//! Drift reports, retraining policies and retrain requests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A drift report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DriftReport {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Device group, when the report is limited to one.
    pub group: Option<String>,
    /// Start of the range (Unix seconds): the start of its first telemetry window. Binned and
    /// sampled metrics cover the same batches: those merged into the windows in the range.
    pub from: i64,
    /// End of the range (exclusive): the end of the current window.
    pub to: i64,
    /// Rows counted.
    pub rows: u64,
    /// Sampled rows in the range.
    pub samples: u64,
    /// Per input feature, in baseline order.
    pub features: Vec<FeatureDrift>,
    /// Predicted classes, when the baseline has a class output.
    pub output: Option<OutputDrift>,
    /// From feedback, when labels exist.
    pub accuracy: Option<Accuracy>,
    /// Features whose verdict is `drift`.
    pub drifted_features: usize,
    /// Their share of all features.
    pub drifted_share: f64,
    /// Whether the version has a baseline at all.
    pub has_baseline: bool,
    /// Values a feature needs in the range before its binned statistics (PSI) count.
    #[serde(default)]
    pub min_rows: u64,
    /// Sampled values a feature needs, here and in the baseline's sample, before its sample
    /// statistics (Wasserstein, KS) count.
    #[serde(default)]
    pub min_samples: u64,
}

/// Drift of one input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeatureDrift {
    /// Column name in the baseline.
    pub name: String,
    /// Values counted (all traffic).
    pub count: u64,
    /// Missing (NaN) values.
    pub missing: u64,
    /// Sampled values used by the sample statistics.
    pub samples: u64,
    /// Population stability index over the baseline bins.
    pub psi: Option<f64>,
    /// Jensen–Shannon distance over the same bins.
    pub jensen_shannon: Option<f64>,
    /// Normalised Wasserstein distance (samples vs the baseline's reservoir).
    pub wasserstein: Option<f64>,
    /// KS statistic (samples vs reservoir).
    pub ks_statistic: Option<f64>,
    /// KS p-value (asymptotic).
    pub ks_pvalue: Option<f64>,
    /// The one verdict of the row, from every statistic with enough data: `drift` (PSI ≥ 0.2,
    /// or KS p ≤ 0.05 together with Wasserstein ≥ 0.1), `warn` (PSI ≥ 0.1, or one of the two
    /// sample statistics), `ok`, or `insufficient` (no statistic has enough data).
    pub status: String,
    /// Why: the statistics behind the verdict, or what is missing.
    #[serde(default)]
    pub reason: String,
    /// Wasserstein ≥ 0.1 on at least `min_samples` samples.
    pub wasserstein_drift: bool,
    /// KS p ≤ 0.05 on at least `min_samples` samples.
    pub ks_drift: bool,
    /// The baseline's inner bin edges (`edges.len() + 1` bins), for drawing the histograms.
    #[serde(default)]
    pub edges: Vec<f64>,
    /// Training data per bin.
    #[serde(default)]
    pub reference_counts: Vec<u64>,
    /// Traffic per bin.
    #[serde(default)]
    pub current_counts: Vec<u64>,
}

/// Drift of the predicted classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputDrift {
    /// Output name in the baseline.
    pub name: String,
    /// Baseline rows per class.
    pub reference_counts: Vec<u64>,
    /// Observed rows per class.
    pub current_counts: Vec<u64>,
    /// PSI of the class proportions.
    pub psi: Option<f64>,
    /// Jensen–Shannon distance of the class proportions.
    pub jensen_shannon: Option<f64>,
    /// Chi-squared statistic (none when a class the baseline never saw occurs: infinite).
    pub chi2_statistic: Option<f64>,
    /// Its p-value.
    pub chi2_pvalue: Option<f64>,
    /// `ok`, `warn` or `drift` by PSI.
    pub status: String,
}

/// Accuracy from feedback labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accuracy {
    /// Labels matched to predictions.
    pub labeled: u64,
    /// Of those, correct.
    pub correct: u64,
    /// correct / labeled.
    pub accuracy: f64,
}

/// When a model version is due for retraining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Judge this model at all.
    pub enabled: bool,
    /// A feature drifts at PSI ≥ this.
    pub psi: f64,
    /// Share of features that must drift in a window.
    pub feature_share: f64,
    /// Consecutive drifting windows needed.
    pub windows: u32,
    /// Rows a window needs to be judged.
    pub min_rows: u64,
    /// Accuracy drop (0.05 = 5 points) below the version's earlier windows that triggers.
    pub accuracy_drop: f64,
    /// Labels needed in the window, and before it, to judge accuracy.
    pub min_labels: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: true,
            psi: 0.2,
            feature_share: 0.3,
            windows: 3,
            min_rows: 100,
            accuracy_drop: 0.05,
            min_labels: 30,
        }
    }
}

impl Policy {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.psi.is_nan() || self.psi <= 0.0 || !(0.0..=1.0).contains(&self.feature_share) || self.windows == 0 {
            return Err("retrain policy: psi must be above 0, feature_share in [0, 1], windows at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.accuracy_drop) {
            return Err("retrain policy: accuracy_drop must be in [0, 1]".into());
        }
        Ok(())
    }
}

/// A retrain request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetrainRequest {
    /// Id.
    pub id: u64,
    /// Model.
    pub model: String,
    /// The version that drifted.
    pub version: u64,
    /// Why it was triggered.
    pub reason: String,
    /// When (Unix seconds).
    pub created_at: i64,
    /// Sampled rows in the snapshot.
    pub rows: u64,
    /// SHA-256 of the snapshot's data file: push the retrained model with `--dataset-hash`.
    pub dataset_sha256: String,
    /// Where the snapshot is on the controller.
    pub snapshot_dir: String,
    /// The snapshot manifest.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub manifest: Value,
    /// Delivery state: webhook and command.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub delivery: Value,
    /// Versions pushed with this snapshot's dataset hash (lineage).
    pub trained_versions: Vec<u64>,
}

/// Query of a drift report.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct DriftQuery {
    /// Time range back from now, e.g. `1h`, `30m`, `90s` (default: one window).
    pub window: Option<String>,
    /// Only devices of this group.
    pub group: Option<String>,
}

/// Query of the request list.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this model's.
    pub model: Option<String>,
}

/// Drift per telemetry window over time (`GET .../drift/history`), oldest first, with the
/// thresholds the verdicts use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DriftHistory {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Device group, when the history is of one.
    pub group: Option<String>,
    /// Seconds per window.
    pub window_secs: u64,
    /// PSI at or above which a feature warns.
    pub psi_warn: f64,
    /// PSI at or above which a feature drifted.
    pub psi_drift: f64,
    /// Normalised Wasserstein distance at or above which (with KS) a feature drifted.
    pub wasserstein_drift: f64,
    /// KS p-value at or below which (with Wasserstein) a feature drifted.
    pub ks_p_drift: f64,
    /// The windows with telemetry, oldest first.
    pub windows: Vec<DriftWindow>,
}

/// One window's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DriftWindow {
    /// Unix seconds the window starts.
    pub from: i64,
    /// Rows counted in it.
    pub rows: u64,
    /// Per feature, in baseline order.
    pub features: Vec<WindowFeature>,
    /// Accuracy from feedback labels in the window, when any.
    pub accuracy: Option<f64>,
}

/// One feature's statistics in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowFeature {
    /// Column name.
    pub name: String,
    /// PSI.
    pub psi: Option<f64>,
    /// KS p-value.
    pub ks_pvalue: Option<f64>,
    /// Normalised Wasserstein distance.
    pub wasserstein: Option<f64>,
    /// `drift`, `warn`, `ok` or `insufficient`.
    pub status: String,
}

/// Query of `GET .../drift/history`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// One device group.
    pub group: Option<String>,
    /// The newest this many windows with telemetry (default 48, at most 500).
    pub windows: Option<u32>,
}
