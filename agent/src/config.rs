//! Agent configuration: a typed TOML file whose defaults are the shipped `config/agent.toml`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use edgefleet_shared::names::ModelName;
use serde::{Deserialize, Serialize};

use crate::engine::BackendConfig;
use crate::worker::{BatchingConfig, INLINE_BELOW_US, PoolConfig};

/// The default configuration file, with every option documented.
pub const DEFAULT_CONFIG: &str = include_str!("../config/agent.toml");

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Everything the agent reads at start.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Inference engine settings.
    pub backend: BackendConfig,
    /// Models to serve in standalone mode.
    pub models: Vec<ModelConfig>,
    /// Fleet mode (`edgefleet-agent run`).
    pub fleet: FleetConfig,
    /// Telemetry in fleet mode: sketches, samples, spool.
    pub telemetry: TelemetryConfig,
}

/// Fleet mode: where the controller is, how this device proves itself, how it activates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Controller base URL, e.g. `https://controller.example:7700`.
    pub controller: Option<String>,
    /// Enrollment token (first start only).
    pub enroll_token: Option<String>,
    /// File holding the enrollment token; deleted after a successful enrollment.
    pub enroll_token_file: Option<PathBuf>,
    /// Trust file with the controller keys this device accepts (provisioned out of band).
    pub trust_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for the controller's HTTPS and an `mqtts://` broker; the
    /// system's roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Allow plain HTTP and MQTT to non-loopback hosts (logged as a warning).
    pub insecure: bool,
    /// State directory: device key, state file, model slots, download staging.
    pub data_dir: PathBuf,
    /// Labels reported at enrollment.
    pub labels: std::collections::BTreeMap<String, String>,
    /// File of `key=value` lines (`#` comments) with more labels for enrollment, over `labels`;
    /// read only when present (the first-boot pickup writes it from the boot partition).
    pub labels_file: Option<PathBuf>,
    /// MQTT broker URL overriding the one the controller hands out.
    pub mqtt: Option<String>,
    /// How often to ask the controller for the desired state over HTTP.
    pub poll_interval_secs: u64,
    /// How often to report status when nothing happens.
    pub status_interval_secs: u64,
    /// Total deadline of one control request to the controller (desired state, status, trust).
    pub request_timeout_secs: u64,
    /// Longest silence on a connection to the controller (downloads included) before it is
    /// dropped; an interrupted download resumes where it stopped.
    pub idle_timeout_secs: u64,
    /// After a swap, how long to watch the new version before committing to it.
    pub watch_window_secs: u64,
    /// Error rate during the watch window above which the agent rolls back.
    pub max_error_rate: f64,
    /// Requests needed in the watch window before the error rate is judged.
    pub min_watch_requests: u64,
    /// Worker threads per model.
    pub workers: usize,
    /// Queue capacity per model.
    pub queue_capacity: usize,
    /// A model whose warm-up runs take at most this many microseconds runs on the request's own
    /// thread, without the hand-off to a worker thread; 0 never does.
    pub inline_below_us: u64,
    /// Most bytes of model files (uncompressed, every model of the desired state together) the
    /// device takes; a desired state needing more is refused (`over_budget`). Unlimited when absent.
    pub max_models_bytes: Option<u64>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            controller: None,
            enroll_token: None,
            enroll_token_file: None,
            trust_file: None,
            ca_file: None,
            insecure: false,
            data_dir: PathBuf::from("/var/lib/edgefleet"),
            labels: Default::default(),
            labels_file: None,
            mqtt: None,
            poll_interval_secs: 30,
            status_interval_secs: 30,
            request_timeout_secs: 30,
            idle_timeout_secs: 30,
            watch_window_secs: 30,
            max_error_rate: 0.05,
            min_watch_requests: 20,
            workers: default_workers(),
            queue_capacity: default_queue_capacity(),
            inline_below_us: INLINE_BELOW_US,
            max_models_bytes: None,
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address of the KServe v2 API.
    pub listen: SocketAddr,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest an inference request waits for its answer (queue and engine) before it gets
    /// 504; a request still queued then is never run.
    pub request_timeout_ms: u64,
    /// Time in-flight requests get to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// Threads of the HTTP runtime.
    pub http_threads: usize,
    /// Listen address of the KServe v2 gRPC API (`"off"` in the file: no gRPC).
    #[serde(with = "grpc_listen")]
    pub grpc_listen: Option<SocketAddr>,
}

/// `grpc_listen` in the file: an address, or `"off"`.
mod grpc_listen {
    use std::net::SocketAddr;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) const OFF: &str = "off";

    pub(super) fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(OFF),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text == OFF {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "grpc_listen: {e} in {text:?} (an address such as 127.0.0.1:8501, or \"off\")"
            ))
        })
    }
}

/// Whether two listen addresses would take the same port (0 picks a free one: never).
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `--grpc-listen`: an address, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcListen(pub Option<SocketAddr>);

/// Parses `--grpc-listen`: an address, or `off`.
pub fn parse_grpc_listen(text: &str) -> Result<GrpcListen, String> {
    if text == grpc_listen::OFF {
        return Ok(GrpcListen(None));
    }
    text.parse()
        .map(|a| GrpcListen(Some(a)))
        .map_err(|e| format!("{e}: expected an address such as 127.0.0.1:8501, or off"))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8500)),
            max_body_bytes: 32 * 1024 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_secs: 10,
            http_threads: 2,
            grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8501))),
        }
    }
}

/// One model to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name in URLs.
    pub name: String,
    /// ONNX file.
    pub path: PathBuf,
    /// Version string.
    #[serde(default = "default_version")]
    pub version: String,
    /// Worker threads.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Queue capacity.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Dynamic batching; off when absent.
    #[serde(default)]
    pub batching: Option<BatchingConfig>,
    /// Runs on the request's own thread when its warm-up runs take at most this many
    /// microseconds (and batching is off); 0 never does.
    #[serde(default = "default_inline_below_us")]
    pub inline_below_us: u64,
}

fn default_version() -> String {
    "1".into()
}

fn default_workers() -> usize {
    PoolConfig::default().workers
}

fn default_queue_capacity() -> usize {
    PoolConfig::default().queue_capacity
}

fn default_inline_below_us() -> u64 {
    INLINE_BELOW_US
}

impl ModelConfig {
    /// A model with default settings.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        ModelConfig {
            name: name.into(),
            path: path.into(),
            version: default_version(),
            workers: default_workers(),
            queue_capacity: default_queue_capacity(),
            batching: None,
            inline_below_us: INLINE_BELOW_US,
        }
    }

    /// What the repository needs to load it.
    pub fn source(&self) -> ModelSource {
        ModelSource {
            name: self.name.clone(),
            version: self.version.clone(),
            path: self.path.clone(),
            pool: PoolConfig {
                workers: self.workers,
                queue_capacity: self.queue_capacity,
                batching: self.batching,
                inline_below_us: self.inline_below_us,
            },
        }
    }
}

impl AgentConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::from_toml(&text, path)
    }

    /// Parses TOML text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    /// Checks what fleet mode needs on top of [`AgentConfig::validate`].
    pub fn validate_fleet(&self) -> Result<(), ConfigError> {
        let f = &self.fleet;
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if f.controller.is_none() {
            return invalid("fleet.controller (--controller) is required in fleet mode");
        }
        if f.trust_file.is_none() {
            return invalid("fleet.trust_file (--trust) is required: the controller keys this device accepts");
        }
        if let Some(url) = &f.controller {
            let (host, tls) = edgefleet_service::tls::http_url_host(url).map_err(ConfigError::Invalid)?;
            if !tls {
                edgefleet_service::tls::check_plain(&format!("the controller URL {url}"), host, f.insecure)
                    .map_err(ConfigError::Invalid)?;
            }
        }
        if let Some(url) = &f.mqtt {
            check_broker(url, f.insecure)?;
        }
        if f.poll_interval_secs == 0 || f.status_interval_secs == 0 {
            return invalid("fleet.poll_interval_secs and status_interval_secs must be above 0");
        }
        if f.request_timeout_secs == 0 || f.idle_timeout_secs == 0 {
            return invalid("fleet.request_timeout_secs and fleet.idle_timeout_secs must be above 0");
        }
        if !(0.0..=1.0).contains(&f.max_error_rate) {
            return invalid("fleet.max_error_rate must be between 0 and 1");
        }
        if f.workers == 0 || f.queue_capacity == 0 {
            return invalid("fleet.workers and fleet.queue_capacity must be at least 1");
        }
        self.telemetry.validate().map_err(ConfigError::Invalid)
    }

    /// Checks values that the types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes must be above 0".into());
        }
        if self.server.request_timeout_ms == 0 {
            return invalid("server.request_timeout_ms must be above 0".into());
        }
        if let Some(grpc) = self.server.grpc_listen
            && same_socket(grpc, self.server.listen)
        {
            return invalid(format!(
                "server.grpc_listen ({grpc}) and server.listen ({}) would share a port: gRPC needs its own \
                 (another --grpc-listen, or off)",
                self.server.listen
            ));
        }
        if self.server.http_threads == 0 {
            return invalid("server.http_threads must be at least 1".into());
        }
        let mut seen = HashSet::new();
        for m in &self.models {
            if let Err(e) = ModelName::new(m.name.as_str()) {
                return invalid(format!("model {e}"));
            }
            if !seen.insert(&m.name) {
                return invalid(format!("model {:?} is listed twice", m.name));
            }
            if m.version.is_empty() || m.version.contains('/') {
                return invalid(format!("model {:?}: version {:?} must be non-empty without '/'", m.name, m.version));
            }
            if m.workers == 0 || m.queue_capacity == 0 {
                return invalid(format!("model {:?}: workers and queue_capacity must be at least 1", m.name));
            }
            if let Some(b) = m.batching
                && b.max_batch_size == 0
            {
                return invalid(format!("model {:?}: batching.max_batch_size must be at least 1", m.name));
            }
            if !m.path.is_file() {
                return invalid(format!("model {:?}: no such file {}", m.name, m.path.display()));
            }
        }
        Ok(())
    }
}

/// Checks a broker URL against the plain-TCP rule (loopback, TLS, or `insecure`).
pub fn check_broker(url: &str, insecure: bool) -> Result<(), ConfigError> {
    let broker = edgefleet_shared::fleet::parse_mqtt_url(url).map_err(ConfigError::Invalid)?;
    if !broker.tls {
        edgefleet_service::tls::check_plain(&format!("the broker {url}"), &broker.host, insecure)
            .map_err(ConfigError::Invalid)?;
    }
    Ok(())
}

/// What to load under one name.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// Name served under.
    pub name: String,
    /// Version string reported and matched in `/versions/{v}`.
    pub version: String,
    /// ONNX file.
    pub path: PathBuf,
    /// Worker settings.
    pub pool: PoolConfig,
}

/// `[telemetry]` in the agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Send telemetry at all.
    pub enabled: bool,
    /// How often a batch is cut.
    pub flush_interval_secs: u64,
    /// Share of rows sampled in full.
    pub sample_rate: f64,
    /// Sampled rows per minute at most.
    pub samples_per_minute: u32,
    /// Sampled rows per hour at most.
    pub samples_per_hour: u32,
    /// Top-class probability under which a row is always sampled (0: off).
    pub low_confidence: f64,
    /// Requests with more input values are never sampled.
    pub max_sample_values: usize,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// Request ids remembered for matching feedback.
    pub recent_predictions: usize,
    /// Feedback labels kept per batch.
    pub max_feedback: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            flush_interval_secs: 60,
            sample_rate: 0.01,
            samples_per_minute: 60,
            samples_per_hour: 1000,
            low_confidence: 0.5,
            max_sample_values: 4096,
            spool_max_bytes: 64 * 1024 * 1024,
            recent_predictions: 10_000,
            max_feedback: 10_000,
        }
    }
}

impl TelemetryConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_interval_secs == 0 {
            return Err("telemetry.flush_interval_secs must be above 0".into());
        }
        if !(0.0..=1.0).contains(&self.sample_rate) || !(0.0..=1.0).contains(&self.low_confidence) {
            return Err("telemetry.sample_rate and telemetry.low_confidence must be between 0 and 1".into());
        }
        if self.spool_max_bytes < 4096 {
            return Err("telemetry.spool_max_bytes must be at least 4096".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_is_the_default() {
        let parsed = AgentConfig::from_toml(DEFAULT_CONFIG, Path::new("agent.toml")).expect("default config parses");
        assert_eq!(parsed, AgentConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = AgentConfig::from_toml("[server]\nlisten_addr = \"x\"\n", Path::new("a.toml")).expect_err("typo");
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = AgentConfig::default();
        c.models.push(ModelConfig::new("a/b", "/nonexistent.onnx"));
        assert!(c.validate().expect_err("bad name").to_string().contains("a/b"));
        c.models[0].name = "ok".into();
        assert!(c.validate().expect_err("missing file").to_string().contains("no such file"));
    }

    #[test]
    fn grpc_listens_on_an_address_or_is_off() {
        let off = AgentConfig::from_toml("[server]\ngrpc_listen = \"off\"\n", Path::new("a.toml")).expect("off");
        assert_eq!(off.server.grpc_listen, None);
        let on = AgentConfig::from_toml("[server]\ngrpc_listen = \"0.0.0.0:9001\"\n", Path::new("a.toml")).expect("on");
        assert_eq!(on.server.grpc_listen, Some(SocketAddr::from(([0, 0, 0, 0], 9001))));
        let err =
            AgentConfig::from_toml("[server]\ngrpc_listen = \"nowhere\"\n", Path::new("a.toml")).expect_err("bad");
        assert!(err.to_string().contains("\"off\""), "{err}");
        assert_eq!(parse_grpc_listen("off"), Ok(GrpcListen(None)));
        assert!(parse_grpc_listen("8501").is_err());
        let mut same = AgentConfig::default();
        same.server.grpc_listen = Some(same.server.listen);
        assert!(same.validate().expect_err("same port").to_string().contains("its own"));
        // An HTTP API on every address takes the port on loopback too.
        same.server.listen = SocketAddr::from(([0, 0, 0, 0], 8501));
        same.server.grpc_listen = Some(SocketAddr::from(([127, 0, 0, 1], 8501)));
        assert!(same.validate().expect_err("overlapping").to_string().contains("share a port"));
        same.server.grpc_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        same.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        assert!(same.validate().is_ok(), "two free ports");
    }
}
