//! What a declarative fleet asks of one device, as a pure decision of the device's labels, the
//! fleets, the models the device is given now and the models a running rollout holds on it:
//! nothing, a conflict (it matches several fleets: none of them changes it), or the models to
//! set and to take off so that it serves exactly its fleet's models.

use std::collections::BTreeMap;

use edgefleet_shared::deployment::ModelRef;

/// A fleet: its selector and the models its members serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) name: String,
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) models: Vec<ModelRef>,
}

impl Template {
    /// Whether a device with `labels` is a member.
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A model the device is given, and the fleet that gave it (`None`: deployed by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Given {
    pub(crate) model: ModelRef,
    pub(crate) fleet: Option<String>,
}

/// What the device needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// It matches these fleets (two or more): left as it is.
    Conflict(Vec<String>),
    /// Set these models (owned by the named fleet) and take these off; both empty: in order.
    Apply { set: Vec<(ModelRef, String)>, remove: Vec<String> },
}

/// The plan for a device with `labels`, given `given`, while running rollouts hold the models
/// named in `rolling` on it (those are left to the rollout).
pub(crate) fn plan(
    labels: &BTreeMap<String, String>,
    fleets: &[Template],
    given: &[Given],
    rolling: &[String],
) -> Plan {
    let matching: Vec<&Template> = fleets.iter().filter(|f| f.matches(labels)).collect();
    if matching.len() > 1 {
        return Plan::Conflict(matching.iter().map(|f| f.name.clone()).collect());
    }
    let target = matching.first();
    let free = |name: &str| !rolling.iter().any(|r| r == name);
    let mut set = Vec::new();
    if let Some(fleet) = target {
        for m in fleet.models.iter().filter(|m| free(&m.name)) {
            let held = given.iter().find(|g| g.model.name == m.name);
            if !held.is_some_and(|g| g.model == *m && g.fleet.as_deref() == Some(fleet.name.as_str())) {
                set.push((m.clone(), fleet.name.clone()));
            }
        }
    }
    let kept = |name: &str| target.is_some_and(|f| f.models.iter().any(|m| m.name == name));
    let remove = given
        .iter()
        .filter(|g| g.fleet.is_some() && !kept(&g.model.name) && free(&g.model.name))
        .map(|g| g.model.name.clone())
        .collect();
    Plan::Apply { set, remove }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, version: u64) -> ModelRef {
        ModelRef { name: name.into(), version }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn fleet(name: &str, site: &str, models: &[ModelRef]) -> Template {
        Template { name: name.into(), selector: labels(&[("site", site)]), models: models.to_vec() }
    }

    fn given(model: ModelRef, fleet: Option<&str>) -> Given {
        Given { model, fleet: fleet.map(str::to_owned) }
    }

    const NOTHING: Plan = Plan::Apply { set: Vec::new(), remove: Vec::new() };

    #[test]
    fn a_member_gets_its_fleets_models_and_then_nothing_more() {
        let fleets = [fleet("x", "x", &[m("iris", 1), m("mlp", 2)])];
        let here = labels(&[("site", "x"), ("arch", "arm64")]);
        let want = Plan::Apply { set: vec![(m("iris", 1), "x".into()), (m("mlp", 2), "x".into())], remove: vec![] };
        assert_eq!(plan(&here, &fleets, &[], &[]), want, "a new device");
        let done = [given(m("iris", 1), Some("x")), given(m("mlp", 2), Some("x"))];
        assert_eq!(plan(&here, &fleets, &done, &[]), NOTHING);
        let by_hand = [given(m("iris", 3), None), given(m("det", 1), None)];
        let plan_by_hand = plan(&here, &fleets, &by_hand, &[]);
        assert_eq!(plan_by_hand, want, "the fleet takes its models over; a model deployed by hand stays");
    }

    #[test]
    fn leaving_a_fleet_takes_its_models_off_and_keeps_the_rest() {
        let fleets = [fleet("x", "x", &[m("iris", 1)]), fleet("y", "y", &[m("mlp", 1)])];
        let held = [given(m("iris", 1), Some("x")), given(m("det", 1), None)];
        let elsewhere = labels(&[("site", "z")]);
        assert_eq!(plan(&elsewhere, &fleets, &held, &[]), Plan::Apply { set: vec![], remove: vec!["iris".into()] });
        let moved = labels(&[("site", "y")]);
        let want = Plan::Apply { set: vec![(m("mlp", 1), "y".into())], remove: vec!["iris".into()] };
        assert_eq!(plan(&moved, &fleets, &held, &[]), want);
    }

    #[test]
    fn a_device_in_two_fleets_is_a_conflict_and_is_not_changed() {
        let mut other = fleet("lab", "x", &[m("mlp", 1)]);
        other.selector.insert("arch".into(), "arm64".into());
        let fleets = [fleet("x", "x", &[m("iris", 1)]), other];
        let both = labels(&[("site", "x"), ("arch", "arm64")]);
        assert_eq!(plan(&both, &fleets, &[], &[]), Plan::Conflict(vec!["x".into(), "lab".into()]));
        let one = labels(&[("site", "x"), ("arch", "x86_64")]);
        assert_eq!(
            plan(&one, &fleets, &[], &[]),
            Plan::Apply { set: vec![(m("iris", 1), "x".into())], remove: vec![] }
        );
    }

    #[test]
    fn a_model_a_running_rollout_holds_is_left_to_it() {
        let fleets = [fleet("x", "x", &[m("iris", 1)])];
        let here = labels(&[("site", "x")]);
        let candidate = [given(m("iris", 2), Some("x"))];
        assert_eq!(plan(&here, &fleets, &candidate, &["iris".into()]), NOTHING);
        let left = labels(&[("site", "q")]);
        assert_eq!(plan(&left, &fleets, &candidate, &["iris".into()]), NOTHING, "not even when it leaves");
        assert_eq!(
            plan(&here, &fleets, &candidate, &[]),
            Plan::Apply { set: vec![(m("iris", 1), "x".into())], remove: vec![] },
            "once the rollout is over, the fleet's version"
        );
    }
}
