//! The tasks around the fleet loop that wait on the network so the loop never does: the HTTP
//! poller (desired state, and the trust chain when the controller's is newer), the status
//! reporter, and fetching the broker certificate.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edgefleet_service::tls::ClientConfig;
use edgefleet_shared::fleet::{DeviceStatus, MqttCertificate};
use edgefleet_shared::keys::FileKey;
use tokio::sync::{mpsc, watch};

use super::link::{Incoming, Link, LinkError};
use super::mqtt::MqttLink;

/// While MQTT is up, the HTTP poll runs only every this many intervals, as a safety net.
const POLL_DIVISOR_WHILE_CONNECTED: u64 = 10;

/// Asks the controller for the desired state every `every` (every tenth interval while MQTT
/// is up), and for the trust chain whenever the controller's trust set is newer than
/// `trust_version`. Missed ticks are not made up in a burst.
pub(super) async fn poll(
    link: Link,
    mqtt: Option<MqttLink>,
    every: Duration,
    trust_version: Arc<AtomicU64>,
    out: mpsc::Sender<Incoming>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let connected = mqtt.as_ref().is_some_and(MqttLink::connected);
        if connected && ticks != 1 && !ticks.is_multiple_of(POLL_DIVISOR_WHILE_CONNECTED) {
            continue;
        }
        let desired = match link.desired().await {
            Ok(d) => d,
            // The network being down is ordinary; an answer that is not what a controller sends
            // (too large, malformed, refused) is worth a warning.
            Err(e @ LinkError::Transport(_)) => {
                tracing::debug!(error = %e, "Cannot fetch the desired state.");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Desired-state answer refused.");
                continue;
            }
        };
        if desired.trust_version.is_some_and(|v| v > trust_version.load(Ordering::Relaxed)) {
            match link.trust().await {
                Ok(chain) => {
                    if out.send(Incoming::Trust(chain)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Cannot fetch the trust chain."),
            }
        }
        if let Some(env) = desired.envelope
            && out.send(Incoming::Desired(env)).await.is_err()
        {
            return;
        }
    }
}

/// Sends each new status as it is handed over: over MQTT when connected, else over HTTP
/// (bounded by the link's control timeout; newer statuses replace one still waiting).
pub(super) async fn report(link: Link, mqtt: Option<MqttLink>, mut statuses: watch::Receiver<Option<DeviceStatus>>) {
    while statuses.changed().await.is_ok() {
        let Some(status) = statuses.borrow_and_update().clone() else { continue };
        if mqtt.as_ref().is_some_and(|m| m.publish_status(&status)) {
            continue;
        }
        if let Err(e) = link.report(&status).await {
            tracing::debug!(error = %e, "Cannot report status.");
        }
    }
}

/// Certificates are renewed when they have less than this left.
const RENEW_BEFORE_SECS: u64 = 30 * 24 * 3600;

/// The TLS client configuration for an `mqtts://` broker: `tls`, plus the device's broker
/// certificate (fetched from the controller when missing or close to expiry, kept in the data
/// dir) for brokers that authenticate devices by certificate. Without one the device still logs
/// in with its signed password.
pub(super) async fn broker_tls(
    link: &Link,
    data_dir: &Path,
    ca_file: Option<&Path>,
    key: &FileKey,
    url: &str,
    tls: Arc<ClientConfig>,
) -> Arc<ClientConfig> {
    if !url.starts_with("mqtts://") && !url.starts_with("ssl://") {
        return tls;
    }
    let path = super::broker_certificate_path(data_dir);
    let kept: Option<MqttCertificate> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let fresh = kept.filter(|c| c.expires_at > edgefleet_shared::clock::unix_secs() + RENEW_BEFORE_SECS);
    let certificate = match fresh {
        Some(c) => Some(c),
        None => match link.mqtt_certificate().await {
            Ok(c) => {
                if let Err(e) = super::state::write_atomic(&path, &serde_json::to_vec_pretty(&c).unwrap_or_default()) {
                    tracing::warn!(error = %e, "Cannot keep the broker certificate.");
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "No broker certificate; logging in with the signed password only.");
                None
            }
        },
    };
    let Some(certificate) = certificate else { return tls };
    match edgefleet_service::tls::client_config_with_certificate(ca_file, &certificate.certificate_pem, key.pkcs8_der())
    {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(error = %e, "The broker certificate is unusable; logging in with the signed password only.");
            tls
        }
    }
}
