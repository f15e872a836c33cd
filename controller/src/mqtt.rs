//! MQTT: the embedded broker (rumqttd, on its own thread) or an external one, and the
//! controller's client that publishes each device's signed document retained on
//! `PREFIX/devices/{id}/desired`, takes device status from `PREFIX/devices/+/status` and
//! telemetry batches from `PREFIX/devices/+/telemetry`.
//!
//! The client keeps a persistent session (clean session off, a stable client id) so the broker
//! queues QoS 1 telemetry while the controller restarts, and acknowledges each message only
//! after it was handled (stored, or refused for good).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_shared::fleet::{DeviceStatus, parse_mqtt_url, topics};
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::tls::ClientConfig;
use std::sync::atomic::{AtomicUsize, Ordering};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use crate::Error;
use crate::fleet::Fleet;
use crate::telemetry::Telemetry;

/// Messages waiting for the worker beyond which QoS 0 status reports are dropped (counted).
const MAX_BACKLOG: usize = 50_000;

/// Largest MQTT packet either side sends or accepts.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Where the embedded broker listens.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// The listener devices use (TLS when configured).
    pub public: SocketAddr,
    /// Whether `public` speaks TLS.
    pub tls: bool,
    /// A plain listener on 127.0.0.1 for the controller's own client (the public one when it
    /// is plain TCP already).
    pub internal: SocketAddr,
}

fn free_port(listen: SocketAddr) -> Result<SocketAddr, Error> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    // rumqttd does not report the port it bound, so a free one is chosen here first.
    let probe = TcpListener::bind(listen).map_err(|e| Error::Startup(format!("cannot bind MQTT {listen}: {e}")))?;
    probe.local_addr().map_err(|e| Error::Startup(e.to_string()))
}

fn server_settings(name: &str, listen: SocketAddr, tls: Option<rumqttd::TlsConfig>) -> rumqttd::ServerSettings {
    rumqttd::ServerSettings {
        name: name.into(),
        listen,
        tls,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PACKET_BYTES,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// Starts rumqttd on `listen` (port 0 picks a free port) on its own thread, with TLS from the
/// PEM `tls` files when given (the caller has already loaded them once, so a bad file fails with
/// its name before the broker thread starts), and waits until it accepts connections.
pub fn start_embedded(listen: SocketAddr, tls: Option<(&Path, &Path)>) -> Result<EmbeddedBroker, Error> {
    let public = free_port(listen)?;
    let mut servers = HashMap::new();
    let internal = match tls {
        Some((cert, key)) => {
            let tls = rumqttd::TlsConfig::Rustls {
                capath: None,
                certpath: cert.display().to_string(),
                keypath: key.display().to_string(),
            };
            servers.insert("edgefleet-tls".to_owned(), server_settings("edgefleet-tls", public, Some(tls)));
            let internal = free_port(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            servers.insert("edgefleet-internal".to_owned(), server_settings("edgefleet-internal", internal, None));
            internal
        }
        None => {
            servers.insert("edgefleet-v4".to_owned(), server_settings("edgefleet-v4", public, None));
            public
        }
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100_000,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(servers),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            // rumqttd has no shutdown: the thread lives as long as the process.
            if let Err(e) = rumqttd::Broker::new(config).start() {
                tracing::error!(error = %e, "Embedded MQTT broker stopped.");
            }
        })
        .map_err(|e| Error::Startup(format!("cannot start the MQTT broker thread: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in [public, internal] {
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Startup(format!("the embedded MQTT broker did not start on {addr}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let transport = if tls.is_some() { "TLS" } else { "plain TCP" };
    tracing::info!(addr = %public, transport, "Embedded MQTT broker listening.");
    Ok(EmbeddedBroker { public, tls: tls.is_some(), internal })
}

/// The controller's MQTT client.
#[derive(Debug, Clone)]
pub struct Mqtt {
    client: AsyncClient,
    prefix: String,
}

impl Mqtt {
    /// Connects to `url` and keeps the connection (reconnecting with backoff) in a task that
    /// subscribes to device status and republishes every desired document after each connect
    /// (a broker without persistence loses retained messages when it restarts). `mqtts://` URLs
    /// use `tls`.
    pub fn connect(
        url: &str,
        client_id: &str,
        prefix: &str,
        fleet: Fleet,
        telemetry: Telemetry,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<Self, Error> {
        let broker = parse_mqtt_url(url).map_err(Error::Config)?;
        let mut options = MqttOptions::new(client_id, broker.host, broker.port);
        options.set_clean_session(false);
        options.set_manual_acks(true);
        if broker.tls {
            let tls = tls.ok_or_else(|| Error::Config(format!("{url} needs TLS but none is configured")))?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        let (client, mut events) = AsyncClient::new(options, 1_000);
        let mqtt = Mqtt { client, prefix: prefix.to_owned() };
        let this = mqtt.clone();
        let fleet_worker = fleet.clone();
        // The poll loop only moves packets: handling (database writes) runs in a worker and
        // re-publishing in its own task, so acknowledgements keep flowing while they work.
        let (work, mut queue) = mpsc::unbounded_channel::<Publish>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let (worker, depth) = (mqtt.clone(), backlog.clone());
        tokio::spawn(async move {
            while let Some(p) = queue.recv().await {
                match worker.telemetry_device(&p.topic) {
                    Some(device) => worker.on_telemetry(&telemetry, device, p.payload.to_vec()).await,
                    None => worker.on_status(&fleet_worker, &p.topic, &p.payload).await,
                }
                if let Err(e) = worker.client.ack(&p).await {
                    tracing::warn!(error = %e, "Cannot acknowledge an MQTT message.");
                }
                metrics::gauge!("edgefleet_controller_mqtt_backlog_messages")
                    .set(depth.fetch_sub(1, Ordering::Relaxed) as f64 - 1.0);
            }
        });
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(100);
                        tracing::info!("Connected to the MQTT broker.");
                        let (this, fleet) = (this.clone(), fleet.clone());
                        tokio::spawn(async move {
                            for filter in [topics::status(&this.prefix, "+"), topics::telemetry(&this.prefix, "+")] {
                                if let Err(e) = this.client.subscribe(&filter, QoS::AtLeastOnce).await {
                                    tracing::warn!(%filter, error = %e, "Cannot subscribe.");
                                }
                            }
                            this.republish_all(&fleet).await;
                        });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // Heartbeats (QoS 0) are shed under overload; QoS 1 waits its turn.
                        if p.qos == QoS::AtMostOnce && backlog.load(Ordering::Relaxed) >= MAX_BACKLOG {
                            metrics::counter!("edgefleet_controller_status_shed_total").increment(1);
                            continue;
                        }
                        backlog.fetch_add(1, Ordering::Relaxed);
                        if work.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection lost; reconnecting.");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        Ok(mqtt)
    }

    /// Publishes a device's current document, retained, at QoS 0: every document is published
    /// again after each (re)connect and devices also poll over HTTP, so the controller's leg
    /// needs no acknowledgements (with thousands of devices, waiting for them stalled the client
    /// on packet-id collisions).
    pub async fn publish_desired(&self, device: &str, envelope: &SignedEnvelope) {
        let payload = serde_json::to_vec(envelope).unwrap_or_default();
        if let Err(e) = self.client.publish(topics::desired(&self.prefix, device), QoS::AtMostOnce, true, payload).await
        {
            tracing::warn!(%device, error = %e, "Cannot publish the desired state; devices will poll it.");
        }
    }

    async fn republish_all(&self, fleet: &Fleet) {
        match fleet.all_desired().await {
            Ok(all) => {
                for (device, env) in all {
                    self.publish_desired(&device, &env).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "Cannot read desired documents to republish."),
        }
    }

    fn telemetry_device(&self, topic: &str) -> Option<String> {
        topic.strip_prefix(&format!("{}/devices/", self.prefix))?.strip_suffix("/telemetry").map(str::to_owned)
    }

    async fn on_telemetry(&self, telemetry: &Telemetry, device: String, frame: Vec<u8>) {
        match telemetry.ingest(device.clone(), frame).await {
            Ok(i) => tracing::debug!(%device, sequence = i.sequence, samples = i.samples, "Telemetry stored."),
            Err(crate::telemetry::TelemetryError::Refused { class: "duplicate", message }) => {
                tracing::debug!(%device, %message, "Duplicate telemetry batch ignored.");
            }
            Err(e) => tracing::warn!(%device, error = %e, "Telemetry batch not stored."),
        }
    }

    async fn on_status(&self, fleet: &Fleet, topic: &str, payload: &[u8]) {
        let Some(device) =
            topic.strip_prefix(&format!("{}/devices/", self.prefix)).and_then(|r| r.strip_suffix("/status"))
        else {
            return;
        };
        if payload == OFFLINE {
            // The broker published the device's last will.
            if let Err(e) = fleet.mark_offline(device.to_owned()).await {
                tracing::warn!(%device, error = %e, "Cannot record the device offline.");
            }
            return;
        }
        let Ok(envelope) = serde_json::from_slice::<SignedEnvelope>(payload) else {
            metrics::counter!("edgefleet_controller_status_rejected_total", "reason" => "malformed").increment(1);
            return;
        };
        match fleet.verify_device_envelope(device.to_owned(), envelope).await {
            Ok(bytes) => match serde_json::from_slice::<DeviceStatus>(&bytes) {
                Ok(status) => match fleet.record_status(device.to_owned(), status).await {
                    Ok(()) => metrics::counter!("edgefleet_controller_status_reports_total").increment(1),
                    Err(e) => tracing::warn!(%device, error = %e, "Cannot record status."),
                },
                Err(_) => metrics::counter!("edgefleet_controller_status_rejected_total", "reason" => "malformed")
                    .increment(1),
            },
            Err(e) => {
                metrics::counter!("edgefleet_controller_status_rejected_total", "reason" => "signature").increment(1);
                tracing::warn!(%device, error = %e, "Status refused.");
            }
        }
    }
}

/// Last-will payload: the broker publishes it when a device drops off.
pub const OFFLINE: &[u8] = b"offline";
