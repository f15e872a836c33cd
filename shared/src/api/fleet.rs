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
    /// Unix seconds it was decommissioned: its key, broker login and documents stopped working.
    #[serde(default)]
    pub decommissioned_at: Option<u64>,
    /// Why, as the operator said.
    #[serde(default)]
    pub decommission_reason: Option<String>,
}

impl DeviceInfo {
    /// Online, offline or decommissioned.
    pub fn state(&self) -> DeviceState {
        match (self.decommissioned_at, self.online) {
            (Some(_), _) => DeviceState::Decommissioned,
            (None, true) => DeviceState::Online,
            (None, false) => DeviceState::Offline,
        }
    }

    /// The model version it reports serving, if any.
    pub fn active(&self) -> Option<&ModelRef> {
        self.status.as_ref().and_then(|s| s.active.as_ref())
    }
}

/// Where a device is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Seen within the controller's online window.
    Online,
    /// Enrolled, not seen lately.
    Offline,
    /// Taken out of service for good.
    Decommissioned,
}

impl DeviceState {
    /// Lowercase name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Online => "online",
            DeviceState::Offline => "offline",
            DeviceState::Decommissioned => "decommissioned",
        }
    }
}

/// Query of `GET /devices`: every filter given must hold. Without `state`, decommissioned
/// devices are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// Labels the device must carry, `k=v,k=v`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Lifecycle state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DeviceState>,
    /// Active model version it reports, `NAME` or `NAME:VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// Not seen for at least this many seconds (never-seen devices included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_for_secs: Option<u64>,
    /// At most this many devices (in id order; the response's `X-Total-Count` header counts
    /// every match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Skip this many matching devices first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
}

/// The header of `GET /devices` that counts every matching device, whatever the page.
pub const TOTAL_COUNT_HEADER: &str = "x-total-count";

impl DeviceQuery {
    /// The label selector of `label`, or why it is malformed.
    pub fn labels(&self) -> Result<BTreeMap<String, String>, String> {
        let Some(text) = self.label.as_deref().filter(|t| !t.is_empty()) else { return Ok(BTreeMap::new()) };
        text.split(',')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => Err(format!("label filter {pair:?} is not k=v")),
            })
            .collect()
    }

    /// Whether `device` passes every filter at `now` (Unix seconds); `labels` from
    /// [`DeviceQuery::labels`].
    pub fn matches(&self, device: &DeviceInfo, labels: &BTreeMap<String, String>, now: u64) -> bool {
        let state = device.state();
        let wanted_state = match self.state {
            Some(s) => s == state,
            None => state != DeviceState::Decommissioned,
        };
        let active = self.active.as_deref().is_none_or(|want| {
            device.active().is_some_and(|m| match want.split_once(':') {
                Some((name, version)) => m.name == name && m.version.to_string() == version,
                None => m.name == want,
            })
        });
        let offline = self
            .offline_for_secs
            .is_none_or(|secs| !device.online && device.last_seen.is_none_or(|seen| now.saturating_sub(seen) >= secs));
        wanted_state && active && offline && labels.iter().all(|(k, v)| device.labels.get(k) == Some(v))
    }
}

/// Body of `POST /devices/{id}/labels`: labels to set and keys to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Relabel {
    /// Labels to add or overwrite.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Label keys to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Body of `POST /devices/{id}/decommission`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Decommission {
    /// Why (kept with the device and in the audit log), e.g. "stolen".
    #[serde(default)]
    pub reason: Option<String>,
}

/// An enrollment token as `GET /enrollment-tokens` lists it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentTokenInfo {
    /// Id.
    pub id: i64,
    /// Enrollments left.
    pub uses_left: u32,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
    /// Labels every device enrolled with it gets.
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it.
    pub created_by: String,
    /// Unix seconds it was revoked.
    pub revoked_at: Option<u64>,
    /// Devices enrolled with it.
    pub devices: u64,
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

/// Body of `POST /undeploy`: a model to take off one device or every device matching a selector
/// (the other models they serve stay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UndeployRequest {
    /// Model name.
    pub model: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn device(
        labels: &[(&str, &str)],
        last_seen: Option<u64>,
        online: bool,
        active: Option<(&str, u64)>,
    ) -> DeviceInfo {
        DeviceInfo {
            id: "dev-1".into(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            enrolled_at: 0,
            last_seen,
            online,
            desired: None,
            desired_sequence: None,
            status: active.map(|(name, version)| DeviceStatus {
                active: Some(ModelRef { name: name.into(), version }),
                ..DeviceStatus::default()
            }),
            decommissioned_at: None,
            decommission_reason: None,
        }
    }

    fn query(q: DeviceQuery, d: &DeviceInfo, now: u64) -> bool {
        q.matches(d, &q.labels().expect("labels"), now)
    }

    #[test]
    fn every_filter_given_must_hold() {
        let d = device(&[("site", "north"), ("rack", "7")], Some(1_000), false, Some(("iris", 2)));
        let label = |l: &str| DeviceQuery { label: Some(l.into()), ..DeviceQuery::default() };
        assert!(query(DeviceQuery::default(), &d, 1_000));
        assert!(query(label("site=north,rack=7"), &d, 1_000));
        assert!(!query(label("site=north,rack=8"), &d, 1_000));
        let active = |a: &str| DeviceQuery { active: Some(a.into()), ..DeviceQuery::default() };
        assert!(query(active("iris"), &d, 0) && query(active("iris:2"), &d, 0));
        assert!(!query(active("iris:1"), &d, 0) && !query(active("iri"), &d, 0));
        let offline = DeviceQuery { offline_for_secs: Some(600), ..DeviceQuery::default() };
        assert!(!query(offline.clone(), &d, 1_599), "offline for 599 s only");
        assert!(query(offline.clone(), &d, 1_600));
        assert!(query(offline.clone(), &device(&[], None, false, None), 0), "never seen counts as offline");
        assert!(!query(offline, &device(&[], Some(0), true, None), 10_000), "an online device is not offline");
        assert_eq!(label("site").labels().unwrap_err(), "label filter \"site\" is not k=v");
    }

    #[test]
    fn decommissioned_devices_are_listed_only_when_asked_for() {
        let mut d = device(&[], Some(5), true, None);
        d.decommissioned_at = Some(10);
        assert_eq!(d.state(), DeviceState::Decommissioned);
        assert!(!query(DeviceQuery::default(), &d, 20));
        assert!(query(DeviceQuery { state: Some(DeviceState::Decommissioned), ..DeviceQuery::default() }, &d, 20));
        assert!(!query(DeviceQuery { state: Some(DeviceState::Online), ..DeviceQuery::default() }, &d, 20));
    }
}
