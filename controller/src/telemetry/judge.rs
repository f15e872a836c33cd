//! The retraining verdict as a pure function of a policy, what the closed windows measured and
//! the time: whether a model version is due, and why. [`super::retrain`] gathers the evidence
//! from SQLite and acts on the verdict.
//!
//! A version is due when, in each of the last `windows` closed windows, at least
//! `feature_share` of its features (and at least one) drifted at PSI ≥ `psi` over at least
//! `min_rows` rows; or when the accuracy of its last closed window, from at least `min_labels`
//! labels, fell `accuracy_drop` or more below its accuracy before, from as many labels.

use edgefleet_shared::api::telemetry::Policy;

/// One closed window, newest first in [`Evidence::recent`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Rows counted in it.
    pub rows: u64,
    /// PSI of each baseline feature (none without enough counts).
    pub psi: Vec<Option<f64>>,
}

/// Labelled predictions over a time range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Labels {
    /// Labels matched to predictions.
    pub labeled: u64,
    /// Of those, correct.
    pub correct: u64,
}

impl Labels {
    fn accuracy(self) -> f64 {
        self.correct as f64 / self.labeled as f64
    }
}

/// What the judge looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    /// Features in the version's baseline (0: no baseline, drift is not judged).
    pub features: usize,
    /// The last closed windows, newest first (at most `policy.windows` are read).
    pub recent: Vec<Window>,
    /// Labels in the last closed window.
    pub last: Labels,
    /// Labels before it.
    pub before: Labels,
}

/// The end (Unix seconds) of the last window that closed and settled at `now`: windows of
/// `window_secs`, and batches still arriving for `settle_secs` after a window closes.
pub fn last_settled(now: u64, settle_secs: u64, window_secs: u64) -> u64 {
    let window = window_secs.max(1);
    now.saturating_sub(settle_secs) / window * window
}

/// Why the version is due for retraining, or none.
pub fn judge(policy: &Policy, evidence: &Evidence, window_secs: u64) -> Option<String> {
    if !policy.enabled {
        return None;
    }
    if evidence.features > 0 && policy.windows > 0 {
        let needed = policy.windows as usize;
        let drifted: Vec<usize> = evidence
            .recent
            .iter()
            .take(needed)
            .map_while(|w| {
                let n = w.psi.iter().filter(|p| p.is_some_and(|p| p >= policy.psi)).count();
                let enough =
                    w.rows >= policy.min_rows && n > 0 && n as f64 >= policy.feature_share * evidence.features as f64;
                enough.then_some(n)
            })
            .collect();
        if drifted.len() == needed {
            let worst = drifted.iter().copied().max().unwrap_or(0);
            return Some(format!(
                "PSI >= {} on at least {:.0}% of the features (up to {worst} of {}) in {} consecutive windows of {window_secs} s",
                policy.psi,
                policy.feature_share * 100.0,
                evidence.features,
                policy.windows
            ));
        }
    }
    let (last, before) = (evidence.last, evidence.before);
    if last.labeled >= policy.min_labels.max(1) && before.labeled >= policy.min_labels.max(1) {
        let drop = before.accuracy() - last.accuracy();
        if drop >= policy.accuracy_drop {
            return Some(format!(
                "accuracy fell {:.1} points ({:.3} -> {:.3}; {} labels in the last window)",
                drop * 100.0,
                before.accuracy(),
                last.accuracy(),
                last.labeled
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use edgefleet_shared::clock::{Clock as _, ManualClock};

    use super::*;

    fn policy() -> Policy {
        Policy { windows: 3, min_rows: 100, psi: 0.2, feature_share: 0.5, ..Policy::default() }
    }

    /// A window over 4 features of which `drifted` are at PSI 0.5 and the rest at 0.01.
    fn window(rows: u64, drifted: usize) -> Window {
        Window { rows, psi: (0..4).map(|i| Some(if i < drifted { 0.5 } else { 0.01 })).collect() }
    }

    fn drift(recent: Vec<Window>) -> Evidence {
        Evidence { features: 4, recent, ..Evidence::default() }
    }

    #[test]
    fn drift_in_every_one_of_the_last_windows_triggers() {
        let due = judge(&policy(), &drift(vec![window(500, 2), window(500, 3), window(100, 2)]), 300);
        let reason = due.expect("due");
        assert!(reason.contains("up to 3 of 4") && reason.contains("3 consecutive windows of 300 s"), "{reason}");
    }

    #[test]
    fn a_quiet_small_or_missing_window_breaks_the_run() {
        let p = policy();
        assert_eq!(judge(&p, &drift(vec![window(500, 2), window(500, 1), window(500, 2)]), 300), None, "below share");
        assert_eq!(judge(&p, &drift(vec![window(500, 2), window(99, 4), window(500, 2)]), 300), None, "too few rows");
        assert_eq!(judge(&p, &drift(vec![window(500, 2), window(500, 2)]), 300), None, "only two windows so far");
        assert_eq!(judge(&p, &drift(vec![window(500, 0), window(500, 4), window(500, 4)]), 300), None, "newest quiet");
        let zero_share = Policy { feature_share: 0.0, ..p.clone() };
        assert_eq!(judge(&zero_share, &drift(vec![window(500, 0); 3]), 300), None, "at least one feature must drift");
        let no_baseline = Evidence { features: 0, ..drift(vec![window(500, 4); 3]) };
        assert_eq!(judge(&p, &no_baseline, 300), None);
        let off = Policy { enabled: false, ..p };
        assert_eq!(judge(&off, &drift(vec![window(500, 4); 3]), 300), None, "disabled");
    }

    #[test]
    fn features_without_enough_counts_do_not_drift() {
        let unknown = Window { rows: 500, psi: vec![None, None, Some(0.9), Some(0.9)] };
        assert!(judge(&policy(), &drift(vec![unknown.clone(); 3]), 300).is_some(), "2 of 4 known to drift");
        let mostly_unknown = Window { rows: 500, psi: vec![None, None, None, Some(0.9)] };
        assert_eq!(judge(&policy(), &drift(vec![mostly_unknown; 3]), 300), None);
    }

    #[test]
    fn an_accuracy_drop_on_enough_labels_triggers() {
        let p = Policy { min_labels: 30, accuracy_drop: 0.05, ..policy() };
        let labels = |last: (u64, u64), before: (u64, u64)| Evidence {
            last: Labels { labeled: last.0, correct: last.1 },
            before: Labels { labeled: before.0, correct: before.1 },
            ..Evidence::default()
        };
        let reason = judge(&p, &labels((40, 30), (200, 190)), 300).expect("0.95 -> 0.75");
        assert!(reason.contains("accuracy fell 20.0 points"), "{reason}");
        assert_eq!(judge(&p, &labels((40, 37), (200, 190)), 300), None, "0.95 -> 0.925 is within 5 points");
        assert_eq!(judge(&p, &labels((29, 0), (200, 190)), 300), None, "too few labels now");
        assert_eq!(judge(&p, &labels((40, 0), (29, 29)), 300), None, "too few labels before");
        let no_minimum = Policy { min_labels: 0, ..p };
        assert_eq!(judge(&no_minimum, &labels((0, 0), (0, 0)), 300), None, "no labels cannot divide by zero");
    }

    #[test]
    fn windows_are_judged_once_settled_on_the_injected_clock() {
        const BOUNDARY: u64 = 1_000_000_200; // a multiple of 300
        let clock = ManualClock::at(BOUNDARY);
        assert_eq!(last_settled(clock.now(), 30, 300), BOUNDARY - 300, "the window that just closed still settles");
        clock.advance(std::time::Duration::from_secs(29));
        assert_eq!(last_settled(clock.now(), 30, 300), BOUNDARY - 300);
        clock.advance(std::time::Duration::from_secs(1));
        assert_eq!(last_settled(clock.now(), 30, 300), BOUNDARY, "settled");
        assert_eq!(last_settled(10, 30, 300), 0, "near the epoch");
    }
}
