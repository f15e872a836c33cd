//! Fleet side of shadow evaluation: a document with `shadow` loads its version beside the active
//! one (downloaded, verified and self-tested like any activation, then mirrored to instead of
//! served); any later document without it ends the shadow.

use std::sync::Arc;
use std::time::Instant;

use edgefleet_shared::deployment::ModelDeployment;

use super::Agent;
use super::activate::{self, ActivationError, SHADOW_POOL};
use super::state::{ShadowSlot, Slot};
use crate::repository::ServedModel;
use crate::shadow::Shadow;

impl Agent {
    /// The shadow's version was prepared (or failed to): run it beside the active version, or
    /// report the failure like a failed activation.
    pub(super) fn shadow_prepared(
        &mut self,
        doc: ModelDeployment,
        share: f64,
        started: Instant,
        result: Result<Arc<ServedModel>, ActivationError>,
    ) {
        match result {
            Ok(model) => {
                let shadow = Arc::new(Shadow::new(model, doc.model.clone(), share));
                self.shadows.set(&doc.model.name, Some(shadow));
                let slot = Slot { model: doc.model.clone(), sequence: doc.sequence, artifacts: doc.artifacts.clone() };
                self.slots(&doc.model.name).shadow = Some(ShadowSlot { slot, share });
                tracing::info!(model = %doc.model.name, version = doc.model.version, share, "Shadow running.");
            }
            Err(e) => {
                tracing::error!(model = %doc.model.name, version = doc.model.version, error = %e, "Shadow failed to start.");
                self.record(&doc, started, Some(e.to_string()));
            }
        }
        self.save();
        self.report();
    }

    /// Ends the shadow of `name`, if one runs.
    pub(super) fn stop_shadow(&mut self, name: &str) {
        if let Some(slots) = self.state.models.get_mut(name)
            && slots.shadow.is_some()
        {
            slots.shadow = None;
            self.shadows.set(name, None);
            self.save();
            tracing::info!(model = name, "Shadow stopped.");
        }
    }

    /// After a restart, loads each model's shadow again if its slot is intact.
    pub(super) async fn restore_shadows(&mut self) {
        let shadows: Vec<ShadowSlot> = self.state.models.values().filter_map(|m| m.shadow.clone()).collect();
        for shadow in shadows {
            self.restore_shadow(shadow).await;
        }
    }

    async fn restore_shadow(&mut self, shadow: ShadowSlot) {
        let slot = &shadow.slot;
        let loaded = match activate::existing_slot(&self.layout, slot).await {
            Some(dir) => activate::load_with(&dir, &slot.model, SHADOW_POOL, &self.config.backend).await.ok(),
            None => None,
        };
        match loaded {
            Some(model) => {
                self.shadows
                    .set(&slot.model.name, Some(Arc::new(Shadow::new(model, slot.model.clone(), shadow.share))));
            }
            None => {
                tracing::warn!(model = %slot.model.name, version = slot.model.version, "Cannot restore the shadow.");
                self.slots(&slot.model.name).shadow = None;
                self.save();
            }
        }
    }
}
