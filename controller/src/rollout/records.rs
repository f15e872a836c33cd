//! Reading rollouts and their devices back from SQLite.

use crate::sql::{Connection, OptionalExtension as _, params};
use edgefleet_shared::api::rollouts::{DeviceOutcome, RolloutDevice, RolloutInfo, RolloutState, WaveInfo};
use edgefleet_shared::deployment::ModelRef;

use super::decide::{Decision, Member, Row, decide, measure, outcome};
use crate::fleet::FleetError;

pub(super) fn load(conn: &Connection, id: i64) -> Result<Row, FleetError> {
    conn.query_row(
        "SELECT model, version, plan, state, wave, wave_started_at, reason, gate_results, created_at, updated_at
         FROM rollouts WHERE id = ?1",
        params![id],
        |r| {
            Ok(Row {
                id,
                model: ModelRef { name: r.get(0)?, version: r.get::<_, i64>(1)? as u64 },
                plan: serde_json::from_str(&r.get::<_, String>(2)?).map_err(|e| crate::sql::Error::conversion(2, e))?,
                state: {
                    let text: String = r.get(3)?;
                    RolloutState::parse(&text)
                        .ok_or_else(|| crate::sql::Error::conversion(3, format!("unknown rollout state {text:?}")))?
                },
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

pub(super) fn members(conn: &Connection, id: i64) -> Result<Vec<Member>, FleetError> {
    let rows = conn
        .prepare(
            "SELECT rd.device_id, rd.wave, d.status, rd.baseline_p99_ms, rd.baseline_classes, rd.prev_model, rd.prev_version,
                    d.last_seen, d.offline_at IS NOT NULL
             FROM rollout_devices rd JOIN devices d ON d.id = rd.device_id
             WHERE rd.rollout_id = ?1 AND d.decommissioned_at IS NULL ORDER BY rd.device_id",
        )?
        .query_map(params![id], |r| {
            let (prev_model, prev_version): (Option<String>, Option<i64>) = (r.get(5)?, r.get(6)?);
            Ok(Member {
                device: r.get(0)?,
                wave: r.get::<_, i64>(1)? as usize,
                status: r.get::<_, Option<String>>(2)?.and_then(|s| serde_json::from_str(&s).ok()),
                baseline_p99_ms: r.get(3)?,
                baseline_classes: r
                    .get::<_, Option<String>>(4)?
                    .and_then(|c| serde_json::from_str(&c).ok())
                    .unwrap_or_default(),
                previous: prev_model.zip(prev_version).map(|(name, v)| ModelRef { name, version: v as u64 }),
                last_seen: r.get::<_, Option<i64>>(7)?.map(|t| t.max(0) as u64),
                went_offline: r.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A rollout as the API shows it, at `now`: a device is online when seen within
/// `online_window_secs`.
pub(super) fn info(conn: &Connection, id: i64, now: u64, online_window_secs: u64) -> Result<RolloutInfo, FleetError> {
    let row = load(conn, id)?;
    let all = members(conn, id)?;
    let shadow = row.in_shadow();
    let count = |in_wave: &[&Member], wanted: &[DeviceOutcome]| {
        in_wave.iter().filter(|m| wanted.contains(&outcome(m, &row.model, shadow))).count() as u64
    };
    let waves = row.plan.waves[..=row.wave.min(row.plan.waves.len() - 1)]
        .iter()
        .enumerate()
        .map(|(i, &percent)| {
            let in_wave: Vec<&Member> = all.iter().filter(|m| m.wave == i).collect();
            WaveInfo {
                wave: i + 1,
                percent,
                devices: in_wave.iter().map(|m| m.device.clone()).collect(),
                activated: count(&in_wave, &[DeviceOutcome::Serving, DeviceOutcome::Already]),
                failed: count(&in_wave, &[DeviceOutcome::Failed]),
            }
        })
        .collect();
    let devices = all
        .iter()
        .map(|m| {
            let outcome = outcome(m, &row.model, shadow);
            let error = (outcome == DeviceOutcome::Failed)
                .then(|| m.status.as_ref()?.model(&row.model.name)?.last_activation?.error)
                .flatten();
            RolloutDevice {
                device: m.device.clone(),
                wave: m.wave + 1,
                outcome,
                error,
                online: !m.went_offline && m.last_seen.is_some_and(|t| now.saturating_sub(t) <= online_window_secs),
                last_seen: m.last_seen,
            }
        })
        .collect();
    let active = matches!(row.state, RolloutState::Running | RolloutState::Promoting);
    // What the next step would decide now, without taking it: the rollout's current wait.
    let waiting_for = active.then(|| match decide(&row, &all, 0, now).decision {
        Decision::Wait(w) => w.describe(now),
        Decision::NextWave => "nothing: the next step starts the next wave".to_owned(),
        Decision::Promote => "nothing: the next step promotes the candidate everywhere".to_owned(),
        Decision::Complete => "nothing: the next step completes the rollout".to_owned(),
        Decision::Fail { reason, .. } => format!("nothing: the next step fails it ({reason})"),
        Decision::Pause { reason } => format!("nothing: the next step pauses it ({reason})"),
    });
    let in_waves = row.state == RolloutState::Running;
    let delta_bytes_saved = all
        .iter()
        .filter_map(|m| m.status.as_ref()?.model(&row.model.name)?.last_activation)
        .filter(|a| a.ok && a.model == row.model)
        .map(|a| a.delta_bytes_saved)
        .sum();
    Ok(RolloutInfo {
        id,
        delta_bytes_saved,
        measurements: measure(&all, &row.model, shadow, false),
        waiting_for,
        bake_until: in_waves.then(|| row.wave_started_at.saturating_add(row.plan.bake_secs)),
        deadline: active.then(|| row.deadline()),
        devices,
        model: row.model,
        plan: row.plan,
        state: row.state,
        wave: row.wave + 1,
        wave_started_at: row.wave_started_at,
        reason: row.reason,
        waves,
        gates: row.gates,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}
