//! Shadow evaluation: a candidate version loaded beside the served one, fed a share of live
//! requests after they were answered, and compared with the served answers.
//!
//! Mirroring never touches the request's critical path: the inputs are cloned only for sampled
//! requests, the shadow's job is queued with `try_submit` on its own worker pool (one worker, a
//! short queue: that is its CPU budget), and a full queue skips the mirror and counts it. The
//! comparison runs in a spawned task once the shadow answers: on the first `[N, C]` output with
//! C > 1 of each (class scores) the top classes per row must match; otherwise (labels, scalar
//! regressions) the values; the mean absolute difference is reported either way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use edgefleet_shared::deployment::ModelRef;
use edgefleet_shared::fleet::ShadowReport;
use tokio::sync::oneshot;

use crate::predictions::{argmax, class_scores};
use crate::repository::ServedModel;
use crate::tensor::Tensor;
use crate::worker::Job;

/// A shadow version of one served model.
#[derive(Debug)]
pub struct Shadow {
    /// The candidate, loaded and self-tested, not served.
    pub model: Arc<ServedModel>,
    /// Which version it is.
    pub version: ModelRef,
    /// Mirror one request in `period`.
    period: u64,
    seen: AtomicU64,
    compared: AtomicU64,
    skipped: AtomicU64,
    sums: Mutex<Sums>,
}

#[derive(Debug, Default)]
struct Sums {
    rows: u64,
    agreed_rows: u64,
    elements: u64,
    abs_diff: f64,
    latency_delta_s: f64,
}

impl Shadow {
    /// A shadow mirroring `share` (0, 1] of requests.
    pub fn new(model: Arc<ServedModel>, version: ModelRef, share: f64) -> Self {
        let period = (1.0 / share.clamp(1e-6, 1.0)).round().max(1.0) as u64;
        Shadow {
            model,
            version,
            period,
            seen: AtomicU64::new(0),
            compared: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            sums: Mutex::new(Sums::default()),
        }
    }

    /// Whether this request is one to mirror.
    pub fn sample(&self) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.period)
    }

    /// Runs `inputs` on the shadow and compares with the served `answer` (which took `compute`).
    pub fn mirror(self: &Arc<Self>, inputs: Vec<Tensor>, answer: Vec<Tensor>, compute: Duration) {
        let (reply, result) = oneshot::channel();
        if self.model.pool.try_submit(Job { inputs, enqueued: Instant::now(), reply }).is_err() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metric::SHADOW_SKIPPED).increment(1);
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(result) = result.await else { return };
            let Ok(outputs) = result.outputs else {
                this.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            };
            this.compare(&answer, &outputs, result.compute.as_secs_f64() - compute.as_secs_f64());
        });
    }

    fn compare(&self, served: &[Tensor], shadow: &[Tensor], latency_delta_s: f64) {
        let Some(c) = compare(served, shadow) else { return };
        let mut sums = self.sums.lock().unwrap_or_else(|p| p.into_inner());
        sums.rows += c.rows;
        sums.agreed_rows += c.agreed_rows;
        sums.elements += c.elements;
        sums.abs_diff += c.abs_diff;
        sums.latency_delta_s += latency_delta_s;
        drop(sums);
        self.compared.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric::SHADOW_COMPARED).increment(1);
    }

    /// The comparison so far, for status reports.
    pub fn report(&self) -> ShadowReport {
        let compared = self.compared.load(Ordering::Relaxed);
        let sums = self.sums.lock().unwrap_or_else(|p| p.into_inner());
        ShadowReport {
            model: self.version.clone(),
            compared,
            skipped: self.skipped.load(Ordering::Relaxed),
            agreement: (sums.rows > 0).then(|| sums.agreed_rows as f64 / sums.rows as f64),
            mean_abs_diff: (sums.elements > 0).then(|| sums.abs_diff / sums.elements as f64),
            latency_delta_ms: (compared > 0).then(|| sums.latency_delta_s * 1000.0 / compared as f64),
        }
    }
}

/// One request's comparison.
#[derive(Debug, Default, PartialEq)]
struct Comparison {
    rows: u64,
    agreed_rows: u64,
    elements: u64,
    abs_diff: f64,
}

/// Compares the served and shadow answers to one request.
fn compare(served: &[Tensor], shadow: &[Tensor]) -> Option<Comparison> {
    let (a, b) = (compared_output(served)?, compared_output(shadow)?);
    let (x, y) = (a.data.to_f64_vec(), b.data.to_f64_vec());
    let rows = a.shape.first().copied().unwrap_or(1).max(1);
    let mut c = Comparison::default();
    if x.len() != y.len() || x.is_empty() || x.len() % rows != 0 {
        // Different output shapes: no row agrees.
        c.rows = rows as u64;
        return Some(c);
    }
    let width = x.len() / rows;
    for (xr, yr) in x.chunks(width).zip(y.chunks(width)) {
        c.rows += 1;
        // Scores: the same top class. One value per row (a label): the same value.
        let agreed = if width > 1 { argmax(xr) == argmax(yr) } else { xr == yr };
        c.agreed_rows += u64::from(agreed);
    }
    c.elements = x.len() as u64;
    c.abs_diff = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).sum();
    Some(c)
}

/// The output compared: the first `[N, C]` one with C > 1 (class scores), else the first.
fn compared_output(outputs: &[Tensor]) -> Option<&Tensor> {
    class_scores(outputs).or_else(|| outputs.first())
}

/// The shadow versions beside the served models, by model name.
#[derive(Debug, Default)]
pub struct Shadows {
    by_name: RwLock<BTreeMap<String, Arc<Shadow>>>,
}

impl Shadows {
    /// No shadows.
    pub fn new() -> Arc<Self> {
        Arc::new(Shadows::default())
    }

    /// The shadow beside `name`, if any.
    pub fn get(&self, name: &str) -> Option<Arc<Shadow>> {
        self.by_name.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Sets or clears the shadow beside `name`; returns the one it replaced.
    pub fn set(&self, name: &str, shadow: Option<Arc<Shadow>>) -> Option<Arc<Shadow>> {
        let mut shadows = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        let old = match shadow {
            Some(s) => shadows.insert(name.to_owned(), s),
            None => shadows.remove(name),
        };
        metrics::gauge!(crate::metric::SHADOW_MODELS).set(shadows.len() as f64);
        old
    }
}

#[cfg(test)]
mod tests {
    use super::{Comparison, compare};
    use crate::predictions::argmax;
    use crate::tensor::{Tensor, TensorData};

    fn scores(rows: &[[f32; 3]]) -> Vec<Tensor> {
        let label = Tensor { shape: vec![rows.len()], data: TensorData::I64(vec![0; rows.len()]) };
        let data = TensorData::F32(rows.iter().flatten().copied().collect());
        vec![label, Tensor { shape: vec![rows.len(), 3], data }]
    }

    #[test]
    fn class_scores_agree_on_the_top_class() {
        let served = scores(&[[0.1, 0.8, 0.1], [0.7, 0.2, 0.1]]);
        let shadow = scores(&[[0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]);
        let c = compare(&served, &shadow).expect("comparable");
        assert_eq!((c.rows, c.agreed_rows, c.elements), (2, 1, 6));
        assert!((c.abs_diff - 1.4).abs() < 1e-6, "{c:?}");
        let same = compare(&served, &served).expect("comparable");
        assert_eq!((same.rows, same.agreed_rows), (2, 2));
    }

    #[test]
    fn labels_compare_by_value_and_shapes_must_match() {
        let a = vec![Tensor { shape: vec![3], data: TensorData::I64(vec![1, 2, 0]) }];
        let b = vec![Tensor { shape: vec![3], data: TensorData::I64(vec![1, 0, 0]) }];
        assert_eq!(compare(&a, &b).expect("comparable").agreed_rows, 2);
        let wide = scores(&[[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]);
        assert_eq!(compare(&a, &wide), Some(Comparison { rows: 3, ..Comparison::default() }));
    }

    #[test]
    fn argmax_takes_the_first_largest() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert_eq!(argmax(&[f64::NAN, 0.2]), 1);
        assert_eq!(argmax(&[3.0]), 0);
    }
}
