//! Staged rollouts: a model version goes to the devices matching a selector in cumulative waves
//! (a device is in the wave at P% when its [`rollout_bucket`] is below P), each wave baked for a
//! while and judged by quality gates over the devices' status reports; a failed gate pauses the
//! rollout or aborts it, and an abort returns every device the rollout changed to the version it
//! ran before, by new documents.
//!
//! All state lives in SQLite (`rollouts`, `rollout_devices`) and the engine ([`Rollouts::tick`])
//! derives every step from it, so a controller restart, even after `kill -9`, resumes each rollout
//! where it was. Every state change is audited.

pub mod gates;

use std::collections::BTreeMap;

use edgefleet_shared::deployment::{ModelRef, ShadowSpec};
use edgefleet_shared::drift::{add_counts, psi};
use edgefleet_shared::fleet::{DeviceStatus, rollout_bucket};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::db::{self, Db, now};
use crate::fleet::{Fleet, FleetError, matching_devices, version_artifacts};
use crate::registry::resolve_version;
use gates::{Gate, GateResult, Measurements};

/// What happens when a gate fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    /// Stop where it is; the operator resumes or aborts.
    Pause,
    /// Roll every changed device back.
    Abort,
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

    fn parse(s: &str) -> RolloutState {
        match s {
            "paused" => RolloutState::Paused,
            "promoting" => RolloutState::Promoting,
            "completed" => RolloutState::Completed,
            "aborted" => RolloutState::Aborted,
            _ => RolloutState::Running,
        }
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
    /// Gates, e.g. `error_rate<0.01` (default `activation_failure_rate<0.1`).
    #[serde(default)]
    pub gates: Vec<String>,
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
}

impl Plan {
    fn shadow(&self) -> Option<ShadowSpec> {
        (self.strategy == Strategy::Shadow).then_some(ShadowSpec { share: self.shadow_share })
    }
}

/// One wave as `rollout status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaveInfo {
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
    /// Index of the current wave in `plan.waves`.
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
                    changed.extend(step(&fleet, &tx, id)?);
                    tx.commit()?;
                }
                Ok(changed)
            })
            .await
    }
}

fn plan(req: &RolloutRequest) -> Result<Plan, FleetError> {
    let bad = |m: String| Err(FleetError::BadRequest(m));
    if req.selector.is_empty() {
        return bad("a rollout needs a selector (k=v labels); use deploy for single devices".into());
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
    let gates = if req.gates.is_empty() { vec!["activation_failure_rate<0.1".to_owned()] } else { req.gates.clone() };
    for g in &gates {
        Gate::parse(g).map_err(FleetError::BadRequest)?;
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
    })
}

/// A stored rollout.
struct Row {
    id: i64,
    model: ModelRef,
    plan: Plan,
    state: RolloutState,
    wave: usize,
    wave_started_at: u64,
    reason: Option<String>,
    gates: Vec<GateResult>,
    created_at: u64,
    updated_at: u64,
}

impl Row {
    /// Whether the candidate runs in shadow now (a shadow rollout before promotion).
    fn in_shadow(&self) -> bool {
        self.plan.strategy == Strategy::Shadow && self.state != RolloutState::Promoting
    }
}

fn load(conn: &Connection, id: i64) -> Result<Row, FleetError> {
    conn.query_row(
        "SELECT model, version, plan, state, wave, wave_started_at, reason, gate_results, created_at, updated_at
         FROM rollouts WHERE id = ?1",
        params![id],
        |r| {
            Ok(Row {
                id,
                model: ModelRef { name: r.get(0)?, version: r.get::<_, i64>(1)? as u64 },
                plan: serde_json::from_str(&r.get::<_, String>(2)?).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
                })?,
                state: RolloutState::parse(&r.get::<_, String>(3)?),
                wave: r.get::<_, i64>(4)? as usize,
                wave_started_at: r.get::<_, i64>(5)? as u64,
                reason: r.get(6)?,
                gates: r.get::<_, Option<String>>(7)?.and_then(|g| serde_json::from_str(&g).ok()).unwrap_or_default(),
                created_at: r.get::<_, i64>(8)? as u64,
                updated_at: r.get::<_, i64>(9)? as u64,
            })
        },
    )
    .optional()?
    .ok_or_else(|| FleetError::NotFound(format!("no rollout {id}")))
}

/// A device in a rollout and what it reports.
struct Member {
    device: String,
    wave: usize,
    status: Option<DeviceStatus>,
    baseline_p99_ms: Option<f64>,
    baseline_classes: Vec<u64>,
}

fn members(conn: &Connection, id: i64) -> Result<Vec<Member>, FleetError> {
    let rows = conn
        .prepare(
            "SELECT rd.device_id, rd.wave, d.status, rd.baseline_p99_ms, rd.baseline_classes FROM rollout_devices rd
             JOIN devices d ON d.id = rd.device_id WHERE rd.rollout_id = ?1 ORDER BY rd.device_id",
        )?
        .query_map(params![id], |r| {
            Ok(Member {
                device: r.get(0)?,
                wave: r.get::<_, i64>(1)? as usize,
                status: r.get::<_, Option<String>>(2)?.and_then(|s| serde_json::from_str(&s).ok()),
                baseline_p99_ms: r.get(3)?,
                baseline_classes: r
                    .get::<_, Option<String>>(4)?
                    .and_then(|c| serde_json::from_str(&c).ok())
                    .unwrap_or_default(),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Whether a member serves the candidate (`Some(true)`; in shadow: runs it in shadow), failed
/// it (`Some(false)`), or neither yet. A failed download is not a verdict: the agent retries it.
fn outcome(m: &Member, candidate: &ModelRef, shadow: bool) -> Option<bool> {
    let status = m.status.as_ref()?;
    let running = if shadow {
        status.shadow.as_ref().map(|s| &s.model) == Some(candidate)
    } else {
        status.active.as_ref() == Some(candidate)
    };
    if running {
        return Some(true);
    }
    let failed = status.last_activation.as_ref().is_some_and(|a| {
        &a.model == candidate && !a.ok && !a.error.as_deref().is_some_and(|e| e.starts_with("download:"))
    });
    failed.then_some(false)
}

fn measure(all: &[Member], candidate: &ModelRef, shadow: bool) -> Measurements {
    let mut m = Measurements { devices: all.len() as u64, ..Measurements::default() };
    let (mut p99, mut base, mut agreed) = (Vec::new(), Vec::new(), 0.0);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for member in all {
        match outcome(member, candidate, shadow) {
            Some(true) if shadow => {
                m.activated += 1;
                let report = member.status.as_ref().and_then(|s| s.shadow.as_ref()).expect("outcome needs a shadow");
                m.compared += report.compared;
                agreed += report.agreement.unwrap_or(0.0) * report.compared as f64;
            }
            Some(true) => {
                m.activated += 1;
                let status = member.status.as_ref().expect("outcome needs a status");
                m.requests += status.active_requests;
                m.errors += status.active_errors;
                if !member.baseline_classes.is_empty() && !status.output_classes.is_empty() {
                    add_counts(&mut before, &member.baseline_classes);
                    add_counts(&mut after, &status.output_classes);
                }
                if let Some(p) = status.latency_p99_ms.filter(|_| status.active_requests > 0) {
                    p99.push(p);
                    if let Some(b) = member.baseline_p99_ms {
                        base.push(b);
                    }
                }
            }
            Some(false) => m.failed += 1,
            None => {}
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    m.p99_ms = mean(&p99);
    m.baseline_p99_ms = if base.len() == p99.len() { mean(&base) } else { None };
    m.agreement = (m.compared > 0).then(|| agreed / m.compared as f64);
    m.classified = after.iter().sum();
    let bins = before.len().max(after.len());
    before.resize(bins, 0);
    after.resize(bins, 0);
    m.psi = psi(&before, &after);
    m
}

fn info(conn: &Connection, id: i64) -> Result<RolloutInfo, FleetError> {
    let row = load(conn, id)?;
    let all = members(conn, id)?;
    let shadow = row.in_shadow();
    let waves = row.plan.waves[..=row.wave.min(row.plan.waves.len() - 1)]
        .iter()
        .enumerate()
        .map(|(i, &percent)| {
            let in_wave: Vec<&Member> = all.iter().filter(|m| m.wave == i).collect();
            WaveInfo {
                percent,
                devices: in_wave.iter().map(|m| m.device.clone()).collect(),
                activated: in_wave.iter().filter(|m| outcome(m, &row.model, shadow) == Some(true)).count() as u64,
                failed: in_wave.iter().filter(|m| outcome(m, &row.model, shadow) == Some(false)).count() as u64,
            }
        })
        .collect();
    Ok(RolloutInfo {
        id,
        measurements: measure(&all, &row.model, shadow),
        model: row.model,
        plan: row.plan,
        state: row.state,
        wave: row.wave,
        wave_started_at: row.wave_started_at,
        reason: row.reason,
        waves,
        gates: row.gates,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn step(fleet: &Fleet, tx: &Connection, id: i64) -> Result<Vec<String>, FleetError> {
    let row = load(tx, id)?;
    if row.state == RolloutState::Promoting {
        return promote_step(fleet, tx, &row);
    }
    let mut changed = join_wave(fleet, tx, &row)?;
    let at = now() as u64;
    if at < row.wave_started_at + row.plan.bake_secs {
        return Ok(changed);
    }
    let all = members(tx, id)?;
    let m = measure(&all, &row.model, row.in_shadow());
    if all.is_empty() {
        // No matching device falls in this wave (yet): nothing to judge, move on.
        return advance(fleet, tx, &row, &m).map(|more| [changed, more].concat());
    }
    let results: Vec<GateResult> = row
        .plan
        .gates
        .iter()
        .map(|text| {
            let gate = Gate::parse(text).expect("gates are checked at create");
            let value = m.value(&gate.metric, row.plan.min_requests);
            GateResult { gate: text.clone(), value, passed: value.map(|v| gate.passes(v)) }
        })
        .collect();
    tx.execute(
        "UPDATE rollouts SET gate_results = ?1 WHERE id = ?2",
        params![serde_json::to_string(&results).unwrap_or_default(), id],
    )?;
    let failed: Vec<String> = results
        .iter()
        .filter(|g| g.passed == Some(false))
        .map(|g| format!("{} (measured {:.4})", g.gate, g.value.unwrap_or(f64::NAN)))
        .collect();
    if !failed.is_empty() {
        let reason =
            format!("gate failed in wave {} ({}%): {}", row.wave + 1, row.plan.waves[row.wave], failed.join(", "));
        metrics::counter!("edgefleet_controller_rollout_gate_failures_total").increment(1);
        match row.plan.on_fail {
            OnFail::Abort => changed.extend(roll_back(fleet, tx, &row, &reason)?),
            OnFail::Pause => {
                tx.execute(
                    "UPDATE rollouts SET state = 'paused', reason = ?1, updated_at = ?2 WHERE id = ?3",
                    params![reason, now(), id],
                )?;
            }
        }
        let action = if row.plan.on_fail == OnFail::Abort { "rollout.abort" } else { "rollout.pause" };
        db::audit(tx, "controller", action, &id.to_string(), serde_json::json!({"reason": reason, "measurements": m}))?;
        tracing::warn!(rollout = id, %reason, "Rollout gate failed.");
        return Ok(changed);
    }
    if results.iter().any(|g| g.passed.is_none()) || m.unsettled() > 0 || !changed.is_empty() {
        return Ok(changed);
    }
    changed.extend(advance(fleet, tx, &row, &m)?);
    Ok(changed)
}

/// Moves to the next wave (issuing it), or completes the rollout after the last.
fn advance(fleet: &Fleet, tx: &Connection, row: &Row, m: &Measurements) -> Result<Vec<String>, FleetError> {
    let id = row.id;
    let next = row.wave + 1;
    if next == row.plan.waves.len() && row.plan.strategy == Strategy::Shadow {
        // Every shadow wave agreed: activate the candidate on all of them through the normal path.
        tx.execute("UPDATE rollouts SET state = 'promoting', updated_at = ?1 WHERE id = ?2", params![now(), id])?;
        db::audit(tx, "controller", "rollout.promote", &id.to_string(), serde_json::json!({"measurements": m}))?;
        tracing::info!(rollout = id, devices = m.devices, "Shadow passed; promoting.");
        let artifacts = version_artifacts(tx, &row.model.name, row.model.version)?;
        let devices: Vec<String> = members(tx, id)?.into_iter().map(|m| m.device).collect();
        for device in &devices {
            fleet.issue(tx, device, &row.model, &artifacts, None)?;
        }
        Ok(devices)
    } else if next == row.plan.waves.len() {
        tx.execute("UPDATE rollouts SET state = 'completed', updated_at = ?1 WHERE id = ?2", params![now(), id])?;
        db::audit(tx, "controller", "rollout.complete", &id.to_string(), serde_json::json!({"measurements": m}))?;
        tracing::info!(rollout = id, devices = m.devices, "Rollout completed.");
        Ok(Vec::new())
    } else {
        tx.execute(
            "UPDATE rollouts SET wave = ?1, wave_started_at = ?2, updated_at = ?2 WHERE id = ?3",
            params![next as i64, now(), id],
        )?;
        db::audit(
            tx,
            "controller",
            "rollout.advance",
            &id.to_string(),
            serde_json::json!({"wave": next + 1, "percent": row.plan.waves[next], "measurements": m}),
        )?;
        tracing::info!(rollout = id, wave = next + 1, percent = row.plan.waves[next], "Rollout advanced.");
        join_wave(fleet, tx, &load(tx, id)?)
    }
}

/// Promotion of a shadow rollout: completes once every device serves the candidate, aborts if
/// an activation fails.
fn promote_step(fleet: &Fleet, tx: &Connection, row: &Row) -> Result<Vec<String>, FleetError> {
    let all = members(tx, row.id)?;
    let m = measure(&all, &row.model, false);
    if m.failed > 0 {
        let reason =
            format!("promotion failed: {} of {} devices could not activate the candidate", m.failed, m.devices);
        let changed = roll_back(fleet, tx, row, &reason)?;
        db::audit(tx, "controller", "rollout.abort", &row.id.to_string(), serde_json::json!({"reason": reason}))?;
        return Ok(changed);
    }
    if m.unsettled() == 0 {
        tx.execute("UPDATE rollouts SET state = 'completed', updated_at = ?1 WHERE id = ?2", params![now(), row.id])?;
        db::audit(tx, "controller", "rollout.complete", &row.id.to_string(), serde_json::json!({"measurements": m}))?;
        tracing::info!(rollout = row.id, devices = m.devices, "Rollout completed.");
    }
    Ok(Vec::new())
}

/// Issues the candidate to matching devices in the current wave that are not in the rollout yet
/// (including devices that enrolled since), remembering what each ran before.
fn join_wave(fleet: &Fleet, tx: &Connection, row: &Row) -> Result<Vec<String>, FleetError> {
    let percent = row.plan.waves[row.wave];
    let artifacts = version_artifacts(tx, &row.model.name, row.model.version)?;
    let mut joined = Vec::new();
    for device in matching_devices(tx, &row.plan.selector)? {
        if rollout_bucket(&device) >= percent {
            continue;
        }
        let member: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM rollout_devices WHERE rollout_id = ?1 AND device_id = ?2)",
            params![row.id, device],
            |r| r.get(0),
        )?;
        if member {
            continue;
        }
        let previous: Option<(String, i64)> = tx
            .query_row("SELECT model, version FROM desired WHERE device_id = ?1", params![device], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let status: Option<DeviceStatus> = tx
            .query_row("SELECT status FROM devices WHERE id = ?1", params![device], |r| r.get::<_, Option<String>>(0))?
            .and_then(|s| serde_json::from_str(&s).ok());
        let served = status.filter(|s| s.active_requests > 0);
        let baseline = served.as_ref().and_then(|s| s.latency_p99_ms);
        let classes = served.map(|s| serde_json::to_string(&s.output_classes).unwrap_or_default());
        tx.execute(
            "INSERT INTO rollout_devices (rollout_id, device_id, wave, prev_model, prev_version, baseline_p99_ms, joined_at, baseline_classes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                row.id,
                device,
                row.wave as i64,
                previous.as_ref().map(|p| p.0.clone()),
                previous.as_ref().map(|p| p.1),
                baseline,
                now(),
                classes
            ],
        )?;
        if previous.as_ref().is_some_and(|(m, v)| m == &row.model.name && *v as u64 == row.model.version) {
            continue;
        }
        fleet.issue(tx, &device, &row.model, &artifacts, row.plan.shadow())?;
        joined.push(device);
    }
    if !joined.is_empty() {
        metrics::counter!("edgefleet_controller_documents_issued_total").increment(joined.len() as u64);
        tracing::info!(rollout = row.id, wave = row.wave + 1, devices = joined.len(), "Rollout wave issued.");
    }
    Ok(joined)
}

/// Sends every device the rollout changed, and still on the candidate, back to what it ran
/// before, and marks the rollout aborted.
fn roll_back(fleet: &Fleet, tx: &Connection, row: &Row, reason: &str) -> Result<Vec<String>, FleetError> {
    let targets: Vec<(String, Option<String>, Option<i64>)> = tx
        .prepare(
            "SELECT rd.device_id, rd.prev_model, rd.prev_version FROM rollout_devices rd
             JOIN desired d ON d.device_id = rd.device_id
             WHERE rd.rollout_id = ?1 AND d.model = ?2 AND d.version = ?3",
        )?
        .query_map(params![row.id, row.model.name, row.model.version as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut changed = Vec::new();
    for (device, prev_model, prev_version) in targets {
        let (Some(name), Some(version)) = (prev_model, prev_version) else {
            tracing::warn!(rollout = row.id, %device, "No previous version to return to; the device keeps the candidate.");
            continue;
        };
        let previous = ModelRef { name, version: version as u64 };
        if previous == row.model {
            continue;
        }
        let artifacts = version_artifacts(tx, &previous.name, previous.version)?;
        fleet.issue(tx, &device, &previous, &artifacts, None)?;
        changed.push(device);
    }
    tx.execute(
        "UPDATE rollouts SET state = 'aborted', reason = ?1, updated_at = ?2 WHERE id = ?3",
        params![reason, now(), row.id],
    )?;
    metrics::counter!("edgefleet_controller_rollout_rollbacks_total").increment(changed.len() as u64);
    Ok(changed)
}
