//! What the controller holds, as gauges set at every `/metrics` scrape (so a fresh controller's
//! `/metrics` already says how many devices, rollouts and versions there are): devices by state
//! (online, offline, decommissioned), rollouts by state, models and versions. Counts only: a few
//! indexed `COUNT`s, no row is read into memory.

use crate::sql::{Connection, params};

use crate::db::{Db, DbError, now};

/// The counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Live devices heard from within the online window (and not marked offline by their will).
    pub online: u64,
    /// Live devices not online.
    pub offline: u64,
    /// Decommissioned devices (kept as tombstones).
    pub decommissioned: u64,
    /// Rollouts by state.
    pub rollouts: Vec<(String, u64)>,
    /// Registered models.
    pub models: u64,
    /// Registered versions, all models together.
    pub versions: u64,
}

/// Every rollout state, so a state with no rollout reads 0 rather than disappearing.
const ROLLOUT_STATES: [&str; 5] = ["running", "paused", "promoting", "completed", "aborted"];

fn count(conn: &Connection, sql: &str, args: impl crate::sql::Params) -> crate::sql::Result<u64> {
    conn.query_row(sql, args, |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64)
}

/// Counts at `now` with a device online when seen within `online_window_secs`.
pub fn take(conn: &Connection, now: i64, online_window_secs: u64) -> crate::sql::Result<Census> {
    let live = count(conn, "SELECT COUNT(*) FROM devices WHERE decommissioned_at IS NULL", [])?;
    let online = count(
        conn,
        "SELECT COUNT(*) FROM devices WHERE decommissioned_at IS NULL AND offline_at IS NULL
             AND last_seen IS NOT NULL AND ?1 - last_seen <= ?2",
        params![now, online_window_secs as i64],
    )?;
    let mut rollouts = Vec::with_capacity(ROLLOUT_STATES.len());
    for state in ROLLOUT_STATES {
        rollouts
            .push((state.to_owned(), count(conn, "SELECT COUNT(*) FROM rollouts WHERE state = ?1", params![state])?));
    }
    Ok(Census {
        online,
        offline: live - online.min(live),
        decommissioned: count(conn, "SELECT COUNT(*) FROM devices WHERE decommissioned_at IS NOT NULL", [])?,
        rollouts,
        models: count(conn, "SELECT COUNT(*) FROM models", [])?,
        versions: count(conn, "SELECT COUNT(*) FROM versions", [])?,
    })
}

/// Takes the census and sets the gauges.
pub async fn publish(db: &Db, online_window_secs: u64) -> Result<(), DbError> {
    let census = db.call(move |conn| take(conn, now(), online_window_secs).map_err(DbError::from)).await?;
    for (state, n) in
        [("online", census.online), ("offline", census.offline), ("decommissioned", census.decommissioned)]
    {
        metrics::gauge!(crate::metric::DEVICES, "state" => state).set(n as f64);
    }
    for (state, n) in census.rollouts {
        metrics::gauge!(crate::metric::ROLLOUTS, "state" => state).set(n as f64);
    }
    metrics::gauge!(crate::metric::MODELS).set(census.models as f64);
    metrics::gauge!(crate::metric::MODEL_VERSIONS).set(census.versions as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_counted_by_state_and_every_rollout_state_is_present() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db.sqlite")).expect("db");
        let census = db
            .call_blocking(|conn| -> crate::sql::Result<Census> {
                let device = |id: &str, last_seen: Option<i64>, offline: Option<i64>, gone: Option<i64>| {
                    conn.execute(
                        "INSERT INTO devices (id, public_key, labels, enrolled_at, last_seen, offline_at, decommissioned_at)
                         VALUES (?1, ?1, '{}', 0, ?2, ?3, ?4)",
                        params![id, last_seen, offline, gone],
                    )
                };
                device("fresh", Some(995), None, None)?;
                device("stale", Some(100), None, None)?;
                device("will", Some(999), Some(999), None)?;
                device("never", None, None, None)?;
                device("stolen", Some(999), None, Some(999))?;
                take(conn, 1000, 90)
            })
            .expect("census");
        assert_eq!((census.online, census.offline, census.decommissioned), (1, 3, 1));
        assert_eq!(census.rollouts.len(), 5);
        assert!(census.rollouts.iter().all(|(_, n)| *n == 0));
        assert_eq!((census.models, census.versions), (0, 0));
    }
}
