//! A rollout's past: its gate evaluations (`rollout_gates`, written by the engine when a value or
//! verdict changed) and its audited events, for the console's rollout page.

use crate::sql::{Connection, params};
use edgefleet_shared::api::rollouts::{GatePoint, RolloutEvent, RolloutHistory};

use crate::fleet::FleetError;

/// Gate points kept in an answer: the newest ones (a long rollout's history stays a bounded read).
const MAX_POINTS: i64 = 2_000;

pub(super) fn history(conn: &Connection, id: i64) -> Result<RolloutHistory, FleetError> {
    let exists: i64 = conn.query_row("SELECT COUNT(*) FROM rollouts WHERE id = ?1", params![id], |r| r.get(0))?;
    if exists == 0 {
        return Err(FleetError::NotFound(format!("no rollout {id}")));
    }
    let mut gates = conn
        .prepare("SELECT at, wave, gates FROM rollout_gates WHERE rollout_id = ?1 ORDER BY at DESC LIMIT ?2")?
        .query_map(params![id, MAX_POINTS], |r| {
            let text: String = r.get(2)?;
            Ok(GatePoint {
                at: r.get::<_, i64>(0)?.max(0) as u64,
                wave: r.get::<_, i64>(1)?.max(0) as usize,
                gates: serde_json::from_str(&text).map_err(|e| crate::sql::Error::conversion(2, e))?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    gates.reverse();
    let events = conn
        .prepare(
            "SELECT at, actor, action, detail FROM audit
             WHERE target = ?1 AND action LIKE 'rollout.%' ORDER BY id",
        )?
        .query_map(params![id.to_string()], |r| {
            let detail: String = r.get(3)?;
            Ok(RolloutEvent {
                at: r.get::<_, i64>(0)?.max(0) as u64,
                actor: r.get(1)?,
                action: r.get(2)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RolloutHistory { gates, events })
}
