//! Fleet wire types: enrollment, device-signed HTTP requests, status reports, MQTT topics.
//!
//! A device proves who it is by signing each HTTP request with the Ed25519 key it generated on
//! first start and registered at enrollment. The signed payload binds the method, the path with
//! query, a timestamp and the body's digest, so a captured request cannot be replayed later,
//! sent to another path, or given another body.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::deployment::ModelRef;
use crate::keys::{PublicKey, Signer};
use crate::verify::sha256_hex;

/// Header: the device id.
pub const DEVICE_HEADER: &str = "x-edgefleet-device";
/// Header: unix seconds when the request was signed.
pub const TIMESTAMP_HEADER: &str = "x-edgefleet-timestamp";
/// Header: base64 Ed25519 signature over [`request_payload`].
pub const SIGNATURE_HEADER: &str = "x-edgefleet-signature";
/// Header: a device asking for an artifact's bytes from the controller itself, not a redirect
/// to the object store (value `controller`; sent when the store could not be reached).
pub const VIA_HEADER: &str = "x-edgefleet-via";
/// How far a request's timestamp may be from the controller's clock.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// Default MQTT topic prefix.
pub const DEFAULT_TOPIC_PREFIX: &str = "edgefleet/v1";
/// Largest MQTT packet either side sends or accepts.
pub const MAX_MQTT_PACKET_BYTES: usize = 1024 * 1024;
/// Largest signed desired-state envelope a device reads, over HTTP as over MQTT.
pub const MAX_DESIRED_BYTES: usize = MAX_MQTT_PACKET_BYTES;
/// Header on `GET /api/v1/devices/{id}/desired` answers: the controller's current trust set
/// version, so a device behind it fetches the rotations (`GET /api/v1/devices/{id}/trust`).
pub const TRUST_VERSION_HEADER: &str = "x-edgefleet-trust-version";
/// `kind` of the signed offline notice a device leaves as its MQTT last will.
pub const OFFLINE_KIND: &str = "edgefleet.offline/v1";

/// The bytes a device signs for one HTTP request.
pub fn request_payload(method: &str, path_and_query: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    format!("edgefleet-request-v1\n{method}\n{path_and_query}\n{timestamp}\n{}", sha256_hex(body)).into_bytes()
}

/// Signs a request; returns the value of [`SIGNATURE_HEADER`].
pub fn sign_request(signer: &dyn Signer, method: &str, path_and_query: &str, timestamp: u64, body: &[u8]) -> String {
    B64.encode(signer.sign(&request_payload(method, path_and_query, timestamp, body)))
}

/// Why a device request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    /// The timestamp is too far from now (replayed or badly set clock).
    #[error("stale request: timestamp {timestamp} is more than {MAX_CLOCK_SKEW_SECS} s from the controller's {now}")]
    Stale {
        /// Request time.
        timestamp: u64,
        /// Controller time.
        now: u64,
    },
    /// The signature does not verify under the device's key.
    #[error("bad request signature")]
    BadSignature,
}

/// Checks a device-signed request.
pub fn verify_request(
    key: &PublicKey,
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    body: &[u8],
    signature_b64: &str,
    now: u64,
) -> Result<(), RequestAuthError> {
    if timestamp.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err(RequestAuthError::Stale { timestamp, now });
    }
    let sig = B64.decode(signature_b64).map_err(|_| RequestAuthError::BadSignature)?;
    if key.verify(&request_payload(method, path_and_query, timestamp, body), &sig) {
        Ok(())
    } else {
        Err(RequestAuthError::BadSignature)
    }
}

/// The MQTT password a device connects with: a timestamp and its signature over the device id
/// and that timestamp (`v1.{unix secs}.{base64 signature}`). The broker checks it against the
/// device's enrolled key like a signed HTTP request, so no shared secret is stored anywhere and
/// a captured password is useless after [`MAX_CLOCK_SKEW_SECS`].
pub fn mqtt_password(signer: &dyn Signer, device_id: &str, now: u64) -> String {
    let sig = B64.encode(signer.sign(&mqtt_password_payload(device_id, now)));
    format!("v1.{now}.{sig}")
}

fn mqtt_password_payload(device_id: &str, timestamp: u64) -> Vec<u8> {
    format!("edgefleet-mqtt-v1\n{device_id}\n{timestamp}").into_bytes()
}

/// Checks an MQTT password made by [`mqtt_password`] for `device_id`.
pub fn verify_mqtt_password(
    key: &PublicKey,
    device_id: &str,
    password: &str,
    now: u64,
) -> Result<(), RequestAuthError> {
    let mut parts = password.splitn(3, '.');
    let (Some("v1"), Some(ts), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(RequestAuthError::BadSignature);
    };
    let timestamp: u64 = ts.parse().map_err(|_| RequestAuthError::BadSignature)?;
    if timestamp.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err(RequestAuthError::Stale { timestamp, now });
    }
    let sig = B64.decode(sig).map_err(|_| RequestAuthError::BadSignature)?;
    if key.verify(&mqtt_password_payload(device_id, timestamp), &sig) {
        Ok(())
    } else {
        Err(RequestAuthError::BadSignature)
    }
}

/// The device's MQTT last will, signed with its key (in a [`crate::signature::SignedEnvelope`]) so
/// that nobody else can mark it offline, even on a broker without topic ACLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineNotice {
    /// Always [`OFFLINE_KIND`].
    pub kind: String,
    /// The device.
    pub device: String,
    /// Unix seconds when the connection that left this will was opened.
    pub connected_at: u64,
}

/// What a device connects to the broker with: username = its id, a fresh signed password, and
/// a last will on its own status topic that is its signed [`OfflineNotice`]. Made anew for
/// every connection attempt (the password is only valid for [`MAX_CLOCK_SKEW_SECS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLogin {
    /// MQTT username (and client id): the device id.
    pub username: String,
    /// [`mqtt_password`].
    pub password: String,
    /// The last will's topic: the device's status topic.
    pub will_topic: String,
    /// The last will: a signed offline notice (JSON of a [`crate::signature::SignedEnvelope`]).
    pub will_payload: Vec<u8>,
}

/// The [`DeviceLogin`] for `device_id` under topic `prefix`, at `now`.
pub fn device_login(signer: &dyn Signer, device_id: &str, prefix: &str, now: u64) -> DeviceLogin {
    let notice = OfflineNotice { kind: OFFLINE_KIND.into(), device: device_id.to_owned(), connected_at: now };
    let will = crate::signature::SignedEnvelope::sign(&serde_json::to_vec(&notice).unwrap_or_default(), signer);
    DeviceLogin {
        username: device_id.to_owned(),
        password: mqtt_password(signer, device_id, now),
        will_topic: topics::status(prefix, device_id),
        will_payload: serde_json::to_vec(&will).unwrap_or_default(),
    }
}

/// Device id for a public key: `dev-` and the key id, so an id cannot be claimed without the key.
pub fn device_id(key: &PublicKey) -> String {
    format!("dev-{}", key.key_id())
}

/// `POST /api/v1/enroll` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token.
    pub token: String,
    /// Base64 of the device's Ed25519 public key.
    pub public_key: String,
    /// Labels the device reports (merged with the token's labels; the token's win).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `POST /api/v1/enroll` answer. It carries no keys: devices trust controller keys only from
/// their provisioned trust file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The device's id.
    pub device_id: String,
    /// Broker the device should use, when the controller has one.
    pub mqtt_url: Option<String>,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Labels now recorded for the device.
    pub labels: BTreeMap<String, String>,
}

/// `POST /api/v1/devices/{id}/mqtt-certificate` answer: an X.509 client certificate for the
/// device's own Ed25519 key (subject CN = the device id), issued by the controller's device CA,
/// for brokers that authenticate devices by certificate (Mosquitto with `require_certificate`
/// and `use_identity_as_username`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Unix seconds after which it is no longer valid; the agent asks for a new one before.
    pub expires_at: u64,
}

/// Outcome of one activation attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationReport {
    /// Model version tried.
    pub model: ModelRef,
    /// Document sequence it came from.
    pub sequence: u64,
    /// Whether the version is now serving.
    pub ok: bool,
    /// Stage that failed (`download`, `verify`, `load`, `self_test`, `watch`) and why.
    pub error: Option<String>,
    /// Unix seconds.
    pub at: u64,
    /// Milliseconds from document accepted to commit or rollback.
    pub duration_ms: u64,
    /// Compressed bytes this activation did not download because deltas were used.
    #[serde(default)]
    pub delta_bytes_saved: u64,
}

/// A refused deployment document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Attack or failure class (`bad_signature`, `hash_mismatch`, ...).
    pub class: String,
    /// Details.
    pub message: String,
    /// Sequence of the refused document, when it could be read.
    pub sequence: Option<u64>,
    /// Unix seconds.
    pub at: u64,
}

/// What a device reports about itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Agent version.
    pub agent_version: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Version serving now.
    pub active: Option<ModelRef>,
    /// Version kept for rollback.
    pub previous: Option<ModelRef>,
    /// Last accepted document sequence.
    pub last_sequence: Option<u64>,
    /// Last refused document.
    pub last_refusal: Option<Refusal>,
    /// Last activation attempt.
    pub last_activation: Option<ActivationReport>,
    /// Inference requests answered since start.
    pub requests: u64,
    /// Share of inference requests that failed, since start.
    pub error_rate: f64,
    /// Median latency of the active version's recent requests (ms).
    #[serde(default)]
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of the active version's recent requests (ms).
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
    /// Requests the active version answered or failed since it was activated.
    #[serde(default)]
    pub active_requests: u64,
    /// Of those, how many failed in the engine.
    #[serde(default)]
    pub active_errors: u64,
    /// The version running in shadow, with its comparison against the active one.
    #[serde(default)]
    pub shadow: Option<ShadowReport>,
    /// Predictions of the active version per class (top class of its class-score output, or its
    /// label), since activation: the output distribution rollouts compare between versions.
    #[serde(default)]
    pub output_classes: Vec<u64>,
    /// Version of the trust set the device verifies documents with (after any rotations).
    #[serde(default)]
    pub trust_version: Option<u64>,
    /// Engines this agent can run models on (platform names: `tract_onnx`, `onnxruntime_onnx`).
    #[serde(default)]
    pub engines: Vec<String>,
    /// Delta downloads since the agent started; present only on agents that apply deltas, so
    /// the controller offers deltas to them alone.
    #[serde(default)]
    pub deltas: Option<DeltaReport>,
    /// Every fleet-managed model, by name (the fields above describe the first of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelStatus>,
}

/// One fleet-managed model of a device: its slots, last activation and recent serving.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelStatus {
    /// Model name.
    pub name: String,
    /// Version serving now.
    pub active: Option<ModelRef>,
    /// Version kept for rollback.
    #[serde(default)]
    pub previous: Option<ModelRef>,
    /// Last activation attempt of this model.
    #[serde(default)]
    pub last_activation: Option<ActivationReport>,
    /// Requests the active version answered or failed since it was activated.
    #[serde(default)]
    pub active_requests: u64,
    /// Of those, how many failed in the engine.
    #[serde(default)]
    pub active_errors: u64,
    /// Median latency of the active version's recent requests (ms).
    #[serde(default)]
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of the active version's recent requests (ms).
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
    /// Predictions of the active version per class, since activation.
    #[serde(default)]
    pub output_classes: Vec<u64>,
    /// The version of this model running in shadow.
    #[serde(default)]
    pub shadow: Option<ShadowReport>,
}

impl DeviceStatus {
    /// What the device reports about model `name`: its entry in `models`, or, from an agent
    /// that reports one model only, the top-level fields when they are about `name`.
    pub fn model(&self, name: &str) -> Option<ModelStatus> {
        if let Some(m) = self.models.iter().find(|m| m.name == name) {
            return Some(m.clone());
        }
        if !self.models.is_empty() {
            return None;
        }
        let about = |m: &ModelRef| m.name == name;
        let active = self.active.as_ref().is_some_and(about);
        let activation = self.last_activation.as_ref().filter(|a| about(&a.model)).cloned();
        let shadow = self.shadow.as_ref().filter(|s| about(&s.model)).cloned();
        if !active && activation.is_none() && shadow.is_none() {
            return None;
        }
        Some(ModelStatus {
            name: name.to_owned(),
            active: self.active.clone().filter(about),
            previous: self.previous.clone().filter(about),
            last_activation: activation,
            active_requests: if active { self.active_requests } else { 0 },
            active_errors: if active { self.active_errors } else { 0 },
            latency_p50_ms: self.latency_p50_ms.filter(|_| active),
            latency_p99_ms: self.latency_p99_ms.filter(|_| active),
            output_classes: if active { self.output_classes.clone() } else { Vec::new() },
            shadow,
        })
    }
}

/// What a device did with the deltas it was offered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaReport {
    /// Artifacts made from a delta (verified against their signed digest).
    pub applied: u64,
    /// Deltas given up for the full artifact (no base held, download or verification failed).
    pub fallbacks: u64,
    /// Why the last fallback happened.
    #[serde(default)]
    pub last_fallback: Option<String>,
    /// Compressed bytes not downloaded thanks to deltas.
    pub bytes_saved: u64,
}

/// How a shadow version compares with the active one on mirrored live requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// The shadow version.
    pub model: ModelRef,
    /// Requests run on both.
    pub compared: u64,
    /// Mirrors skipped because the shadow was still busy (its CPU budget).
    pub skipped: u64,
    /// Share of compared rows whose top class (argmax of the first output) is the same.
    pub agreement: Option<f64>,
    /// Mean absolute difference of the first output's elements.
    pub mean_abs_diff: Option<f64>,
    /// Shadow minus active compute latency, mean (ms).
    pub latency_delta_ms: Option<f64>,
}

/// A device's place in rollout order: a stable hash of its id, the same on every controller.
pub fn rollout_rank(device_id: &str) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("edgefleet-rollout-bucket:{device_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The devices a wave at `percent` holds among `devices` (those matching the rollout's
/// selector): the first ⌈percent · N / 100⌉ in rollout order ([`rollout_rank`], then id). Waves
/// are sized by count (50% of 2 devices is one), cumulative (a wave holds every device of the
/// waves before it), and the same on every controller.
pub fn wave_members(devices: &[String], percent: u8) -> Vec<String> {
    let mut ordered: Vec<&String> = devices.iter().collect();
    // One hash per device, not one per comparison.
    ordered.sort_by_cached_key(|d| (rollout_rank(d), d.as_str()));
    ordered.dedup();
    let take = (ordered.len() * usize::from(percent.min(100))).div_ceil(100);
    ordered.into_iter().take(take).cloned().collect()
}

/// A broker address: `mqtt://HOST[:PORT]` or `tcp://` (plain, port 1883 by default), or
/// `mqtts://HOST[:PORT]` or `ssl://` (TLS, port 8883 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection uses TLS.
    pub tls: bool,
}

/// Parses a broker URL (see [`BrokerUrl`]).
pub fn parse_mqtt_url(url: &str) -> Result<BrokerUrl, String> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")) {
        (r, false)
    } else if let Some(r) = url.strip_prefix("mqtts://").or_else(|| url.strip_prefix("ssl://")) {
        (r, true)
    } else {
        return Err(format!("broker URL {url:?} must start with mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    let default_port = if tls { 8883 } else { 1883 };
    let bad_port = |_| format!("broker URL {url:?} has an invalid port");
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        // An IPv6 literal: [::1] or [::1]:1883.
        let (host, after) = inner.split_once(']').ok_or_else(|| format!("broker URL {url:?} has an unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse::<u16>().map_err(bad_port)?),
            None if after.is_empty() => (host, default_port),
            None => return Err(format!("broker URL {url:?} has text after the address")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, p)) => (host, p.parse::<u16>().map_err(bad_port)?),
            None => (rest, default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("broker URL {url:?} has no host"));
    }
    Ok(BrokerUrl { host: host.to_owned(), port, tls })
}

/// MQTT topics under a prefix.
pub mod topics {
    /// Desired state (controller → device, retained).
    pub fn desired(prefix: &str, device: &str) -> String {
        format!("{prefix}/devices/{device}/desired")
    }
    /// Status (device → controller; last will marks offline).
    pub fn status(prefix: &str, device: &str) -> String {
        format!("{prefix}/devices/{device}/status")
    }
    /// Telemetry (device → controller, QoS 1).
    pub fn telemetry(prefix: &str, device: &str) -> String {
        format!("{prefix}/devices/{device}/telemetry")
    }
    /// The fleet's trust rotations (controller → every device, retained).
    pub fn trust(prefix: &str) -> String {
        format!("{prefix}/trust")
    }

    /// What a topic under `prefix` is: `devices/{id}/{leaf}` gives the device and its leaf.
    pub fn device_topic<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = topic.strip_prefix(prefix)?.strip_prefix("/devices/")?;
        let (device, leaf) = rest.split_once('/')?;
        (!device.is_empty() && !leaf.contains('/')).then_some((device, leaf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FileKey;

    #[test]
    fn broker_urls_parse() {
        let url = |host: &str, port, tls| Ok(BrokerUrl { host: host.into(), port, tls });
        assert_eq!(parse_mqtt_url("mqtt://127.0.0.1:1884"), url("127.0.0.1", 1884, false));
        assert_eq!(parse_mqtt_url("tcp://broker"), url("broker", 1883, false));
        assert_eq!(parse_mqtt_url("mqtts://broker"), url("broker", 8883, true));
        assert_eq!(parse_mqtt_url("ssl://broker:9883/"), url("broker", 9883, true));
        assert_eq!(parse_mqtt_url("mqtt://[::1]:1884"), url("::1", 1884, false));
        assert_eq!(parse_mqtt_url("mqtts://[::1]"), url("::1", 8883, true));
        assert!(parse_mqtt_url("http://broker").is_err());
        assert!(parse_mqtt_url("mqtt://broker:x").is_err());
        assert!(parse_mqtt_url("mqtt://:1883").is_err());
    }

    #[test]
    fn mqtt_passwords_verify_only_for_their_device_key_and_while_fresh() {
        let key = FileKey::from_seed([9; 32]);
        let pk = key.public_key();
        let password = mqtt_password(&key, "dev-a", 1000);
        assert_eq!(verify_mqtt_password(&pk, "dev-a", &password, 1100), Ok(()));
        assert_eq!(verify_mqtt_password(&pk, "dev-b", &password, 1100), Err(RequestAuthError::BadSignature));
        let other = FileKey::from_seed([10; 32]).public_key();
        assert_eq!(verify_mqtt_password(&other, "dev-a", &password, 1100), Err(RequestAuthError::BadSignature));
        assert_eq!(
            verify_mqtt_password(&pk, "dev-a", &password, 1000 + MAX_CLOCK_SKEW_SECS + 1),
            Err(RequestAuthError::Stale { timestamp: 1000, now: 1000 + MAX_CLOCK_SKEW_SECS + 1 })
        );
        let tampered = password.replacen("v1.1000.", "v1.1001.", 1);
        assert_eq!(verify_mqtt_password(&pk, "dev-a", &tampered, 1100), Err(RequestAuthError::BadSignature));
        for junk in ["", "v1", "v1.x.y", "v2.1000.abc", "anonymous"] {
            assert!(verify_mqtt_password(&pk, "dev-a", junk, 1100).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn device_topics_parse_under_their_prefix_only() {
        let p = DEFAULT_TOPIC_PREFIX;
        assert_eq!(topics::device_topic(p, &topics::status(p, "dev-a")), Some(("dev-a", "status")));
        assert_eq!(topics::device_topic(p, &topics::telemetry(p, "dev-a")), Some(("dev-a", "telemetry")));
        assert_eq!(topics::device_topic(p, "other/v1/devices/dev-a/status"), None);
        assert_eq!(topics::device_topic(p, "edgefleet/v1/devices//status"), None);
        assert_eq!(topics::device_topic(p, "edgefleet/v1/devices/dev-a/status/x"), None);
        assert_eq!(topics::device_topic(p, &topics::trust(p)), None);
    }

    #[test]
    fn waves_are_sized_by_count_cumulative_and_stable() {
        let devices: Vec<String> = (0..20).map(|i| format!("dev-{i:016x}")).collect();
        let sizes: Vec<usize> = [1u8, 10, 34, 50, 99, 100].iter().map(|&p| wave_members(&devices, p).len()).collect();
        assert_eq!(sizes, [1, 2, 7, 10, 20, 20], "⌈P·N/100⌉");
        let two = &devices[..2];
        assert_eq!(wave_members(two, 50).len(), 1, "50% of 2 devices is one, not both");
        assert!(wave_members(two, 0).is_empty());
        for (small, large) in [(1u8, 10u8), (10, 50), (50, 100)] {
            let (a, b) = (wave_members(&devices, small), wave_members(&devices, large));
            assert!(a.iter().all(|d| b.contains(d)), "{small}% within {large}%");
        }
        let mut shuffled = devices.clone();
        shuffled.reverse();
        assert_eq!(wave_members(&shuffled, 50), wave_members(&devices, 50), "order of the input does not matter");
        // The order spreads devices: consecutive ids do not all land in the first half.
        let first_half = wave_members(&devices, 50);
        assert!(first_half.iter().any(|d| devices[10..].contains(d)), "{first_half:?}");
    }

    #[test]
    fn signed_requests_verify_only_unchanged_and_fresh() {
        let key = FileKey::from_seed([9; 32]);
        let pk = key.public_key();
        let sig = sign_request(&key, "GET", "/api/v1/devices/d/desired", 1000, b"");
        assert_eq!(verify_request(&pk, "GET", "/api/v1/devices/d/desired", 1000, b"", &sig, 1100), Ok(()));
        assert_eq!(
            verify_request(&pk, "GET", "/api/v1/devices/e/desired", 1000, b"", &sig, 1100),
            Err(RequestAuthError::BadSignature)
        );
        assert_eq!(
            verify_request(&pk, "POST", "/api/v1/devices/d/desired", 1000, b"", &sig, 1100),
            Err(RequestAuthError::BadSignature)
        );
        assert_eq!(
            verify_request(&pk, "GET", "/api/v1/devices/d/desired", 1000, b"x", &sig, 1100),
            Err(RequestAuthError::BadSignature)
        );
        assert_eq!(
            verify_request(&pk, "GET", "/api/v1/devices/d/desired", 1000, b"", &sig, 1000 + MAX_CLOCK_SKEW_SECS + 1),
            Err(RequestAuthError::Stale { timestamp: 1000, now: 1000 + MAX_CLOCK_SKEW_SECS + 1 })
        );
        let other = FileKey::from_seed([10; 32]).public_key();
        assert_eq!(
            verify_request(&other, "GET", "/api/v1/devices/d/desired", 1000, b"", &sig, 1000),
            Err(RequestAuthError::BadSignature)
        );
    }
}
