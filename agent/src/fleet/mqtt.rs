//! The agent's MQTT link: receives its signed document from the retained
//! `PREFIX/devices/{id}/desired` topic and the fleet's trust rotations from the retained
//! `PREFIX/trust`, publishes device-signed status on `PREFIX/devices/{id}/status` (QoS 0: a
//! periodic heartbeat, the latest wins) with a signed last will that marks it offline, and
//! telemetry batches on `PREFIX/devices/{id}/telemetry` (QoS 1, each acknowledgement reported to
//! the telemetry [`Tracker`]).
//!
//! The device logs in as its id with a password signed by its key ([`fleet::mqtt_password`]),
//! made fresh for every connection, and presents its broker certificate over TLS when it has
//! one (brokers that authenticate by certificate). rumqttc reconnects on the next poll after an
//! error; the loop backs off exponentially. While the link is down the agent polls over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgefleet_service::tls::ClientConfig;
use edgefleet_shared::fleet::{self, DeviceStatus, MAX_MQTT_PACKET_BYTES, parse_mqtt_url, topics};
use edgefleet_shared::keys::FileKey;
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::trust::TrustChain;
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, SubAck, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use tokio::sync::mpsc;

use super::acks::Tracker;
use super::link::Incoming;

/// A running MQTT link.
#[derive(Debug, Clone)]
pub struct MqttLink {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    key: Arc<FileKey>,
    status_topic: String,
    telemetry_topic: String,
}

/// Whether the broker refused any of the topics a SUBACK answers.
fn subscription_refused(ack: &SubAck) -> bool {
    ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure))
}

/// Fresh credentials and last will for the next connection attempt.
fn prepare_connect(options: &mut MqttOptions, device: &str, key: &FileKey, prefix: &str) {
    let login = fleet::device_login(key, device, prefix, edgefleet_shared::clock::unix_secs());
    options.set_credentials(login.username, login.password);
    options.set_last_will(LastWill::new(login.will_topic, login.will_payload, QoS::AtLeastOnce, false));
}

impl MqttLink {
    /// Connects (in the background, over TLS with `tls` for `mqtts://`) and forwards documents
    /// and trust rotations to `incoming`.
    pub fn start(
        url: &str,
        tls: Arc<ClientConfig>,
        prefix: &str,
        device: &str,
        key: Arc<FileKey>,
        tracker: Arc<Tracker>,
        incoming: mpsc::Sender<Incoming>,
    ) -> Result<Self, String> {
        let broker = parse_mqtt_url(url)?;
        let status_topic = topics::status(prefix, device);
        let telemetry_topic = topics::telemetry(prefix, device);
        let desired_topic = topics::desired(prefix, device);
        let trust_topic = topics::trust(prefix);
        let mut options = MqttOptions::new(device, broker.host, broker.port);
        if broker.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        options.set_keep_alive(Duration::from_secs(15));
        options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
        prepare_connect(&mut options, device, &key, prefix);
        let (client, mut events) = AsyncClient::new(options, 64);
        let connected = Arc::new(AtomicBool::new(false));
        let (c, flag, signer, device, prefix) =
            (client.clone(), connected.clone(), key.clone(), device.to_owned(), prefix.to_owned());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut failures: u64 = 0;
            // Subscriptions not yet acknowledged: the link counts as up only once the broker
            // granted both (a broker that refuses them, e.g. for a revoked device, would also
            // drop what the device publishes while acknowledging it).
            let mut awaiting = 0usize;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        awaiting = 2;
                        for topic in [&desired_topic, &trust_topic] {
                            if let Err(e) = c.subscribe(topic, QoS::AtLeastOnce).await {
                                tracing::warn!(%topic, error = %e, "Cannot subscribe.");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) if subscription_refused(&ack) => {
                        metrics::counter!(crate::metric::MQTT_SUBSCRIPTIONS_REFUSED).increment(1);
                        tracing::error!(
                            retry_in_ms = backoff.as_millis() as u64,
                            "The broker refused this device's subscriptions (revoked, or an ACL without its topics): \
                             polling over HTTP, telemetry stays in the spool."
                        );
                        let _ = c.try_disconnect();
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        awaiting = awaiting.saturating_sub(ack.return_codes.len());
                        if awaiting == 0 && !flag.swap(true, Ordering::Relaxed) {
                            backoff = Duration::from_millis(100);
                            failures = 0;
                            metrics::gauge!(crate::metric::MQTT_CONNECTED).set(1.0);
                            tracing::info!("MQTT connected.");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let message = if p.topic == desired_topic {
                            serde_json::from_slice::<SignedEnvelope>(&p.payload).map(Incoming::Desired)
                        } else if p.topic == trust_topic {
                            serde_json::from_slice::<TrustChain>(&p.payload).map(Incoming::Trust)
                        } else {
                            continue;
                        };
                        match message {
                            Ok(m) => {
                                if incoming.send(m).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!(topic = %p.topic, error = %e, "Malformed message ignored."),
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => tracker.on_outgoing(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => tracker.on_puback(ack.pkid),
                    Ok(_) => {}
                    Err(e) => {
                        metrics::gauge!(crate::metric::MQTT_CONNECTED).set(0.0);
                        if flag.swap(false, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "MQTT connection lost; falling back to HTTP polling.");
                        } else if failures.is_power_of_two() || failures == 0 {
                            tracing::warn!(error = %e, attempts = failures + 1, "Cannot connect to the MQTT broker; polling over HTTP meanwhile.");
                        }
                        failures += 1;
                        metrics::counter!(crate::metric::MQTT_RECONNECTS).increment(1);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        // The password is only valid for a few minutes: sign a new one.
                        prepare_connect(&mut events.mqtt_options, &device, &signer, &prefix);
                    }
                }
            }
        });
        Ok(MqttLink { client, connected, key, status_topic, telemetry_topic })
    }

    /// Whether the broker connection is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Publishes status signed with the device key; false when it could not be queued.
    pub fn publish_status(&self, status: &DeviceStatus) -> bool {
        if !self.connected() {
            return false;
        }
        let env = SignedEnvelope::sign(&serde_json::to_vec(status).unwrap_or_default(), self.key.as_ref());
        let payload = serde_json::to_vec(&env).unwrap_or_default();
        self.client.try_publish(&self.status_topic, QoS::AtMostOnce, false, payload).is_ok()
    }

    /// Queues a telemetry frame at QoS 1 (call through [`Tracker::send`]).
    pub fn try_publish_telemetry(&self, frame: Vec<u8>) -> bool {
        self.connected() && self.client.try_publish(&self.telemetry_topic, QoS::AtLeastOnce, false, frame).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_code_in_a_suback_is_a_refusal() {
        let granted = SubAck::new(1, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
        assert!(!subscription_refused(&granted));
        let refused =
            SubAck::new(2, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce), SubscribeReasonCode::Failure]);
        assert!(subscription_refused(&refused));
    }
}
