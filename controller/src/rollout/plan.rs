//! A rollout request checked into a plan: waves, gates the strategy can measure (with the
//! default activation gate), deadlines and shares in range.

use edgefleet_shared::api::rollouts::{DisruptionBudget, MaxUnavailable, Plan, RolloutRequest, Strategy};

use super::gates::{self, Gate};
use crate::fleet::FleetError;

/// The gate every rollout has unless it names its own on the same metric, or opts out.
const DEFAULT_GATE: &str = "activation_failure_rate<0.1";
/// Longest bake or wave deadline accepted (30 days).
const MAX_WAIT_SECS: u64 = 30 * 24 * 3600;

pub(super) fn plan(req: &RolloutRequest) -> Result<Plan, FleetError> {
    let bad = |m: String| Err(FleetError::BadRequest(m));
    if req.selector.is_empty() && req.fleet.is_none() {
        return bad("a rollout needs a selector (k=v labels) or a fleet; use deploy for single devices".into());
    }
    if !req.selector.is_empty() && req.fleet.is_some() {
        return bad("give a selector or a fleet, not both (a fleet rollout uses the fleet's selector)".into());
    }
    let waves = match (req.strategy, &req.waves) {
        (Strategy::Direct, Some(w)) if w != &[100] => return bad("strategy direct has one wave of 100%".into()),
        (Strategy::Direct, _) => vec![100],
        (Strategy::Canary | Strategy::Shadow, Some(w)) => w.clone(),
        (Strategy::Canary | Strategy::Shadow, None) => vec![1, 10, 50, 100],
    };
    if !(req.shadow_share > 0.0 && req.shadow_share <= 1.0) {
        return bad(format!("shadow_share {} must be in (0, 1]", req.shadow_share));
    }
    if waves.is_empty() || waves.last() != Some(&100) || waves.windows(2).any(|w| w[0] >= w[1]) || waves[0] == 0 {
        return bad(format!("waves {waves:?} must increase strictly from above 0 and end at 100"));
    }
    if req.bake_secs > MAX_WAIT_SECS || req.wave_timeout_secs > MAX_WAIT_SECS {
        return Err(FleetError::Unprocessable(format!(
            "bake_secs and wave_timeout_secs are at most {MAX_WAIT_SECS} (30 days)"
        )));
    }
    if req.wave_timeout_secs < req.bake_secs {
        return bad(format!(
            "wave_timeout_secs ({}) must be at least the bake time ({} s): devices settle during the bake",
            req.wave_timeout_secs, req.bake_secs
        ));
    }
    let mut gates = req.gates.clone();
    let parsed = gates.iter().map(|g| Gate::parse(g)).collect::<Result<Vec<_>, _>>().map_err(FleetError::BadRequest)?;
    let unmeasurable: Vec<&str> = gates
        .iter()
        .zip(&parsed)
        .filter(|(_, g)| !gates::measurable(&g.metric, req.strategy))
        .map(|(text, _)| text.as_str())
        .collect();
    if !unmeasurable.is_empty() {
        let (what, can) = match req.strategy {
            Strategy::Shadow => {
                ("a shadow candidate answers no requests before promotion", "activation_failure_rate, agreement")
            }
            Strategy::Canary | Strategy::Direct => {
                ("only shadow rollouts compare versions", "activation_failure_rate, error_rate, p99_ms, p99_ratio, psi")
            }
        };
        return bad(format!(
            "gates {} cannot be measured by a {:?} rollout ({what}); it can gate on {can}",
            unmeasurable.join(", "),
            req.strategy
        ));
    }
    let budget = match (&req.max_unavailable, req.group_by.is_empty()) {
        (None, true) => None,
        (None, false) => return bad("group_by needs max_unavailable (N or P%)".into()),
        (Some(_), true) => return bad("max_unavailable needs group_by (the labels that group devices)".into()),
        (Some(text), false) => {
            if req.group_by.iter().any(|k| k.trim().is_empty()) {
                return bad(format!("group_by {:?} names an empty label", req.group_by));
            }
            let max_unavailable = MaxUnavailable::parse(text).map_err(FleetError::BadRequest)?;
            Some(DisruptionBudget { group_by: req.group_by.clone(), max_unavailable })
        }
    };
    if !req.no_default_gate && !parsed.iter().any(|g| g.metric == "activation_failure_rate") {
        gates.insert(0, DEFAULT_GATE.to_owned());
    }
    Ok(Plan {
        selector: req.selector.clone(),
        waves,
        bake_secs: req.bake_secs,
        gates,
        min_requests: req.min_requests,
        on_fail: req.on_fail,
        strategy: req.strategy,
        shadow_share: req.shadow_share,
        wave_timeout_secs: req.wave_timeout_secs,
        on_timeout: req.on_timeout,
        allow_empty: req.allow_empty,
        on_insufficient: req.on_insufficient,
        fleet: req.fleet.clone(),
        budget,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use edgefleet_shared::api::rollouts::{OnFail, OnInsufficient, OnTimeout};

    fn request(strategy: Strategy, gates: &[&str]) -> RolloutRequest {
        RolloutRequest {
            model: "m".into(),
            version: "1".into(),
            selector: BTreeMap::from([("site".into(), "x".into())]),
            waves: None,
            bake_secs: 60,
            gates: gates.iter().map(|g| (*g).to_owned()).collect(),
            no_default_gate: false,
            wave_timeout_secs: 600,
            on_timeout: OnTimeout::Fail,
            allow_empty: false,
            min_requests: 10,
            on_insufficient: OnInsufficient::Pause,
            on_fail: OnFail::Abort,
            strategy,
            shadow_share: 0.25,
            fleet: None,
            group_by: Vec::new(),
            max_unavailable: None,
        }
    }

    #[test]
    fn a_disruption_budget_needs_both_halves_and_a_valid_limit() {
        let with = |group_by: &[&str], max: Option<&str>| RolloutRequest {
            group_by: group_by.iter().map(|s| (*s).to_owned()).collect(),
            max_unavailable: max.map(str::to_owned),
            ..request(Strategy::Canary, &[])
        };
        let budget = plan(&with(&["site"], Some("1"))).expect("budget").budget.expect("some");
        assert_eq!(
            budget,
            DisruptionBudget { group_by: vec!["site".into()], max_unavailable: MaxUnavailable::Devices(1) }
        );
        let share = plan(&with(&["site", "function"], Some("25%"))).expect("share").budget.expect("some");
        assert_eq!(share.max_unavailable, MaxUnavailable::Percent(25));
        assert_eq!((share.max_unavailable.of(8), share.max_unavailable.of(3)), (2, 1), "rounded down, at least one");
        for (group_by, max) in
            [(&["site"][..], None), (&[][..], Some("1")), (&["site"][..], Some("0")), (&["site"][..], Some("150%"))]
        {
            assert!(plan(&with(group_by, max)).is_err(), "{group_by:?} {max:?}");
        }
        assert_eq!(plan(&request(Strategy::Canary, &[])).expect("none").budget, None);
    }

    #[test]
    fn gates_the_strategy_cannot_measure_are_refused_by_name() {
        let err =
            plan(&request(Strategy::Shadow, &["psi<0.2", "error_rate<0.01", "agreement>0.9"])).expect_err("shadow");
        let text = err.to_string();
        assert!(
            text.contains("psi<0.2") && text.contains("error_rate<0.01") && !text.contains("agreement>0.9"),
            "{text}"
        );
        let err = plan(&request(Strategy::Canary, &["agreement>0.9"])).expect_err("canary").to_string();
        assert!(err.contains("agreement>0.9") && err.contains("only shadow"), "{err}");
        plan(&request(Strategy::Shadow, &["agreement>0.9"])).expect("shadow agreement");
    }

    #[test]
    fn the_default_activation_gate_stays_unless_removed() {
        let p = plan(&request(Strategy::Canary, &["error_rate<0.01"])).expect("plan");
        assert_eq!(p.gates, ["activation_failure_rate<0.1", "error_rate<0.01"]);
        let p = plan(&request(Strategy::Canary, &["activation_failure_rate<0.5"])).expect("plan");
        assert_eq!(p.gates, ["activation_failure_rate<0.5"]);
        let p = plan(&RolloutRequest { no_default_gate: true, ..request(Strategy::Canary, &["error_rate<0.01"]) })
            .expect("plan");
        assert_eq!(p.gates, ["error_rate<0.01"]);
    }

    #[test]
    fn deadlines_are_bounded_and_not_shorter_than_the_bake() {
        let r = RolloutRequest { wave_timeout_secs: 30, ..request(Strategy::Canary, &[]) };
        assert!(plan(&r).expect_err("short").to_string().contains("at least the bake"));
        let r = RolloutRequest { bake_secs: u64::MAX, wave_timeout_secs: u64::MAX, ..request(Strategy::Canary, &[]) };
        assert!(matches!(plan(&r), Err(FleetError::Unprocessable(_))));
    }
}
