//! Reading rollouts and their devices back from SQLite, and measuring what the devices report.

use edgefleet_shared::deployment::ModelRef;
use edgefleet_shared::drift::{add_counts, psi};
use edgefleet_shared::fleet::DeviceStatus;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::gates::{GateResult, Measurements};
use super::{Plan, RolloutInfo, RolloutState, Strategy, WaveInfo};
use crate::fleet::FleetError;

/// A stored rollout.
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

impl Row {
    /// Whether the candidate runs in shadow now (a shadow rollout before promotion).
    pub(super) fn in_shadow(&self) -> bool {
        self.plan.strategy == Strategy::Shadow && self.state != RolloutState::Promoting
    }
}

pub(super) fn load(conn: &Connection, id: i64) -> Result<Row, FleetError> {
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
pub(super) struct Member {
    pub(super) device: String,
    pub(super) wave: usize,
    pub(super) status: Option<DeviceStatus>,
    pub(super) baseline_p99_ms: Option<f64>,
    pub(super) baseline_classes: Vec<u64>,
}

pub(super) fn members(conn: &Connection, id: i64) -> Result<Vec<Member>, FleetError> {
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
pub(super) fn outcome(m: &Member, candidate: &ModelRef, shadow: bool) -> Option<bool> {
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

pub(super) fn measure(all: &[Member], candidate: &ModelRef, shadow: bool) -> Measurements {
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

pub(super) fn info(conn: &Connection, id: i64) -> Result<RolloutInfo, FleetError> {
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
