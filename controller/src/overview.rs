//! The fleet at a glance (`GET /api/v1/overview`, the console's first page): the census, the
//! versions devices report serving, unfinished rollouts, retrain requests nothing was trained from
//! yet, and the newest refusals and failed activations devices reported.

use edgefleet_shared::api::console::{DeviceEvent, InService, Overview, RolloutSummary};
use edgefleet_shared::api::rollouts::{Plan, RolloutState};
use edgefleet_shared::deployment::ModelRef;
use edgefleet_shared::fleet::DeviceStatus;

use crate::db::DbError;
use crate::sql::Connection;

/// Device events an overview lists.
const RECENT_EVENTS: usize = 20;

/// The overview at `now`, a device online when seen within `online_window_secs`.
pub fn take(conn: &Connection, now: i64, online_window_secs: u64) -> Result<Overview, DbError> {
    let census = crate::census::take(conn, now, online_window_secs)?;
    let d = conn.dialect();
    let in_service = conn
        .prepare(&format!(
            "SELECT {name}, {version}, COUNT(*) FROM devices
             WHERE decommissioned_at IS NULL AND {name} IS NOT NULL
             GROUP BY {name}, {version} ORDER BY COUNT(*) DESC, {name}, {version} DESC",
            name = d.json_text("status", "active.name"),
            version = d.json_int("status", "active.version"),
        ))?
        .query_map([], |r| {
            Ok(InService {
                model: r.get(0)?,
                version: r.get::<_, i64>(1)?.max(0) as u64,
                devices: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let rollouts = conn
        .prepare(
            "SELECT id, model, version, state, wave, plan, reason FROM rollouts
             WHERE state IN ('running', 'paused', 'promoting') ORDER BY id DESC",
        )?
        .query_map([], |r| {
            let state: String = r.get(3)?;
            let plan: String = r.get(5)?;
            let plan: Plan = serde_json::from_str(&plan).map_err(|e| crate::sql::Error::conversion(5, e))?;
            let wave = r.get::<_, i64>(4)?.max(0) as usize;
            Ok(RolloutSummary {
                id: r.get(0)?,
                model: ModelRef { name: r.get(1)?, version: r.get::<_, i64>(2)?.max(0) as u64 },
                state: RolloutState::parse(&state)
                    .ok_or_else(|| crate::sql::Error::conversion(3, format!("unknown rollout state {state:?}")))?,
                wave: wave + 1,
                waves: plan.waves.len(),
                percent: plan.waves.get(wave).copied().unwrap_or(100),
                reason: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let open: i64 = conn.query_row(
        "SELECT COUNT(*) FROM retrain_requests r WHERE NOT EXISTS (
             SELECT 1 FROM versions v JOIN models m ON m.id = v.model_id
             WHERE m.name = r.model AND v.dataset_sha256 = r.dataset_sha256)",
        [],
        |r| r.get(0),
    )?;
    Ok(Overview {
        online: census.online,
        offline: census.offline,
        decommissioned: census.decommissioned,
        in_service,
        rollouts,
        open_retrain_requests: open.max(0) as u64,
        recent: recent_events(conn)?,
    })
}

/// Refusals and failed activations of live devices, newest first.
fn recent_events(conn: &Connection) -> Result<Vec<DeviceEvent>, DbError> {
    let d = conn.dialect();
    let rows = conn
        .prepare(&format!(
            "SELECT id, status FROM devices WHERE decommissioned_at IS NULL
               AND ({} IS NOT NULL OR {} IS NOT NULL)",
            d.json_int("status", "last_refusal.at"),
            d.json_text("status", "last_activation.error"),
        ))?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut events = Vec::new();
    for (device, text) in rows {
        let Ok(status) = serde_json::from_str::<DeviceStatus>(&text) else { continue };
        events.extend(device_events(&device, &status));
    }
    events.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.device.cmp(&b.device)));
    events.truncate(RECENT_EVENTS);
    Ok(events)
}

/// What one status report says went wrong: its last refusal and its last failed activation.
fn device_events(device: &str, status: &DeviceStatus) -> Vec<DeviceEvent> {
    let mut events = Vec::new();
    if let Some(r) = &status.last_refusal {
        events.push(DeviceEvent {
            device: device.to_owned(),
            at: r.at,
            kind: "refusal".into(),
            detail: format!("{}: {}", r.class, r.message),
        });
    }
    if let Some(a) = status.last_activation.as_ref().filter(|a| !a.ok) {
        events.push(DeviceEvent {
            device: device.to_owned(),
            at: a.at,
            kind: "rollback".into(),
            detail: format!("{}:{} {}", a.model.name, a.model.version, a.error.as_deref().unwrap_or("failed")),
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::params;
    use edgefleet_shared::fleet::{ActivationReport, Refusal};

    #[test]
    fn a_status_names_its_refusal_and_its_failed_activation_but_not_a_good_one() {
        let mut status = DeviceStatus {
            last_refusal: Some(Refusal {
                class: "bad_signature".into(),
                message: "not signed by a trusted key".into(),
                sequence: Some(4),
                at: 100,
            }),
            last_activation: Some(ActivationReport {
                model: ModelRef { name: "iris".into(), version: 3 },
                sequence: 5,
                ok: false,
                error: Some("self_test: output differs".into()),
                at: 120,
                duration_ms: 40,
                delta_bytes_saved: 0,
            }),
            ..DeviceStatus::default()
        };
        let events = device_events("dev-a", &status);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, "refusal");
        assert_eq!(events[0].detail, "bad_signature: not signed by a trusted key");
        assert_eq!(events[1].kind, "rollback");
        assert_eq!(events[1].detail, "iris:3 self_test: output differs");
        if let Some(a) = status.last_activation.as_mut() {
            a.ok = true;
            a.error = None;
        }
        status.last_refusal = None;
        assert!(device_events("dev-a", &status).is_empty());
    }

    #[test]
    fn the_overview_counts_versions_in_service_and_open_retrain_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::Db::open(&dir.path().join("c.db")).expect("db");
        let overview = db
            .call_blocking(|conn| {
                let serving = |name: &str, version: u64| {
                    serde_json::to_string(&DeviceStatus {
                        active: Some(ModelRef { name: name.into(), version }),
                        ..DeviceStatus::default()
                    })
                    .expect("json")
                };
                for (id, status) in [("a", serving("iris", 2)), ("b", serving("iris", 2)), ("c", serving("iris", 1))] {
                    conn.execute(
                        "INSERT INTO devices (id, public_key, labels, enrolled_at, last_seen, status)
                         VALUES (?1, 'k', '{}', 0, 1000, ?2)",
                        params![id, status],
                    )?;
                }
                conn.execute(
                    "INSERT INTO retrain_requests (model, version, reason, created_at, snapshot_dir, dataset_sha256,
                         rows, manifest, delivery) VALUES ('iris', 2, 'drift', 0, 'x', 'abc', 10, '{}', '{}')",
                    [],
                )?;
                take(conn, 1010, 60)
            })
            .expect("overview");
        assert_eq!((overview.online, overview.offline), (3, 0));
        assert_eq!(
            overview.in_service,
            vec![
                InService { model: "iris".into(), version: 2, devices: 2 },
                InService { model: "iris".into(), version: 1, devices: 1 }
            ]
        );
        assert_eq!(overview.open_retrain_requests, 1);
        assert!(overview.rollouts.is_empty() && overview.recent.is_empty());
    }
}
