//! One step of a rollout: issue the current wave, judge its gates after the bake, then advance,
//! promote, complete, pause or roll back. Everything is derived from the stored state, inside the
//! caller's transaction.

use edgefleet_shared::deployment::ModelRef;
use edgefleet_shared::fleet::{DeviceStatus, rollout_bucket};
use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::gates::{Gate, GateResult, Measurements};
use super::records::{Row, load, measure, members};
use super::{OnFail, RolloutState, Strategy};
use crate::db::{self, now};
use crate::fleet::{Fleet, FleetError, matching_devices, version_artifacts};

pub(super) fn step(fleet: &Fleet, tx: &Connection, id: i64) -> Result<Vec<String>, FleetError> {
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
    // Read once per step rather than queried per matching device.
    let members: HashSet<String> = tx
        .prepare("SELECT device_id FROM rollout_devices WHERE rollout_id = ?1")?
        .query_map(params![row.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let newcomers: Vec<String> = matching_devices(tx, &row.plan.selector)?
        .into_iter()
        .filter(|d| rollout_bucket(d) < percent && !members.contains(d))
        .collect();
    if newcomers.is_empty() {
        return Ok(Vec::new());
    }
    let artifacts = version_artifacts(tx, &row.model.name, row.model.version)?;
    let mut joined = Vec::new();
    for device in newcomers {
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
pub(super) fn roll_back(fleet: &Fleet, tx: &Connection, row: &Row, reason: &str) -> Result<Vec<String>, FleetError> {
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
