//! Baseline profiles: what the training data looked like, so drift can be measured against it.
//!
//! Per input feature: quantile bin edges (default 10 bins; the outer bins are open-ended),
//! reference counts per bin, count of missing values, mean, standard deviation (population,
//! as `numpy.std`), min and max. Per model output: the same for numeric outputs, or a class
//! histogram. Plus a bounded, seeded reservoir sample of whole rows for sample-based tests
//! (KS, Wasserstein). The same data always gives byte-identical JSON. (The controller builds
//! profiles from reference data; devices only read them.)
//!
//! Binning rule (shared with the agent's sketches and the drift reference script): with inner
//! edges `e[0] < ... < e[k-1]`, a value `x` falls in bin `#{i : e[i] <= x}` — numpy's
//! `searchsorted(edges, x, side="right")`. Edges are numpy's default (linear) quantiles of the
//! reference at `1/bins .. (bins-1)/bins`, with duplicates removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `kind` of a profile.
pub const PROFILE_KIND: &str = "edgefleet.profile/v1";

/// Histogram and moments of one numeric column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureProfile {
    /// Column name.
    pub name: String,
    /// Inner bin edges, strictly increasing; `edges.len() + 1` bins.
    pub edges: Vec<f64>,
    /// Reference count per bin.
    pub counts: Vec<u64>,
    /// Non-missing values.
    pub count: u64,
    /// Missing (NaN) values.
    pub missing: u64,
    /// Mean of non-missing values.
    pub mean: Option<f64>,
    /// Population standard deviation.
    pub std: Option<f64>,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

/// Profile of one model output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputProfile {
    /// A numeric output (regression value, score, probability).
    Numeric(FeatureProfile),
    /// A class label output: counts per class.
    Classes {
        /// Output name.
        name: String,
        /// Count per class label.
        classes: BTreeMap<String, u64>,
    },
}

/// Whole rows kept for sample-based tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservoirSample {
    /// Seed used.
    pub seed: u64,
    /// Capacity.
    pub capacity: usize,
    /// Rows, in reference order of their positions in the data.
    pub rows: Vec<Vec<f64>>,
}

/// The baseline of a model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineProfile {
    /// Always [`PROFILE_KIND`].
    pub kind: String,
    /// Rows in the reference data.
    pub rows: u64,
    /// One per input feature, in column order.
    pub features: Vec<FeatureProfile>,
    /// One per model output (filled by whoever runs the model over the reference data).
    pub outputs: Vec<OutputProfile>,
    /// Reservoir sample of feature rows.
    pub sample: ReservoirSample,
}

impl BaselineProfile {
    /// Deterministic pretty JSON.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// The bin of `x` for inner `edges`: the number of edges `<= x`.
pub fn bin_index(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e <= x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_belongs_to_the_bin_above_it() {
        assert_eq!(bin_index(&[3.25, 5.5, 7.75], 3.25), 1);
        assert_eq!(bin_index(&[3.25, 5.5, 7.75], -1e9), 0);
        assert_eq!(bin_index(&[3.25, 5.5, 7.75], 1e9), 3);
    }
}
