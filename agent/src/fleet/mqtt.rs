//! The agent's MQTT link: receives its signed document from the retained
//! `PREFIX/devices/{id}/desired` topic, publishes device-signed status on
//! `PREFIX/devices/{id}/status` (QoS 0: a periodic heartbeat, the latest wins) with a last will
//! that marks it offline, and telemetry batches on `PREFIX/devices/{id}/telemetry` (QoS 1, each
//! acknowledgement reported to the telemetry [`Tracker`]).
//!
//! rumqttc reconnects on the next poll after an error; the loop backs off exponentially. While
//! the link is down the agent falls back to HTTP polling.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgefleet_shared::fleet::{DeviceStatus, parse_mqtt_url, topics};
use edgefleet_shared::keys::FileKey;
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::tls::ClientConfig;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use crate::telemetry::publish::Tracker;

/// Last-will payload (matches the controller's).
const OFFLINE: &[u8] = b"offline";
/// Largest packet accepted or sent.
const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// A running MQTT link.
#[derive(Debug, Clone)]
pub struct MqttLink {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    key: Arc<FileKey>,
    status_topic: String,
    telemetry_topic: String,
}

impl MqttLink {
    /// Connects (in the background, over TLS with `tls` for `mqtts://`) and forwards documents
    /// from the desired topic.
    pub fn start(
        url: &str,
        tls: Arc<ClientConfig>,
        prefix: &str,
        device: &str,
        key: Arc<FileKey>,
        tracker: Arc<Tracker>,
    ) -> Result<(Self, mpsc::Receiver<SignedEnvelope>), String> {
        let broker = parse_mqtt_url(url)?;
        let status_topic = topics::status(prefix, device);
        let telemetry_topic = topics::telemetry(prefix, device);
        let desired_topic = topics::desired(prefix, device);
        let mut options = MqttOptions::new(device, broker.host, broker.port);
        if broker.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        options.set_keep_alive(Duration::from_secs(15));
        options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        options.set_last_will(LastWill::new(&status_topic, OFFLINE.to_vec(), QoS::AtLeastOnce, false));
        let (client, mut events) = AsyncClient::new(options, 64);
        let connected = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(8);
        let (c, flag) = (client.clone(), connected.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(100);
                        flag.store(true, Ordering::Relaxed);
                        metrics::gauge!("edgefleet_agent_mqtt_connected").set(1.0);
                        tracing::info!("MQTT connected.");
                        if let Err(e) = c.subscribe(&desired_topic, QoS::AtLeastOnce).await {
                            tracing::warn!(error = %e, "Cannot subscribe to the desired state.");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == desired_topic => {
                        match serde_json::from_slice::<SignedEnvelope>(&p.payload) {
                            Ok(env) => {
                                if tx.send(env).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "Desired-state message is not a signed envelope."),
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => tracker.on_outgoing(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => tracker.on_puback(ack.pkid),
                    Ok(_) => {}
                    Err(e) => {
                        metrics::gauge!("edgefleet_agent_mqtt_connected").set(0.0);
                        if flag.swap(false, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "MQTT connection lost; falling back to HTTP polling.");
                        }
                        metrics::counter!("edgefleet_agent_mqtt_reconnects_total").increment(1);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        Ok((MqttLink { client, connected, key, status_topic, telemetry_topic }, rx))
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
