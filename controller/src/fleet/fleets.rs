//! Declarative fleets: a selector and the models its members serve, stored in `fleets`, and the
//! reconciliation that keeps every device on its fleet's models ([`super::reconcile`]): run in
//! the transaction that changes a fleet, enrolls or relabels a device, and every few seconds by
//! the background loop (so a change made by another replica is caught up too).

use std::collections::BTreeMap;

use crate::sql::{Connection, OptionalExtension, params};
use edgefleet_shared::api::fleets::{CreateFleet, FleetConflict, FleetInfo, UpdateFleet};
use edgefleet_shared::deployment::ModelRef;
use edgefleet_shared::fleet::DeviceStatus;

use super::reconcile::{Given, Plan, Template, plan};
use super::{Fleet, FleetError};
use crate::db::{self, now};
use crate::registry::resolve_version;

impl Fleet {
    /// Creates a fleet and gives its models to every matching device. Returns it and the devices
    /// whose documents changed.
    pub async fn create_fleet(&self, req: CreateFleet, actor: String) -> Result<(FleetInfo, Vec<String>), FleetError> {
        check_name(&req.name)?;
        check_selector(&req.selector)?;
        let this = self.clone();
        let name = req.name.clone();
        let changed = self
            .db
            .call(move |conn| -> Result<Vec<String>, FleetError> {
                let tx = conn.transaction()?;
                let exists: Option<String> = tx
                    .query_row("SELECT name FROM fleets WHERE name = ?1", params![req.name], |r| r.get(0))
                    .optional()?;
                if exists.is_some() {
                    return Err(FleetError::Conflict(format!("fleet {:?} exists; use fleet update", req.name)));
                }
                let models = resolve_models(&tx, &req.models)?;
                let at = now();
                tx.execute(
                    "INSERT INTO fleets (name, selector, models, created_at, updated_at, created_by)
                     VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                    params![req.name, to_json(&req.selector), to_json(&models), at, actor],
                )?;
                db::audit(
                    &tx,
                    &actor,
                    "fleet.create",
                    &req.name,
                    serde_json::json!({"selector": req.selector, "models": models}),
                )?;
                let changed = this.reconcile(&tx, None)?;
                tx.commit()?;
                Ok(changed)
            })
            .await?;
        Ok((self.fleet_info(name).await?, changed))
    }

    /// Changes a fleet's selector or models. A new version of a model the fleet already serves
    /// goes through a rollout (`rollout create --fleet`), which changes the fleet when it completes.
    pub async fn update_fleet(
        &self,
        name: String,
        req: UpdateFleet,
        actor: String,
    ) -> Result<(FleetInfo, Vec<String>), FleetError> {
        if let Some(selector) = &req.selector {
            check_selector(selector)?;
        }
        let this = self.clone();
        let target = name.clone();
        let changed = self
            .db
            .call(move |conn| -> Result<Vec<String>, FleetError> {
                let tx = conn.transaction()?;
                let current = template(&tx, &target)?;
                let selector = req.selector.clone().unwrap_or(current.selector.clone());
                let models = match &req.models {
                    Some(m) => resolve_models(&tx, m)?,
                    None => current.models.clone(),
                };
                for m in &models {
                    if let Some(old) = current.models.iter().find(|o| o.name == m.name && o.version != m.version) {
                        return Err(FleetError::Conflict(format!(
                            "fleet {target:?} serves {}:{}; a new version goes out through a rollout: \
                             edgefleet rollout create {}:{} --fleet {target} (the fleet changes when it completes)",
                            old.name, old.version, m.name, m.version
                        )));
                    }
                }
                tx.execute(
                    "UPDATE fleets SET selector = ?1, models = ?2, updated_at = ?3 WHERE name = ?4",
                    params![to_json(&selector), to_json(&models), now(), target],
                )?;
                db::audit(
                    &tx,
                    &actor,
                    "fleet.update",
                    &target,
                    serde_json::json!({"selector": selector, "models": models}),
                )?;
                let changed = this.reconcile(&tx, None)?;
                tx.commit()?;
                Ok(changed)
            })
            .await?;
        Ok((self.fleet_info(name).await?, changed))
    }

    /// Deletes a fleet: its members stop serving its models. Returns the devices that changed.
    pub async fn delete_fleet(&self, name: String, actor: String) -> Result<Vec<String>, FleetError> {
        let this = self.clone();
        self.db
            .call(move |conn| -> Result<Vec<String>, FleetError> {
                let tx = conn.transaction()?;
                template(&tx, &name)?;
                tx.execute("DELETE FROM fleets WHERE name = ?1", params![name])?;
                db::audit(&tx, &actor, "fleet.delete", &name, serde_json::json!({}))?;
                let changed = this.reconcile(&tx, None)?;
                tx.commit()?;
                Ok(changed)
            })
            .await
    }

    /// Every fleet with its members, by name.
    pub async fn fleet_list(&self) -> Result<Vec<FleetInfo>, FleetError> {
        self.db.call(|conn| -> Result<Vec<FleetInfo>, FleetError> { infos(conn, None) }).await
    }

    /// One fleet with its members.
    pub async fn fleet_info(&self, name: String) -> Result<FleetInfo, FleetError> {
        self.db
            .call(move |conn| -> Result<FleetInfo, FleetError> {
                infos(conn, Some(&name))?.pop().ok_or_else(|| FleetError::NotFound(format!("unknown fleet {name:?}")))
            })
            .await
    }

    /// Reconciles every device (the background pass). Returns the devices that changed.
    pub async fn reconcile_fleets(&self) -> Result<Vec<String>, FleetError> {
        let this = self.clone();
        self.db
            .call(move |conn| -> Result<Vec<String>, FleetError> {
                let tx = conn.transaction()?;
                let changed = this.reconcile(&tx, None)?;
                tx.commit()?;
                Ok(changed)
            })
            .await
    }

    /// Brings `only` (or every device in service) to its fleet's models inside the caller's
    /// transaction, signing a new document for each device that changes; returns those.
    pub(crate) fn reconcile(&self, tx: &Connection, only: Option<&str>) -> Result<Vec<String>, FleetError> {
        let fleets = templates(tx)?;
        let mut changed = Vec::new();
        for (device, labels) in devices(tx, only)? {
            let given = given(tx, &device)?;
            if fleets.is_empty() && given.iter().all(|g| g.fleet.is_none()) {
                continue;
            }
            let rolling = rolling(tx, &device)?;
            let Plan::Apply { set, remove } = plan(&labels, &fleets, &given, &rolling) else { continue };
            if set.is_empty() && remove.is_empty() {
                continue;
            }
            for name in &remove {
                tx.execute("DELETE FROM desired_models WHERE device_id = ?1 AND model = ?2", params![device, name])?;
            }
            for (model, fleet) in &set {
                tx.execute(
                    "INSERT INTO desired_models (device_id, model, version, shadow_share, fleet) VALUES (?1, ?2, ?3, NULL, ?4)
                     ON CONFLICT (device_id, model) DO UPDATE SET version = excluded.version,
                         shadow_share = NULL, fleet = excluded.fleet",
                    params![device, model.name, model.version as i64, fleet],
                )?;
            }
            self.sign_set(tx, &device)?;
            tracing::info!(%device, set = ?set, remove = ?remove, "Device reconciled to its fleet.");
            changed.push(device);
        }
        if !changed.is_empty() {
            metrics::counter!(crate::metric::DOCUMENTS_ISSUED).increment(changed.len() as u64);
        }
        Ok(changed)
    }
}

/// A completed rollout of a fleet's model: the fleet serves the candidate from now on.
pub(crate) fn adopt(tx: &Connection, fleet: &str, candidate: &ModelRef) -> Result<(), FleetError> {
    let Some(mut t) = template(tx, fleet).ok() else { return Ok(()) };
    for m in t.models.iter_mut().filter(|m| m.name == candidate.name) {
        m.version = candidate.version;
    }
    tx.execute(
        "UPDATE fleets SET models = ?1, updated_at = ?2 WHERE name = ?3",
        params![to_json(&t.models), now(), fleet],
    )?;
    Ok(())
}

/// The fleet `name`.
pub(crate) fn template(conn: &Connection, name: &str) -> Result<Template, FleetError> {
    templates(conn)?
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| FleetError::NotFound(format!("unknown fleet {name:?}")))
}

fn templates(conn: &Connection) -> Result<Vec<Template>, FleetError> {
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT name, selector, models FROM fleets ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(name, selector, models)| Template {
            name,
            selector: serde_json::from_str(&selector).unwrap_or_default(),
            models: serde_json::from_str(&models).unwrap_or_default(),
        })
        .collect())
}

/// A device id and its labels.
type Labelled = (String, BTreeMap<String, String>);

/// Devices in service with their labels (or just `only`).
fn devices(conn: &Connection, only: Option<&str>) -> Result<Vec<Labelled>, FleetError> {
    let rows: Vec<(String, String)> = conn
        .prepare(
            "SELECT id, labels FROM devices WHERE decommissioned_at IS NULL AND (CAST(?1 AS TEXT) IS NULL OR id = ?1)
             ORDER BY id",
        )?
        .query_map(params![only], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows.into_iter().map(|(id, labels)| (id, serde_json::from_str(&labels).unwrap_or_default())).collect())
}

fn given(conn: &Connection, device: &str) -> Result<Vec<Given>, FleetError> {
    let rows: Vec<(String, i64, Option<String>)> = conn
        .prepare("SELECT model, version, fleet FROM desired_models WHERE device_id = ?1 ORDER BY model")?
        .query_map(params![device], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(name, version, fleet)| Given { model: ModelRef { name, version: version as u64 }, fleet })
        .collect())
}

/// Models that running (or paused) rollouts hold on `device`.
fn rolling(conn: &Connection, device: &str) -> Result<Vec<String>, FleetError> {
    Ok(conn
        .prepare(
            "SELECT r.model FROM rollouts r JOIN rollout_devices rd ON rd.rollout_id = r.id
             WHERE rd.device_id = ?1 AND r.state IN ('running', 'paused', 'promoting')",
        )?
        .query_map(params![device], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Fleets with their members, conflicts and serving devices (all, or the one named).
fn infos(conn: &Connection, only: Option<&str>) -> Result<Vec<FleetInfo>, FleetError> {
    let fleets = templates(conn)?;
    let rows: Vec<(String, String, i64, i64, String)> = conn
        .prepare("SELECT name, selector, created_at, updated_at, created_by FROM fleets ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<Result<_, _>>()?;
    let mut all_devices: Vec<(String, BTreeMap<String, String>, Option<DeviceStatus>)> = Vec::new();
    for (id, labels) in devices(conn, None)? {
        let status: Option<String> =
            conn.query_row("SELECT status FROM devices WHERE id = ?1", params![id], |r| r.get(0))?;
        all_devices.push((id, labels, status.and_then(|s| serde_json::from_str(&s).ok())));
    }
    let mut out = Vec::new();
    for ((name, _, created_at, updated_at, created_by), t) in rows.into_iter().zip(&fleets) {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let (mut devices, mut serving, mut conflicts) = (Vec::new(), Vec::new(), Vec::new());
        for (id, labels, status) in &all_devices {
            if !t.matches(labels) {
                continue;
            }
            let matching: Vec<String> = fleets.iter().filter(|f| f.matches(labels)).map(|f| f.name.clone()).collect();
            if matching.len() > 1 {
                conflicts.push(FleetConflict { device: id.clone(), fleets: matching });
                continue;
            }
            let serves =
                |m: &ModelRef| status.as_ref().and_then(|s| s.model(&m.name)).and_then(|s| s.active) == Some(m.clone());
            if t.models.iter().all(serves) {
                serving.push(id.clone());
            }
            devices.push(id.clone());
        }
        out.push(FleetInfo {
            name,
            selector: t.selector.clone(),
            models: t.models.clone(),
            devices,
            serving,
            conflicts,
            created_at: created_at as u64,
            updated_at: updated_at as u64,
            created_by,
        });
    }
    Ok(out)
}

/// `NAME:VERSION` references, resolved to version numbers; each model once.
fn resolve_models(conn: &Connection, refs: &[String]) -> Result<Vec<ModelRef>, FleetError> {
    if refs.is_empty() {
        return Err(FleetError::BadRequest("a fleet needs at least one model (NAME:VERSION)".into()));
    }
    let mut models: Vec<ModelRef> = Vec::new();
    for r in refs {
        let (name, version) =
            r.split_once(':').ok_or_else(|| FleetError::BadRequest(format!("model {r:?} is not NAME:VERSION")))?;
        let (_, version) = resolve_version(conn, name, version)?;
        super::version_artifacts(conn, name, version)?;
        if models.iter().any(|m| m.name == name) {
            return Err(FleetError::BadRequest(format!("model {name:?} is named twice")));
        }
        models.push(ModelRef { name: name.to_owned(), version });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

fn check_name(name: &str) -> Result<(), FleetError> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FleetError::BadRequest(format!("fleet name {name:?}: 1-63 of [a-z0-9-], starting with a letter")))
    }
}

fn check_selector(selector: &BTreeMap<String, String>) -> Result<(), FleetError> {
    if selector.is_empty() {
        return Err(FleetError::BadRequest("a fleet needs a selector (at least one k=v label)".into()));
    }
    super::enrollment::check_labels(selector)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
