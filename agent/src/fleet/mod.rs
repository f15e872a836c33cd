//! Fleet mode (`edgefleet-agent run`): enroll once, follow the controller's signed desired
//! state, activate new versions safely, report status — while serving the same HTTP API.
//!
//! The agent is the HTTP server plus one control loop that never waits on the network. Around it
//! run small tasks that do the waiting: the MQTT link and an HTTP poller deliver documents and
//! trust rotations on a channel, a reporter sends the latest status, and each activation
//! (download, verify, load, self-test) runs as its own task. The loop verifies what arrives
//! (the shared verifier, the trust set, the last accepted sequence), starts and supersedes
//! activations, swaps versions in, judges their watch window when it ends ([`watch`]), and
//! persists its state atomically after every step.
//!
//! A document names every model the device serves. Each model has its own lane (activation
//! task, watch window) and slots, so one model's activation, rollback or failure never touches
//! another's serving; a model the document no longer names is removed. A newer version of a
//! model cancels that model's activation in progress and ends its watch window at once; SIGTERM
//! is handled within the grace period whatever the controller does.

pub mod acks;
pub mod activate;
pub mod delta;
mod documents;
mod lifecycle;
pub mod link;
pub mod mqtt;
mod next;
mod shadowing;
pub mod state;
mod tasks;
pub mod trust;
pub mod watch;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_shared::clock::SharedClock;
use edgefleet_shared::deployment::ModelDeployment;
use edgefleet_shared::fleet::{DeviceStatus, ModelStatus};
use edgefleet_shared::keys::FileKey;
use edgefleet_shared::signature::SignedEnvelope;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::acks::Tracker;
use self::activate::{ActivationError, Layout};
use self::link::{Incoming, Link, Timeouts};
use self::state::{DeviceState, StateFile};
use self::trust::Trust;
use crate::config::AgentConfig;
use crate::repository::{Repository, ServedModel};
use crate::serve::{HttpServer, ServeError};
use crate::shadow::Shadows;
use crate::telemetry::Hub;
use crate::telemetry::publish;
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

/// What an activation task does with the version it prepared.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// Serve it (swap, then watch).
    Activate,
    /// Run it in shadow beside the active version, mirroring this share of requests.
    Shadow(f64),
}

/// A running activation task: fetch, verify, load and self-test one model's version.
struct Job {
    /// Tells this task's result from that of one it replaced.
    id: u64,
    doc: ModelDeployment,
    purpose: Purpose,
    started: Instant,
    handle: JoinHandle<()>,
}

/// What an activation task sends back when it is done.
struct Prepared {
    model: String,
    id: u64,
    result: Result<Arc<ServedModel>, ActivationError>,
}

/// One model's work in progress: its activation task and its version being watched. Each model
/// has its own, so one model's activation, watch or rollback never waits on another's.
#[derive(Default)]
struct Lane {
    job: Option<Job>,
    watching: Option<Watching>,
}

/// A version swapped in and being watched.
struct Watching {
    doc: ModelDeployment,
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
    shadows: Arc<Shadows>,
    started: Instant,
    /// Digest of the last envelope that verified (document and signature): it is not handled
    /// again. Only verified envelopes are remembered, so a corrupted copy cannot shadow the
    /// genuine one.
    last_verified: Option<String>,
    /// The last envelope refused for an unknown key: handled again after a trust rotation.
    waiting_for_trust: Option<SignedEnvelope>,
    /// Telemetry recorders, when telemetry is on.
    telemetry: Option<Arc<Hub>>,
    /// Each fleet-managed model's activation and watch.
    lanes: BTreeMap<String, Lane>,
    /// Where activation tasks send their results.
    prepared: mpsc::UnboundedSender<Prepared>,
    next_job: u64,
    status: tokio::sync::watch::Sender<Option<DeviceStatus>>,
    trust_version: Arc<std::sync::atomic::AtomicU64>,
    /// Unix time for document expiry and reports.
    clock: SharedClock,
    /// Engines this agent can run models on, reported so the controller deploys only what runs.
    engines: Vec<String>,
    /// What deltas did (reported, which also tells the controller this agent applies them).
    deltas: Arc<delta::DeltaStats>,
}

/// Runs fleet mode until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(crate::serve::Listening),
) -> Result<(), FleetError> {
    // The signal handlers first: a SIGTERM right after "listening" must stop us gracefully.
    let Some(shutdown) = edgefleet_service::shutdown::armed(shutdown).await else { return Ok(()) };
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
    let tls = edgefleet_service::tls::client_config(f.ca_file.as_deref()).map_err(|e| setup(e.to_string()))?;
    let timeouts = Timeouts::from_config(f);

    let http = HttpServer::start(&config).await?;
    on_listening(http.listening());
    if !config.models.is_empty() {
        // Local models share the repository with the fleet's; the fleet never replaces them.
        crate::serve::load_all(&http.repository, &config).await?;
    }
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
    let (prepared_tx, mut prepared) = mpsc::unbounded_channel();
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
        shadows: http.shadows.clone(),
        started: Instant::now(),
        last_verified: None,
        waiting_for_trust: None,
        telemetry,
        lanes: BTreeMap::new(),
        prepared: prepared_tx,
        next_job: 0,
        status: status_tx,
        trust_version,
        clock: edgefleet_shared::clock::system(),
        engines: edgefleet_engine::engines_available(&config.backend).into_iter().map(str::to_owned).collect(),
        deltas: Arc::default(),
    };
    agent.restore().await;
    agent.restore_shadows().await;
    tracing::info!(device = %device_id, trust_version = agent.trust.version(), "Fleet mode running.");
    crate::systemd::ready(&agent.serving_summary());
    for doc in agent.state.models.values().filter_map(|m| m.pending.clone()).collect::<Vec<_>>() {
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
            Some(done) = prepared.recv() => agent.on_prepared(done).await,
            () = watch_over(&agent.lanes, config.fleet.watch_window_secs) => agent.end_due_watches().await,
            _ = report.tick() => agent.report(),
            _ = retry.tick() => agent.retry_pending(),
        }
    }
    crate::systemd::stopping();
    for job in agent.lanes.values_mut().filter_map(|lane| lane.job.take()) {
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

/// Resolves when the first watch window of a watched version ends; pending while none is.
async fn watch_over(lanes: &BTreeMap<String, Lane>, window_secs: u64) {
    match lanes.values().filter_map(|lane| lane.watching.as_ref()).map(|w| w.swapped_at).min() {
        Some(first) => tokio::time::sleep_until((first + Duration::from_secs(window_secs)).into()).await,
        None => std::future::pending().await,
    }
}

async fn enroll(
    config: &AgentConfig,
    controller: &str,
    tls: &edgefleet_service::tls::ClientConfig,
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
    let labels = enrollment_labels(f)?;
    // The controller may still be starting (boot order): retry with backoff rather than fail.
    let mut delay = Duration::from_millis(250);
    let answer = loop {
        match link::enroll(controller, tls, timeouts, key, &token, &labels).await {
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

/// `fleet.labels`, with the labels file's lines over them when the file exists.
fn enrollment_labels(f: &crate::config::FleetConfig) -> Result<std::collections::BTreeMap<String, String>, FleetError> {
    let mut labels = f.labels.clone();
    let Some(path) = &f.labels_file else { return Ok(labels) };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "No labels file; enrolling with the configured labels.");
            return Ok(labels);
        }
        Err(e) => return Err(FleetError::Setup(format!("cannot read labels file {}: {e}", path.display()))),
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = crate::cli::parse_label(line)
            .map_err(|e| FleetError::Setup(format!("labels file {} line {}: {e}", path.display(), n + 1)))?;
        labels.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(labels)
}

impl Agent {
    /// After a restart, serves each model's active version again (verified on disk), else its
    /// previous one.
    async fn restore(&mut self) {
        for slots in self.state.models.values().cloned().collect::<Vec<_>>() {
            self.restore_model(&slots).await;
        }
    }

    async fn restore_model(&mut self, slots: &state::ModelSlots) {
        for slot in [slots.active.clone(), slots.previous.clone()].into_iter().flatten() {
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

    fn status(&self) -> DeviceStatus {
        let (mut ok, mut failed) = (0, 0);
        for (_, entry) in self.http.list() {
            if let crate::repository::ModelState::Ready(m) = entry {
                let (o, f) = m.outcomes.snapshot();
                ok += o;
                failed += f;
            }
        }
        let models: Vec<ModelStatus> =
            self.state.models.iter().map(|(name, slots)| self.model_status(name, slots)).collect();
        let first = models.first().cloned().unwrap_or_default();
        DeviceStatus {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            active: first.active,
            previous: first.previous,
            last_sequence: self.state.last_sequence,
            last_refusal: self.state.last_refusal.clone(),
            last_activation: self.state.last_activation.clone(),
            requests: ok + failed,
            error_rate: if ok + failed == 0 { 0.0 } else { failed as f64 / (ok + failed) as f64 },
            latency_p50_ms: first.latency_p50_ms,
            latency_p99_ms: first.latency_p99_ms,
            active_requests: first.active_requests,
            active_errors: first.active_errors,
            shadow: first.shadow,
            output_classes: first.output_classes,
            trust_version: Some(self.trust.version()),
            engines: self.engines.clone(),
            deltas: Some(self.deltas.report()),
            models,
        }
    }

    /// One model's slots and what its serving version has done since it was activated.
    fn model_status(&self, name: &str, slots: &state::ModelSlots) -> ModelStatus {
        let active = slots.active.as_ref().map(|s| s.model.clone());
        let serving = active.as_ref().and_then(|a| match self.http.get(name) {
            Some(crate::repository::ModelState::Ready(m)) if m.version == a.version.to_string() => Some(m),
            _ => None,
        });
        let (o, f) = serving.as_ref().map_or((0, 0), |m| m.outcomes.snapshot());
        let latency = serving.as_ref().and_then(|m| m.outcomes.latency_quantiles_ms());
        ModelStatus {
            name: name.to_owned(),
            active,
            previous: slots.previous.as_ref().map(|s| s.model.clone()),
            last_activation: slots.last_activation.clone(),
            active_requests: o + f,
            active_errors: f,
            latency_p50_ms: latency.map(|l| l.0),
            latency_p99_ms: latency.map(|l| l.1),
            output_classes: serving.map(|m| m.outcomes.class_counts()).unwrap_or_default(),
            shadow: slots.shadow.as_ref().and_then(|_| self.shadows.get(name)).map(|s| s.report()),
        }
    }

    /// What the device serves, for systemd's status line.
    fn serving_summary(&self) -> String {
        let serving: Vec<String> = self
            .state
            .models
            .values()
            .filter_map(|m| m.active.as_ref())
            .map(|s| format!("{} version {}", s.model.name, s.model.version))
            .collect();
        if serving.is_empty() {
            "waiting for a deployment".to_owned()
        } else {
            format!("serving {}", serving.join(", "))
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
