//! Fleet mode (`edgefleet-agent run`): enroll once, follow the controller's signed desired
//! state, activate new versions safely, report status — while serving the same HTTP API.
//!
//! The agent is the HTTP server plus one control loop that never waits on the network. Around it
//! run small tasks that do the waiting: the MQTT link and an HTTP poller deliver documents and
//! trust rotations on a channel, a reporter sends the latest status, and each activation
//! (download, verify, load, self-test) runs as its own task. The loop verifies what arrives
//! (the shared verifier, the trust set, the last accepted sequence), starts and supersedes
//! activations, swaps versions in, judges their watch window when it ends ([`watch`]), and
//! persists its state atomically after every step. A newer document cancels an activation in
//! progress and ends a watch window at once; SIGTERM is handled within the grace period
//! whatever the controller does.

pub mod activate;
pub mod link;
pub mod mqtt;
mod shadowing;
pub mod state;
mod tasks;
pub mod trust;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_shared::deployment::DeploymentDocument;
use edgefleet_shared::fleet::{ActivationReport, DeviceStatus, Refusal};
use edgefleet_shared::keys::FileKey;
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::trust::TrustChain;
use edgefleet_shared::verify::{sha256_hex, verify_deployment};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::activate::{ActivationError, Layout};
use self::link::{Link, Timeouts};
use self::state::{DeviceState, Slot, StateFile};
use self::trust::Trust;
use self::watch::{Verdict, WatchPolicy};
use crate::config::AgentConfig;
use crate::repository::{Repository, ServedModel};
use crate::serve::{HttpServer, ServeError};
use crate::telemetry::Hub;
use crate::telemetry::publish::{self, Tracker};
use crate::telemetry::spool::Spool;

/// Fleet-mode start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Configuration or provisioning is unusable.
    #[error("{0}")]
    Setup(String),
    /// The HTTP server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// What the link tasks deliver to the control loop.
#[derive(Debug)]
pub enum Incoming {
    /// A signed desired-state envelope (MQTT or HTTP).
    Desired(SignedEnvelope),
    /// The fleet's trust rotations.
    Trust(TrustChain),
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What an activation task does with the version it prepared.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// Serve it (swap, then watch).
    Activate,
    /// Run it in shadow beside the active version, mirroring this share of requests.
    Shadow(f64),
}

/// A running activation task: fetch, verify, load and self-test one document's version.
struct Job {
    doc: DeploymentDocument,
    purpose: Purpose,
    started: Instant,
    handle: JoinHandle<Result<Arc<ServedModel>, ActivationError>>,
}

/// A version swapped in and being watched.
struct Watching {
    doc: DeploymentDocument,
    model: Arc<ServedModel>,
    previous: Option<Arc<ServedModel>>,
    swapped_at: Instant,
    /// When the activation began (its report's duration runs from here).
    started: Instant,
}

struct Agent {
    config: AgentConfig,
    layout: Layout,
    state_file: StateFile,
    state: DeviceState,
    trust: Trust,
    link: Link,
    http: Arc<Repository>,
    started: Instant,
    /// Digest of the last envelope that verified (document and signature): it is not handled
    /// again. Only verified envelopes are remembered, so a corrupted copy cannot shadow the
    /// genuine one.
    last_verified: Option<String>,
    /// The last envelope refused for an unknown key: handled again after a trust rotation.
    waiting_for_trust: Option<SignedEnvelope>,
    /// Telemetry recorders, when telemetry is on.
    telemetry: Option<Arc<Hub>>,
    job: Option<Job>,
    watching: Option<Watching>,
    status: tokio::sync::watch::Sender<Option<DeviceStatus>>,
    trust_version: Arc<std::sync::atomic::AtomicU64>,
}

/// Runs fleet mode until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), FleetError> {
    let f = &config.fleet;
    let setup = |m: String| FleetError::Setup(m);
    let trust_path = f.trust_file.clone().ok_or_else(|| setup("no trust file configured".into()))?;
    std::fs::create_dir_all(&f.data_dir).map_err(|e| setup(format!("cannot create {}: {e}", f.data_dir.display())))?;
    let trust = Trust::load(&trust_path, &f.data_dir).map_err(|e| setup(e.to_string()))?;
    let layout = Layout::new(&f.data_dir);
    let key = Arc::new(FileKey::load_or_generate(&layout.device_key()).map_err(|e| setup(e.to_string()))?);
    let state_file = StateFile::new(&f.data_dir);
    let mut state = state_file.load().map_err(|e| setup(e.to_string()))?;
    let controller = f.controller.clone().ok_or_else(|| setup("no controller configured".into()))?;
    let tls = edgefleet_shared::tls::client_config(f.ca_file.as_deref()).map_err(|e| setup(e.to_string()))?;
    let timeouts = Timeouts::from_config(f);

    let http = HttpServer::start(&config).await?;
    on_listening(http.addr);
    crate::systemd::spawn_watchdog();
    tokio::pin!(shutdown);

    let device_id = match state.device_id.clone() {
        Some(id) => id,
        None => {
            // Ready from systemd's point of view: up, and waiting for its first model.
            crate::systemd::ready("enrolling with the controller");
            let enrolled = enroll(&config, &controller, &tls, timeouts, &key, &mut state, &state_file);
            tokio::select! {
                r = enrolled => r?,
                () = &mut shutdown => {
                    http.drain(Duration::from_secs(config.server.shutdown_grace_secs)).await?;
                    return Ok(());
                }
            }
        }
    };
    let link =
        Link::new(&controller, &tls, timeouts, key.clone(), device_id.clone()).map_err(|e| setup(e.to_string()))?;
    let broker = config.fleet.mqtt.clone().or(state.mqtt_url.clone());
    let (tracker, acked) = Tracker::new();
    let (incoming_tx, mut incoming) = mpsc::channel::<Incoming>(16);
    let mqtt = match &broker {
        Some(url) => {
            let prefix =
                state.topic_prefix.clone().unwrap_or_else(|| edgefleet_shared::fleet::DEFAULT_TOPIC_PREFIX.into());
            crate::config::check_broker(url, f.insecure).map_err(|e| setup(e.to_string()))?;
            let certificate = tasks::broker_tls(&link, &f.data_dir, f.ca_file.as_deref(), &key, url, tls.clone());
            let broker_tls = tokio::select! {
                tls = certificate => tls,
                () = &mut shutdown => {
                    http.drain(Duration::from_secs(config.server.shutdown_grace_secs)).await?;
                    return Ok(());
                }
            };
            let link = mqtt::MqttLink::start(
                url,
                broker_tls,
                &prefix,
                &device_id,
                key.clone(),
                tracker.clone(),
                incoming_tx.clone(),
            )
            .map_err(setup)?;
            Some(link)
        }
        None => None,
    };
    let telemetry = config.telemetry.enabled.then(|| Hub::new(config.telemetry.clone()));
    let flusher = match &telemetry {
        Some(hub) => {
            let dir = f.data_dir.join("telemetry-spool");
            let spool = Spool::open(&dir, config.telemetry.spool_max_bytes).map_err(|e| setup(e.to_string()))?;
            if mqtt.is_none() {
                tracing::warn!("No MQTT broker: telemetry is spooled (bounded) but not sent.");
            }
            let task = publish::Task {
                hub: hub.clone(),
                spool,
                device: device_id.clone(),
                key: key.clone(),
                link: mqtt.clone(),
                tracker,
                acked,
                interval: Duration::from_secs(config.telemetry.flush_interval_secs),
            };
            Some(task.spawn())
        }
        None => None,
    };
    let (status_tx, status_rx) = tokio::sync::watch::channel(None);
    let trust_version = Arc::new(std::sync::atomic::AtomicU64::new(trust.version()));
    let background = [
        tokio::spawn(tasks::poll(
            link.clone(),
            mqtt.clone(),
            Duration::from_secs(f.poll_interval_secs),
            trust_version.clone(),
            incoming_tx,
        )),
        tokio::spawn(tasks::report(link.clone(), mqtt.clone(), status_rx)),
    ];
    let mut agent = Agent {
        config: config.clone(),
        layout,
        state_file,
        state,
        trust,
        link,
        http: http.repository.clone(),
        started: Instant::now(),
        last_verified: None,
        waiting_for_trust: None,
        telemetry,
        job: None,
        watching: None,
        status: status_tx,
        trust_version,
    };
    agent.restore().await;
    agent.restore_shadow().await;
    tracing::info!(device = %device_id, trust_version = agent.trust.version(), "Fleet mode running.");
    crate::systemd::ready(&match &agent.state.active {
        Some(slot) => format!("serving {} version {}", slot.model.name, slot.model.version),
        None => "waiting for a deployment".to_owned(),
    });
    if let Some(doc) = agent.state.pending.clone() {
        tracing::info!(model = %doc.model.name, version = doc.model.version, "Resuming an interrupted activation.");
        agent.begin(doc, Purpose::Activate);
    }
    agent.report();

    let mut report = tokio::time::interval(Duration::from_secs(config.fleet.status_interval_secs));
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = tokio::time::interval(Duration::from_secs(config.fleet.poll_interval_secs));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(message) = incoming.recv() => match message {
                Incoming::Desired(env) => agent.on_envelope(env),
                Incoming::Trust(chain) => agent.on_trust(&chain),
            },
            result = job_finished(&mut agent.job) => agent.on_prepared(result).await,
            () = watch_over(&agent.watching, config.fleet.watch_window_secs) => agent.end_watch(false).await,
            _ = report.tick() => agent.report(),
            _ = retry.tick() => agent.retry_pending(),
        }
    }
    crate::systemd::stopping();
    if let Some(job) = agent.job.take() {
        job.handle.abort();
    }
    background.iter().for_each(JoinHandle::abort);
    http.drain(Duration::from_secs(config.server.shutdown_grace_secs)).await?;
    if let Some(flusher) = flusher {
        // What was recorded since the last batch goes to the spool, to be sent after restart.
        flusher.flush(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// The outcome of the running activation task; pending while there is none.
async fn job_finished(job: &mut Option<Job>) -> Result<Arc<ServedModel>, ActivationError> {
    match job {
        Some(job) => (&mut job.handle)
            .await
            .unwrap_or_else(|e| Err(ActivationError::Load(format!("the activation task failed: {e}")))),
        None => std::future::pending().await,
    }
}

/// Resolves when the watch window of the watched version ends; pending while none is watched.
async fn watch_over(watching: &Option<Watching>, window_secs: u64) {
    match watching {
        Some(w) => tokio::time::sleep_until((w.swapped_at + Duration::from_secs(window_secs)).into()).await,
        None => std::future::pending().await,
    }
}

async fn enroll(
    config: &AgentConfig,
    controller: &str,
    tls: &edgefleet_shared::tls::ClientConfig,
    timeouts: Timeouts,
    key: &FileKey,
    state: &mut DeviceState,
    state_file: &StateFile,
) -> Result<String, FleetError> {
    let f = &config.fleet;
    let token = match (&f.enroll_token, &f.enroll_token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| FleetError::Setup(format!("cannot read enrollment token {}: {e}", path.display())))?,
        (None, None) => return Err(FleetError::Setup("not enrolled yet and no enrollment token given".into())),
    };
    // The controller may still be starting (boot order): retry with backoff rather than fail.
    let mut delay = Duration::from_millis(250);
    let answer = loop {
        match link::enroll(controller, tls, timeouts, key, &token, &f.labels).await {
            Ok(a) => break a,
            Err(link::LinkError::Refused { status, message }) => {
                return Err(FleetError::Setup(format!("enrollment refused ({status}): {message}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Enrollment failed; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    state.device_id = Some(answer.device_id.clone());
    state.mqtt_url = answer.mqtt_url.clone();
    state.topic_prefix = Some(answer.topic_prefix.clone());
    state_file.save(state).map_err(|e| FleetError::Setup(e.to_string()))?;
    if let Some(path) = &f.enroll_token_file {
        // Consumed: a leaked image must not carry a usable token.
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "Cannot delete the used enrollment token file.");
        }
    }
    tracing::info!(device = %answer.device_id, "Enrolled.");
    Ok(answer.device_id)
}

/// Identifies an envelope by everything in it: document and signature.
fn envelope_digest(envelope: &SignedEnvelope) -> String {
    let sig = &envelope.signature;
    sha256_hex(format!("{}\n{}\n{}", envelope.document, sig.key_id, sig.signature).as_bytes())
}

impl Agent {
    /// After a restart, serves the active version again (verified on disk), else the previous.
    async fn restore(&mut self) {
        for slot in [self.state.active.clone(), self.state.previous.clone()].into_iter().flatten() {
            let Some(dir) = activate::existing_slot(&self.layout, &slot).await else {
                tracing::warn!(model = %slot.model.name, version = slot.model.version, "Slot incomplete or corrupt; not serving it.");
                continue;
            };
            match activate::load(&dir, &slot.model, &self.config.fleet, &self.config.backend).await {
                Ok(model) => {
                    activate::attach_telemetry(self.telemetry.as_deref(), &dir, &model, &slot.model);
                    self.http.install(model);
                    tracing::info!(model = %slot.model.name, version = slot.model.version, "Restored the serving version.");
                    return;
                }
                Err(e) => tracing::error!(error = %e, "Cannot restore a slot."),
            }
        }
    }

    fn save(&self) {
        if let Err(e) = self.state_file.save(&self.state) {
            tracing::error!(error = %e, "Cannot persist the device state.");
        }
    }

    /// Handles a document from either transport, once per distinct verified envelope.
    fn on_envelope(&mut self, envelope: SignedEnvelope) {
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
    fn handle(&mut self, envelope: &SignedEnvelope) -> bool {
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
            now(),
        );
        let doc = match verified {
            Ok(doc) => doc,
            Err(e) => {
                metrics::counter!("edgefleet_agent_verifications_total", "result" => e.class()).increment(1);
                if e.class() == "unknown_key" {
                    self.waiting_for_trust = Some(envelope.clone());
                }
                let seq = serde_json::from_slice::<DeploymentDocument>(&bytes).ok().map(|d| d.sequence);
                self.refuse(e.class(), e.to_string(), seq);
                return false;
            }
        };
        metrics::counter!("edgefleet_agent_verifications_total", "result" => "ok").increment(1);
        self.state.last_sequence = Some(doc.sequence);
        self.state.last_document_sha256 = Some(digest);
        self.stop_shadow(&doc.model.name);
        if let Some(spec) = doc.shadow {
            self.state.pending = None;
            self.save();
            self.begin(doc, Purpose::Shadow(spec.share));
            return true;
        }
        if let Some(w) = self.watching.as_mut().filter(|w| w.doc.model == doc.model) {
            // A re-issue of the version being watched: its window goes on under the new number.
            w.doc = doc;
            return true;
        }
        if let Some(job) = self.job.as_mut().filter(|j| j.doc.model == doc.model && j.doc.shadow == doc.shadow) {
            // A re-issue of the version being prepared: the preparation goes on.
            job.doc = doc.clone();
            self.state.pending = doc.shadow.is_none().then_some(doc);
            self.save();
            return true;
        }
        if self.state.active.as_ref().is_some_and(|a| a.model == doc.model) && self.watching.is_none() {
            // A refresh or a re-issue of what already serves: nothing to activate.
            if let Some(job) = self.job.take() {
                tracing::info!(model = %job.doc.model.name, version = job.doc.model.version, "Activation cancelled: the active version is wanted again.");
                job.handle.abort();
            }
            if let Some(active) = &mut self.state.active {
                active.sequence = doc.sequence;
            }
            self.state.pending = None;
            self.save();
            return true;
        }
        self.state.pending = Some(doc.clone());
        self.save();
        self.begin(doc, Purpose::Activate);
        true
    }

    fn refuse(&mut self, class: &str, message: String, sequence: Option<u64>) {
        let same = self.state.last_refusal.as_ref().is_some_and(|r| r.class == class && r.sequence == sequence);
        if !same {
            tracing::warn!(class, %message, "Deployment document refused.");
        }
        self.state.last_refusal = Some(Refusal { class: class.into(), message, sequence, at: now() });
        self.save();
    }

    /// Applies the fleet's trust rotations; a document refused for an unknown key is tried again.
    fn on_trust(&mut self, chain: &TrustChain) {
        match self.trust.apply(chain) {
            Ok(0) => {}
            Ok(applied) => {
                metrics::counter!("edgefleet_agent_trust_rotations_total", "result" => "ok").increment(applied as u64);
                self.trust_version.store(self.trust.version(), std::sync::atomic::Ordering::Relaxed);
                if let Some(env) = self.waiting_for_trust.take() {
                    self.on_envelope(env);
                }
                self.report();
            }
            Err(e) => {
                metrics::counter!("edgefleet_agent_trust_rotations_total", "result" => "refused").increment(1);
                let class = match &e {
                    trust::ApplyError::Refused(v) => v.class(),
                    trust::ApplyError::Persist(_) => "storage",
                };
                self.state.last_refusal = Some(Refusal {
                    class: format!("trust_{class}"),
                    message: e.to_string(),
                    sequence: None,
                    at: now(),
                });
                tracing::warn!(error = %e, "Trust rotation refused.");
                self.save();
                self.report();
            }
        }
    }

    /// Starts preparing `doc`'s version. A watched version is judged now on what it has seen
    /// (a newer document ends its window) and a running activation is cancelled.
    fn begin(&mut self, doc: DeploymentDocument, purpose: Purpose) {
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
        };
        let (task_doc, shadow) = (doc.clone(), matches!(purpose, Purpose::Shadow(_)));
        let handle = tokio::spawn(async move { ctx.prepare(&task_doc, shadow).await });
        self.job = Some(Job { doc, purpose, started: Instant::now(), handle });
    }

    /// A download that failed (controller or network down) is retried every poll interval.
    fn retry_pending(&mut self) {
        if self.job.is_none()
            && self.watching.is_none()
            && let Some(doc) = self.state.pending.clone()
        {
            self.begin(doc, Purpose::Activate);
        }
    }

    /// The activation task finished: swap the version in and watch it, or report the failure.
    async fn on_prepared(&mut self, result: Result<Arc<ServedModel>, ActivationError>) {
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

    async fn end_watch(&mut self, superseded: bool) {
        let name = self.finish_watch(superseded);
        if let Some(name) = name {
            self.collect_garbage(&name).await;
        }
        self.report();
    }

    /// Judges the watched version now: commit it, or roll back to the one before. Returns the
    /// model name whose old slots may be collected.
    fn finish_watch(&mut self, superseded: bool) -> Option<String> {
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

    fn record(&mut self, doc: &DeploymentDocument, started: Instant, error: Option<String>) {
        let ok = error.is_none();
        metrics::counter!("edgefleet_agent_activations_total", "result" => if ok { "ok" } else { "failed" })
            .increment(1);
        self.state.last_activation = Some(ActivationReport {
            model: doc.model.clone(),
            sequence: doc.sequence,
            ok,
            error,
            at: now(),
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }

    fn record_failure(&mut self, doc: &DeploymentDocument, started: Instant, e: &ActivationError) {
        if let Some(class) = e.refusal_class() {
            self.state.last_refusal =
                Some(Refusal { class: class.into(), message: e.to_string(), sequence: Some(doc.sequence), at: now() });
        }
        metrics::counter!("edgefleet_agent_rollbacks_total").increment(1);
        tracing::error!(model = %doc.model.name, version = doc.model.version, error = %e, "Activation failed; the previous version keeps serving.");
        self.record(doc, started, Some(e.to_string()));
    }

    async fn collect_garbage(&self, name: &str) {
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
    }

    fn status(&self) -> DeviceStatus {
        let (mut ok, mut failed, mut latency, mut active, mut classes) = (0, 0, None, (0, 0), Vec::new());
        for (name, entry) in self.http.list() {
            if let crate::repository::ModelState::Ready(m) = entry {
                let (o, f) = m.outcomes.snapshot();
                ok += o;
                failed += f;
                if self
                    .state
                    .active
                    .as_ref()
                    .is_some_and(|a| a.model.name == name && m.version == a.model.version.to_string())
                {
                    latency = m.outcomes.latency_quantiles_ms();
                    active = (o + f, f);
                    classes = m.outcomes.class_counts();
                }
            }
        }
        DeviceStatus {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            active: self.state.active.as_ref().map(|s| s.model.clone()),
            previous: self.state.previous.as_ref().map(|s| s.model.clone()),
            last_sequence: self.state.last_sequence,
            last_refusal: self.state.last_refusal.clone(),
            last_activation: self.state.last_activation.clone(),
            requests: ok + failed,
            error_rate: if ok + failed == 0 { 0.0 } else { failed as f64 / (ok + failed) as f64 },
            latency_p50_ms: latency.map(|l| l.0),
            latency_p99_ms: latency.map(|l| l.1),
            active_requests: active.0,
            active_errors: active.1,
            shadow: self.state.shadow.as_ref().and_then(|s| self.http.shadow(&s.slot.model.name)).map(|s| s.report()),
            output_classes: classes,
            trust_version: Some(self.trust.version()),
        }
    }

    /// Hands the current status to the reporter task (it sends the latest, never waits here).
    fn report(&self) {
        self.status.send_replace(Some(self.status()));
    }
}

/// Where the device keeps its broker certificate.
fn broker_certificate_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("mqtt-client.crt")
}
