//! What arrives from the controller (or anyone on the path): signed desired-state envelopes,
//! verified before anything acts on them and remembered only once verified, and trust
//! rotations, applied only when each step is signed by the set the device holds.

use edgefleet_shared::deployment::DeploymentDocument;
use edgefleet_shared::fleet::Refusal;
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::trust::TrustChain;
use edgefleet_shared::verify::{sha256_hex, verify_deployment};

use super::next::{Doing, Next, next};
use super::{Agent, Purpose, trust};

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
        self.state.last_sequence = Some(doc.sequence);
        self.state.last_document_sha256 = Some(digest);
        self.stop_shadow(&doc.model.name);
        let doing = Doing {
            watching: self.watching.as_ref().map(|w| &w.doc.model),
            preparing: self.job.as_ref().filter(|j| j.doc.shadow.is_none()).map(|j| &j.doc.model),
            active: self.state.active.as_ref().map(|a| &a.model),
        };
        match next(&doc, &doing) {
            Next::Shadow(share) => {
                self.state.pending = None;
                self.save();
                self.begin(doc, Purpose::Shadow(share));
            }
            Next::KeepWatching => {
                if let Some(w) = self.watching.as_mut() {
                    w.doc = doc;
                }
            }
            Next::KeepPreparing => {
                if let Some(job) = self.job.as_mut() {
                    job.doc = doc.clone();
                }
                self.state.pending = Some(doc);
                self.save();
            }
            Next::KeepActive => {
                if let Some(job) = self.job.take() {
                    tracing::info!(model = %job.doc.model.name, version = job.doc.model.version, "Activation cancelled: the active version is wanted again.");
                    job.handle.abort();
                }
                if let Some(active) = &mut self.state.active {
                    active.sequence = doc.sequence;
                }
                self.state.pending = None;
                self.save();
            }
            Next::Activate => {
                self.state.pending = Some(doc.clone());
                self.save();
                self.begin(doc, Purpose::Activate);
            }
        }
        true
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
