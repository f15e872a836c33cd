//! A version's way into service: preparing it as a task (a newer document cancels it), the swap,
//! the watch window ([`super::watch`]) and its verdict, and what is reported and kept on disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_shared::deployment::DeploymentDocument;
use edgefleet_shared::fleet::{ActivationReport, Refusal};
use tracing::Instrument as _;

use super::activate::{self, ActivationError};
use super::state::Slot;
use super::watch::{self, Verdict, WatchPolicy};
use super::{Agent, Job, Purpose, Watching};
use crate::repository::ServedModel;

impl Agent {
    /// Starts preparing `doc`'s version. A watched version is judged now on what it has seen
    /// (a newer document ends its window) and a running activation is cancelled.
    pub(super) fn begin(&mut self, doc: DeploymentDocument, purpose: Purpose) {
        if self.watching.is_some() {
            self.finish_watch(true);
        }
        if let Some(job) = self.job.take() {
            tracing::info!(model = %job.doc.model.name, version = job.doc.model.version, by = doc.sequence,
                "Activation superseded by a newer document.");
            job.handle.abort();
        }
        tracing::info!(model = %doc.model.name, version = doc.model.version, sequence = doc.sequence, "Activating.");
        let ctx = activate::Context {
            link: self.link.clone(),
            layout: self.layout.clone(),
            fleet: self.config.fleet.clone(),
            backend: self.config.backend.clone(),
            telemetry: self.telemetry.clone(),
            deltas: self.deltas.clone(),
        };
        let (task_doc, shadow) = (doc.clone(), matches!(purpose, Purpose::Shadow(_)));
        let span = tracing::info_span!("activation", model = %doc.model.name, version = doc.model.version,
            sequence = doc.sequence, shadow);
        let handle = tokio::spawn(async move { ctx.prepare(&task_doc, shadow).await }.instrument(span));
        self.job = Some(Job { doc, purpose, started: Instant::now(), handle });
    }

    /// A download that failed (controller or network down) is retried every poll interval.
    pub(super) fn retry_pending(&mut self) {
        if self.job.is_none()
            && self.watching.is_none()
            && let Some(doc) = self.state.pending.clone()
        {
            self.begin(doc, Purpose::Activate);
        }
    }

    /// The activation task finished: swap the version in and watch it, or report the failure.
    pub(super) async fn on_prepared(&mut self, result: Result<Arc<ServedModel>, ActivationError>) {
        let Some(job) = self.job.take() else { return };
        match (job.purpose, result) {
            (Purpose::Shadow(share), result) => self.shadow_prepared(job.doc, share, job.started, result),
            (Purpose::Activate, Ok(model)) => {
                let previous = self.http.install(model.clone());
                tracing::info!(model = %model.name, version = %model.version, "Swapped to the new version; watching it.");
                self.watching =
                    Some(Watching { doc: job.doc, model, previous, swapped_at: Instant::now(), started: job.started });
                if self.config.fleet.watch_window_secs == 0 {
                    self.end_watch(false).await;
                }
            }
            (Purpose::Activate, Err(e)) => {
                let transient = matches!(e, ActivationError::Download(_));
                self.record_failure(&job.doc, job.started, &e);
                // A failed download is transient: the document stays pending and is retried.
                if !transient {
                    self.state.pending = None;
                }
                self.save();
                self.collect_garbage(&job.doc.model.name).await;
                self.report();
            }
        }
    }

    pub(super) async fn end_watch(&mut self, superseded: bool) {
        let name = self.finish_watch(superseded);
        if let Some(name) = name {
            self.collect_garbage(&name).await;
        }
        self.report();
    }

    /// Judges the watched version now: commit it, or roll back to the one before. Returns the
    /// model name whose old slots may be collected.
    pub(super) fn finish_watch(&mut self, superseded: bool) -> Option<String> {
        let w = self.watching.take()?;
        let policy = WatchPolicy {
            window: Duration::from_secs(self.config.fleet.watch_window_secs),
            max_error_rate: self.config.fleet.max_error_rate,
            min_requests: self.config.fleet.min_watch_requests,
        };
        let (ok, failed) = w.model.outcomes.snapshot();
        match watch::judge(&policy, w.swapped_at, Instant::now(), ok, failed, superseded) {
            Verdict::Watching | Verdict::Commit => {
                let slot =
                    Slot { model: w.doc.model.clone(), sequence: w.doc.sequence, artifacts: w.doc.artifacts.clone() };
                let old = self.state.active.replace(slot);
                // The version that served before becomes the rollback slot when it is the same model.
                self.state.previous = old.filter(|o| o.model.name == w.doc.model.name).or(self.state.previous.take());
                let ms = w.started.elapsed().as_millis() as u64;
                self.record(&w.doc, w.started, None);
                crate::systemd::status(&format!("serving {} version {}", w.model.name, w.model.version));
                tracing::info!(model = %w.doc.model.name, version = w.doc.model.version, ms, superseded, "Activated.");
            }
            Verdict::RollBack { failed, total } => {
                match &w.previous {
                    Some(p) => {
                        self.http.install(p.clone());
                        crate::systemd::status(&format!("serving {} version {} (rolled back)", p.name, p.version));
                    }
                    None => self.http.remove(&w.model.name),
                }
                let e = ActivationError::Watch(format!(
                    "{failed} of {total} requests failed in the watch window (limit {:.1}%)",
                    policy.max_error_rate * 100.0
                ));
                self.record_failure(&w.doc, w.started, &e);
            }
        }
        // Unless superseded, the watched document is done either way; a newer one replaces it.
        if self.state.pending.as_ref().is_some_and(|p| p.sequence == w.doc.sequence) {
            self.state.pending = None;
        }
        self.save();
        Some(w.doc.model.name)
    }

    pub(super) fn record(&mut self, doc: &DeploymentDocument, started: Instant, error: Option<String>) {
        let ok = error.is_none();
        metrics::counter!(crate::metric::ACTIVATIONS, "result" => if ok { "ok" } else { "failed" }).increment(1);
        self.state.last_activation = Some(ActivationReport {
            model: doc.model.clone(),
            sequence: doc.sequence,
            ok,
            error,
            at: self.clock.now(),
            duration_ms: started.elapsed().as_millis() as u64,
            delta_bytes_saved: self.deltas.take_saved(&doc.model),
        });
    }

    pub(super) fn record_failure(&mut self, doc: &DeploymentDocument, started: Instant, e: &ActivationError) {
        if let Some(class) = e.refusal_class() {
            self.state.last_refusal = Some(Refusal {
                class: class.into(),
                message: e.to_string(),
                sequence: Some(doc.sequence),
                at: self.clock.now(),
            });
        }
        metrics::counter!(crate::metric::ROLLBACKS).increment(1);
        tracing::error!(model = %doc.model.name, version = doc.model.version, error = %e, "Activation failed; the previous version keeps serving.");
        self.record(doc, started, Some(e.to_string()));
    }

    pub(super) async fn collect_garbage(&self, name: &str) {
        let shadow = self.state.shadow.as_ref().map(|s| &s.slot);
        let pending = self.state.pending.as_ref().filter(|p| p.model.name == name).map(|p| p.model.version);
        let mut keep: Vec<u64> = [self.state.active.as_ref(), self.state.previous.as_ref(), shadow]
            .into_iter()
            .flatten()
            .filter(|s| s.model.name == name)
            .map(|s| s.model.version)
            .collect();
        keep.extend(pending);
        activate::collect_garbage(&self.layout, name, &keep).await;
        // Partial downloads of documents that were replaced would stay in staging forever.
        let wanted: Vec<String> = self
            .state
            .pending
            .iter()
            .flat_map(|d| &d.artifacts)
            .flat_map(|a| {
                let delta = a.delta.as_ref().map(|d| format!("{}.delta.part", d.sha256));
                std::iter::once(format!("{}.part", a.compressed_sha256)).chain(delta)
            })
            .collect();
        activate::sweep_staging(&self.layout, &wanted).await;
    }
}
