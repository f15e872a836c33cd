//! Controller configuration: typed TOML whose defaults are the shipped `config/controller.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default configuration file, every option documented.
pub const DEFAULT_CONFIG: &str = include_str!("../config/controller.toml");

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
}

/// MQTT: the embedded broker, or an external one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Where the embedded broker listens (plain TCP); none disables it.
    pub listen: Option<SocketAddr>,
    /// An external broker (`mqtt://host:port`) instead of the embedded one.
    pub url: Option<String>,
    /// The broker URL handed to agents, when they reach the embedded broker by another name.
    pub advertise_url: Option<String>,
    /// Topic prefix.
    pub topic_prefix: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
            url: None,
            advertise_url: None,
            topic_prefix: edgefleet_shared::fleet::DEFAULT_TOPIC_PREFIX.into(),
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
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig { document_ttl_secs: 7 * 24 * 3600, online_window_secs: 90, refresh_interval_secs: 60 }
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            max_upload_bytes: 1 << 30,
            shutdown_grace_secs: 10,
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
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { baseline_bins: 10, baseline_sample_rows: 5000 }
    }
}

impl ControllerConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, crate::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let config: ControllerConfig = toml::from_str(&text)
            .map_err(|e| crate::Error::Config(format!("invalid config {}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values the types do not constrain.
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.registry.baseline_bins < 2 {
            return Err(crate::Error::Config("registry.baseline_bins must be at least 2".into()));
        }
        if self.fleet.document_ttl_secs < 120 || self.fleet.refresh_interval_secs == 0 {
            return Err(crate::Error::Config(
                "fleet.document_ttl_secs must be at least 120 and refresh_interval_secs above 0".into(),
            ));
        }
        if self.server.max_upload_bytes == 0 {
            return Err(crate::Error::Config("server.max_upload_bytes must be above 0".into()));
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
    /// SQLite database.
    pub fn database(&self) -> PathBuf {
        self.root.join("controller.db")
    }
    /// Artifact store root.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }
    /// Signing key (0600).
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("keys").join("controller.key")
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
    fn shipped_file_is_the_default() {
        let parsed: ControllerConfig = toml::from_str(DEFAULT_CONFIG).expect("parses");
        assert_eq!(parsed, ControllerConfig::default());
    }
}
