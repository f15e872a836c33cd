//! Rollout quality gates: `METRIC OP VALUE` expressions (`error_rate<0.01`, `p99_ms<50`) and the
//! per-wave measurements they are judged on.
//!
//! | Metric | Meaning | Needs |
//! |---|---|---|
//! | `activation_failure_rate` | share of the rollout's devices whose activation of the candidate failed | every device settled |
//! | `error_rate` | engine failures / requests, over devices serving the candidate | `min_requests` requests |
//! | `p99_ms` | mean over those devices of their p99 latency (ms) | `min_requests` requests |
//! | `p99_ratio` | that mean / the same devices' p99 on the version they ran before | `min_requests` requests |
//! | `psi` | population stability index of the candidate's predicted classes against the same devices' classes on the version before | `min_requests` predictions |
//! | `agreement` | (shadow) share of mirrored rows where the candidate's top class matches the active version's | `min_requests` comparisons |
//!
//! A gate whose measurement lacks its samples is pending: the wave waits for it (up to the wave
//! deadline). A rollout may only name gates its strategy can measure: before promotion a shadow
//! rollout's candidate answers no requests, so only `activation_failure_rate` and `agreement`;
//! a canary or direct rollout mirrors nothing, so everything but `agreement`.

use serde::{Deserialize, Serialize};

/// Comparison of a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
}

/// Metrics a gate may name.
pub const METRICS: &[&str] = &["activation_failure_rate", "error_rate", "p99_ms", "p99_ratio", "psi", "agreement"];

/// Whether a rollout of `strategy` can measure `metric` at all.
pub fn measurable(metric: &str, strategy: super::Strategy) -> bool {
    match strategy {
        super::Strategy::Shadow => matches!(metric, "activation_failure_rate" | "agreement"),
        super::Strategy::Canary | super::Strategy::Direct => metric != "agreement",
    }
}

/// `v` with three significant digits, as measurements are shown.
pub fn three_digits(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let text = format!("{v:.digits$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}

/// A parsed gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// Metric name (one of [`METRICS`]).
    pub metric: String,
    /// Comparison.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
}

impl Gate {
    /// Parses `METRIC OP VALUE` (spaces allowed).
    pub fn parse(text: &str) -> Result<Gate, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (at, op, len) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
            .iter()
            .find_map(|(sym, op)| compact.find(sym).map(|at| (at, *op, sym.len())))
            .ok_or_else(|| {
                format!("gate {text:?}: expected METRIC<VALUE, METRIC<=VALUE, METRIC>VALUE or METRIC>=VALUE")
            })?;
        let metric = &compact[..at];
        if !METRICS.contains(&metric) {
            return Err(format!("gate {text:?}: unknown metric {metric:?}; known: {}", METRICS.join(", ")));
        }
        let threshold: f64 = compact[at + len..]
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("gate {text:?}: the threshold is not a number"))?;
        Ok(Gate { metric: metric.to_owned(), op, threshold })
    }

    /// Whether `value` passes.
    pub fn passes(&self, value: f64) -> bool {
        match self.op {
            Op::Lt => value < self.threshold,
            Op::Le => value <= self.threshold,
            Op::Gt => value > self.threshold,
            Op::Ge => value >= self.threshold,
        }
    }
}

/// What the wave's devices reported, folded into the gate metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Measurements {
    /// Devices in the rollout so far.
    pub devices: u64,
    /// Of those, serving the candidate.
    pub activated: u64,
    /// Of those, whose activation of the candidate failed (or which refused its document).
    pub failed: u64,
    /// Requests the candidate answered or failed on those devices.
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Mean p99 latency (ms) of the candidate over devices that report one.
    pub p99_ms: Option<f64>,
    /// Mean p99 latency (ms) of the same devices on their previous version.
    pub baseline_p99_ms: Option<f64>,
    /// Shadow: requests mirrored to the candidate and compared.
    #[serde(default)]
    pub compared: u64,
    /// Shadow: agreement over those, weighted by comparisons.
    #[serde(default)]
    pub agreement: Option<f64>,
    /// Predictions of the candidate counted per class, over devices serving it.
    #[serde(default)]
    pub classified: u64,
    /// PSI of those class counts against the same devices' counts on their previous version.
    #[serde(default)]
    pub psi: Option<f64>,
    /// Devices that ran the candidate already when the rollout reached them.
    #[serde(default)]
    pub already: u64,
    /// Of the failed, devices that did not report by the wave deadline.
    #[serde(default)]
    pub timed_out: u64,
}

impl Measurements {
    /// Devices neither serving the candidate, nor failed, nor on it already.
    pub fn unsettled(&self) -> u64 {
        self.devices.saturating_sub(self.activated + self.failed + self.already)
    }

    /// The value of `metric`, or none while it lacks samples.
    pub fn value(&self, metric: &str, min_requests: u64) -> Option<f64> {
        let enough = self.requests >= min_requests.max(1);
        match metric {
            "activation_failure_rate" if self.unsettled() == 0 && self.devices > 0 => {
                Some(self.failed as f64 / self.devices as f64)
            }
            "error_rate" if enough => Some(self.errors as f64 / self.requests as f64),
            "p99_ms" if enough => self.p99_ms,
            "agreement" if self.compared >= min_requests.max(1) => self.agreement,
            "psi" if self.classified >= min_requests.max(1) => self.psi,
            "p99_ratio" if enough => match (self.p99_ms, self.baseline_p99_ms) {
                (Some(now), Some(before)) if before > 0.0 => Some(now / before),
                _ => None,
            },
            _ => None,
        }
    }
}

/// One gate's latest evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GateResult {
    /// The gate as written.
    pub gate: String,
    /// Its measured value, when there were enough samples.
    pub value: Option<f64>,
    /// Passed, failed, or none while pending.
    pub passed: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let g = Gate::parse("error_rate<0.01").expect("parse");
        assert_eq!((g.metric.as_str(), g.op, g.threshold), ("error_rate", Op::Lt, 0.01));
        assert_eq!(Gate::parse(" p99_ms <= 50 ").expect("parse").op, Op::Le);
        assert_eq!(Gate::parse("p99_ratio>=0.5").expect("parse").op, Op::Ge);
        assert!(Gate::parse("p99_ms<50").expect("parse").passes(49.9));
        assert!(!Gate::parse("p99_ms<50").expect("parse").passes(50.0));
        for bad in ["error_rate", "latency<5", "error_rate<abc", "error_rate<inf", "<0.1"] {
            assert!(Gate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_print_with_three_significant_digits() {
        for (v, want) in
            [(5.8312, "5.83"), (0.012345, "0.0123"), (1234.4, "1234"), (0.1, "0.1"), (0.0, "0"), (1.0, "1")]
        {
            assert_eq!(three_digits(v), want, "{v}");
        }
    }

    #[test]
    fn each_strategy_measures_its_own_gates() {
        use super::super::Strategy;
        assert!(measurable("agreement", Strategy::Shadow) && !measurable("agreement", Strategy::Canary));
        assert!(!measurable("psi", Strategy::Shadow) && !measurable("error_rate", Strategy::Shadow));
        assert!(measurable("p99_ratio", Strategy::Direct) && measurable("activation_failure_rate", Strategy::Shadow));
    }

    #[test]
    fn metrics_wait_for_their_samples() {
        let mut m = Measurements { devices: 4, activated: 3, failed: 0, requests: 50, errors: 5, ..Default::default() };
        assert_eq!(m.value("activation_failure_rate", 100), None, "one device unsettled");
        assert_eq!(m.value("error_rate", 100), None, "50 of 100 requests");
        m.activated = 3;
        m.failed = 1;
        m.requests = 100;
        m.p99_ms = Some(12.0);
        m.baseline_p99_ms = Some(4.0);
        assert_eq!(m.value("activation_failure_rate", 100), Some(0.25));
        assert_eq!(m.value("error_rate", 100), Some(0.05));
        assert_eq!(m.value("p99_ratio", 100), Some(3.0));
    }
}
