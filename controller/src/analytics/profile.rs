//! Baseline profiles built from reference data (the types, and the binning rule devices share,
//! are the contract's: [`edgefleet_shared::profile`]).

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use edgefleet_shared::profile::{BaselineProfile, FeatureProfile, PROFILE_KIND, ReservoirSample, bin_index};

use super::dataset::Dataset;

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

/// Profiles every column of `data`.
pub fn baseline(data: &Dataset, options: &ProfileOptions) -> BaselineProfile {
    let features =
        data.columns.iter().enumerate().map(|(ix, name)| feature(name, data.column(ix), options.bins)).collect();
    BaselineProfile {
        kind: PROFILE_KIND.into(),
        rows: data.rows.len() as u64,
        features,
        outputs: Vec::new(),
        sample: reservoir(&data.rows, options.sample_rows, options.seed),
    }
}

/// Quantile bins and moments of `values` (NaN counts as missing).
pub fn feature(name: &str, values: impl Iterator<Item = f64>, bins: usize) -> FeatureProfile {
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
    }

    #[test]
    fn discrete_values_dedupe_edges_and_missing_is_counted() {
        let v = [1.0, 1.0, 1.0, 2.0, f64::NAN];
        let p = feature("x", v.into_iter(), 10);
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
