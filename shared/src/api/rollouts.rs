//! Staged rollouts: the request, the stored plan, and the state `rollout status` shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::deployment::{ModelRef, ShadowSpec};

/// What happens when a gate fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    /// Stop where it is; the operator resumes or aborts.
    Pause,
    /// Roll every changed device back.
    Abort,
}

impl OnFail {
    /// Lowercase name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFail::Pause => "pause",
            OnFail::Abort => "abort",
        }
    }
}

/// What happens to devices that have not settled (activated or failed) by the wave deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// They count as failed activations for the gates (and gates still without samples fail).
    Fail,
    /// The rollout pauses, naming them; the operator resumes or aborts.
    Pause,
}

impl OnTimeout {
    /// Lowercase name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Fail => "fail",
            OnTimeout::Pause => "pause",
        }
    }
}

/// What a gate still short of data at the wave deadline means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnInsufficient {
    /// The rollout pauses, naming the gate and what it lacks; the operator decides.
    Pause,
    /// The gate fails (and `on_fail` applies).
    Fail,
    /// The gate is skipped for this wave (shown as skipped) and the others decide.
    Skip,
}

impl OnInsufficient {
    /// Lowercase name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnInsufficient::Pause => "pause",
            OnInsufficient::Fail => "fail",
            OnInsufficient::Skip => "skip",
        }
    }
}

/// How devices take the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every matching device at once (one wave of 100%), gates still judged.
    Direct,
    /// Wave by wave.
    Canary,
    /// Wave by wave in shadow (the candidate runs beside the active version on mirrored
    /// requests, judged by `agreement`), then promoted on every device at once.
    Shadow,
}

impl Strategy {
    /// Lowercase name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Direct => "direct",
            Strategy::Canary => "canary",
            Strategy::Shadow => "shadow",
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    /// Issuing waves and judging gates.
    Running,
    /// Stopped by the operator or a failed gate.
    Paused,
    /// Shadow: every wave passed; the candidate is being activated on every device.
    Promoting,
    /// Every wave passed.
    Completed,
    /// Stopped, and the devices it changed were sent back.
    Aborted,
}

impl RolloutState {
    /// Lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Promoting => "promoting",
            RolloutState::Completed => "completed",
            RolloutState::Aborted => "aborted",
        }
    }

    /// The state named `s` exactly as [`RolloutState::as_str`] writes it.
    pub fn parse(s: &str) -> Option<RolloutState> {
        Some(match s {
            "running" => RolloutState::Running,
            "paused" => RolloutState::Paused,
            "promoting" => RolloutState::Promoting,
            "completed" => RolloutState::Completed,
            "aborted" => RolloutState::Aborted,
            _ => return None,
        })
    }
}

/// Body of `POST /rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// Model name.
    pub model: String,
    /// Version number or alias.
    pub version: String,
    /// Devices whose labels include all of these.
    pub selector: BTreeMap<String, String>,
    /// Cumulative wave sizes in percent, increasing, ending at 100 (default 1, 10, 50, 100; `direct`: 100).
    #[serde(default)]
    pub waves: Option<Vec<u8>>,
    /// Seconds each wave bakes before its gates are judged (default 600).
    #[serde(default = "default_bake")]
    pub bake_secs: u64,
    /// Gates, e.g. `error_rate<0.01`; `activation_failure_rate<0.1` is added unless one on
    /// `activation_failure_rate` is given or `no_default_gate` is set.
    #[serde(default)]
    pub gates: Vec<String>,
    /// Leave out the default `activation_failure_rate<0.1` gate.
    #[serde(default)]
    pub no_default_gate: bool,
    /// Seconds after a wave starts by which its devices must have settled (default 3600; at
    /// least the bake time).
    #[serde(default = "default_wave_timeout")]
    pub wave_timeout_secs: u64,
    /// Devices unsettled at the deadline: count as failed (default) or pause.
    #[serde(default = "default_on_timeout")]
    pub on_timeout: OnTimeout,
    /// Start even when no device matches the selector yet (devices that enroll later join).
    #[serde(default)]
    pub allow_empty: bool,
    /// Requests (or predictions, or comparisons) each side of a gate must have before it counts:
    /// the candidate's, and for `psi` the devices' previous version's (default 100).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Gates still short of data at the wave deadline: pause (default), fail, or skip.
    #[serde(default = "default_on_insufficient")]
    pub on_insufficient: OnInsufficient,
    /// On a failed gate (default abort).
    #[serde(default = "default_on_fail")]
    pub on_fail: OnFail,
    /// Strategy (default canary).
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
    /// Shadow: share of requests mirrored to the candidate (default 0.25).
    #[serde(default = "default_share")]
    pub shadow_share: f64,
    /// Roll out a new version of a fleet's model over the fleet's devices (the selector is the
    /// fleet's; leave `selector` empty); the fleet serves the candidate once the rollout completes.
    #[serde(default)]
    pub fleet: Option<String>,
    /// Disruption budget: the labels that group devices (e.g. `["site"]`)...
    #[serde(default)]
    pub group_by: Vec<String>,
    /// ...and how many devices of one group may be activating or failed at once: `N` or `P%` of
    /// the group (at least one). Needs `group_by`.
    #[serde(default)]
    pub max_unavailable: Option<String>,
}

/// At most `max` devices of a group (devices with the same values of the `group_by` labels)
/// activating or failed at once; the others of the wave wait for their turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DisruptionBudget {
    /// Labels that group devices.
    pub group_by: Vec<String>,
    /// Devices per group at once.
    pub max_unavailable: MaxUnavailable,
}

/// A number of devices, or a share of each group (rounded down, at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MaxUnavailable {
    /// This many devices.
    Devices(u32),
    /// This percentage of the group.
    Percent(u8),
}

impl MaxUnavailable {
    /// Parses `N` or `P%`.
    pub fn parse(text: &str) -> Result<MaxUnavailable, String> {
        let bad =
            || format!("max_unavailable {text:?} must be a number of devices (1 or more) or a percentage (1% to 100%)");
        match text.trim().strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(MaxUnavailable::Percent)
                .ok_or_else(bad),
            None => text.trim().parse::<u32>().ok().filter(|n| *n >= 1).map(MaxUnavailable::Devices).ok_or_else(bad),
        }
    }

    /// Devices of a group of `size` that may be unavailable at once.
    pub fn of(self, size: usize) -> usize {
        match self {
            MaxUnavailable::Devices(n) => n as usize,
            MaxUnavailable::Percent(p) => (size * p as usize / 100).max(1),
        }
    }
}

/// The stored plan of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    /// Device selector.
    pub selector: BTreeMap<String, String>,
    /// Cumulative wave percentages.
    pub waves: Vec<u8>,
    /// Bake time per wave.
    pub bake_secs: u64,
    /// Gates as written.
    pub gates: Vec<String>,
    /// Minimum candidate requests for request-based gates.
    pub min_requests: u64,
    /// On a failed gate.
    pub on_fail: OnFail,
    /// Strategy.
    pub strategy: Strategy,
    /// Shadow: share of requests mirrored.
    #[serde(default = "default_share")]
    pub shadow_share: f64,
    /// Seconds after a wave starts by which its devices must have settled.
    #[serde(default = "default_wave_timeout")]
    pub wave_timeout_secs: u64,
    /// What an unsettled device at the deadline means.
    #[serde(default = "default_on_timeout")]
    pub on_timeout: OnTimeout,
    /// Whether the rollout may wait for matching devices.
    #[serde(default)]
    pub allow_empty: bool,
    /// What a gate short of data at the wave deadline means.
    #[serde(default = "default_on_insufficient")]
    pub on_insufficient: OnInsufficient,
    /// The fleet whose model this rollout changes (it adopts the candidate on completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// How many devices of a group may be activating or failed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<DisruptionBudget>,
}

impl Plan {
    /// The shadow spec its documents carry, for a shadow rollout.
    pub fn shadow(&self) -> Option<ShadowSpec> {
        (self.strategy == Strategy::Shadow).then_some(ShadowSpec { share: self.shadow_share })
    }
}

/// One wave as `rollout status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaveInfo {
    /// Its number, from 1 (as the status table shows it).
    pub wave: usize,
    /// Cumulative share of the matching devices.
    pub percent: u8,
    /// Devices that joined in this wave.
    pub devices: Vec<String>,
    /// Of those, serving the candidate.
    pub activated: u64,
    /// Of those, failed to activate it.
    pub failed: u64,
}

/// A rollout as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutInfo {
    /// Id.
    pub id: i64,
    /// Candidate.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub model: ModelRef,
    /// Plan.
    pub plan: Plan,
    /// State.
    pub state: RolloutState,
    /// The current wave's number, from 1 (`plan.waves[wave - 1]` is its percentage).
    pub wave: usize,
    /// Unix seconds the current wave started.
    pub wave_started_at: u64,
    /// Why it paused or aborted.
    pub reason: Option<String>,
    /// Waves reached so far.
    pub waves: Vec<WaveInfo>,
    /// What the rollout's devices report now.
    pub measurements: Measurements,
    /// The latest gate evaluation.
    pub gates: Vec<GateResult>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
    /// While running: what the rollout waits for now (bake, devices, gate data).
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// While running: Unix seconds the current wave's bake ends.
    #[serde(default)]
    pub bake_until: Option<u64>,
    /// While running: Unix seconds by which the current wave's devices must have settled.
    #[serde(default)]
    pub deadline: Option<u64>,
    /// Every device the rollout reached, with where it is.
    #[serde(default)]
    pub devices: Vec<RolloutDevice>,
    /// Compressed bytes the rollout's devices did not download thanks to deltas, as they report
    /// their activations of the candidate.
    #[serde(default)]
    pub delta_bytes_saved: u64,
}

/// Where one device of a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutDevice {
    /// Device id.
    pub device: String,
    /// The wave it joined in, from 1.
    pub wave: usize,
    /// Serving (or shadowing) the candidate, failed, on it already, or neither yet.
    pub outcome: DeviceOutcome,
    /// Its activation error, when it failed.
    pub error: Option<String>,
    /// Whether it was seen within the controller's online window.
    pub online: bool,
    /// Unix seconds of its last authenticated contact.
    pub last_seen: Option<u64>,
}

/// A rollout device's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeviceOutcome {
    /// Serves the candidate (in shadow: runs it in shadow).
    Serving,
    /// Its activation of the candidate failed, or it refused the document.
    Failed,
    /// It ran the candidate already when the rollout reached it.
    Already,
    /// Neither activated nor failed yet.
    Unsettled,
}

impl DeviceOutcome {
    /// Lowercase name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceOutcome::Serving => "serving",
            DeviceOutcome::Failed => "failed",
            DeviceOutcome::Already => "already",
            DeviceOutcome::Unsettled => "unsettled",
        }
    }
}

/// What the wave's devices reported, folded into the gate metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Mean p99 latency (ms) of the devices that report one on both versions, on their previous
    /// version.
    pub baseline_p99_ms: Option<f64>,
    /// Candidate p99 over the same devices as `baseline_p99_ms` divided by it.
    #[serde(default)]
    pub p99_ratio: Option<f64>,
    /// Devices with a p99 on both versions (what `p99_ratio` compares).
    #[serde(default)]
    pub p99_pairs: u64,
    /// Shadow: requests mirrored to the candidate and compared.
    #[serde(default)]
    pub compared: u64,
    /// Shadow: agreement over those, weighted by comparisons.
    #[serde(default)]
    pub agreement: Option<f64>,
    /// Predictions of the candidate counted per class, over devices serving it.
    #[serde(default)]
    pub classified: u64,
    /// Predictions the same devices' previous version made (the "before" side of `psi`).
    #[serde(default)]
    pub baseline_classified: u64,
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
}

/// One gate's latest evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateResult {
    /// The gate as written.
    pub gate: String,
    /// Its measured value, when there were enough samples.
    pub value: Option<f64>,
    /// Passed, failed, or none while pending (or skipped).
    pub passed: Option<bool>,
    /// While pending: what it waits for (e.g. "the candidate answered 40 of 100 requests");
    /// when skipped at the deadline, why.
    #[serde(default)]
    pub waiting: Option<String>,
    /// Skipped at the wave deadline for lack of data (`on_insufficient = skip`).
    #[serde(default)]
    pub skipped: bool,
}

fn default_share() -> f64 {
    0.25
}

fn default_bake() -> u64 {
    600
}

fn default_wave_timeout() -> u64 {
    3600
}

fn default_on_timeout() -> OnTimeout {
    OnTimeout::Fail
}

fn default_min_requests() -> u64 {
    100
}

fn default_on_insufficient() -> OnInsufficient {
    OnInsufficient::Pause
}

fn default_on_fail() -> OnFail {
    OnFail::Abort
}

fn default_strategy() -> Strategy {
    Strategy::Canary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(v: impl Serialize) -> String {
        serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    #[test]
    fn names_are_the_wire_names_and_parse_back_strictly() {
        use RolloutState::*;
        for state in [Running, Paused, Promoting, Completed, Aborted] {
            assert_eq!(state.as_str(), wire(state));
            assert_eq!(RolloutState::parse(state.as_str()), Some(state));
        }
        for bad in ["", "Running", "running ", "done"] {
            assert_eq!(RolloutState::parse(bad), None, "{bad:?}");
        }
        for s in [Strategy::Direct, Strategy::Canary, Strategy::Shadow] {
            assert_eq!(s.as_str(), wire(s));
        }
        for o in [OnFail::Pause, OnFail::Abort] {
            assert_eq!(o.as_str(), wire(o));
        }
        for o in [OnTimeout::Fail, OnTimeout::Pause] {
            assert_eq!(o.as_str(), wire(o));
        }
        for o in [OnInsufficient::Pause, OnInsufficient::Fail, OnInsufficient::Skip] {
            assert_eq!(o.as_str(), wire(o));
        }
    }

    #[test]
    fn a_minimal_request_gets_the_documented_defaults() {
        let req: RolloutRequest =
            serde_json::from_str(r#"{"model":"m","version":"1","selector":{"a":"b"}}"#).expect("parses");
        assert_eq!((req.bake_secs, req.wave_timeout_secs, req.min_requests), (600, 3600, 100));
        assert_eq!((req.on_fail, req.on_timeout, req.strategy), (OnFail::Abort, OnTimeout::Fail, Strategy::Canary));
        assert_eq!(req.on_insufficient, OnInsufficient::Pause);
        assert_eq!(req.shadow_share, 0.25);
        assert!(serde_json::from_str::<RolloutRequest>(r#"{"model":"m","version":"1","selector":{},"x":1}"#).is_err());
    }
}

/// What happened to a rollout over time (`GET /rollouts/{id}/history`): every gate evaluation
/// that changed a value or a verdict, and every audited event, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutHistory {
    /// Gate evaluations.
    pub gates: Vec<GatePoint>,
    /// Created, advanced, paused, resumed, aborted, completed, with who and why.
    pub events: Vec<RolloutEvent>,
}

/// The gates as evaluated at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatePoint {
    /// Unix seconds.
    pub at: u64,
    /// The number of the wave being judged, from 1.
    pub wave: usize,
    /// Every gate's result then.
    pub gates: Vec<GateResult>,
}

/// One audited event of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutEvent {
    /// Unix seconds.
    pub at: u64,
    /// Who: `controller` or `token:ID:NAME`.
    pub actor: String,
    /// `rollout.create`, `rollout.advance`, `rollout.pause`, ...
    pub action: String,
    /// The reason, measurements or wave, as audited.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}
