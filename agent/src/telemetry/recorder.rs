//! Per-version recording on the request path.
//!
//! [`Recorder::observe_inputs`] runs for every request and only increments atomic counters
//! (one per feature value, found by binary search over the baseline's edges): no allocation,
//! no lock. Sampling decides with a lock-free generator; only a sampled row allocates.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use edgefleet_shared::profile::{BaselineProfile, bin_index};
use edgefleet_shared::telemetry::{FeatureCounts, Feedback, ModelTelemetry, Sample};

use super::TelemetryConfig;
use crate::predictions::{OUTPUT_CLASSES, for_each_prediction};
use crate::tensor::{Tensor, TensorData};

/// Device-wide sampling caps (all versions together).
#[derive(Debug)]
pub struct Caps {
    per_minute: u32,
    per_hour: u32,
    state: Mutex<CapState>,
    /// Unix second until which a cap is known to be reached: requests skip keeping their inputs.
    full_until: AtomicU64,
}

#[derive(Debug, Default)]
struct CapState {
    minute: u64,
    minute_count: u32,
    hour: u64,
    hour_count: u32,
    capped: u64,
}

impl Caps {
    /// Caps of `per_minute` and `per_hour` samples.
    pub fn new(per_minute: u32, per_hour: u32) -> Self {
        Caps { per_minute, per_hour, state: Mutex::new(CapState::default()), full_until: AtomicU64::new(0) }
    }

    /// Whether a cap is known to be reached at `now` (lock-free; no sample could be taken).
    pub fn full(&self, now: u64) -> bool {
        now < self.full_until.load(Ordering::Relaxed)
    }

    /// Takes one sample slot at `now` (Unix seconds), or counts it as capped.
    pub fn allow(&self, now: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.minute != now / 60 {
            s.minute = now / 60;
            s.minute_count = 0;
        }
        if s.hour != now / 3600 {
            s.hour = now / 3600;
            s.hour_count = 0;
        }
        if s.minute_count >= self.per_minute || s.hour_count >= self.per_hour {
            s.capped += 1;
            let until = if s.hour_count >= self.per_hour { (s.hour + 1) * 3600 } else { (s.minute + 1) * 60 };
            self.full_until.store(until, Ordering::Relaxed);
            return false;
        }
        s.minute_count += 1;
        s.hour_count += 1;
        true
    }

    /// Samples refused since the last call.
    pub fn take_capped(&self) -> u64 {
        std::mem::take(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()).capped)
    }
}

/// Recent request ids and their predicted class, bounded, oldest evicted first.
#[derive(Debug, Default)]
struct Recent {
    classes: HashMap<String, u64>,
    order: VecDeque<String>,
}

/// What one served model version saw since the last drain.
#[derive(Debug)]
pub struct Recorder {
    model: String,
    version: u64,
    /// Inner bin edges per feature (empty without a baseline).
    edges: Vec<Vec<f64>>,
    /// Where each feature's bins start in `bins`.
    offsets: Vec<usize>,
    bins: Box<[AtomicU64]>,
    missing: Box<[AtomicU64]>,
    classes: [AtomicU64; OUTPUT_CLASSES],
    rows: AtomicU64,
    labeled: AtomicU64,
    correct: AtomicU64,
    rng: AtomicU64,
    sample_threshold: u64,
    low_confidence: f64,
    max_sample_values: usize,
    recent_capacity: usize,
    max_feedback: usize,
    caps: std::sync::Arc<Caps>,
    samples: Mutex<Vec<Sample>>,
    feedback: Mutex<Vec<Feedback>>,
    recent: Mutex<Recent>,
}

impl Recorder {
    /// A recorder binning over `baseline`'s feature edges.
    pub fn new(
        model: &str,
        version: u64,
        baseline: Option<&BaselineProfile>,
        config: &TelemetryConfig,
        caps: std::sync::Arc<Caps>,
    ) -> Self {
        let edges: Vec<Vec<f64>> =
            baseline.map(|b| b.features.iter().map(|f| f.edges.clone()).collect()).unwrap_or_default();
        let mut offsets = Vec::with_capacity(edges.len());
        let mut total = 0;
        for e in &edges {
            offsets.push(total);
            total += e.len() + 1;
        }
        let seed = edgefleet_shared::clock::unix_ms() ^ (u64::from(std::process::id()) << 32) ^ version;
        Recorder {
            model: model.into(),
            version,
            offsets,
            bins: (0..total).map(|_| AtomicU64::new(0)).collect(),
            missing: (0..edges.len()).map(|_| AtomicU64::new(0)).collect(),
            edges,
            classes: std::array::from_fn(|_| AtomicU64::new(0)),
            rows: AtomicU64::new(0),
            labeled: AtomicU64::new(0),
            correct: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
            // `u64::MAX as f64` rounds up to 2^64, which saturates back to u64::MAX: rate 1 always samples.
            sample_threshold: (config.sample_rate * u64::MAX as f64) as u64,
            low_confidence: config.low_confidence,
            max_sample_values: config.max_sample_values,
            recent_capacity: config.recent_predictions,
            max_feedback: config.max_feedback,
            caps,
            samples: Mutex::new(Vec::new()),
            feedback: Mutex::new(Vec::new()),
            recent: Mutex::new(Recent::default()),
        }
    }

    /// Counts every input value into its feature's bin. Runs for every request; allocation-free.
    /// Applies when the first input is `[N, F]` with F the baseline's feature count.
    pub fn observe_inputs(&self, inputs: &[Tensor]) {
        let Some(input) = inputs.first() else { return };
        let features = self.edges.len();
        if features == 0 || input.shape.len() != 2 || input.shape[1] != features {
            return;
        }
        match &input.data {
            TensorData::F32(v) => {
                v.chunks_exact(features).for_each(|row| self.count_row(row.iter().map(|x| f64::from(*x))))
            }
            TensorData::F64(v) => v.chunks_exact(features).for_each(|row| self.count_row(row.iter().copied())),
            TensorData::F16(v) => {
                v.chunks_exact(features).for_each(|row| self.count_row(row.iter().map(|x| x.to_f64())))
            }
            _ => {}
        }
    }

    fn count_row(&self, row: impl Iterator<Item = f64>) {
        for (j, x) in row.enumerate() {
            if x.is_nan() {
                self.missing[j].fetch_add(1, Ordering::Relaxed);
            } else {
                self.bins[self.offsets[j] + bin_index(&self.edges[j], x)].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether this request is picked by the sampling rate (a lock-free SplitMix64 draw).
    pub fn roll(&self) -> bool {
        if self.sample_threshold == 0 {
            return false;
        }
        let mut z = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) <= self.sample_threshold
    }

    /// Whether the request's inputs must be kept until its answer: it was rolled, or the
    /// low-confidence rule may pick it — and it is small enough to sample.
    pub fn keep_inputs(&self, inputs: &[Tensor], rolled: bool) -> bool {
        (rolled || self.low_confidence > 0.0)
            && inputs.iter().map(|t| t.data.len()).sum::<usize>() <= self.max_sample_values
    }

    /// Counts predicted classes, remembers the prediction under the request id, and samples rows
    /// (those rolled, and those under the confidence threshold), within the caps.
    pub fn observe_outputs(
        &self,
        outputs: &[Tensor],
        request_id: Option<&str>,
        inputs: Option<&[Tensor]>,
        rolled: bool,
    ) {
        let mut rows = 0u64;
        let mut first_class = None;
        let mut row_classes: [Option<(u64, Option<f64>)>; 8] = [None; 8];
        for_each_prediction(outputs, |row, class, top| {
            rows += 1;
            self.classes[class.min(OUTPUT_CLASSES - 1)].fetch_add(1, Ordering::Relaxed);
            if row == 0 {
                first_class = Some(class as u64);
            }
            if let Some(slot) = row_classes.get_mut(row) {
                *slot = Some((class as u64, top));
            }
        });
        let batch = outputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(1) as u64;
        self.rows.fetch_add(rows.max(batch), Ordering::Relaxed);
        if let (Some(id), Some(class)) = (request_id, first_class) {
            self.remember(id, class);
        }
        let Some(inputs) = inputs else { return };
        for (row, prediction) in row_classes.iter().enumerate().take(batch as usize) {
            let low = prediction.and_then(|p| p.1).is_some_and(|top| top < self.low_confidence);
            if !(rolled || low) || !self.caps.allow(edgefleet_shared::clock::unix_ms() / 1000) {
                continue;
            }
            let sample = Sample {
                request_id: request_id.map(str::to_owned),
                at_ms: edgefleet_shared::clock::unix_ms(),
                inputs: inputs.iter().flat_map(|t| row_values(t, row)).collect(),
                outputs: crate::predictions::class_scores(outputs)
                    .or(outputs.first())
                    .map(|t| row_values(t, row))
                    .unwrap_or_default(),
                predicted: prediction.map(|p| p.0),
                low_confidence: low,
            };
            self.samples.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
            metrics::counter!(crate::metric::TELEMETRY_SAMPLES, "reason" => if low { "low_confidence" } else { "rate" })
                .increment(1);
        }
    }

    fn remember(&self, id: &str, class: u64) {
        if self.recent_capacity == 0 {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.classes.insert(id.to_owned(), class).is_none() {
            recent.order.push_back(id.to_owned());
        }
        while recent.order.len() > self.recent_capacity {
            if let Some(old) = recent.order.pop_front() {
                recent.classes.remove(&old);
            }
        }
    }

    /// Records a ground-truth label; true when it matched a recent prediction.
    pub fn feedback(&self, request_id: &str, label: u64) -> bool {
        let predicted = self.recent.lock().unwrap_or_else(|p| p.into_inner()).classes.get(request_id).copied();
        if let Some(p) = predicted {
            self.labeled.fetch_add(1, Ordering::Relaxed);
            if p == label {
                self.correct.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut feedback = self.feedback.lock().unwrap_or_else(|p| p.into_inner());
        if feedback.len() < self.max_feedback {
            feedback.push(Feedback { request_id: request_id.into(), label, at_ms: edgefleet_shared::clock::unix_ms() });
        } else {
            metrics::counter!(crate::metric::TELEMETRY_FEEDBACK_DROPPED).increment(1);
        }
        predicted.is_some()
    }

    /// Takes everything counted since the last drain; None when nothing was.
    pub fn drain(&self) -> Option<ModelTelemetry> {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let rows = take(&self.rows);
        let samples = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        let feedback = std::mem::take(&mut *self.feedback.lock().unwrap_or_else(|p| p.into_inner()));
        let features: Vec<FeatureCounts> = self
            .edges
            .iter()
            .enumerate()
            .map(|(j, e)| FeatureCounts {
                counts: self.bins[self.offsets[j]..self.offsets[j] + e.len() + 1].iter().map(take).collect(),
                missing: take(&self.missing[j]),
            })
            .collect();
        let mut output_classes: Vec<u64> = self.classes.iter().map(take).collect();
        while output_classes.last() == Some(&0) {
            output_classes.pop();
        }
        let (labeled, correct) = (take(&self.labeled), take(&self.correct));
        if rows == 0 && samples.is_empty() && feedback.is_empty() && labeled == 0 {
            return None;
        }
        Some(ModelTelemetry {
            model: self.model.clone(),
            version: self.version,
            rows,
            features,
            output_classes,
            samples,
            feedback,
            labeled,
            correct,
        })
    }
}

/// Row `row` of a `[N, ...]` tensor as f32 values (nothing for non-numeric data).
fn row_values(t: &Tensor, row: usize) -> Vec<f32> {
    let n = t.shape.first().copied().unwrap_or(1).max(1);
    let width = t.data.len() / n;
    let range = row * width..(row + 1) * width;
    match &t.data {
        TensorData::F32(v) => v.get(range).map(<[f32]>::to_vec),
        other => other.to_f64_vec().get(range).map(|s| s.iter().map(|x| *x as f32).collect()),
    }
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_shared::profile::{FeatureProfile, PROFILE_KIND, ReservoirSample};
    use std::sync::Arc;

    /// A feature binned at 10, 20, ... 90 (as a profile of 0..99 would be).
    fn feature(name: &str, edges: Vec<f64>) -> FeatureProfile {
        let counts = vec![10; edges.len() + 1];
        FeatureProfile {
            name: name.into(),
            edges,
            counts,
            count: 100,
            missing: 0,
            mean: None,
            std: None,
            min: None,
            max: None,
        }
    }

    fn recorder(config: &TelemetryConfig) -> Recorder {
        let baseline = BaselineProfile {
            kind: PROFILE_KIND.into(),
            rows: 100,
            features: vec![
                feature("a", (1..10).map(|i| f64::from(i) * 10.0).collect()),
                feature("b", (1..10).map(f64::from).collect()),
            ],
            outputs: Vec::new(),
            sample: ReservoirSample { seed: 0, capacity: 0, rows: Vec::new() },
        };
        Recorder::new("m", 1, Some(&baseline), config, Arc::new(Caps::new(1000, 1000)))
    }

    fn scores(rows: &[[f32; 3]]) -> Tensor {
        Tensor::new(vec![rows.len(), 3], TensorData::F32(rows.iter().flatten().copied().collect())).expect("tensor")
    }

    #[test]
    fn every_value_lands_in_its_baseline_bin() {
        let r = recorder(&TelemetryConfig { sample_rate: 0.0, low_confidence: 0.0, ..Default::default() });
        let input = Tensor::new(vec![3, 2], TensorData::F32(vec![0.0, 0.0, 99.0, 9.0, f32::NAN, 5.0])).expect("t");
        r.observe_inputs(std::slice::from_ref(&input));
        r.observe_outputs(&[scores(&[[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])], None, None, false);
        let t = r.drain().expect("something counted");
        assert_eq!(t.rows, 3);
        assert_eq!(t.features[0].counts.iter().sum::<u64>(), 2);
        assert_eq!(t.features[0].missing, 1);
        assert_eq!(t.features[0].counts[0], 1, "0 is below the first edge");
        assert_eq!(*t.features[0].counts.last().expect("bins"), 1, "99 is above the last edge");
        assert_eq!(t.features[1].counts.iter().sum::<u64>(), 3);
        assert_eq!(t.output_classes, vec![1, 1, 1]);
        assert!(t.samples.is_empty());
        assert!(r.drain().is_none(), "a drain resets the counters");
    }

    #[test]
    fn low_confidence_rows_are_always_sampled_and_feedback_matches_predictions() {
        let r = recorder(&TelemetryConfig { sample_rate: 0.0, low_confidence: 0.5, ..Default::default() });
        let input = Tensor::new(vec![2, 2], TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])).expect("t");
        assert!(!r.roll(), "rate 0 never rolls");
        assert!(r.keep_inputs(std::slice::from_ref(&input), false));
        let out = scores(&[[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]]);
        r.observe_outputs(std::slice::from_ref(&out), Some("req-1"), Some(std::slice::from_ref(&input)), false);
        assert!(r.feedback("req-1", 0));
        assert!(!r.feedback("unknown", 2));
        let t = r.drain().expect("drained");
        assert_eq!(t.samples.len(), 1, "only the 0.4 row is under the threshold");
        assert_eq!(t.samples[0].inputs, vec![3.0, 4.0]);
        assert_eq!(t.samples[0].predicted, Some(0));
        assert!(t.samples[0].low_confidence);
        assert_eq!((t.labeled, t.correct), (1, 1));
        assert_eq!(t.feedback.len(), 2);
    }

    #[test]
    fn caps_bound_samples_per_minute() {
        let caps = Caps::new(2, 100);
        assert!(caps.allow(60) && caps.allow(61));
        assert!(!caps.full(62), "not known to be full before a refusal");
        assert!(!caps.allow(62));
        assert!(caps.full(62) && caps.full(119), "full for the rest of the minute");
        assert!(!caps.full(120));
        assert!(caps.allow(120), "a new minute");
        assert_eq!(caps.take_capped(), 1);
        let r = recorder(&TelemetryConfig { sample_rate: 1.0, ..Default::default() });
        assert!((0..100).all(|_| r.roll()), "rate 1 always rolls");
    }
}
