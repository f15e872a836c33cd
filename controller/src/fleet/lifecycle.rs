//! The device lifecycle after enrollment: relabelling, decommissioning (a stolen or retired
//! device), and the enrollment tokens that let devices in.

use crate::sql::{OptionalExtension as _, params};
use edgefleet_shared::api::fleet::{DeviceInfo, EnrollmentTokenInfo, Relabel};

use super::enrollment::check_labels;
use super::{Fleet, FleetError};
use crate::db::{self, now};

/// Longest decommission reason kept.
const MAX_REASON_BYTES: usize = 500;

impl Fleet {
    /// Sets and removes labels of a live device; selectors (deployments, rollout waves) see the
    /// new labels from their next evaluation on.
    pub async fn relabel(&self, id: String, change: Relabel, actor: String) -> Result<DeviceInfo, FleetError> {
        check_labels(&change.set)?;
        if let Some(both) = change.remove.iter().find(|k| change.set.contains_key(*k)) {
            return Err(FleetError::BadRequest(format!("label {both:?} is both set and removed")));
        }
        let target = id.clone();
        let this = self.clone();
        self.db
            .call(move |conn| -> Result<(), FleetError> {
                let tx = conn.transaction()?;
                let row: Option<(String, Option<i64>)> = tx
                    .query_row("SELECT labels, decommissioned_at FROM devices WHERE id = ?1", params![target], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                let (labels, decommissioned) =
                    row.ok_or_else(|| FleetError::NotFound(format!("unknown device {target:?}")))?;
                if decommissioned.is_some() {
                    return Err(FleetError::Conflict(format!("device {target:?} is decommissioned")));
                }
                let mut labels: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(&labels).unwrap_or_default();
                let before = labels.clone();
                for k in &change.remove {
                    labels.remove(k);
                }
                labels.extend(change.set.clone());
                tx.execute(
                    "UPDATE devices SET labels = ?1 WHERE id = ?2",
                    params![serde_json::to_string(&labels).unwrap_or_default(), target],
                )?;
                db::audit(
                    &tx,
                    &actor,
                    "device.relabel",
                    &target,
                    serde_json::json!({"before": before, "after": labels}),
                )?;
                this.reconcile(&tx, Some(&target))?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        self.device(id).await
    }

    /// Takes a device out of service for good: its key stops authenticating requests, broker
    /// logins and telemetry at once (live broker connections are closed), it gets no more
    /// documents, leaves every rollout's measurements, and its key can never enroll again.
    /// The row stays (as a tombstone) with its history.
    pub async fn decommission(
        &self,
        id: String,
        reason: Option<String>,
        actor: String,
    ) -> Result<DeviceInfo, FleetError> {
        if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
            return Err(FleetError::BadRequest(format!("the reason is at most {MAX_REASON_BYTES} bytes")));
        }
        let target = id.clone();
        self.db
            .call(move |conn| -> Result<(), FleetError> {
                let tx = conn.transaction()?;
                let row: Option<Option<i64>> = tx
                    .query_row("SELECT decommissioned_at FROM devices WHERE id = ?1", params![target], |r| r.get(0))
                    .optional()?;
                match row {
                    None => return Err(FleetError::NotFound(format!("unknown device {target:?}"))),
                    Some(Some(_)) => {
                        return Err(FleetError::Conflict(format!("device {target:?} is already decommissioned")));
                    }
                    Some(None) => {}
                }
                tx.execute(
                    "UPDATE devices SET decommissioned_at = ?1, decommission_reason = ?2 WHERE id = ?3",
                    params![now(), reason, target],
                )?;
                tx.execute("DELETE FROM desired WHERE device_id = ?1", params![target])?;
                tx.execute("DELETE FROM desired_models WHERE device_id = ?1", params![target])?;
                db::audit(&tx, &actor, "device.decommission", &target, serde_json::json!({"reason": reason}))?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        tracing::warn!(device = %id, "Device decommissioned: its key and broker login no longer work.");
        // No receiver (no broker gate running) is fine.
        let _ = self.decommissioned.send(id.clone());
        self.device(id).await
    }

    /// Ids of the live devices and of the decommissioned ones, each sorted.
    pub async fn device_ids_by_state(&self) -> Result<(Vec<String>, Vec<String>), FleetError> {
        self.db
            .call(|conn| -> Result<(Vec<String>, Vec<String>), FleetError> {
                let mut stmt = conn.prepare("SELECT id, decommissioned_at IS NOT NULL FROM devices ORDER BY id")?;
                let (mut live, mut gone) = (Vec::new(), Vec::new());
                for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))? {
                    let (id, decommissioned) = row?;
                    if decommissioned { gone.push(id) } else { live.push(id) }
                }
                Ok((live, gone))
            })
            .await
    }

    /// One device, decommissioned or not.
    pub async fn device(&self, id: String) -> Result<DeviceInfo, FleetError> {
        let mut all = self.devices(Some(id.clone())).await?;
        all.pop().ok_or_else(|| FleetError::NotFound(format!("unknown device {id:?}")))
    }

    /// Every enrollment token, newest first, with how many devices enrolled with it.
    pub async fn enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenInfo>, FleetError> {
        self.db
            .call(|conn| -> Result<Vec<EnrollmentTokenInfo>, FleetError> {
                let mut stmt = conn.prepare(
                    "SELECT t.id, t.uses_left, t.expires_at, t.labels, t.created_at, t.created_by, t.revoked_at,
                            (SELECT COUNT(*) FROM devices d WHERE d.enrollment_token = t.id)
                     FROM enrollment_tokens t ORDER BY t.id DESC",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(EnrollmentTokenInfo {
                            id: r.get(0)?,
                            uses_left: r.get::<_, i64>(1)?.max(0) as u32,
                            expires_at: r.get::<_, i64>(2)? as u64,
                            labels: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                            created_at: r.get::<_, i64>(4)? as u64,
                            created_by: r.get(5)?,
                            revoked_at: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                            devices: r.get::<_, i64>(7)? as u64,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }

    /// Revokes an enrollment token: no device enrolls with it from now on (devices already
    /// enrolled keep working).
    pub async fn revoke_enrollment_token(&self, id: i64, actor: String) -> Result<(), FleetError> {
        self.db
            .call(move |conn| -> Result<(), FleetError> {
                let tx = conn.transaction()?;
                let row: Option<Option<i64>> = tx
                    .query_row("SELECT revoked_at FROM enrollment_tokens WHERE id = ?1", params![id], |r| r.get(0))
                    .optional()?;
                match row {
                    None => return Err(FleetError::NotFound(format!("unknown enrollment token {id}"))),
                    Some(Some(_)) => {
                        return Err(FleetError::Conflict(format!("enrollment token {id} is already revoked")));
                    }
                    Some(None) => {}
                }
                tx.execute("UPDATE enrollment_tokens SET revoked_at = ?1 WHERE id = ?2", params![now(), id])?;
                db::audit(
                    &tx,
                    &actor,
                    "device.token.revoke",
                    &format!("enrollment-token:{id}"),
                    serde_json::json!({}),
                )?;
                tx.commit()?;
                Ok(())
            })
            .await
    }
}
