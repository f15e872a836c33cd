//! Applying a rollout step inside the caller's transaction: issuing waves, writing the
//! decision [`super::decide`] made, promoting, pausing and rolling back.

use std::collections::HashSet;

use crate::sql::{Connection, OptionalExtension as _, params};
use edgefleet_shared::api::rollouts::{DeviceOutcome, OnFail, RolloutState};
use edgefleet_shared::deployment::ModelRef;
use edgefleet_shared::fleet::{DeviceStatus, wave_members};

use super::decide::{Decision, Row, Verdict, decide, outcome};
use super::records::{load, members};
use crate::db;
use crate::fleet::{Fleet, FleetError, can_run, matching_devices, required_engines, version_artifacts};

/// One step of rollout `id` at `now`: issue the current wave to devices not yet in it, judge
/// ([`decide`]), and write what was decided. Returns the devices that got new documents.
pub(super) fn step(fleet: &Fleet, tx: &Connection, id: i64, now: u64) -> Result<Vec<String>, FleetError> {
    let row = load(tx, id)?;
    let mut changed = if row.state == RolloutState::Running { join_wave(fleet, tx, &row, now)? } else { Vec::new() };
    if row.state == RolloutState::Running {
        changed.extend(release(fleet, tx, &row)?);
    }
    let all = members(tx, id)?;
    let Verdict { decision, measurements: m, gates } = decide(&row, &all, changed.len(), now);
    if !gates.is_empty() {
        let text = serde_json::to_string(&gates).unwrap_or_default();
        tx.execute("UPDATE rollouts SET gate_results = ?1 WHERE id = ?2", params![text, id])?;
        if gates != row.gates {
            // The gates' history, for the console: an evaluation that changed a value or a verdict.
            tx.execute(
                "INSERT INTO rollout_gates (rollout_id, at, wave, gates) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (rollout_id, at) DO UPDATE SET wave = excluded.wave, gates = excluded.gates",
                params![id, now as i64, row.wave as i64 + 1, text],
            )?;
        }
    }
    match decision {
        Decision::Wait(_) => {}
        Decision::NextWave => {
            let next = row.wave + 1;
            tx.execute(
                "UPDATE rollouts SET wave = ?1, wave_started_at = ?2, updated_at = ?2 WHERE id = ?3",
                params![next as i64, now as i64, id],
            )?;
            let detail = serde_json::json!({"wave": next + 1, "percent": row.plan.waves[next], "measurements": m});
            db::audit(tx, "controller", "rollout.advance", &id.to_string(), detail)?;
            tracing::info!(rollout = id, wave = next + 1, percent = row.plan.waves[next], "Rollout advanced.");
            changed.extend(join_wave(fleet, tx, &load(tx, id)?, now)?);
        }
        Decision::Promote => {
            // Every shadow wave agreed: activate the candidate on all of them through the normal path.
            tx.execute(
                "UPDATE rollouts SET state = 'promoting', wave_started_at = ?1, updated_at = ?1 WHERE id = ?2",
                params![now as i64, id],
            )?;
            db::audit(tx, "controller", "rollout.promote", &id.to_string(), serde_json::json!({"measurements": m}))?;
            tracing::info!(rollout = id, devices = m.devices, "Shadow passed; promoting.");
            for member in all.iter().filter(|m| outcome(m, &row.model, true) != DeviceOutcome::Already) {
                fleet.issue(tx, &member.device, &row.model, None)?;
                changed.push(member.device.clone());
            }
        }
        Decision::Complete => {
            tx.execute(
                "UPDATE rollouts SET state = 'completed', updated_at = ?1 WHERE id = ?2",
                params![now as i64, id],
            )?;
            db::audit(tx, "controller", "rollout.complete", &id.to_string(), serde_json::json!({"measurements": m}))?;
            if let Some(fleet) = &row.plan.fleet {
                crate::fleet::adopt(tx, fleet, &row.model)?;
                tracing::info!(rollout = id, %fleet, model = %row.model.name, version = row.model.version, "The fleet serves the candidate.");
            }
            tracing::info!(rollout = id, devices = m.devices, "Rollout completed.");
        }
        Decision::Fail { reason, action } => {
            metrics::counter!(crate::metric::ROLLOUT_GATE_FAILURES).increment(1);
            let verb = match action {
                OnFail::Abort => {
                    changed.extend(roll_back(fleet, tx, &row, &reason, now)?);
                    "rollout.abort"
                }
                OnFail::Pause => {
                    pause(tx, id, &reason, now)?;
                    "rollout.pause"
                }
            };
            db::audit(
                tx,
                "controller",
                verb,
                &id.to_string(),
                serde_json::json!({"reason": reason, "measurements": m}),
            )?;
            tracing::warn!(rollout = id, %reason, "Rollout gate failed.");
        }
        Decision::Pause { reason } => {
            pause(tx, id, &reason, now)?;
            db::audit(
                tx,
                "controller",
                "rollout.pause",
                &id.to_string(),
                serde_json::json!({"reason": reason, "measurements": m}),
            )?;
            tracing::warn!(rollout = id, %reason, "Rollout paused at its wave deadline.");
        }
    }
    Ok(changed)
}

fn pause(tx: &Connection, id: i64, reason: &str, now: u64) -> Result<(), FleetError> {
    tx.execute(
        "UPDATE rollouts SET state = 'paused', reason = ?1, updated_at = ?2 WHERE id = ?3",
        params![reason, now as i64, id],
    )?;
    Ok(())
}

/// Issues the candidate to matching devices in the current wave that are not in the rollout yet
/// (including devices that enrolled since), remembering what each ran before.
fn join_wave(fleet: &Fleet, tx: &Connection, row: &Row, now: u64) -> Result<Vec<String>, FleetError> {
    let percent = row.plan.waves[row.wave];
    // Read once per step rather than queried per matching device.
    let members: HashSet<String> = tx
        .prepare("SELECT device_id FROM rollout_devices WHERE rollout_id = ?1")?
        .query_map(params![row.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    // Waves are sized over the devices that can run the version (its engines).
    let required = required_engines(tx, &row.model.name, row.model.version)?;
    let eligible: Vec<String> = matching_devices(tx, &row.plan.selector)?
        .into_iter()
        .filter(|d| can_run(tx, d, &required).unwrap_or(true))
        .collect();
    let newcomers: Vec<String> =
        wave_members(&eligible, percent).into_iter().filter(|d| !members.contains(d)).collect();
    if newcomers.is_empty() {
        return Ok(Vec::new());
    }
    version_artifacts(tx, &row.model.name, row.model.version)?;
    let mut joined = Vec::new();
    for device in newcomers {
        // What the device was given of this model before (its other models are not touched).
        let previous: Option<(String, i64)> = tx
            .query_row(
                "SELECT model, version FROM desired_models WHERE device_id = ?1 AND model = ?2",
                params![device, row.model.name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let status: Option<DeviceStatus> = tx
            .query_row("SELECT status FROM devices WHERE id = ?1", params![device], |r| r.get::<_, Option<String>>(0))?
            .and_then(|s| serde_json::from_str(&s).ok());
        let served = status.and_then(|s| s.model(&row.model.name)).filter(|s| s.active_requests > 0);
        let baseline = served.as_ref().and_then(|s| s.latency_p99_ms);
        let classes = served.map(|s| serde_json::to_string(&s.output_classes).unwrap_or_default());
        let already = previous.as_ref().is_some_and(|(m, v)| m == &row.model.name && *v as u64 == row.model.version);
        // Under a disruption budget the device waits for its group's turn ([`release`]).
        let held_back = row.plan.budget.is_some() && !already;
        tx.execute(
            "INSERT INTO rollout_devices (rollout_id, device_id, wave, prev_model, prev_version, baseline_p99_ms, joined_at,
                                          baseline_classes, held_back)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                row.id,
                device,
                row.wave as i64,
                previous.as_ref().map(|p| p.0.clone()),
                previous.as_ref().map(|p| p.1),
                baseline,
                now as i64,
                classes,
                held_back as i64
            ],
        )?;
        if already || held_back {
            continue;
        }
        fleet.issue(tx, &device, &row.model, row.plan.shadow())?;
        joined.push(device);
    }
    if !joined.is_empty() {
        metrics::counter!(crate::metric::DOCUMENTS_ISSUED).increment(joined.len() as u64);
        tracing::info!(rollout = row.id, wave = row.wave + 1, devices = joined.len(), "Rollout wave issued.");
    }
    Ok(joined)
}

/// Issues the candidate to members waiting for their group's disruption budget, as far as it
/// allows: per group (devices with the same `group_by` label values), at most `max_unavailable`
/// issued members activating (unsettled) or failed at once. Returns the devices issued.
fn release(fleet: &Fleet, tx: &Connection, row: &Row) -> Result<Vec<String>, FleetError> {
    let Some(budget) = &row.plan.budget else { return Ok(Vec::new()) };
    let group_of = |labels: &str| -> Vec<Option<String>> {
        let labels: std::collections::BTreeMap<String, String> = serde_json::from_str(labels).unwrap_or_default();
        budget.group_by.iter().map(|k| labels.get(k).cloned()).collect()
    };
    let mut size: std::collections::HashMap<Vec<Option<String>>, usize> = std::collections::HashMap::new();
    let eligible: HashSet<String> = matching_devices(tx, &row.plan.selector)?.into_iter().collect();
    let labelled: Vec<(String, String)> = tx
        .prepare("SELECT id, labels FROM devices WHERE decommissioned_at IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let groups: std::collections::HashMap<String, Vec<Option<String>>> =
        labelled.into_iter().map(|(id, labels)| (id, group_of(&labels))).collect();
    for device in &eligible {
        *size.entry(groups.get(device).cloned().unwrap_or_default()).or_default() += 1;
    }
    let held: HashSet<String> = tx
        .prepare(
            "SELECT rd.device_id FROM rollout_devices rd JOIN devices d ON d.id = rd.device_id
             WHERE rd.rollout_id = ?1 AND rd.held_back = 1 AND d.decommissioned_at IS NULL",
        )?
        .query_map(params![row.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let all = members(tx, row.id)?;
    let shadow = row.in_shadow();
    let mut unavailable: std::collections::HashMap<Vec<Option<String>>, usize> = std::collections::HashMap::new();
    for m in all.iter().filter(|m| !held.contains(&m.device)) {
        if matches!(outcome(m, &row.model, shadow), DeviceOutcome::Unsettled | DeviceOutcome::Failed) {
            *unavailable.entry(groups.get(&m.device).cloned().unwrap_or_default()).or_default() += 1;
        }
    }
    let mut waiting: Vec<&String> = held.iter().collect();
    waiting.sort_by_key(|d| (edgefleet_shared::fleet::rollout_rank(d), d.as_str()));
    let mut released = Vec::new();
    for device in waiting {
        let group = groups.get(device).cloned().unwrap_or_default();
        let allowed = budget.max_unavailable.of(size.get(&group).copied().unwrap_or(1));
        let busy = unavailable.entry(group).or_default();
        if *busy >= allowed {
            continue;
        }
        *busy += 1;
        tx.execute(
            "UPDATE rollout_devices SET held_back = 0 WHERE rollout_id = ?1 AND device_id = ?2",
            params![row.id, device],
        )?;
        fleet.issue(tx, device, &row.model, row.plan.shadow())?;
        released.push(device.clone());
    }
    if !released.is_empty() {
        metrics::counter!(crate::metric::DOCUMENTS_ISSUED).increment(released.len() as u64);
        tracing::info!(rollout = row.id, devices = ?released, "Released within the disruption budget.");
    }
    Ok(released)
}

/// Sends every device the rollout changed, and still on the candidate, back to what it ran
/// before, and marks the rollout aborted.
pub(super) fn roll_back(
    fleet: &Fleet,
    tx: &Connection,
    row: &Row,
    reason: &str,
    now: u64,
) -> Result<Vec<String>, FleetError> {
    let targets: Vec<(String, Option<String>, Option<i64>)> = tx
        .prepare(
            "SELECT rd.device_id, rd.prev_model, rd.prev_version FROM rollout_devices rd
             JOIN desired_models d ON d.device_id = rd.device_id AND d.model = ?2
             WHERE rd.rollout_id = ?1 AND d.version = ?3",
        )?
        .query_map(params![row.id, row.model.name, row.model.version as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut changed = Vec::new();
    for (device, prev_model, prev_version) in targets {
        let (Some(name), Some(version)) = (prev_model.filter(|m| *m == row.model.name), prev_version) else {
            // The rollout gave the device this model: it is taken off again (its other models stay).
            fleet.withdraw(tx, &device, &row.model.name)?;
            changed.push(device);
            continue;
        };
        let previous = ModelRef { name, version: version as u64 };
        if previous == row.model {
            continue;
        }
        fleet.issue(tx, &device, &previous, None)?;
        changed.push(device);
    }
    tx.execute(
        "UPDATE rollouts SET state = 'aborted', reason = ?1, updated_at = ?2 WHERE id = ?3",
        params![reason, now as i64, row.id],
    )?;
    metrics::counter!(crate::metric::ROLLOUT_ROLLBACKS).increment(changed.len() as u64);
    Ok(changed)
}
