//! The rollout state machine as a pure function of the stored rollout, its devices' reports and
//! the time: what each device's outcome is, what the wave measures, and what happens next.
//! [`super::engine`] issues the documents and writes the decision; nothing here touches the
//! database or the clock.

use edgefleet_shared::api::rollouts::{
    DeviceOutcome, GateResult, Measurements, OnFail, OnInsufficient, OnTimeout, Plan, RolloutState, Strategy,
};
use edgefleet_shared::api::three_digits;
use edgefleet_shared::deployment::ModelRef;
use edgefleet_shared::fleet::DeviceStatus;

use super::gates::{Gate, metric_value};
pub(super) use super::waiting::Waiting;
use crate::analytics::drift::{add_counts, psi};

/// A stored rollout: what the decisions read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    pub(super) id: i64,
    pub(super) model: ModelRef,
    pub(super) plan: Plan,
    pub(super) state: RolloutState,
    pub(super) wave: usize,
    pub(super) wave_started_at: u64,
    pub(super) reason: Option<String>,
    pub(super) gates: Vec<GateResult>,
    pub(super) created_at: u64,
    pub(super) updated_at: u64,
}

/// A device in a rollout and what it reports.
#[derive(Debug, Clone, Default)]
pub(super) struct Member {
    pub(super) device: String,
    /// Index of the wave it joined in.
    pub(super) wave: usize,
    pub(super) status: Option<DeviceStatus>,
    pub(super) baseline_p99_ms: Option<f64>,
    pub(super) baseline_classes: Vec<u64>,
    /// What it was told to run before the rollout reached it.
    pub(super) previous: Option<ModelRef>,
    /// Unix seconds of its last authenticated contact.
    pub(super) last_seen: Option<u64>,
    /// Its last will said it went offline, and it has not been heard from since.
    pub(super) went_offline: bool,
}

/// A device's outcome. A failed download is not a verdict: the agent retries it.
pub(super) fn outcome(m: &Member, candidate: &ModelRef, shadow: bool) -> DeviceOutcome {
    let Some(status) = m.status.as_ref().and_then(|s| s.model(&candidate.name)) else {
        return if m.previous.as_ref() == Some(candidate) { DeviceOutcome::Already } else { DeviceOutcome::Unsettled };
    };
    let serving = status.active.as_ref() == Some(candidate);
    if m.previous.as_ref() == Some(candidate) && serving {
        return DeviceOutcome::Already;
    }
    let running = if shadow { status.shadow.as_ref().map(|s| &s.model) == Some(candidate) } else { serving };
    if running {
        return DeviceOutcome::Serving;
    }
    let failed = status.last_activation.as_ref().is_some_and(|a| {
        &a.model == candidate && !a.ok && !a.error.as_deref().is_some_and(|e| e.starts_with("download:"))
    });
    if failed { DeviceOutcome::Failed } else { DeviceOutcome::Unsettled }
}

/// Folds the members' reports into the gate metrics. With `overdue`, devices still unsettled
/// count as failed (the wave deadline passed under `on_timeout = fail`).
pub(super) fn measure(all: &[Member], candidate: &ModelRef, shadow: bool, overdue: bool) -> Measurements {
    let mut m = Measurements { devices: all.len() as u64, ..Measurements::default() };
    let (mut p99, mut paired, mut agreed) = (Vec::new(), Vec::new(), 0.0);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for member in all {
        let status = member.status.as_ref().and_then(|s| s.model(&candidate.name));
        let status = status.as_ref();
        match outcome(member, candidate, shadow) {
            DeviceOutcome::Serving if shadow => {
                m.activated += 1;
                if let Some(report) = status.and_then(|s| s.shadow.as_ref()) {
                    m.compared += report.compared;
                    agreed += report.agreement.unwrap_or(0.0) * report.compared as f64;
                }
            }
            DeviceOutcome::Serving => {
                m.activated += 1;
                let Some(status) = status else { continue };
                m.requests += status.active_requests;
                m.errors += status.active_errors;
                if !member.baseline_classes.is_empty() && !status.output_classes.is_empty() {
                    add_counts(&mut before, &member.baseline_classes);
                    add_counts(&mut after, &status.output_classes);
                }
                if let Some(p) = status.latency_p99_ms.filter(|_| status.active_requests > 0) {
                    p99.push(p);
                    if let Some(b) = member.baseline_p99_ms {
                        paired.push((p, b));
                    }
                }
            }
            DeviceOutcome::Already => m.already += 1,
            DeviceOutcome::Failed => m.failed += 1,
            DeviceOutcome::Unsettled if overdue => {
                m.failed += 1;
                m.timed_out += 1;
            }
            DeviceOutcome::Unsettled => {}
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    m.p99_ms = mean(&p99);
    // The ratio compares each device with itself: only devices with a p99 on both versions.
    let (now, was): (Vec<f64>, Vec<f64>) = paired.into_iter().unzip();
    m.p99_pairs = now.len() as u64;
    m.baseline_p99_ms = mean(&was);
    m.p99_ratio = mean(&now).zip(m.baseline_p99_ms).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    m.agreement = (m.compared > 0).then(|| agreed / m.compared as f64);
    m.classified = after.iter().sum();
    m.baseline_classified = before.iter().sum();
    let bins = before.len().max(after.len());
    before.resize(bins, 0);
    after.resize(bins, 0);
    m.psi = psi(&before, &after);
    m
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    /// Nothing to do now.
    Wait(Waiting),
    /// The wave passed: the next one starts.
    NextWave,
    /// The last shadow wave passed: activate the candidate on every device.
    Promote,
    /// The last wave passed (or the promotion settled).
    Complete,
    /// A gate failed (or a promotion did): pause or roll back.
    Fail {
        /// What failed.
        reason: String,
        /// Pause or abort.
        action: OnFail,
    },
    /// The wave deadline passed with devices unsettled or gates without samples.
    Pause {
        /// Why.
        reason: String,
    },
}

/// The outcome of judging one step.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Verdict {
    pub(super) decision: Decision,
    pub(super) measurements: Measurements,
    /// The gates' evaluation, when they were judged.
    pub(super) gates: Vec<GateResult>,
}

impl Row {
    /// Whether the candidate runs in shadow now: a shadow rollout before promotion.
    pub(super) fn in_shadow(&self) -> bool {
        self.plan.strategy == Strategy::Shadow && matches!(self.state, RolloutState::Running | RolloutState::Paused)
    }

    /// Unix seconds when the current wave's devices must have settled.
    pub(super) fn deadline(&self) -> u64 {
        self.wave_started_at.saturating_add(self.plan.wave_timeout_secs)
    }
}

/// Judges a running or promoting rollout at `now`, after `issued` documents went out in this
/// same step.
pub(super) fn decide(row: &Row, members: &[Member], issued: usize, now: u64) -> Verdict {
    let overdue = now >= row.deadline();
    let fail_overdue = overdue && row.plan.on_timeout == OnTimeout::Fail;
    let verdict = |decision, measurements, gates| Verdict { decision, measurements, gates };
    if row.state == RolloutState::Promoting {
        let m = measure(members, &row.model, false, fail_overdue);
        let decision = if m.failed > 0 {
            let reason = format!(
                "promotion failed: {} of {} devices could not activate the candidate{}",
                m.failed,
                m.devices,
                if m.timed_out > 0 {
                    format!(" ({} did not report by the deadline)", m.timed_out)
                } else {
                    String::new()
                }
            );
            Decision::Fail { reason, action: OnFail::Abort }
        } else if m.unsettled() == 0 {
            Decision::Complete
        } else if overdue {
            Decision::Pause { reason: format!("promotion: {} devices did not report by the deadline", m.unsettled()) }
        } else {
            Decision::Wait(Waiting::Unsettled(m.unsettled()))
        };
        return verdict(decision, m, Vec::new());
    }
    let shadow = row.in_shadow();
    let last = row.wave + 1 == row.plan.waves.len();
    let bake_until = row.wave_started_at.saturating_add(row.plan.bake_secs);
    if now < bake_until {
        return verdict(
            Decision::Wait(Waiting::Baking(bake_until)),
            measure(members, &row.model, shadow, false),
            Vec::new(),
        );
    }
    if issued > 0 {
        return verdict(Decision::Wait(Waiting::JustIssued), measure(members, &row.model, shadow, false), Vec::new());
    }
    let m = measure(members, &row.model, shadow, fail_overdue);
    let onward = || match (last, row.plan.strategy) {
        (false, _) => Decision::NextWave,
        (true, Strategy::Shadow) => Decision::Promote,
        (true, _) => Decision::Complete,
    };
    if members.is_empty() {
        // No matching device in the waves so far: move on, but never finish with nobody.
        let decision = if last { Decision::Wait(Waiting::NoDevices) } else { Decision::NextWave };
        return verdict(decision, m, Vec::new());
    }
    if m.already == m.devices {
        // Every device ran the candidate already: nothing to judge.
        return verdict(onward(), m, Vec::new());
    }
    let mut results: Vec<GateResult> = row
        .plan
        .gates
        .iter()
        .filter_map(|text| Gate::parse(text).ok().map(|g| (text, g)))
        .map(|(text, gate)| match metric_value(&m, &gate.metric, row.plan.min_requests) {
            Ok(value) => GateResult {
                gate: text.clone(),
                value: Some(value),
                passed: Some(gate.passes(value)),
                waiting: None,
                skipped: false,
            },
            Err(waiting) => {
                GateResult { gate: text.clone(), value: None, passed: None, waiting: Some(waiting), skipped: false }
            }
        })
        .collect();
    let failed: Vec<String> = results
        .iter()
        .filter(|g| g.passed == Some(false))
        .map(|g| format!("{} (measured {})", g.gate, g.value.map_or("-".into(), three_digits)))
        .collect();
    let wave = format!("wave {} ({}%)", row.wave + 1, row.plan.waves[row.wave]);
    if !failed.is_empty() {
        let mut reason = format!("gate failed in {wave}: {}", failed.join(", "));
        if m.timed_out > 0 {
            reason.push_str(&format!(
                "; {} devices did not report by the wave deadline and count as failed",
                m.timed_out
            ));
        }
        return verdict(Decision::Fail { reason, action: row.plan.on_fail }, m, results);
    }
    let pending: Vec<String> = results.iter().filter(|g| g.passed.is_none()).map(|g| g.gate.clone()).collect();
    let lacking = || {
        let why: Vec<String> = results
            .iter()
            .filter(|g| g.passed.is_none())
            .map(|g| format!("{}: {}", g.gate, g.waiting.as_deref().unwrap_or("no data")))
            .collect();
        format!("{wave}: at the wave deadline gates lack data ({})", why.join("; "))
    };
    let decision = match (overdue, row.plan.on_timeout, row.plan.on_insufficient) {
        (true, OnTimeout::Pause, _) if m.unsettled() > 0 => Decision::Pause {
            reason: format!("{wave}: {} devices did not activate or fail by the wave deadline", m.unsettled()),
        },
        (true, _, OnInsufficient::Pause) if !pending.is_empty() => Decision::Pause { reason: lacking() },
        (true, _, OnInsufficient::Fail) if !pending.is_empty() => {
            Decision::Fail { reason: lacking(), action: row.plan.on_fail }
        }
        (true, _, OnInsufficient::Skip) if !pending.is_empty() => {
            for g in results.iter_mut().filter(|g| g.passed.is_none()) {
                g.skipped = true;
            }
            if m.unsettled() > 0 { Decision::Wait(Waiting::Unsettled(m.unsettled())) } else { onward() }
        }
        _ if m.unsettled() > 0 => Decision::Wait(Waiting::Unsettled(m.unsettled())),
        _ if !pending.is_empty() => Decision::Wait(Waiting::Samples(pending)),
        _ => onward(),
    };
    verdict(decision, m, results)
}

/// An operator action on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Running → paused.
    Pause,
    /// Paused → running (the current wave bakes again).
    Resume,
    /// Running, promoting or paused → aborted, devices sent back.
    Abort,
}

impl Action {
    /// Lowercase name, as routes and audit records write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

/// The state `action` takes a rollout in `state` to, or none when it does not apply there.
pub(super) fn transition(state: RolloutState, action: Action) -> Option<RolloutState> {
    match (action, state) {
        (Action::Pause, RolloutState::Running) => Some(RolloutState::Paused),
        (Action::Resume, RolloutState::Paused) => Some(RolloutState::Running),
        (Action::Abort, RolloutState::Running | RolloutState::Paused | RolloutState::Promoting) => {
            Some(RolloutState::Aborted)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use edgefleet_shared::fleet::{ActivationReport, ShadowReport};

    use super::*;
    use edgefleet_shared::api::rollouts::Plan;

    const T0: u64 = 1_000_000;

    fn model(version: u64) -> ModelRef {
        ModelRef { name: "m".into(), version }
    }

    fn row(strategy: Strategy, waves: &[u8], gates: &[&str], on_timeout: OnTimeout) -> Row {
        Row {
            id: 1,
            model: model(2),
            plan: Plan {
                selector: BTreeMap::new(),
                waves: waves.to_vec(),
                bake_secs: 60,
                gates: gates.iter().map(|g| (*g).to_owned()).collect(),
                min_requests: 10,
                on_fail: OnFail::Abort,
                strategy,
                shadow_share: 0.5,
                wave_timeout_secs: 600,
                on_timeout,
                allow_empty: false,
                on_insufficient: OnInsufficient::Pause,
                fleet: None,
                budget: None,
            },
            state: RolloutState::Running,
            wave: 0,
            wave_started_at: T0,
            reason: None,
            gates: Vec::new(),
            created_at: T0,
            updated_at: T0,
        }
    }

    /// A device that joined with version 1 and now serves `active` with `requests`/`errors`.
    fn device(name: &str, active: Option<u64>, requests: u64, errors: u64) -> Member {
        let status = active.map(|v| DeviceStatus {
            active: Some(model(v)),
            active_requests: requests,
            active_errors: errors,
            latency_p99_ms: Some(5.0),
            ..DeviceStatus::default()
        });
        Member {
            device: name.into(),
            status,
            previous: Some(model(1)),
            baseline_p99_ms: Some(4.0),
            ..Member::default()
        }
    }

    fn failed(name: &str, error: &str) -> Member {
        let report = ActivationReport {
            model: model(2),
            sequence: 2,
            ok: false,
            error: Some(error.into()),
            at: T0,
            duration_ms: 1,
            delta_bytes_saved: 0,
        };
        let status = DeviceStatus { active: Some(model(1)), last_activation: Some(report), ..DeviceStatus::default() };
        Member { device: name.into(), status: Some(status), previous: Some(model(1)), ..Member::default() }
    }

    const GATES: &[&str] = &["activation_failure_rate<0.1", "error_rate<0.05"];

    #[test]
    fn a_wave_bakes_then_waits_for_its_devices_and_samples_then_advances() {
        let r = row(Strategy::Canary, &[50, 100], GATES, OnTimeout::Fail);
        let healthy = [device("a", Some(2), 20, 0), device("b", Some(2), 20, 0)];
        assert_eq!(decide(&r, &healthy, 0, T0 + 10).decision, Decision::Wait(Waiting::Baking(T0 + 60)));
        assert_eq!(decide(&r, &healthy, 2, T0 + 60).decision, Decision::Wait(Waiting::JustIssued));
        let unsettled = [device("a", Some(2), 20, 0), device("b", None, 0, 0)];
        assert_eq!(decide(&r, &unsettled, 0, T0 + 60).decision, Decision::Wait(Waiting::Unsettled(1)));
        let quiet = [device("a", Some(2), 3, 0), device("b", Some(2), 3, 0)];
        assert_eq!(
            decide(&r, &quiet, 0, T0 + 60).decision,
            Decision::Wait(Waiting::Samples(vec!["error_rate<0.05".into()]))
        );
        let v = decide(&r, &healthy, 0, T0 + 60);
        assert_eq!(v.decision, Decision::NextWave);
        assert_eq!(v.gates.iter().map(|g| g.passed).collect::<Vec<_>>(), [Some(true), Some(true)]);
    }

    #[test]
    fn the_last_wave_completes_a_canary_and_promotes_a_shadow() {
        let mut r = row(Strategy::Canary, &[100], GATES, OnTimeout::Fail);
        let healthy = [device("a", Some(2), 20, 0)];
        assert_eq!(decide(&r, &healthy, 0, T0 + 60).decision, Decision::Complete);
        r = row(Strategy::Shadow, &[100], &["agreement>0.9"], OnTimeout::Fail);
        let mut shadowing = device("a", Some(1), 0, 0);
        if let Some(s) = shadowing.status.as_mut() {
            s.shadow = Some(ShadowReport {
                model: model(2),
                compared: 50,
                skipped: 0,
                agreement: Some(0.98),
                mean_abs_diff: None,
                latency_delta_ms: None,
            });
        }
        assert_eq!(decide(&r, &[shadowing], 0, T0 + 60).decision, Decision::Promote);
    }

    #[test]
    fn a_failing_gate_fails_the_rollout_with_its_value_rounded() {
        let r = row(Strategy::Canary, &[50, 100], GATES, OnTimeout::Fail);
        let v = decide(&r, &[device("a", Some(2), 30, 7), device("b", Some(2), 30, 0)], 0, T0 + 60);
        let Decision::Fail { reason, action } = v.decision else { panic!("{:?}", v.decision) };
        assert_eq!(action, OnFail::Abort);
        assert!(reason.contains("error_rate<0.05 (measured 0.117)") && reason.contains("wave 1 (50%)"), "{reason}");
        let v = decide(&r, &[failed("a", "self_test: differs"), device("b", Some(2), 30, 0)], 0, T0 + 60);
        assert!(matches!(v.decision, Decision::Fail { .. }), "{:?}", v.decision);
        // A failed download is retried by the agent, not a verdict.
        let v = decide(&r, &[failed("a", "download: connection reset"), device("b", Some(2), 30, 0)], 0, T0 + 60);
        assert_eq!(v.decision, Decision::Wait(Waiting::Unsettled(1)));
    }

    #[test]
    fn the_wave_deadline_counts_silent_devices_as_failed_or_pauses() {
        let silent = [device("a", Some(2), 30, 0), device("b", None, 0, 0)];
        let fail = row(Strategy::Canary, &[50, 100], GATES, OnTimeout::Fail);
        assert_eq!(decide(&fail, &silent, 0, T0 + 599).decision, Decision::Wait(Waiting::Unsettled(1)));
        let v = decide(&fail, &silent, 0, T0 + 600);
        assert_eq!((v.measurements.failed, v.measurements.timed_out), (1, 1));
        let Decision::Fail { reason, .. } = v.decision else { panic!("{:?}", v.decision) };
        assert!(
            reason.contains("activation_failure_rate<0.1 (measured 0.5)") && reason.contains("did not report"),
            "{reason}"
        );
        let pause = row(Strategy::Canary, &[50, 100], GATES, OnTimeout::Pause);
        assert!(matches!(decide(&pause, &silent, 0, T0 + 600).decision, Decision::Pause { .. }));
        // Gates still without samples at the deadline: the rollout's on_insufficient decides.
        let quiet = [device("a", Some(2), 3, 0)];
        let v = decide(&pause, &quiet, 0, T0 + 600);
        let Decision::Pause { reason } = v.decision else { panic!("{:?}", v.decision) };
        assert!(reason.contains("error_rate<0.05: the candidate answered 3 of 10 requests"), "{reason}");
        let mut strict = fail.clone();
        strict.plan.on_insufficient = OnInsufficient::Fail;
        assert!(matches!(decide(&strict, &quiet, 0, T0 + 600).decision, Decision::Fail { .. }));
        let mut lenient = fail.clone();
        lenient.plan.on_insufficient = OnInsufficient::Skip;
        let v = decide(&lenient, &quiet, 0, T0 + 600);
        assert_eq!(v.decision, Decision::NextWave, "the measured gates passed, the other is skipped");
        let skipped: Vec<_> = v.gates.iter().filter(|g| g.skipped).map(|g| g.gate.as_str()).collect();
        assert_eq!(skipped, ["error_rate<0.05"]);
        // Before the deadline a gate short of data waits, saying for what.
        let v = decide(&fail, &quiet, 0, T0 + 60);
        assert_eq!(v.decision, Decision::Wait(Waiting::Samples(vec!["error_rate<0.05".into()])));
        assert_eq!(v.gates[1].waiting.as_deref(), Some("the candidate answered 3 of 10 requests"));
    }

    #[test]
    fn a_sparse_before_side_does_not_fail_a_psi_gate() {
        let r = row(Strategy::Canary, &[100], &["psi<0.2"], OnTimeout::Fail);
        // The device served the previous version once (class 2) and the candidate 500 times.
        let mut sparse = device("a", Some(2), 500, 0);
        sparse.baseline_classes = vec![0, 0, 1];
        if let Some(s) = sparse.status.as_mut() {
            s.output_classes = vec![200, 200, 100];
        }
        let v = decide(&r, &[sparse.clone()], 0, T0 + 60);
        assert_eq!(v.decision, Decision::Wait(Waiting::Samples(vec!["psi<0.2".into()])), "{v:?}");
        assert!(v.gates[0].waiting.as_deref().is_some_and(|w| w.contains("classified 1 of 10")), "{v:?}");
        // With enough predictions on both sides the same shift fails the gate.
        sparse.baseline_classes = vec![0, 0, 100];
        assert!(matches!(decide(&r, &[sparse], 0, T0 + 60).decision, Decision::Fail { .. }));
    }

    #[test]
    fn p99_ratio_compares_each_device_with_itself() {
        let r = row(Strategy::Canary, &[100], &["p99_ratio<1.5"], OnTimeout::Fail);
        let paired = device("a", Some(2), 50, 0); // p99 5 ms now, 4 ms before
        let mut unpaired = device("b", Some(2), 50, 0);
        unpaired.baseline_p99_ms = None;
        let v = decide(&r, &[paired, unpaired], 0, T0 + 60);
        assert_eq!((v.measurements.p99_pairs, v.measurements.p99_ratio), (1, Some(1.25)));
        assert_eq!(v.decision, Decision::Complete, "one device without a before p99 does not block the gate");
    }

    #[test]
    fn no_matching_device_moves_through_the_waves_but_never_completes() {
        let r = row(Strategy::Canary, &[10, 100], GATES, OnTimeout::Fail);
        assert_eq!(decide(&r, &[], 0, T0 + 60).decision, Decision::NextWave);
        let last = Row { wave: 1, ..row(Strategy::Canary, &[10, 100], GATES, OnTimeout::Fail) };
        assert_eq!(decide(&last, &[], 0, T0 + 60).decision, Decision::Wait(Waiting::NoDevices));
        assert_eq!(decide(&last, &[], 0, T0 + 10_000).decision, Decision::Wait(Waiting::NoDevices));
    }

    #[test]
    fn devices_already_on_the_candidate_need_no_judging() {
        let r = row(Strategy::Shadow, &[100], &["agreement>0.9"], OnTimeout::Fail);
        let mut on_it = device("a", Some(2), 0, 0);
        on_it.previous = Some(model(2));
        let v = decide(&r, &[on_it.clone()], 0, T0 + 60);
        assert_eq!((v.decision, v.measurements.already), (Decision::Promote, 1));
        let mut promoting = row(Strategy::Shadow, &[100], &["agreement>0.9"], OnTimeout::Fail);
        promoting.state = RolloutState::Promoting;
        assert_eq!(decide(&promoting, &[on_it], 0, T0 + 60).decision, Decision::Complete);
    }

    #[test]
    fn a_promotion_completes_when_every_device_serves_and_aborts_on_a_failure() {
        let mut r = row(Strategy::Shadow, &[100], &["agreement>0.9"], OnTimeout::Fail);
        r.state = RolloutState::Promoting;
        assert_eq!(decide(&r, &[device("a", Some(2), 0, 0)], 0, T0 + 1).decision, Decision::Complete);
        assert_eq!(
            decide(&r, &[device("a", Some(1), 0, 0)], 0, T0 + 1).decision,
            Decision::Wait(Waiting::Unsettled(1))
        );
        let v = decide(&r, &[failed("a", "load: bad")], 0, T0 + 1);
        assert!(matches!(v.decision, Decision::Fail { action: OnFail::Abort, .. }), "{:?}", v.decision);
        let v = decide(&r, &[device("a", Some(1), 0, 0)], 0, T0 + 600);
        assert!(matches!(v.decision, Decision::Fail { .. }), "silent past the deadline: {:?}", v.decision);
    }

    #[test]
    fn operator_actions_apply_only_where_they_mean_something() {
        use RolloutState::*;
        let all = [Running, Paused, Promoting, Completed, Aborted];
        for state in all {
            assert_eq!(transition(state, Action::Pause), (state == Running).then_some(Paused), "pause {state:?}");
            assert_eq!(transition(state, Action::Resume), (state == Paused).then_some(Running), "resume {state:?}");
            let abortable = matches!(state, Running | Paused | Promoting);
            assert_eq!(transition(state, Action::Abort), abortable.then_some(Aborted), "abort {state:?}");
        }
    }

    #[test]
    fn serving_counts_follow_the_state() {
        let mut r = row(Strategy::Shadow, &[100], &["agreement>0.9"], OnTimeout::Fail);
        assert!(r.in_shadow());
        r.state = RolloutState::Completed;
        assert!(!r.in_shadow(), "after promotion the candidate serves");
        let m = measure(&[device("a", Some(2), 5, 0)], &model(2), r.in_shadow(), false);
        assert_eq!(m.activated, 1);
    }
}
