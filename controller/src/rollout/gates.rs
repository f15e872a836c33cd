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

use edgefleet_shared::api::rollouts::{Measurements, Strategy};
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
pub fn measurable(metric: &str, strategy: Strategy) -> bool {
    match strategy {
        Strategy::Shadow => matches!(metric, "activation_failure_rate" | "agreement"),
        Strategy::Canary | Strategy::Direct => metric != "agreement",
    }
}

/// The value of `metric` over `m`, or what it still waits for: each side of a comparison needs
/// `min_requests` samples (requests, predictions or comparisons), so a verdict never rests on a
/// handful.
pub fn metric_value(m: &Measurements, metric: &str, min_requests: u64) -> Result<f64, String> {
    let min = min_requests.max(1);
    let requests = || {
        if m.requests >= min { Ok(()) } else { Err(format!("the candidate answered {} of {min} requests", m.requests)) }
    };
    match metric {
        "activation_failure_rate" if m.devices == 0 => Err("no device in the rollout yet".into()),
        "activation_failure_rate" if m.unsettled() > 0 => {
            Err(format!("{} of {} devices have neither activated nor failed", m.unsettled(), m.devices))
        }
        "activation_failure_rate" => Ok(m.failed as f64 / m.devices as f64),
        "error_rate" => requests().map(|()| m.errors as f64 / m.requests as f64),
        "p99_ms" => {
            requests()?;
            m.p99_ms.ok_or_else(|| "no device reports a p99 latency yet".into())
        }
        "p99_ratio" => {
            requests()?;
            m.p99_ratio.ok_or_else(|| "no device reports a p99 on both the candidate and its previous version".into())
        }
        "agreement" if m.compared < min => Err(format!("{} of {min} mirrored requests compared", m.compared)),
        "agreement" => m.agreement.ok_or_else(|| "no agreement reported".into()),
        "psi" if m.classified < min => Err(format!("the candidate classified {} of {min} predictions", m.classified)),
        "psi" if m.baseline_classified < min => Err(format!(
            "the devices' previous version classified {} of {min} predictions (the before side)",
            m.baseline_classified
        )),
        "psi" => m.psi.ok_or_else(|| "no class counts to compare".into()),
        other => Err(format!("unknown metric {other}")),
    }
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
    fn each_strategy_measures_its_own_gates() {
        use edgefleet_shared::api::rollouts::Strategy;
        assert!(measurable("agreement", Strategy::Shadow) && !measurable("agreement", Strategy::Canary));
        assert!(!measurable("psi", Strategy::Shadow) && !measurable("error_rate", Strategy::Shadow));
        assert!(measurable("p99_ratio", Strategy::Direct) && measurable("activation_failure_rate", Strategy::Shadow));
    }

    #[test]
    fn metrics_wait_for_their_samples_and_say_so() {
        let mut m = Measurements { devices: 4, activated: 3, failed: 0, requests: 50, errors: 5, ..Default::default() };
        let waiting = |m: &Measurements, metric: &str| metric_value(m, metric, 100).expect_err("pending");
        assert_eq!(waiting(&m, "activation_failure_rate"), "1 of 4 devices have neither activated nor failed");
        assert_eq!(waiting(&m, "error_rate"), "the candidate answered 50 of 100 requests");
        m.failed = 1;
        m.requests = 100;
        m.p99_ms = Some(12.0);
        assert!(waiting(&m, "p99_ratio").contains("both the candidate and its previous version"));
        m.p99_ratio = Some(3.0);
        assert_eq!(metric_value(&m, "activation_failure_rate", 100), Ok(0.25));
        assert_eq!(metric_value(&m, "error_rate", 100), Ok(0.05));
        assert_eq!(metric_value(&m, "p99_ratio", 100), Ok(3.0));
        assert_eq!(waiting(&Measurements::default(), "activation_failure_rate"), "no device in the rollout yet");
    }

    #[test]
    fn psi_needs_enough_predictions_on_both_sides() {
        let mut m = Measurements { classified: 5000, baseline_classified: 1, psi: Some(5.83), ..Default::default() };
        assert!(metric_value(&m, "psi", 100).expect_err("sparse before side").contains("classified 1 of 100"));
        m.baseline_classified = 100;
        assert_eq!(metric_value(&m, "psi", 100), Ok(5.83));
        m.classified = 99;
        assert!(metric_value(&m, "psi", 100).expect_err("sparse candidate side").contains("candidate classified 99"));
    }
}
