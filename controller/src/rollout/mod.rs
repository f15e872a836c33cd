//! Staged rollouts: a model version goes to the devices matching a selector in cumulative waves
//! (a device is in the wave at P% when its [`rollout_bucket`] is below P), each wave baked for a
//! while and judged by quality gates over the devices' status reports; a failed gate pauses the
//! rollout or aborts it, and an abort returns every device the rollout changed to the version it
//! ran before, by new documents.
//!
//! All state lives in SQLite (`rollouts`, `rollout_devices`) and the engine ([`Rollouts::tick`])
//! derives every step from it, so a controller restart, even after `kill -9`, resumes each rollout
//! where it was. Every state change is audited.

mod decide;
mod engine;
pub mod gates;
mod plan;
mod records;

use std::collections::BTreeMap;

use edgefleet_shared::deployment::{ModelRef, ShadowSpec};
use rusqlite::{OptionalExtension as _, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::db::{self, Db, now};
use crate::fleet::{Fleet, FleetError, matching_devices, version_artifacts};
use crate::registry::resolve_version;
use engine::{roll_back, step};
use gates::{GateResult, Measurements};
use plan::plan;
use records::{info, load};

/// What happens when a gate fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    /// Stop where it is; the operator resumes or aborts.
    Pause,
    /// Roll every changed device back.
    Abort,
}

/// What happens to devices that have not settled (activated or failed) by the wave deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// They count as failed activations for the gates (and gates still without samples fail).
    Fail,
    /// The rollout pauses, naming them; the operator resumes or aborts.
    Pause,
}

/// How devices take the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Promoting => "promoting",
            RolloutState::Completed => "completed",
            RolloutState::Aborted => "aborted",
        }
    }

    fn parse(s: &str) -> Option<RolloutState> {
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Requests the candidate must have answered before request-based gates count (default 100).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// On a failed gate (default abort).
    #[serde(default = "default_on_fail")]
    pub on_fail: OnFail,
    /// Strategy (default canary).
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
    /// Shadow: share of requests mirrored to the candidate (default 0.25).
    #[serde(default = "default_share")]
    pub shadow_share: f64,
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
fn default_on_fail() -> OnFail {
    OnFail::Abort
}
fn default_strategy() -> Strategy {
    Strategy::Canary
}

/// The stored plan of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
}

impl Plan {
    fn shadow(&self) -> Option<ShadowSpec> {
        (self.strategy == Strategy::Shadow).then_some(ShadowSpec { share: self.shadow_share })
    }
}

/// One wave as `rollout status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutInfo {
    /// Id.
    pub id: i64,
    /// Candidate.
    #[schema(value_type = Object)]
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

/// The rollout service.
#[derive(Debug, Clone)]
pub struct Rollouts {
    db: Db,
    fleet: Fleet,
}

impl Rollouts {
    /// A service over the controller's database and fleet.
    pub fn new(db: Db, fleet: Fleet) -> Self {
        Rollouts { db, fleet }
    }

    /// Validates and stores a new rollout; its first wave goes out on the next tick.
    pub async fn create(&self, req: RolloutRequest, actor: String) -> Result<RolloutInfo, FleetError> {
        let plan = plan(&req)?;
        let id = self
            .db
            .call(move |conn| -> Result<i64, FleetError> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let (_, version) = resolve_version(&tx, &req.model, &req.version)?;
                version_artifacts(&tx, &req.model, version)?;
                if !plan.allow_empty && matching_devices(&tx, &plan.selector)?.is_empty() {
                    return Err(FleetError::BadRequest(format!(
                        "the selector {:?} matches no enrolled device; enroll devices first, or pass \
                         allow_empty (--allow-empty) to start anyway and let devices join as they enroll",
                        plan.selector
                    )));
                }
                let busy: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM rollouts WHERE model = ?1 AND state IN ('running', 'paused', 'promoting')",
                        params![req.model],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(other) = busy {
                    return Err(FleetError::Conflict(format!(
                        "rollout {other} of {} is still running or paused: finish or abort it first",
                        req.model
                    )));
                }
                let at = now();
                tx.execute(
                    "INSERT INTO rollouts (model, version, plan, state, wave, wave_started_at, created_at, updated_at, created_by)
                     VALUES (?1, ?2, ?3, 'running', 0, ?4, ?4, ?4, ?5)",
                    params![req.model, version as i64, serde_json::to_string(&plan).unwrap_or_default(), at, actor],
                )?;
                let id = tx.last_insert_rowid();
                db::audit(&tx, &actor, "rollout.create", &format!("{id}"), serde_json::json!({"model": req.model, "version": version, "plan": plan}))?;
                tx.commit()?;
                Ok(id)
            })
            .await?;
        self.show(id).await
    }

    /// Every rollout, newest first.
    pub async fn list(&self) -> Result<Vec<RolloutInfo>, FleetError> {
        self.db
            .call(|conn| -> Result<Vec<RolloutInfo>, FleetError> {
                let ids: Vec<i64> = conn
                    .prepare("SELECT id FROM rollouts ORDER BY id DESC")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                ids.into_iter().map(|id| info(conn, id)).collect()
            })
            .await
    }

    /// One rollout with its waves and gate values.
    pub async fn show(&self, id: i64) -> Result<RolloutInfo, FleetError> {
        self.db.call(move |conn| info(conn, id)).await
    }

    /// Pauses, resumes or aborts; returns the devices that got new documents.
    pub async fn act(&self, id: i64, action: Action, actor: String) -> Result<(RolloutInfo, Vec<String>), FleetError> {
        let fleet = self.fleet.clone();
        let changed = self
            .db
            .call(move |conn| -> Result<Vec<String>, FleetError> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let row = load(&tx, id)?;
                let (from, to) = match (action, row.state) {
                    (Action::Pause, RolloutState::Running) => ("running", RolloutState::Paused),
                    (Action::Resume, RolloutState::Paused) => ("paused", RolloutState::Running),
                    (Action::Abort, RolloutState::Running | RolloutState::Paused | RolloutState::Promoting) => {
                        ("active", RolloutState::Aborted)
                    }
                    (_, state) => {
                        return Err(FleetError::Conflict(format!(
                            "rollout {id} is {}: cannot {action:?} it",
                            state.as_str()
                        )));
                    }
                };
                let changed = if to == RolloutState::Aborted {
                    roll_back(&fleet, &tx, &row, &format!("aborted by {actor}"))?
                } else {
                    tx.execute(
                        "UPDATE rollouts SET state = ?1, wave_started_at = ?2, updated_at = ?2, reason = ?3 WHERE id = ?4",
                        params![to.as_str(), now(), format!("{} by {actor}", to.as_str()), id],
                    )?;
                    Vec::new()
                };
                let verb = format!("rollout.{}", format!("{action:?}").to_lowercase());
                db::audit(&tx, &actor, &verb, &id.to_string(), serde_json::json!({"from": from, "devices": changed}))?;
                tx.commit()?;
                Ok(changed)
            })
            .await?;
        Ok((self.show(id).await?, changed))
    }

    /// One step of every running rollout: issue the current wave to matching devices not yet in
    /// it, then, after the bake time, judge the gates and advance, finish, pause or abort.
    /// Returns the devices that got new documents (to publish).
    pub async fn tick(&self) -> Result<Vec<String>, FleetError> {
        let fleet = self.fleet.clone();
        self.db
            .call(move |conn| -> Result<Vec<String>, FleetError> {
                let running: Vec<i64> = conn
                    .prepare("SELECT id FROM rollouts WHERE state IN ('running', 'promoting') ORDER BY id")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut changed = Vec::new();
                for id in running {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    changed.extend(step(&fleet, &tx, id, now() as u64)?);
                    tx.commit()?;
                }
                Ok(changed)
            })
            .await
    }
}
