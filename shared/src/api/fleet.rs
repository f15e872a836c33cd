//! Enrollment tokens, devices and deployments.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::deployment::ModelRef;
use crate::fleet::DeviceStatus;

/// A new enrollment token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentToken {
    /// Id.
    pub id: i64,
    /// The token; only its hash is kept.
    pub token: String,
    /// Enrollments left.
    pub uses: u32,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
    /// Labels every device enrolled with it gets.
    pub labels: BTreeMap<String, String>,
}

/// A device as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceInfo {
    /// Id (`dev-` + key id).
    pub id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub enrolled_at: u64,
    /// Unix seconds of the last authenticated contact.
    pub last_seen: Option<u64>,
    /// Whether it was seen within the online window.
    pub online: bool,
    /// Model version the controller wants it to run.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub desired: Option<ModelRef>,
    /// Sequence of its current document.
    pub desired_sequence: Option<u64>,
    /// What it last reported.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub status: Option<DeviceStatus>,
}

/// Where deployment documents go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Model name.
    pub model: String,
    /// Version number or alias.
    pub version: String,
    /// One device…
    pub device: Option<String>,
    /// …or every device whose labels include all of these.
    pub selector: Option<BTreeMap<String, String>>,
}

/// One issued document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Issued {
    /// Device.
    pub device_id: String,
    /// Its new sequence.
    pub sequence: u64,
    /// Model version.
    pub version: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Body of `POST /enrollment-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Devices that may enroll with it (default 1).
    #[serde(default = "one")]
    pub uses: u32,
    /// Lifetime in seconds (default 1 hour).
    #[serde(default = "hour")]
    pub ttl_secs: u64,
    /// Labels for the devices.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Default for CreateEnrollmentToken {
    fn default() -> Self {
        CreateEnrollmentToken { uses: one(), ttl_secs: hour(), labels: BTreeMap::new() }
    }
}

fn one() -> u32 {
    1
}

fn hour() -> u64 {
    3600
}
