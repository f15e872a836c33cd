//! Reading rollouts and their devices back from SQLite.

use edgefleet_shared::api::rollouts::{RolloutInfo, RolloutState, WaveInfo};
use edgefleet_shared::deployment::ModelRef;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::decide::{Member, Outcome, Row, measure, outcome};
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
                plan: serde_json::from_str(&r.get::<_, String>(2)?).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
                })?,
                state: {
                    let text: String = r.get(3)?;
                    RolloutState::parse(&text).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Text,
                            format!("unknown rollout state {text:?}").into(),
                        )
                    })?
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
            "SELECT rd.device_id, rd.wave, d.status, rd.baseline_p99_ms, rd.baseline_classes, rd.prev_model, rd.prev_version
             FROM rollout_devices rd JOIN devices d ON d.id = rd.device_id WHERE rd.rollout_id = ?1 ORDER BY rd.device_id",
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
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn info(conn: &Connection, id: i64) -> Result<RolloutInfo, FleetError> {
    let row = load(conn, id)?;
    let all = members(conn, id)?;
    let shadow = row.in_shadow();
    let count = |in_wave: &[&Member], wanted: &[Outcome]| {
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
                activated: count(&in_wave, &[Outcome::Serving, Outcome::Already]),
                failed: count(&in_wave, &[Outcome::Failed]),
            }
        })
        .collect();
    Ok(RolloutInfo {
        id,
        measurements: measure(&all, &row.model, shadow, false),
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
