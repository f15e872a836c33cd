//! A version's way into service, per model: preparing it as a task (a newer document part for
//! the same model cancels it), the swap, the watch window ([`super::watch`]) and its verdict,
//! removal of a model the desired state no longer names, and what is reported and kept on disk.

use std::time::{Duration, Instant};

use edgefleet_shared::deployment::ModelDeployment;
use edgefleet_shared::fleet::{ActivationReport, Refusal};
use tracing::Instrument as _;

use super::activate::{self, ActivationError};
use super::state::{ModelSlots, Slot};
use super::watch::{self, Verdict, WatchPolicy};
use super::{Agent, Job, Prepared, Purpose, Watching};

impl Agent {
    /// This model's slots, created on first use.
    pub(super) fn slots(&mut self, name: &str) -> &mut ModelSlots {
        self.state.models.entry(name.to_owned()).or_default()
    }

    /// Starts preparing `doc`'s version. The model's watched version is judged now on what it
    /// has seen (a newer document part ends its window) and its running activation is cancelled.
    pub(super) fn begin(&mut self, doc: ModelDeployment, purpose: Purpose) {
        let name = doc.model.name.clone();
        if self.lanes.get(&name).is_some_and(|l| l.watching.is_some()) {
            self.finish_watch(&name, true);
        }
        let lane = self.lanes.entry(name.clone()).or_default();
        if let Some(job) = lane.job.take() {
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
        self.next_job += 1;
        let id = self.next_job;
        let (task_doc, shadow, out) = (doc.clone(), matches!(purpose, Purpose::Shadow(_)), self.prepared.clone());
        let span = tracing::info_span!("activation", model = %doc.model.name, version = doc.model.version,
            sequence = doc.sequence, shadow);
        let task = async move {
            // A panic in a dependency (an engine loading a hostile model) fails this activation
            // only. The set aborts the preparation when this task is aborted (superseded).
            let mut set = tokio::task::JoinSet::new();
            set.spawn(async move { ctx.prepare(&task_doc, shadow).await }.instrument(span));
            let result = match set.join_next().await {
                Some(Ok(result)) => result,
                Some(Err(e)) => Err(ActivationError::Load(format!("the activation task failed: {e}"))),
                None => Err(ActivationError::Load("the activation task did not run".into())),
            };
            let _ = out.send(Prepared { model: name, id, result });
        };
        let handle = tokio::spawn(task);
        let lane = self.lanes.entry(doc.model.name.clone()).or_default();
        lane.job = Some(Job { id, doc, purpose, started: Instant::now(), handle });
    }

    /// A download that failed (controller or network down) is retried every poll interval.
    pub(super) fn retry_pending(&mut self) {
        let idle: Vec<ModelDeployment> = self
            .state
            .models
            .iter()
            .filter(|(name, _)| self.lanes.get(*name).is_none_or(|l| l.job.is_none() && l.watching.is_none()))
            .filter_map(|(_, slots)| slots.pending.clone())
            .collect();
        for doc in idle {
            self.begin(doc, Purpose::Activate);
        }
    }

    /// An activation task finished: swap the version in and watch it, or report the failure.
    /// The result of a task that was cancelled (or of a model since removed) is dropped.
    pub(super) async fn on_prepared(&mut self, done: Prepared) {
        let Some(lane) = self.lanes.get_mut(&done.model) else { return };
        if lane.job.as_ref().is_none_or(|j| j.id != done.id) {
            return;
        }
        let Some(job) = lane.job.take() else { return };
        match (job.purpose, done.result) {
            (Purpose::Shadow(share), result) => self.shadow_prepared(job.doc, share, job.started, result),
            (Purpose::Activate, Ok(model)) => {
                let previous = self.http.install(model.clone());
                tracing::info!(model = %model.name, version = %model.version, "Swapped to the new version; watching it.");
                let watching =
                    Watching { doc: job.doc, model, previous, swapped_at: Instant::now(), started: job.started };
                self.lanes.entry(done.model.clone()).or_default().watching = Some(watching);
                if self.config.fleet.watch_window_secs == 0 {
                    self.end_watch(&done.model, false).await;
                }
            }
            (Purpose::Activate, Err(e)) => {
                let transient = matches!(e, ActivationError::Download(_));
                self.record_failure(&job.doc, job.started, &e);
                // A failed download is transient: the document stays pending and is retried.
                if !transient {
                    self.slots(&done.model).pending = None;
                }
                self.save();
                self.collect_garbage(&done.model).await;
                self.report();
            }
        }
    }

    /// Ends every watch window that is over.
    pub(super) async fn end_due_watches(&mut self) {
        let window = Duration::from_secs(self.config.fleet.watch_window_secs);
        let due: Vec<String> = self
            .lanes
            .iter()
            .filter(|(_, lane)| lane.watching.as_ref().is_some_and(|w| w.swapped_at.elapsed() >= window))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.end_watch(&name, false).await;
        }
    }

    pub(super) async fn end_watch(&mut self, name: &str, superseded: bool) {
        if self.finish_watch(name, superseded) {
            self.collect_garbage(name).await;
        }
        self.report();
    }

    /// Judges the model's watched version now: commit it, or roll back to the one before.
    /// Returns whether a version was judged (its old slots may then be collected).
    pub(super) fn finish_watch(&mut self, name: &str, superseded: bool) -> bool {
        let Some(w) = self.lanes.get_mut(name).and_then(|lane| lane.watching.take()) else { return false };
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
                let slots = self.slots(name);
                // The version that served before becomes the rollback slot.
                if let Some(old) = slots.active.replace(slot) {
                    slots.previous = Some(old);
                }
                let ms = w.started.elapsed().as_millis() as u64;
                self.record(&w.doc, w.started, None);
                crate::systemd::status(&self.serving_summary());
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
        let slots = self.slots(name);
        if slots.pending.as_ref().is_some_and(|p| p.sequence == w.doc.sequence) {
            slots.pending = None;
        }
        self.save();
        true
    }

    /// Stops managing `name`: its activation is cancelled, its watch and shadow end, it stops
    /// serving (requests already holding it finish on it) and its slots are deleted.
    pub(super) fn remove_model(&mut self, name: &str) {
        if let Some(lane) = self.lanes.remove(name)
            && let Some(job) = lane.job
        {
            job.handle.abort();
        }
        self.stop_shadow(name);
        self.http.remove(name);
        self.state.models.remove(name);
        self.save();
        activate::remove_model_files(&self.layout, name);
        crate::systemd::status(&self.serving_summary());
        tracing::info!(model = name, "Model removed: the desired state no longer names it.");
    }

    pub(super) fn record(&mut self, doc: &ModelDeployment, started: Instant, error: Option<String>) {
        let ok = error.is_none();
        metrics::counter!(crate::metric::ACTIVATIONS, "result" => if ok { "ok" } else { "failed" }).increment(1);
        let report = ActivationReport {
            model: doc.model.clone(),
            sequence: doc.sequence,
            ok,
            error,
            at: self.clock.now(),
            duration_ms: started.elapsed().as_millis() as u64,
            delta_bytes_saved: self.deltas.take_saved(&doc.model),
        };
        self.slots(&doc.model.name).last_activation = Some(report.clone());
        self.state.last_activation = Some(report);
    }

    pub(super) fn record_failure(&mut self, doc: &ModelDeployment, started: Instant, e: &ActivationError) {
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
        let Some(slots) = self.state.models.get(name) else { return };
        let mut keep: Vec<u64> =
            [slots.active.as_ref(), slots.previous.as_ref(), slots.shadow.as_ref().map(|s| &s.slot)]
                .into_iter()
                .flatten()
                .map(|s| s.model.version)
                .collect();
        keep.extend(slots.pending.as_ref().map(|p| p.model.version));
        activate::collect_garbage(&self.layout, name, &keep).await;
        // Partial downloads of documents that were replaced would stay in staging forever.
        let wanted: Vec<String> = self
            .state
            .models
            .values()
            .filter_map(|m| m.pending.as_ref())
            .flat_map(|d| &d.artifacts)
            .flat_map(|a| {
                let delta = a.delta.as_ref().map(|d| format!("{}.delta.part", d.sha256));
                std::iter::once(format!("{}.part", a.compressed_sha256)).chain(delta)
            })
            .collect();
        activate::sweep_staging(&self.layout, &wanted).await;
    }
}
