//! Fleet mode (`edgefleet-agent run`): enroll once, follow the controller's signed desired
//! state, activate new versions safely, report status — while serving the same HTTP API.
//!
//! The agent is the HTTP server plus one sync task. The sync task asks the controller for the
//! device's document (every `poll_interval_secs`), verifies it with the shared verifier
//! against the provisioned trust file and the last accepted sequence, and activates what it
//! names. State (active, previous, last sequence) is persisted atomically after every step.

pub mod activate;
pub mod link;
pub mod mqtt;
mod shadowing;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_shared::deployment::DeploymentDocument;
use edgefleet_shared::fleet::{ActivationReport, DeviceStatus, Refusal};
use edgefleet_shared::keys::FileKey;
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::trust::TrustStore;
use edgefleet_shared::verify::{sha256_hex, verify_deployment};

use self::activate::{ActivationError, Layout};
use self::link::Link;
use self::state::{DeviceState, Slot, StateFile};
use crate::config::AgentConfig;
use crate::repository::ServedModel;
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

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

struct Agent {
    config: AgentConfig,
    layout: Layout,
    state_file: StateFile,
    state: DeviceState,
    trust: TrustStore,
    link: Link,
    http: Arc<crate::repository::Repository>,
    started: Instant,
    /// Digest of the last envelope handled, so an unchanged document is not re-verified.
    last_envelope: Option<String>,
    /// The broker link, when there is a broker.
    mqtt: Option<mqtt::MqttLink>,
    /// Telemetry recorders, when telemetry is on.
    telemetry: Option<Arc<Hub>>,
}

/// While MQTT is up, the HTTP poll runs only every this many ticks, as a safety net.
const POLL_DIVISOR_WHILE_CONNECTED: u64 = 10;

/// Runs fleet mode until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), FleetError> {
    let f = &config.fleet;
    let setup = |m: String| FleetError::Setup(m);
    let trust_path = f.trust_file.clone().ok_or_else(|| setup("no trust file configured".into()))?;
    let trust_bytes = std::fs::read(&trust_path)
        .map_err(|e| setup(format!("cannot read trust file {}: {e}", trust_path.display())))?;
    let trust =
        TrustStore::from_bytes(&trust_bytes).map_err(|e| setup(format!("trust file {}: {e}", trust_path.display())))?;
    std::fs::create_dir_all(&f.data_dir).map_err(|e| setup(format!("cannot create {}: {e}", f.data_dir.display())))?;
    let layout = Layout::new(&f.data_dir);
    let key = Arc::new(FileKey::load_or_generate(&layout.device_key()).map_err(|e| setup(e.to_string()))?);
    let state_file = StateFile::new(&f.data_dir);
    let mut state = state_file.load().map_err(|e| setup(e.to_string()))?;
    let controller = f.controller.clone().ok_or_else(|| setup("no controller configured".into()))?;
    let tls = edgefleet_shared::tls::client_config(f.ca_file.as_deref()).map_err(|e| setup(e.to_string()))?;

    let http = HttpServer::start(&config).await?;
    on_listening(http.addr);
    crate::systemd::spawn_watchdog();

    let device_id = match state.device_id.clone() {
        Some(id) => id,
        None => {
            // Ready from systemd's point of view: up, and waiting for its first model.
            crate::systemd::ready("enrolling with the controller");
            enroll(&config, &controller, &tls, &key, &mut state, &state_file).await?
        }
    };
    let link = Link::new(&controller, &tls, key.clone(), device_id.clone()).map_err(|e| setup(e.to_string()))?;
    let broker = config.fleet.mqtt.clone().or(state.mqtt_url.clone());
    let (tracker, acked) = Tracker::new();
    let (mqtt, mut desired_rx) = match &broker {
        Some(url) => {
            let prefix =
                state.topic_prefix.clone().unwrap_or_else(|| edgefleet_shared::fleet::DEFAULT_TOPIC_PREFIX.into());
            crate::config::check_broker(url, f.insecure).map_err(|e| setup(e.to_string()))?;
            let (link, rx) = mqtt::MqttLink::start(url, tls.clone(), &prefix, &device_id, key.clone(), tracker.clone())
                .map_err(setup)?;
            (Some(link), Some(rx))
        }
        None => (None, None),
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
    let mut agent = Agent {
        config: config.clone(),
        layout,
        state_file,
        state,
        trust,
        link,
        http: http.repository.clone(),
        started: Instant::now(),
        last_envelope: None,
        mqtt,
        telemetry,
    };
    agent.restore().await;
    agent.restore_shadow().await;
    tracing::info!(device = %device_id, "Fleet mode running.");
    crate::systemd::ready(&match &agent.state.active {
        Some(slot) => format!("serving {} version {}", slot.model.name, slot.model.version),
        None => "waiting for a deployment".to_owned(),
    });
    if let Some(doc) = agent.state.pending.clone() {
        tracing::info!(model = %doc.model.name, version = doc.model.version, "Resuming an interrupted activation.");
        agent.activate(doc).await;
        agent.report().await;
    }

    tokio::pin!(shutdown);
    let mut poll = tokio::time::interval(Duration::from_secs(config.fleet.poll_interval_secs));
    let mut report = tokio::time::interval(Duration::from_secs(config.fleet.status_interval_secs));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(env) = next_desired(&mut desired_rx) => {
                agent.handle_envelope(env).await;
            }
            _ = poll.tick() => {
                ticks += 1;
                if let Some(doc) = agent.state.pending.clone() {
                    // A download that failed (controller or network down) is retried each poll.
                    agent.activate(doc).await;
                    agent.report().await;
                }
                let connected = agent.mqtt.as_ref().is_some_and(mqtt::MqttLink::connected);
                if !connected || ticks.is_multiple_of(POLL_DIVISOR_WHILE_CONNECTED) {
                    agent.sync().await;
                }
            }
            _ = report.tick() => agent.report().await,
        }
    }
    crate::systemd::stopping();
    http.drain(Duration::from_secs(config.server.shutdown_grace_secs)).await?;
    if let Some(flusher) = flusher {
        // What was recorded since the last batch goes to the spool, to be sent after restart.
        flusher.flush(Duration::from_secs(5)).await;
    }
    Ok(())
}

async fn next_desired(rx: &mut Option<tokio::sync::mpsc::Receiver<SignedEnvelope>>) -> Option<SignedEnvelope> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn enroll(
    config: &AgentConfig,
    controller: &str,
    tls: &edgefleet_shared::tls::ClientConfig,
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
        match link::enroll(controller, tls, key, &token, &f.labels).await {
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
                    self.attach_telemetry(&dir, &model, &slot.model);
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

    async fn sync(&mut self) {
        let envelope = match self.link.desired().await {
            Ok(Some(env)) => env,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "Cannot fetch the desired state.");
                return;
            }
        };
        self.handle_envelope(envelope).await;
    }

    /// Handles a document from either transport, once per distinct envelope.
    async fn handle_envelope(&mut self, envelope: SignedEnvelope) {
        let digest = sha256_hex(envelope.document.as_bytes());
        if self.last_envelope.as_deref() == Some(&digest) {
            return;
        }
        self.last_envelope = Some(digest);
        self.handle(envelope).await;
        self.report().await;
    }

    async fn handle(&mut self, envelope: SignedEnvelope) {
        let Some(bytes) = envelope.document_bytes() else {
            return self.refuse("malformed", "the envelope's document is not base64".into(), None);
        };
        let digest = sha256_hex(&bytes);
        if self.state.last_document_sha256.as_deref() == Some(digest.as_str()) {
            // The document this device already accepted (its activation is done or resumed).
            return;
        }
        let device = self.state.device_id.clone().unwrap_or_default();
        let doc =
            match verify_deployment(&bytes, &envelope.signature, &self.trust, &device, self.state.last_sequence, now())
            {
                Ok(doc) => doc,
                Err(e) => {
                    metrics::counter!("edgefleet_agent_verifications_total", "result" => e.class()).increment(1);
                    let seq = serde_json::from_slice::<DeploymentDocument>(&bytes).ok().map(|d| d.sequence);
                    return self.refuse(e.class(), e.to_string(), seq);
                }
            };
        metrics::counter!("edgefleet_agent_verifications_total", "result" => "ok").increment(1);
        self.state.last_sequence = Some(doc.sequence);
        self.state.last_document_sha256 = Some(digest);
        self.stop_shadow(&doc.model.name);
        if let Some(spec) = doc.shadow {
            self.state.pending = None;
            self.save();
            return self.start_shadow(doc, spec.share).await;
        }
        if self.state.active.as_ref().is_some_and(|a| a.model == doc.model) {
            // A refresh or a re-issue of what already serves: nothing to activate.
            if let Some(active) = &mut self.state.active {
                active.sequence = doc.sequence;
            }
            self.state.pending = None;
            return self.save();
        }
        self.state.pending = Some(doc.clone());
        self.save();
        self.activate(doc).await;
    }

    fn refuse(&mut self, class: &str, message: String, sequence: Option<u64>) {
        tracing::warn!(class, %message, "Deployment document refused.");
        self.state.last_refusal = Some(Refusal { class: class.into(), message, sequence, at: now() });
        self.save();
    }

    async fn activate(&mut self, doc: DeploymentDocument) {
        let started = Instant::now();
        tracing::info!(model = %doc.model.name, version = doc.model.version, sequence = doc.sequence, "Activating.");
        let result = self.try_activate(&doc).await;
        let report = ActivationReport {
            model: doc.model.clone(),
            sequence: doc.sequence,
            ok: result.is_ok(),
            error: result.as_ref().err().map(ToString::to_string),
            at: now(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        metrics::counter!("edgefleet_agent_activations_total", "result" => if report.ok { "ok" } else { "failed" })
            .increment(1);
        let transient = matches!(result, Err(ActivationError::Download(_)));
        match result {
            Ok(previous_model) => {
                let new_slot =
                    Slot { model: doc.model.clone(), sequence: doc.sequence, artifacts: doc.artifacts.clone() };
                let old = self.state.active.replace(new_slot);
                // The version that served before becomes the rollback slot when it is the same model.
                self.state.previous = old.filter(|o| o.model.name == doc.model.name).or(self.state.previous.take());
                drop(previous_model);
                tracing::info!(model = %doc.model.name, version = doc.model.version, ms = report.duration_ms, "Activated.");
            }
            Err(e) => {
                if let Some(class) = e.refusal_class() {
                    self.state.last_refusal = Some(Refusal {
                        class: class.into(),
                        message: e.to_string(),
                        sequence: Some(doc.sequence),
                        at: now(),
                    });
                }
                metrics::counter!("edgefleet_agent_rollbacks_total").increment(1);
                tracing::error!(model = %doc.model.name, version = doc.model.version, error = %e, "Activation failed; the previous version keeps serving.");
            }
        }
        self.state.last_activation = Some(report);
        // A failed download is transient: the document stays pending and is retried.
        if !transient {
            self.state.pending = None;
        }
        self.save();
        let shadow = self.state.shadow.as_ref().map(|s| &s.slot);
        let keep: Vec<u64> = [self.state.active.as_ref(), self.state.previous.as_ref(), shadow]
            .into_iter()
            .flatten()
            .filter(|s| s.model.name == doc.model.name)
            .map(|s| s.model.version)
            .collect();
        activate::collect_garbage(&self.layout, &doc.model.name, &keep).await;
    }

    async fn try_activate(&self, doc: &DeploymentDocument) -> Result<Option<Arc<ServedModel>>, ActivationError> {
        let slot = activate::fetch(&self.link, &self.layout, doc).await?;
        let model = activate::load(&slot, &doc.model, &self.config.fleet, &self.config.backend).await?;
        activate::self_test(&slot, &model, &doc.model).await?;
        self.attach_telemetry(&slot, &model, &doc.model);
        activate::swap_and_watch(&self.http, model, &self.config.fleet).await
    }

    /// Gives a version about to serve its telemetry recorder, binned over its bundle's baseline.
    fn attach_telemetry(
        &self,
        slot: &std::path::Path,
        model: &ServedModel,
        doc_model: &edgefleet_shared::deployment::ModelRef,
    ) {
        let Some(hub) = &self.telemetry else { return };
        let baseline = std::fs::read(slot.join(edgefleet_shared::bundle::BUNDLE_FILE))
            .ok()
            .and_then(|b| edgefleet_shared::bundle::BundleManifest::from_bytes(&b).ok())
            .and_then(|m| m.baseline);
        let _ = model.telemetry.set(hub.recorder(&doc_model.name, doc_model.version, baseline.as_ref()));
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
        }
    }

    /// Reports status over MQTT when connected, else over HTTP.
    async fn report(&self) {
        let status = self.status();
        if self.mqtt.as_ref().is_some_and(|m| m.publish_status(&status)) {
            return;
        }
        if let Err(e) = self.link.report(&status).await {
            tracing::debug!(error = %e, "Cannot report status.");
        }
    }
}
