//! The registry's side of delta updates ([`crate::delta`]): deltas made after a push, and before a
//! deployment or rollout from the versions devices hold.

use edgefleet_shared::api::models::VersionInfo;

use super::{Registry, resolve_version};

impl Registry {
    /// Makes the deltas to a new version from the previous one and its parent; a failure is
    /// logged and leaves the push as it is (devices then download the full artifact).
    pub(super) fn make_deltas(&self, info: &VersionInfo) -> Vec<edgefleet_shared::api::models::DeltaInfo> {
        let (name, version, parent) = (&info.name, info.version, info.manifest.lineage.parent_version);
        let _one_at_a_time = self.deltas.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let made = self
            .db
            .call_blocking(|conn| crate::delta::bases(conn, name, version, parent))
            .map_err(crate::delta::DeltaError::from)
            .and_then(|bases| crate::delta::make(&self.db, self.store.as_ref(), name, version, &bases));
        match made {
            Ok(made) => made
                .into_iter()
                .map(|m| edgefleet_shared::api::models::DeltaInfo {
                    base_version: m.base_version,
                    sha256: m.sha256,
                    size: m.size,
                    full_size: m.full_size,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(model = %name, version, error = %e, "No delta made; devices will download the full model.");
                Vec::new()
            }
        }
    }

    /// Before `model:reference` is deployed: makes the deltas to it from every version of the
    /// model that devices applying deltas run, so each can be offered the delta from what it
    /// holds. Failures are logged; devices then download the full artifact.
    pub async fn prepare_deltas(&self, model: String, reference: String) {
        let this = self.clone();
        let made = tokio::task::spawn_blocking(move || -> Result<usize, crate::delta::DeltaError> {
            let planned =
                this.db.call_blocking(|conn| -> Result<Option<(u64, Vec<u64>)>, crate::delta::DeltaError> {
                    let Ok((_, version)) = resolve_version(conn, &model, &reference) else { return Ok(None) };
                    Ok(Some((version, crate::delta::held_versions(conn, &model)?)))
                })?;
            let Some((version, held)) = planned else { return Ok(0) };
            // The newest versions devices hold: older stragglers download in full.
            let bases = &held[held.len().saturating_sub(crate::delta::MAX_DEPLOY_BASES)..];
            let _one_at_a_time = this.deltas.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Ok(crate::delta::make(&this.db, this.store.as_ref(), &model, version, bases)?.len())
        })
        .await;
        match made {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "No delta made for the deployment; devices download the full model.")
            }
            Err(e) => tracing::warn!(error = %e, "The delta task failed; devices download the full model."),
        }
    }
}
