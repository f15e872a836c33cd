//! What the web console reads beyond the registry, fleet and rollout routes: the fleet at a
//! glance (`GET /overview`), a device's metrics over time, and sign-in sessions (`/sessions`).

use serde::{Deserialize, Serialize};

use super::rollouts::RolloutState;
use super::tokens::Role;
use crate::deployment::ModelRef;

/// The fleet at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    /// Live devices heard from within the online window.
    pub online: u64,
    /// Live devices not online.
    pub offline: u64,
    /// Decommissioned devices.
    pub decommissioned: u64,
    /// Devices serving each model version (what the devices report), most devices first.
    pub in_service: Vec<InService>,
    /// Rollouts running, paused or promoting, newest first.
    pub rollouts: Vec<RolloutSummary>,
    /// Retrain requests no registered version was trained from yet.
    pub open_retrain_requests: u64,
    /// The newest refused documents and failed activations reported by devices, newest first.
    pub recent: Vec<DeviceEvent>,
}

/// How many devices serve one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InService {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Live devices reporting it active.
    pub devices: u64,
}

/// A rollout in a line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutSummary {
    /// Id.
    pub id: i64,
    /// Candidate.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub model: ModelRef,
    /// State.
    pub state: RolloutState,
    /// The current wave's number, from 1.
    pub wave: usize,
    /// Waves in the plan.
    pub waves: usize,
    /// The current wave's share of the matching devices.
    pub percent: u8,
    /// Why it is paused or aborted.
    pub reason: Option<String>,
}

/// A refused document or a failed activation, as a device reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceEvent {
    /// Device.
    pub device: String,
    /// Unix seconds.
    pub at: u64,
    /// `refusal` or `rollback`.
    pub kind: String,
    /// The refusal's class and message, or the failed stage and why.
    pub detail: String,
}

/// One point of a device's error rate and latency (a point a minute at most).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceMetricPoint {
    /// Unix seconds (the start of its minute).
    pub at: u64,
    /// Inference requests answered since the agent started.
    pub requests: u64,
    /// Share of failed requests since the agent started.
    pub error_rate: f64,
    /// Median latency of the active version's recent requests (ms).
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency (ms).
    pub latency_p99_ms: Option<f64>,
}

/// Body of `POST /sessions`: an operator token to exchange for a session cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The operator token (`edgefleet token create`).
    pub token: String,
}

/// A signed-in session (`POST /sessions`, `GET /sessions/current`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    /// The token's name.
    pub name: String,
    /// The token's role: what the session may do.
    pub role: Role,
    /// Send it as `X-CSRF-Token` with every state-changing request made with the cookie.
    pub csrf: String,
    /// Unix seconds the session ends.
    pub expires_at: u64,
}
