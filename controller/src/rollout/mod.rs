//! Staged rollouts: a model version goes to the devices matching a selector in cumulative waves
//! (the wave at P% holds the first ⌈P·N/100⌉ of the N matching devices in their stable rollout
//! order, [`wave_members`]), each wave baked for a
//! while and judged by quality gates over the devices' status reports; a failed gate pauses the
//! rollout or aborts it, and an abort returns every device the rollout changed to the version it
//! ran before, by new documents.
//!
//! All state lives in SQLite (`rollouts`, `rollout_devices`) and the engine ([`Rollouts::tick`])
//! derives every step from it, so a controller restart, even after `kill -9`, resumes each rollout
//! where it was. Every state change is audited.

mod decide;
mod engine;
pub mod gates;
mod history;
mod plan;
mod records;
mod waiting;

use crate::sql::{OptionalExtension as _, params};
use edgefleet_shared::api::rollouts::{RolloutHistory, RolloutInfo, RolloutRequest, RolloutState};
use edgefleet_shared::clock::SharedClock;
#[cfg(doc)]
use edgefleet_shared::fleet::wave_members;

use crate::db::{self, Db};
use crate::fleet::{Fleet, FleetError, matching_devices, version_artifacts};
use crate::registry::resolve_version;
pub use decide::Action;
use decide::transition;
use engine::{roll_back, step};
use plan::plan;
use records::{info, load};

/// The rollout service.
#[derive(Debug, Clone)]
pub struct Rollouts {
    db: Db,
    fleet: Fleet,
    clock: SharedClock,
}

impl Rollouts {
    /// A service over the controller's database and fleet, stepping on `clock`'s time.
    pub fn new(db: Db, fleet: Fleet, clock: SharedClock) -> Self {
        Rollouts { db, fleet, clock }
    }

    /// Validates and stores a new rollout; its first wave goes out on the next tick.
    pub async fn create(&self, req: RolloutRequest, actor: String) -> Result<RolloutInfo, FleetError> {
        let mut plan = plan(&req)?;
        let at = self.clock.now() as i64;
        let id = self
            .db
            .call(move |conn| -> Result<i64, FleetError> {
                let tx = conn.transaction()?;
                let (_, version) = resolve_version(&tx, &req.model, &req.version)?;
                version_artifacts(&tx, &req.model, version)?;
                if let Some(name) = &plan.fleet {
                    let fleet = crate::fleet::template(&tx, name)?;
                    if !fleet.models.iter().any(|m| m.name == req.model) {
                        return Err(FleetError::Conflict(format!(
                            "fleet {name:?} does not serve {}; add it with fleet update --model",
                            req.model
                        )));
                    }
                    plan.selector = fleet.selector;
                }
                if !plan.allow_empty && matching_devices(&tx, &plan.selector)?.is_empty() {
                    return Err(FleetError::BadRequest(format!(
                        "the selector {:?} matches no enrolled device; enroll devices first, or pass \
                         allow_empty (--allow-empty) to start anyway and let devices join as they enroll",
                        plan.selector
                    )));
                }
                let busy: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM rollouts WHERE model = ?1 AND state IN ('running', 'paused', 'promoting')",
                        params![req.model],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(other) = busy {
                    return Err(FleetError::Conflict(format!(
                        "rollout {other} of {} is still running or paused: finish or abort it first",
                        req.model
                    )));
                }
                let id: i64 = tx.query_row(
                    "INSERT INTO rollouts (model, version, plan, state, wave, wave_started_at, created_at, updated_at, created_by)
                     VALUES (?1, ?2, ?3, 'running', 0, ?4, ?4, ?4, ?5) RETURNING id",
                    params![req.model, version as i64, serde_json::to_string(&plan).unwrap_or_default(), at, actor],
                    |r| r.get(0),
                )?;
                db::audit(&tx, &actor, "rollout.create", &format!("{id}"), serde_json::json!({"model": req.model, "version": version, "plan": plan}))?;
                tx.commit()?;
                Ok(id)
            })
            .await?;
        self.show(id).await
    }

    /// Every rollout, newest first.
    pub async fn list(&self) -> Result<Vec<RolloutInfo>, FleetError> {
        let (now, window) = (self.clock.now(), self.fleet.online_window_secs());
        self.db
            .call(move |conn| -> Result<Vec<RolloutInfo>, FleetError> {
                let ids: Vec<i64> = conn
                    .prepare("SELECT id FROM rollouts ORDER BY id DESC")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                ids.into_iter().map(|id| info(conn, id, now, window)).collect()
            })
            .await
    }

    /// One rollout with its waves and gate values.
    pub async fn show(&self, id: i64) -> Result<RolloutInfo, FleetError> {
        let (now, window) = (self.clock.now(), self.fleet.online_window_secs());
        self.db.call(move |conn| info(conn, id, now, window)).await
    }

    /// A rollout's gate evaluations and events over time.
    pub async fn history(&self, id: i64) -> Result<RolloutHistory, FleetError> {
        self.db.call(move |conn| history::history(conn, id)).await
    }

    /// Pauses, resumes or aborts; returns the devices that got new documents.
    pub async fn act(&self, id: i64, action: Action, actor: String) -> Result<(RolloutInfo, Vec<String>), FleetError> {
        let (fleet, now) = (self.fleet.clone(), self.clock.now());
        let changed = self
            .db
            .call(move |conn| -> Result<Vec<String>, FleetError> {
                let tx = conn.transaction()?;
                let row = load(&tx, id)?;
                let from = row.state;
                let to = transition(from, action).ok_or_else(|| {
                    FleetError::Conflict(format!("rollout {id} is {}: cannot {} it", from.as_str(), action.as_str()))
                })?;
                let changed = if to == RolloutState::Aborted {
                    roll_back(&fleet, &tx, &row, &format!("aborted by {actor}"), now)?
                } else {
                    tx.execute(
                        "UPDATE rollouts SET state = ?1, wave_started_at = ?2, updated_at = ?2, reason = ?3 WHERE id = ?4",
                        params![to.as_str(), now as i64, format!("{} by {actor}", to.as_str()), id],
                    )?;
                    Vec::new()
                };
                let verb = format!("rollout.{}", action.as_str());
                let detail = serde_json::json!({"from": from.as_str(), "devices": changed});
                db::audit(&tx, &actor, &verb, &id.to_string(), detail)?;
                tx.commit()?;
                Ok(changed)
            })
            .await?;
        Ok((self.show(id).await?, changed))
    }

    /// One step of every running rollout: issue the current wave to matching devices not yet in
    /// it, then, after the bake time, judge the gates and advance, finish, pause or abort.
    /// Returns the devices that got new documents (to publish).
    pub async fn tick(&self) -> Result<Vec<String>, FleetError> {
        self.tick_fenced(None).await
    }

    /// [`Rollouts::tick`] by the holder of `lease`: each rollout's step commits only if the
    /// lease is still held at its epoch when the step's transaction runs ([`crate::lease::holds`]).
    pub async fn tick_fenced(&self, lease: Option<crate::lease::Lease>) -> Result<Vec<String>, FleetError> {
        let (fleet, now) = (self.fleet.clone(), self.clock.now());
        self.db
            .call(move |conn| -> Result<Vec<String>, FleetError> {
                let running: Vec<i64> = conn
                    .prepare("SELECT id FROM rollouts WHERE state IN ('running', 'promoting') ORDER BY id")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut changed = Vec::new();
                for id in running {
                    let tx = conn.transaction()?;
                    if let Some(lease) = &lease
                        && !crate::lease::holds(&tx, lease, crate::db::now() as u64)?
                    {
                        tracing::warn!(
                            epoch = lease.epoch,
                            "The background lease was lost; the rollout step is left to its new holder."
                        );
                        break;
                    }
                    changed.extend(step(&fleet, &tx, id, now)?);
                    tx.commit()?;
                }
                Ok(changed)
            })
            .await
    }
}
