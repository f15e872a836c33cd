//! What arrives from the controller (or anyone on the path): signed desired-state envelopes,
//! verified before anything acts on them and remembered only once verified, and trust
//! rotations, applied only when each step is signed by the set the device holds.

use edgefleet_shared::deployment::{DeploymentDocument, ModelDeployment};
use edgefleet_shared::fleet::Refusal;
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::trust::TrustChain;
use edgefleet_shared::verify::{sha256_hex, verify_deployment};

use super::next::{Doing, Next, next};
use super::{Agent, Purpose, trust};

/// Why the models `doc` names do not fit in `max_bytes` (their files, uncompressed), if they do not.
fn over_budget(doc: &DeploymentDocument, max_bytes: Option<u64>) -> Option<String> {
    let max = max_bytes?;
    let need: u64 = doc.all_artifacts().map(|a| a.size).sum();
    (need > max).then(|| {
        let models: Vec<String> =
            doc.desired().iter().map(|m| format!("{}:{}", m.model.name, m.model.version)).collect();
        format!(
            "{} need {need} bytes of model files; this device allows {max} (fleet.max_models_bytes)",
            models.join(", ")
        )
    })
}

/// Identifies an envelope by everything in it: document and signature.
fn envelope_digest(envelope: &SignedEnvelope) -> String {
    let sig = &envelope.signature;
    sha256_hex(format!("{}\n{}\n{}", envelope.document, sig.key_id, sig.signature).as_bytes())
}

impl Agent {
    /// Handles a document from either transport, once per distinct verified envelope.
    pub(super) fn on_envelope(&mut self, envelope: SignedEnvelope) {
        let digest = envelope_digest(&envelope);
        if self.last_verified.as_deref() == Some(&digest) {
            return;
        }
        if self.handle(&envelope) {
            self.last_verified = Some(digest);
        }
        self.report();
    }

    /// Verifies and acts on one envelope; true when it verified.
    pub(super) fn handle(&mut self, envelope: &SignedEnvelope) -> bool {
        let Some(bytes) = envelope.document_bytes() else {
            self.refuse("malformed", "the envelope's document is not base64".into(), None);
            return false;
        };
        let digest = sha256_hex(&bytes);
        if self.state.last_document_sha256.as_deref() == Some(digest.as_str()) {
            // The document this device already accepted (its activation is done or resumed).
            return true;
        }
        let device = self.state.device_id.clone().unwrap_or_default();
        let verified = verify_deployment(
            &bytes,
            &envelope.signature,
            self.trust.store(),
            &device,
            self.state.last_sequence,
            self.clock.now(),
        );
        let doc = match verified {
            Ok(doc) => doc,
            Err(e) => {
                metrics::counter!(crate::metric::VERIFICATIONS, "result" => e.class()).increment(1);
                if e.class() == "unknown_key" {
                    self.waiting_for_trust = Some(envelope.clone());
                }
                let seq = serde_json::from_slice::<DeploymentDocument>(&bytes).ok().map(|d| d.sequence);
                self.refuse(e.class(), e.to_string(), seq);
                return false;
            }
        };
        metrics::counter!(crate::metric::VERIFICATIONS, "result" => "ok").increment(1);
        if let Some(message) = over_budget(&doc, self.config.fleet.max_models_bytes) {
            // Not accepted: the sequence stays, so a smaller desired state is taken at once.
            self.refuse("over_budget", message, Some(doc.sequence));
            return true;
        }
        self.state.last_sequence = Some(doc.sequence);
        self.state.last_document_sha256 = Some(digest);
        let parts = doc.split();
        let named: Vec<&str> = parts.iter().map(|p| p.model.name.as_str()).collect();
        let mut gone: Vec<String> = self.state.models.keys().chain(self.lanes.keys()).cloned().collect();
        gone.retain(|name| !named.contains(&name.as_str()));
        gone.sort_unstable();
        gone.dedup();
        for name in gone {
            self.remove_model(&name);
        }
        for part in parts {
            self.apply(part);
        }
        true
    }

    /// Acts on one model's part of a verified document.
    fn apply(&mut self, doc: ModelDeployment) {
        let name = doc.model.name.clone();
        if self.config.models.iter().any(|m| m.name == name) {
            let message = format!(
                "{name} is served from this agent's local configuration ([[models]]); the fleet's {name}:{} is not activated",
                doc.model.version
            );
            self.refuse("name_conflict", message, Some(doc.sequence));
            return;
        }
        let shadow_runs = self.state.models.get(&name).and_then(|m| m.shadow.as_ref());
        if let (Some(spec), Some(running)) = (&doc.shadow, shadow_runs)
            && running.slot.model == doc.model
            && running.share == spec.share
        {
            // The same shadow, re-issued with the document (another model changed, a refresh).
            if let Some(s) = self.slots(&name).shadow.as_mut() {
                s.slot.sequence = doc.sequence;
            }
            self.save();
            return;
        }
        self.stop_shadow(&name);
        let lane = self.lanes.get(&name);
        let active = self.state.models.get(&name).and_then(|m| m.active.as_ref());
        let doing = Doing {
            watching: lane.and_then(|l| l.watching.as_ref()).map(|w| &w.doc.model),
            preparing: lane.and_then(|l| l.job.as_ref()).filter(|j| j.doc.shadow.is_none()).map(|j| &j.doc.model),
            active: active.map(|a| &a.model),
        };
        match next(&doc, &doing) {
            Next::Shadow(share) => {
                self.slots(&name).pending = None;
                self.save();
                self.begin(doc, Purpose::Shadow(share));
            }
            Next::KeepWatching => {
                if let Some(w) = self.lanes.get_mut(&name).and_then(|l| l.watching.as_mut()) {
                    w.doc = doc;
                }
            }
            Next::KeepPreparing => {
                if let Some(job) = self.lanes.get_mut(&name).and_then(|l| l.job.as_mut()) {
                    job.doc = doc.clone();
                }
                self.slots(&name).pending = Some(doc);
                self.save();
            }
            Next::KeepActive => {
                if let Some(job) = self.lanes.get_mut(&name).and_then(|l| l.job.take()) {
                    tracing::info!(model = %job.doc.model.name, version = job.doc.model.version, "Activation cancelled: the active version is wanted again.");
                    job.handle.abort();
                }
                let slots = self.slots(&name);
                if let Some(active) = &mut slots.active {
                    active.sequence = doc.sequence;
                }
                slots.pending = None;
                self.save();
            }
            Next::Activate => {
                self.slots(&name).pending = Some(doc.clone());
                self.save();
                self.begin(doc, Purpose::Activate);
            }
        }
    }

    pub(super) fn refuse(&mut self, class: &str, message: String, sequence: Option<u64>) {
        let same = self.state.last_refusal.as_ref().is_some_and(|r| r.class == class && r.sequence == sequence);
        if !same {
            tracing::warn!(class, %message, "Deployment document refused.");
        }
        self.state.last_refusal = Some(Refusal { class: class.into(), message, sequence, at: self.clock.now() });
        self.save();
    }

    /// Applies the fleet's trust rotations; a document refused for an unknown key is tried again.
    pub(super) fn on_trust(&mut self, chain: &TrustChain) {
        match self.trust.apply(chain) {
            Ok(0) => {}
            Ok(applied) => {
                metrics::counter!(crate::metric::TRUST_ROTATIONS, "result" => "ok").increment(applied as u64);
                self.trust_version.store(self.trust.version(), std::sync::atomic::Ordering::Relaxed);
                if let Some(env) = self.waiting_for_trust.take() {
                    self.on_envelope(env);
                }
                self.report();
            }
            Err(e) => {
                metrics::counter!(crate::metric::TRUST_ROTATIONS, "result" => "refused").increment(1);
                let class = match &e {
                    trust::ApplyError::Refused(v) => v.class(),
                    trust::ApplyError::Persist(_) => "storage",
                };
                self.state.last_refusal = Some(Refusal {
                    class: format!("trust_{class}"),
                    message: e.to_string(),
                    sequence: None,
                    at: self.clock.now(),
                });
                tracing::warn!(error = %e, "Trust rotation refused.");
                self.save();
                self.report();
            }
        }
    }
}
