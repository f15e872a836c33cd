//! What a verified document asks of the device, as a pure decision of the document and of what
//! the device is doing: run a version in shadow, go on watching or preparing the version it
//! already handles under the document's new number, keep serving the active version, or
//! activate a new one. The fleet loop applies the answer (tasks, swaps, state on disk).

use edgefleet_shared::deployment::{ModelDeployment, ModelRef};

/// What the device is doing when a document verifies.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Doing<'a> {
    /// The version swapped in and in its watch window.
    pub(super) watching: Option<&'a ModelRef>,
    /// The version an activation task prepares to serve (not a shadow preparation).
    pub(super) preparing: Option<&'a ModelRef>,
    /// The committed active version.
    pub(super) active: Option<&'a ModelRef>,
}

/// The step a document calls for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Next {
    /// Prepare its version and run it in shadow, mirroring this share of requests.
    Shadow(f64),
    /// It re-issues the watched version: the window goes on under the new number.
    KeepWatching,
    /// It re-issues the version being prepared: the preparation goes on.
    KeepPreparing,
    /// It re-issues (or refreshes) the active version: nothing to activate.
    KeepActive,
    /// A new version: prepare it, swap it in, watch it.
    Activate,
}

/// The step `doc` calls for while the device is `doing` that.
pub(super) fn next(doc: &ModelDeployment, doing: &Doing<'_>) -> Next {
    if let Some(spec) = &doc.shadow {
        return Next::Shadow(spec.share);
    }
    let wanted = Some(&doc.model);
    if doing.watching == wanted {
        Next::KeepWatching
    } else if doing.preparing == wanted {
        Next::KeepPreparing
    } else if doing.active == wanted && doing.watching.is_none() {
        Next::KeepActive
    } else {
        Next::Activate
    }
}

#[cfg(test)]
mod tests {
    use edgefleet_shared::deployment::ShadowSpec;

    use super::*;

    fn model(v: u64) -> ModelRef {
        ModelRef { name: "m".into(), version: v }
    }

    fn doc(v: u64, shadow: Option<f64>) -> ModelDeployment {
        ModelDeployment {
            sequence: v,
            model: model(v),
            artifacts: Vec::new(),
            shadow: shadow.map(|share| ShadowSpec { share }),
        }
    }

    #[test]
    fn every_situation_gets_its_step() {
        let (v1, v2, v3) = (model(1), model(2), model(3));
        let idle = Doing::default();
        assert_eq!(next(&doc(2, None), &idle), Next::Activate, "a first version");
        assert_eq!(next(&doc(2, Some(0.25)), &Doing { active: Some(&v1), ..idle }), Next::Shadow(0.25));
        let serving = Doing { active: Some(&v2), ..idle };
        assert_eq!(next(&doc(2, None), &serving), Next::KeepActive, "a refresh of what serves");
        assert_eq!(next(&doc(3, None), &serving), Next::Activate);
        let watching = Doing { active: Some(&v1), watching: Some(&v2), ..idle };
        assert_eq!(next(&doc(2, None), &watching), Next::KeepWatching);
        assert_eq!(next(&doc(1, None), &watching), Next::Activate, "back to the committed version ends the watch");
        assert_eq!(next(&doc(3, None), &watching), Next::Activate);
        let preparing = Doing { active: Some(&v1), preparing: Some(&v3), ..idle };
        assert_eq!(next(&doc(3, None), &preparing), Next::KeepPreparing);
        assert_eq!(next(&doc(1, None), &preparing), Next::KeepActive, "the active version is wanted again");
        assert_eq!(next(&doc(2, None), &preparing), Next::Activate, "a newer version supersedes the preparation");
    }
}
