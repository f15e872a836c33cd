//! What a running rollout waits for, as the pure core decides it and `rollout status` says it.

/// Why a rollout waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Waiting {
    /// The wave bakes until then (unix seconds).
    Baking(u64),
    /// Documents went out in this step; their devices have not answered yet.
    JustIssued,
    /// No enrolled device matches the selector (yet).
    NoDevices,
    /// These many devices have neither activated nor failed.
    Unsettled(u64),
    /// These gates lack their samples.
    Samples(Vec<String>),
}

impl Waiting {
    /// For `rollout status`: what the rollout waits for, at `now`.
    pub(super) fn describe(&self, now: u64) -> String {
        match self {
            Waiting::Baking(until) => format!("the wave bakes for {} s more", until.saturating_sub(now)),
            Waiting::JustIssued => "documents just went out; waiting for the devices".into(),
            Waiting::NoDevices => "no enrolled device matches the selector yet".into(),
            Waiting::Unsettled(1) => "1 device has neither activated nor failed".to_owned(),
            Waiting::Unsettled(n) => format!("{n} devices have neither activated nor failed"),
            Waiting::Samples(gates) => format!("gates {} wait for data", gates.join(", ")),
        }
    }
}
