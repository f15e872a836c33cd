//! Baseline profiles: what the training data looked like, so drift can be measured against it.
//!
//! Per input feature: quantile bin edges (default 10 bins; the outer bins are open-ended),
//! reference counts per bin, count of missing values, mean, standard deviation (population,
//! as `numpy.std`), min and max. Per model output: the same for numeric outputs, or a class
//! histogram. Plus a bounded, seeded reservoir sample of whole rows for sample-based tests
//! (KS, Wasserstein). The same data always gives byte-identical JSON.
//!
//! Binning rule (shared with the agent's sketches and the drift reference script): with inner
//! edges `e[0] < ... < e[k-1]`, a value `x` falls in bin `#{i : e[i] <= x}` — numpy's
//! `searchsorted(edges, x, side="right")`. Edges are numpy's default (linear) quantiles of the
//! reference at `1/bins .. (bins-1)/bins`, with duplicates removed.

use std::collections::BTreeMap;

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;

/// `kind` of a profile.
pub const PROFILE_KIND: &str = "edgefleet.profile/v1";

/// How to build a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileOptions {
    /// Quantile bins per feature.
    pub bins: usize,
    /// Rows kept in the reservoir sample.
    pub sample_rows: usize,
    /// Seed of the reservoir sample.
    pub seed: u64,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions { bins: 10, sample_rows: 5_000, seed: 0x5eed_ed9e_f1ee_7000 }
    }
}

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
    /// Profiles every column of `data`.
    pub fn from_dataset(data: &Dataset, options: &ProfileOptions) -> Self {
        let features = data
            .columns
            .iter()
            .enumerate()
            .map(|(ix, name)| FeatureProfile::from_values(name, data.column(ix), options.bins))
            .collect();
        BaselineProfile {
            kind: PROFILE_KIND.into(),
            rows: data.rows.len() as u64,
            features,
            outputs: Vec::new(),
            sample: reservoir(&data.rows, options.sample_rows, options.seed),
        }
    }

    /// Deterministic pretty JSON.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

impl FeatureProfile {
    /// Quantile bins and moments of `values` (NaN counts as missing).
    pub fn from_values(name: &str, values: impl Iterator<Item = f64>, bins: usize) -> Self {
        let mut present: Vec<f64> = Vec::new();
        let mut missing = 0u64;
        for v in values {
            if v.is_nan() {
                missing += 1;
            } else {
                present.push(v);
            }
        }
        present.sort_by(f64::total_cmp);
        let edges = quantile_edges(&present, bins.max(1));
        let mut counts = vec![0u64; edges.len() + 1];
        for v in &present {
            counts[bin_index(&edges, *v)] += 1;
        }
        let n = present.len();
        let (mean, std) = if n == 0 {
            (None, None)
        } else {
            let mean = present.iter().sum::<f64>() / n as f64;
            let var = present.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            (Some(mean), Some(var.sqrt()))
        };
        FeatureProfile {
            name: name.into(),
            edges,
            counts,
            count: n as u64,
            missing,
            mean,
            std,
            min: present.first().copied(),
            max: present.last().copied(),
        }
    }
}

/// The bin of `x` for inner `edges`: the number of edges `<= x`.
pub fn bin_index(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e <= x)
}

/// numpy's default (linear, "type 7") quantiles of sorted values at `i/bins`, deduplicated.
fn quantile_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let n = sorted.len();
    let mut edges: Vec<f64> = (1..bins)
        .map(|i| {
            let h = (n - 1) as f64 * (i as f64 / bins as f64);
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        })
        .collect();
    edges.dedup();
    edges
}

/// Algorithm R over rows with a seeded ChaCha8: the same data and seed keep the same rows.
fn reservoir(rows: &[Vec<f64>], capacity: usize, seed: u64) -> ReservoirSample {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut kept: Vec<usize> = Vec::with_capacity(capacity.min(rows.len()));
    for i in 0..rows.len() {
        if kept.len() < capacity {
            kept.push(i);
        } else {
            let j = rng.random_range(0..=i);
            if j < capacity {
                kept[j] = i;
            }
        }
    }
    kept.sort_unstable();
    ReservoirSample { seed, capacity, rows: kept.into_iter().map(|i| rows[i].clone()).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_match_numpy_linear_quantiles() {
        // numpy.quantile(range(1, 11), [0.25, 0.5, 0.75]) == [3.25, 5.5, 7.75]
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile_edges(&v, 4), vec![3.25, 5.5, 7.75]);
        assert_eq!(bin_index(&[3.25, 5.5, 7.75], 3.25), 1, "an edge belongs to the bin above it");
        assert_eq!(bin_index(&[3.25, 5.5, 7.75], -1e9), 0);
        assert_eq!(bin_index(&[3.25, 5.5, 7.75], 1e9), 3);
    }

    #[test]
    fn discrete_values_dedupe_edges_and_missing_is_counted() {
        let v = [1.0, 1.0, 1.0, 2.0, f64::NAN];
        let p = FeatureProfile::from_values("x", v.into_iter(), 10);
        assert_eq!(p.missing, 1);
        assert_eq!(p.count, 4);
        assert!(p.edges.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(p.counts.iter().sum::<u64>(), 4);
        assert_eq!(p.mean, Some(1.25));
    }

    #[test]
    fn reservoir_is_bounded_and_seeded() {
        let rows: Vec<Vec<f64>> = (0..10_000).map(|i| vec![f64::from(i)]).collect();
        let a = reservoir(&rows, 100, 7);
        assert_eq!(a.rows.len(), 100);
        assert_eq!(a, reservoir(&rows, 100, 7));
        assert_ne!(a.rows, reservoir(&rows, 100, 8).rows);
        assert_eq!(reservoir(&rows[..10], 100, 7).rows.len(), 10);
    }
}
