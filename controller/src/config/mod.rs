//! Controller configuration: typed TOML whose defaults are the shipped `config/controller.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod artifacts;
mod database;
pub use artifacts::{ArtifactsConfig, S3Config};
pub use database::DatabaseConfig;

/// The default configuration file, every option documented.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/controller.toml");

/// Everything the controller reads at start (the data directory comes from the command line).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// HTTP server.
    pub server: ServerConfig,
    /// Registry.
    pub registry: RegistryConfig,
    /// Fleet.
    pub fleet: FleetConfig,
    /// MQTT broker.
    pub mqtt: MqttConfig,
    /// TLS for the API and the embedded broker.
    pub tls: TlsConfig,
    /// Telemetry ingest, windows and retention.
    pub telemetry: TelemetryConfig,
    /// Retraining: the default policy and how requests are delivered.
    pub retrain: RetrainConfig,
    /// Where artifacts are stored.
    pub artifacts: ArtifactsConfig,
    /// Where registry and fleet state are stored.
    pub database: DatabaseConfig,
}

/// Telemetry settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Length of a drift window; histograms are merged per window.
    pub window_secs: u64,
    /// Batches, windows and sampled rows older than this are deleted.
    pub retention_days: u64,
    /// Sampled rows kept per model version at most (the oldest go first).
    pub max_samples_per_version: u64,
    /// The device label whose value is the device's group (devices without it: `default`).
    pub group_label: String,
    /// A window is judged (and its rows go into a snapshot) this long after it closed, so that
    /// batches still in agents' spools or in flight arrive first.
    pub settle_secs: u64,
    /// Values a feature needs in a drift report's range before its PSI counts in the verdict.
    pub drift_min_rows: u64,
    /// Sampled values a feature needs (in the range, and in the baseline's sample) before its
    /// Wasserstein distance and KS test count in the verdict.
    pub drift_min_samples: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            window_secs: 3600,
            retention_days: 30,
            max_samples_per_version: 100_000,
            group_label: "group".into(),
            settle_secs: 120,
            drift_min_rows: 100,
            drift_min_samples: 50,
        }
    }
}

/// Retraining settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainConfig {
    /// The policy of models without their own.
    pub policy: edgefleet_shared::api::telemetry::Policy,
    /// Webhook receiving each retrain request (JSON, `X-Edgefleet-Signature` HMAC-SHA256).
    pub webhook_url: Option<String>,
    /// File holding the webhook's HMAC secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// Delivery attempts (exponential backoff from 1 s) on 429, 5xx and connection errors.
    pub webhook_attempts: u32,
    /// Command run (by `sh -c`) for each request, with the snapshot in its environment.
    pub command: Option<String>,
    /// Data files of each snapshot (`csv`, `parquet`); the first one's sha256 is the
    /// snapshot's `dataset_sha256`.
    pub format: Vec<SnapshotFormat>,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        RetrainConfig {
            policy: edgefleet_shared::api::telemetry::Policy::default(),
            webhook_url: None,
            webhook_secret_file: None,
            webhook_attempts: 6,
            command: None,
            format: vec![SnapshotFormat::Csv],
        }
    }
}

/// A snapshot's data file format (`[retrain] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotFormat {
    /// `data.csv`: a header row, numbers as text, empty for missing.
    Csv,
    /// `data.parquet`: typed columns (features `float`, `predicted`/`label` `int64`, ids
    /// `string`, `at_ms` a UTC timestamp in milliseconds), nulls for missing, zstd pages.
    Parquet,
}

impl SnapshotFormat {
    /// Every format, in the order of the file names a snapshot may have.
    pub const ALL: [SnapshotFormat; 2] = [SnapshotFormat::Csv, SnapshotFormat::Parquet];

    /// The data file's name.
    pub fn file_name(self) -> &'static str {
        match self {
            SnapshotFormat::Csv => "data.csv",
            SnapshotFormat::Parquet => "data.parquet",
        }
    }
}

/// TLS settings. Plain TCP is allowed on loopback; elsewhere it needs `insecure = true`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first): with `key`, the API serves HTTPS and the embedded
    /// broker accepts only TLS.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) trusted when connecting to an external `mqtts://` broker; the
    /// system's roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Allow plain HTTP and MQTT on non-loopback addresses (logged as a warning).
    pub insecure: bool,
}

impl TlsConfig {
    /// Certificate and key, when TLS serving is configured.
    pub fn server_files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }
}

/// MQTT: the embedded broker, or an external one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// MQTT at all; without it agents poll over HTTP.
    pub enabled: bool,
    /// Where the embedded broker listens (TLS when `[tls]` has a certificate).
    pub listen: Option<SocketAddr>,
    /// An external broker (`mqtt://host:port` or `mqtts://host:port`) instead of the embedded one.
    pub url: Option<String>,
    /// The broker URL handed to agents, when they reach the embedded broker by another name.
    pub advertise_url: Option<String>,
    /// Topic prefix.
    pub topic_prefix: String,
    /// The controller's MQTT client id; its session persists on the broker, so telemetry is
    /// queued while the controller restarts. One id per controller.
    pub client_id: String,
    /// External broker: replicas take status and telemetry through the shared subscription
    /// `$share/<group>/...`, so each message reaches one of them.
    pub shared_group: Option<String>,
    /// External broker: the controller's username (with `password_file`).
    pub username: Option<String>,
    /// External broker: a file holding the controller's password.
    pub password_file: Option<PathBuf>,
    /// External broker: the controller's client certificate (PEM), for brokers that
    /// authenticate by certificate (`edgefleet-controller mosquitto-config` writes one).
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// External Mosquitto with its dynamic-security plugin (`mosquitto-config` sets it up): the
    /// controller grants each device its topics before handing out its broker certificate, and
    /// takes them away when the device is decommissioned.
    pub dynamic_security: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
            url: None,
            advertise_url: None,
            topic_prefix: edgefleet_shared::fleet::DEFAULT_TOPIC_PREFIX.into(),
            client_id: "edgefleet-controller".into(),
            shared_group: None,
            username: None,
            password_file: None,
            client_cert: None,
            client_key: None,
            dynamic_security: false,
        }
    }
}

/// Fleet settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Lifetime of a signed deployment document; documents are re-signed at half of it.
    pub document_ttl_secs: u64,
    /// A device counts as online if it was heard from within this many seconds.
    pub online_window_secs: u64,
    /// How often to look for documents to refresh.
    pub refresh_interval_secs: u64,
    /// A device that holds the previous version gets a delta instead of the full artifact when
    /// the delta is at most this share of the compressed artifact (0 turns deltas off).
    pub delta_max_share: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            document_ttl_secs: 7 * 24 * 3600,
            online_window_secs: 90,
            refresh_interval_secs: 60,
            delta_max_share: 0.5,
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest upload.
    pub max_upload_bytes: usize,
    /// Drain time on shutdown.
    pub shutdown_grace_secs: u64,
    /// This replica's name among controllers sharing one database (default: the host name);
    /// replicas on one host need their own.
    pub replica_id: Option<String>,
    /// Lifetime of the lease on background work (rollout steps, document refresh, retrain
    /// judging): another replica takes it over this long after its holder stopped renewing it.
    pub lease_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            max_upload_bytes: 1 << 30,
            shutdown_grace_secs: 10,
            replica_id: None,
            lease_secs: 15,
        }
    }
}

/// Registry settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Quantile bins per feature.
    pub baseline_bins: usize,
    /// Reservoir sample rows.
    pub baseline_sample_rows: usize,
    /// Address space the push validator (a child process) may use.
    pub validation_memory_mb: u64,
    /// How long validating one push may take.
    pub validation_timeout_secs: u64,
    /// Largest input tensor validation synthesises for a model pushed without a baseline.
    pub validation_max_tensor_bytes: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            baseline_bins: 10,
            baseline_sample_rows: 5000,
            validation_memory_mb: 4096,
            validation_timeout_secs: 300,
            validation_max_tensor_bytes: 256 << 20,
        }
    }
}

impl ControllerConfig {
    /// Reads a TOML file (see [`ControllerConfig::validate`] once flags are applied).
    pub fn from_file(path: &Path) -> Result<Self, crate::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| crate::Error::Config(format!("invalid config {}: {e}", path.display())))
    }

    /// Checks values the types do not constrain, and the plain-TCP rule (which warns when
    /// `tls.insecure` lets plain TCP through on a non-loopback address).
    pub fn validate(&self) -> Result<(), crate::Error> {
        self.validate_transport()?;
        if self.registry.baseline_bins < 2 {
            return Err(crate::Error::Config("registry.baseline_bins must be at least 2".into()));
        }
        if !(0.0..=1.0).contains(&self.fleet.delta_max_share) {
            return Err(crate::Error::Config(format!(
                "fleet.delta_max_share is {}: a share from 0 (no deltas) to 1",
                self.fleet.delta_max_share
            )));
        }
        if self.fleet.document_ttl_secs < 120 || self.fleet.refresh_interval_secs == 0 {
            return Err(crate::Error::Config(
                "fleet.document_ttl_secs must be at least 120 and refresh_interval_secs above 0".into(),
            ));
        }
        let r = &self.registry;
        if r.validation_memory_mb < 256 || r.validation_timeout_secs == 0 || r.validation_max_tensor_bytes == 0 {
            return Err(crate::Error::Config(
                "registry.validation_memory_mb must be at least 256, validation_timeout_secs and \
                 validation_max_tensor_bytes above 0"
                    .into(),
            ));
        }
        if self.server.lease_secs < 3 {
            return Err(crate::Error::Config(
                "server.lease_secs must be at least 3 (it is renewed every third)".into(),
            ));
        }
        if self.server.replica_id.as_ref().is_some_and(|r| r.is_empty() || r.len() > 128) {
            return Err(crate::Error::Config("server.replica_id must be 1 to 128 characters".into()));
        }
        if self.server.max_upload_bytes == 0 {
            return Err(crate::Error::Config("server.max_upload_bytes must be above 0".into()));
        }
        if self.telemetry.window_secs == 0 || self.telemetry.retention_days == 0 {
            return Err(crate::Error::Config("telemetry.window_secs and retention_days must be above 0".into()));
        }
        if let Some(s3) = &self.artifacts.s3 {
            s3.validate(self.tls.insecure)?;
        }
        self.retrain.policy.validate().map_err(crate::Error::Config)?;
        if self.retrain.webhook_url.is_some() != self.retrain.webhook_secret_file.is_some() {
            return Err(crate::Error::Config(
                "retrain.webhook_url needs retrain.webhook_secret_file (and back)".into(),
            ));
        }
        let formats = &self.retrain.format;
        if formats.is_empty() || formats.iter().enumerate().any(|(i, f)| formats[..i].contains(f)) {
            return Err(crate::Error::Config(
                "retrain.format must name csv and/or parquet, each once (e.g. [\"csv\", \"parquet\"])".into(),
            ));
        }
        Ok(())
    }

    fn validate_transport(&self) -> Result<(), crate::Error> {
        use edgefleet_service::tls::check_plain;
        let tls = &self.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(crate::Error::Config("tls.cert and tls.key must be set together".into()));
        }
        let serving_tls = tls.server_files().is_some();
        if !serving_tls {
            let addr = self.server.listen;
            check_plain(&format!("the API on {addr} (plain HTTP)"), &addr.ip().to_string(), tls.insecure)
                .map_err(crate::Error::Config)?;
        }
        if self.mqtt.client_cert.is_some() != self.mqtt.client_key.is_some() {
            return Err(crate::Error::Config("mqtt.client_cert and mqtt.client_key must be set together".into()));
        }
        if self.mqtt.username.is_some() != self.mqtt.password_file.is_some() {
            return Err(crate::Error::Config("mqtt.username and mqtt.password_file must be set together".into()));
        }
        if !self.mqtt.enabled {
            return Ok(());
        }
        if let Some(group) = &self.mqtt.shared_group {
            if self.mqtt.url.is_none() {
                return Err(crate::Error::Config(
                    "mqtt.shared_group splits messages between replicas on an external broker: set mqtt.url too".into(),
                ));
            }
            if group.is_empty() || group.contains(['/', '+', '#']) {
                return Err(crate::Error::Config(format!(
                    "mqtt.shared_group {group:?} must be a non-empty name without '/', '+' or '#'"
                )));
            }
        }
        if self.mqtt.dynamic_security && self.mqtt.url.is_none() {
            return Err(crate::Error::Config(
                "mqtt.dynamic_security keeps an external Mosquitto's access control: set mqtt.url too \
                 (the embedded broker authorizes devices itself)"
                    .into(),
            ));
        }
        match (&self.mqtt.url, self.mqtt.listen) {
            (Some(url), _) => {
                let broker = edgefleet_shared::fleet::parse_mqtt_url(url).map_err(crate::Error::Config)?;
                if !broker.tls {
                    check_plain(&format!("the broker {url}"), &broker.host, tls.insecure)
                        .map_err(crate::Error::Config)?;
                }
            }
            (None, Some(addr)) if !serving_tls => {
                check_plain(
                    &format!("the embedded broker on {addr} (plain MQTT)"),
                    &addr.ip().to_string(),
                    tls.insecure,
                )
                .map_err(crate::Error::Config)?;
            }
            (None, _) => {}
        }
        Ok(())
    }
}

/// Paths inside the data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory.
    pub root: PathBuf,
}

impl DataDir {
    /// Where a generated admin token is written (mode 0600) for the operator to read once.
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin-token")
    }
    /// SQLite database.
    pub fn database(&self) -> PathBuf {
        self.root.join("controller.db")
    }
    /// Artifact store root.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }
    /// Keys: the first signing key, rotated ones, the device CA (all 0600).
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }
    /// The first signing key (0600); rotated keys sit beside it as `controller-<id>.key`.
    pub fn signing_key(&self) -> PathBuf {
        self.keys().join("controller.key")
    }
    /// Retraining dataset snapshots.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    /// Scratch space for uploads being validated.
    pub fn scratch(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tcp_off_loopback_needs_tls_or_insecure() {
        let mut config = ControllerConfig::default();
        config.validate().expect("loopback defaults are fine");
        config.server.listen = "0.0.0.0:7700".parse().expect("addr");
        let err = config.validate().expect_err("plain HTTP on all interfaces").to_string();
        assert!(err.contains("0.0.0.0:7700") && err.contains("insecure"), "{err}");
        config.tls.insecure = true;
        config.validate().expect("explicitly insecure");
        config.tls = TlsConfig { cert: Some("c.pem".into()), key: Some("k.pem".into()), ..TlsConfig::default() };
        config.mqtt.listen = Some("0.0.0.0:8883".parse().expect("addr"));
        config.validate().expect("TLS on both listeners");
        config.mqtt.url = Some("mqtt://broker.example:1883".into());
        let err = config.validate().expect_err("plain external broker").to_string();
        assert!(err.contains("broker.example"), "{err}");
        config.mqtt.url = Some("mqtts://broker.example".into());
        config.validate().expect("TLS external broker");
        config.tls.key = None;
        assert!(config.validate().expect_err("cert without key").to_string().contains("together"));
    }

    #[test]
    fn snapshot_formats_are_named_once() {
        let mut config = ControllerConfig::default();
        config.retrain.format = vec![SnapshotFormat::Parquet, SnapshotFormat::Csv];
        config.validate().expect("both");
        for bad in [vec![], vec![SnapshotFormat::Csv, SnapshotFormat::Csv]] {
            config.retrain.format = bad;
            assert!(config.validate().expect_err("refused").to_string().contains("retrain.format"));
        }
        let parsed: Result<ControllerConfig, _> = toml::from_str("[retrain]\nformat = [\"feather\"]\n");
        assert!(parsed.expect_err("unknown format").to_string().contains("feather"));
    }

    #[test]
    fn shipped_file_is_the_default() {
        let parsed: ControllerConfig = toml::from_str(DEFAULT_CONFIG).expect("parses");
        assert_eq!(parsed, ControllerConfig::default());
    }
}
