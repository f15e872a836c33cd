//! MQTT: the embedded broker ([`embedded`], behind its [`gate`]) or an external one, and the
//! controller's client that publishes each device's signed document retained on
//! `PREFIX/devices/{id}/desired` and the trust chain retained on `PREFIX/trust`, and takes
//! device status from `PREFIX/devices/+/status` and telemetry batches from
//! `PREFIX/devices/+/telemetry`.
//!
//! The client keeps a persistent session (clean session off, a stable client id) so the broker
//! queues QoS 1 telemetry while the controller restarts, and acknowledges each message only
//! after it was handled (stored, or refused for good). Whatever the broker enforces, the client
//! trusts nothing it is told: status, offline notices and telemetry count only when signed by
//! the key of the device whose topic they came on. [`mosquitto`] writes the broker set-up that
//! authenticates every client on an external Mosquitto, and [`dynsec`] keeps its authorization
//! (each device's topics) in step with the fleet.

pub mod dynsec;
#[cfg(feature = "embedded-broker")]
pub mod embedded;
#[cfg(feature = "embedded-broker")]
pub mod gate;
pub mod mosquitto;

use std::sync::Arc;
use std::time::Duration;

use edgefleet_service::tls::ClientConfig;
use edgefleet_shared::fleet::{
    DeviceStatus, MAX_MQTT_PACKET_BYTES, OFFLINE_KIND, OfflineNotice, parse_mqtt_url, topics,
};
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::trust::TrustChain;
use std::sync::atomic::{AtomicUsize, Ordering};

use rumqttc::mqttbytes::v4::Login;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use crate::Error;
use crate::config::MqttConfig;
use crate::fleet::Fleet;
use crate::telemetry::{Refusal, Telemetry, TelemetryError};

/// Messages waiting for the worker beyond which QoS 0 status reports are dropped (counted).
const MAX_BACKLOG: usize = 50_000;
/// Most messages the worker handles as one group (telemetry in one transaction).
const MAX_GROUP: usize = 512;
/// Payload bytes after which a group takes no more messages.
const MAX_GROUP_BYTES: usize = 8 << 20;
/// How often the dynamic-security plugin is reconciled with the fleet besides each connect.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(600);

/// Where the controller's client connects and how it logs in.
#[derive(Debug, Clone)]
pub struct Broker {
    url: String,
    login: Option<Login>,
    /// A client certificate and its key (PEM files) for brokers that authenticate by certificate.
    certificate: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Whether the controller keeps the broker's dynamic-security plugin.
    dynamic_security: bool,
    /// The shared-subscription group replicas take status and telemetry through.
    shared_group: Option<String>,
}

impl Broker {
    /// The embedded broker's loopback listener, with the login made at this start.
    #[cfg(feature = "embedded-broker")]
    pub fn embedded(broker: &embedded::EmbeddedBroker) -> Self {
        Broker {
            url: format!("mqtt://{}", broker.internal),
            login: Some(broker.controller_login.clone()),
            certificate: None,
            dynamic_security: false,
            shared_group: None,
        }
    }

    /// An external broker, logging in as `[mqtt]` says.
    pub fn external(url: &str, config: &MqttConfig) -> Result<Self, Error> {
        let login = match (&config.username, &config.password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file)
                    .map_err(|e| Error::Config(format!("cannot read {}: {e}", file.display())))?;
                Some(Login::new(user.clone(), password.trim().to_owned()))
            }
            _ => None,
        };
        let certificate = config.client_cert.clone().zip(config.client_key.clone());
        Ok(Broker {
            url: url.to_owned(),
            login,
            certificate,
            dynamic_security: config.dynamic_security,
            shared_group: config.shared_group.clone(),
        })
    }
}

/// The controller's MQTT client.
#[derive(Debug, Clone)]
pub struct Mqtt {
    client: AsyncClient,
    prefix: String,
    /// The broker's dynamic-security plugin, when the controller keeps it.
    dynsec: Option<Arc<dynsec::Dynsec>>,
}

/// The client options for `broker`: a persistent session with manual acknowledgements.
fn client_options(
    broker: &Broker,
    client_id: &str,
    tls: Option<Arc<ClientConfig>>,
    ca_file: Option<&std::path::Path>,
) -> Result<MqttOptions, Error> {
    let url = parse_mqtt_url(&broker.url).map_err(Error::Config)?;
    let mut options = MqttOptions::new(client_id, url.host, url.port);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    if let Some(login) = &broker.login {
        options.set_credentials(login.username.clone(), login.password.clone());
    }
    if url.tls {
        let tls = match &broker.certificate {
            Some((cert, key)) => edgefleet_service::tls::client_config_with_certificate_files(ca_file, cert, key)
                .map_err(|e| Error::Config(format!("mqtt.client_cert: {e}")))?,
            None => tls.ok_or_else(|| Error::Config(format!("{} needs TLS but none is configured", broker.url)))?,
        };
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    Ok(options)
}

/// Hands a received message to the worker; false once the worker is gone. Heartbeats (QoS 0)
/// are shed under overload; QoS 1 waits its turn.
fn enqueue(p: Publish, work: &mpsc::UnboundedSender<Publish>, backlog: &AtomicUsize) -> bool {
    if p.qos == QoS::AtMostOnce && backlog.load(Ordering::Relaxed) >= MAX_BACKLOG {
        metrics::counter!(crate::metric::STATUS_SHED).increment(1);
        return true;
    }
    backlog.fetch_add(1, Ordering::Relaxed);
    work.send(p).is_ok()
}

/// A replica's status link: a clean session subscribed to the shared status filter, feeding
/// the same worker as the main link (statuses are QoS 0: nothing to acknowledge), reconnecting
/// with backoff.
fn status_link(options: MqttOptions, filter: String, work: mpsc::UnboundedSender<Publish>, backlog: Arc<AtomicUsize>) {
    let (client, mut events) = AsyncClient::new(options, 1_000);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    let (client, filter) = (client.clone(), filter.clone());
                    tokio::spawn(async move {
                        if let Err(e) = client.subscribe(&filter, QoS::AtMostOnce).await {
                            tracing::warn!(%filter, error = %e, "Cannot subscribe.");
                        }
                    });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !enqueue(p, &work, &backlog) {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT status link lost; reconnecting.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
}

impl Mqtt {
    /// Connects to `url` and keeps the connection (reconnecting with backoff) in a task that
    /// subscribes to device status and republishes every desired document after each connect
    /// (a broker without persistence loses retained messages when it restarts). `mqtts://` URLs
    /// use `tls`.
    pub fn connect(
        broker: Broker,
        client_id: &str,
        prefix: &str,
        fleet: Fleet,
        telemetry: Telemetry,
        tls: Option<Arc<ClientConfig>>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        let options = client_options(&broker, client_id, tls.clone(), ca_file)?;
        let (client, mut events) = AsyncClient::new(options, 1_000);
        let dynsec = broker.dynamic_security.then(|| Arc::new(dynsec::Dynsec::default()));
        let mqtt = Mqtt { client, prefix: prefix.to_owned(), dynsec };
        // Replicas: each message to one member of the group. Telemetry on this persistent
        // session (a dead replica's share waits in the broker for its return); statuses on a
        // second, clean session ([`status_link`]): brokers keep dealing a shared subscription's
        // messages to a member whose persistent session is offline (Mosquitto 2 does, dropping
        // QoS 0), so a dead replica would otherwise swallow the heartbeats of the devices whose
        // turn falls on it; a clean session ends with its connection.
        let share = broker.shared_group.as_ref().map(|g| format!("$share/{g}/")).unwrap_or_default();
        if mqtt.dynsec.is_some() {
            // Besides every connect: whatever a lost answer or a race left behind is mended.
            let (this, fleet) = (mqtt.clone(), fleet.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(RECONCILE_INTERVAL);
                every.tick().await;
                loop {
                    every.tick().await;
                    if this.dynsec.as_ref().is_some_and(|d| d.is_ready()) {
                        this.reconcile_access(&fleet).await;
                    }
                }
            });
        }
        let this = mqtt.clone();
        let fleet_worker = fleet.clone();
        // The poll loop only moves packets: handling (database writes) runs in a worker and
        // re-publishing in its own task, so acknowledgements keep flowing while they work.
        let (work, mut queue) = mpsc::unbounded_channel::<Publish>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let (worker, depth) = (mqtt.clone(), backlog.clone());
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                // Group commit: everything waiting now is handled together, telemetry in one
                // transaction, each message acknowledged once its transaction committed.
                let (mut group, mut bytes) = (vec![first], 0);
                while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                    let Ok(p) = queue.try_recv() else { break };
                    bytes += p.payload.len();
                    group.push(p);
                }
                worker.handle(&telemetry, &fleet_worker, group, &depth).await;
            }
        });
        if let Some(group) = &broker.shared_group {
            let mut options = client_options(&broker, &format!("{client_id}-status"), tls, ca_file)?;
            options.set_clean_session(true);
            let filter = format!("$share/{group}/{}", topics::status(prefix, "+"));
            status_link(options, filter, work.clone(), backlog.clone());
        }
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(100);
                        tracing::info!("Connected to the MQTT broker.");
                        let (this, fleet, share) = (this.clone(), fleet.clone(), share.clone());
                        tokio::spawn(async move {
                            let answers = this.dynsec.as_ref().map(|_| dynsec::RESPONSE_TOPIC.to_owned());
                            let status = share.is_empty().then(|| topics::status(&this.prefix, "+"));
                            let telemetry = format!("{share}{}", topics::telemetry(&this.prefix, "+"));
                            let filters = status.into_iter().chain([telemetry]);
                            for filter in answers.into_iter().chain(filters) {
                                if let Err(e) = this.client.subscribe(&filter, QoS::AtLeastOnce).await {
                                    tracing::warn!(%filter, error = %e, "Cannot subscribe.");
                                }
                            }
                            if let Some(d) = &this.dynsec {
                                d.set_ready(true);
                            }
                            this.reconcile_access(&fleet).await;
                            this.republish_all(&fleet).await;
                        });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == dynsec::RESPONSE_TOPIC => {
                        if let Some(d) = &this.dynsec {
                            d.answer(&p.payload);
                        }
                        if let Err(e) = this.client.try_ack(&p) {
                            tracing::warn!(error = %e, "Cannot acknowledge an MQTT message.");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if !enqueue(p, &work, &backlog) {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(d) = &this.dynsec {
                            d.set_ready(false);
                        }
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

    /// Deletes a device's retained document (an empty retained message), so that nothing is
    /// delivered to it any more (a decommissioned device).
    pub async fn clear_desired(&self, device: &str) {
        let topic = topics::desired(&self.prefix, device);
        if let Err(e) = self.client.publish(topic, QoS::AtLeastOnce, true, Vec::new()).await {
            tracing::warn!(%device, error = %e, "Cannot clear the retained desired state.");
        }
    }

    /// Publishes the trust chain, retained, for every device (QoS 1: it is rare and it matters).
    pub async fn publish_trust(&self, chain: &TrustChain) {
        if chain.rotations.is_empty() {
            return;
        }
        let payload = serde_json::to_vec(chain).unwrap_or_default();
        if let Err(e) = self.client.publish(topics::trust(&self.prefix), QoS::AtLeastOnce, true, payload).await {
            tracing::warn!(error = %e, "Cannot publish the trust chain; devices will fetch it over HTTP.");
        }
    }

    /// Lets `device` in on a broker whose dynamic-security plugin the controller keeps (its
    /// role and client exist when this returns); nothing to do on other brokers.
    pub async fn grant_access(&self, device: &str) -> Result<(), dynsec::DynsecError> {
        let Some(d) = &self.dynsec else { return Ok(()) };
        let result = d.apply(&self.client, dynsec::grant_commands(&self.prefix, device)).await;
        access_change("grant", &result);
        result
    }

    /// Shuts a decommissioned `device` out of such a broker (its live connections are closed),
    /// in the background: when the broker is unreachable, a later reconciliation does it.
    pub fn revoke_access(&self, device: &str) {
        let (this, device) = (self.clone(), device.to_owned());
        tokio::spawn(async move { this.revoke_access_now(&device).await });
    }

    /// [`Mqtt::revoke_access`], waiting for the broker's answer.
    pub async fn revoke_access_now(&self, device: &str) {
        let Some(d) = &self.dynsec else { return };
        let result = d.apply(&self.client, dynsec::revoke_commands(device)).await;
        access_change("revoke", &result);
        match result {
            Ok(()) => tracing::info!(%device, "Broker access revoked."),
            Err(e) => tracing::error!(%device, error = %e,
                "Cannot revoke the device's broker access now; a later reconciliation does it."),
        }
    }

    /// Makes the dynamic-security plugin agree with the fleet (after each connect).
    async fn reconcile_access(&self, fleet: &Fleet) {
        let Some(d) = &self.dynsec else { return };
        let (live, decommissioned) = match fleet.device_ids_by_state().await {
            Ok(ids) => ids,
            Err(e) => return tracing::error!(error = %e, "Cannot read the fleet to reconcile broker access."),
        };
        match d.reconcile(&self.client, &self.prefix, &live, &decommissioned).await {
            Ok(plan) => {
                // A device decommissioned while it was being granted must not keep the grant.
                if let Ok((_, now_gone)) = fleet.device_ids_by_state().await {
                    for device in plan.grant.iter().filter(|d| now_gone.contains(d)) {
                        self.revoke_access_now(device).await;
                    }
                }
                metrics::counter!(crate::metric::BROKER_ACCESS_CHANGES, "change" => "grant", "result" => "ok")
                    .increment(plan.grant.len() as u64);
                metrics::counter!(crate::metric::BROKER_ACCESS_CHANGES, "change" => "revoke", "result" => "ok")
                    .increment(plan.revoke.len() as u64);
                tracing::info!(
                    granted = plan.grant.len(),
                    revoked = plan.revoke.len(),
                    "Broker access reconciled with the fleet."
                );
            }
            Err(e) => tracing::error!(error = %e, "Cannot reconcile broker access with the fleet."),
        }
    }

    async fn republish_all(&self, fleet: &Fleet) {
        self.publish_trust(&fleet.keys().chain()).await;
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
        topics::device_topic(&self.prefix, topic).filter(|(_, leaf)| *leaf == "telemetry").map(|(d, _)| d.to_owned())
    }

    /// Handles a group of messages in arrival order: runs of telemetry stored together
    /// ([`Telemetry::ingest_many`]), status reports one by one; each acknowledged when handled.
    async fn handle(&self, telemetry: &Telemetry, fleet: &Fleet, group: Vec<Publish>, depth: &AtomicUsize) {
        let mut run: Vec<(String, Publish)> = Vec::new();
        for p in group {
            if let Some(device) = self.telemetry_device(&p.topic) {
                run.push((device, p));
                continue;
            }
            self.store_telemetry(telemetry, std::mem::take(&mut run), depth).await;
            self.on_status(fleet, &p.topic, &p.payload).await;
            self.ack(&p, depth).await;
        }
        self.store_telemetry(telemetry, run, depth).await;
    }

    /// Stores telemetry frames in one transaction, then acknowledges each (never before the
    /// commit: a controller killed in between gets them again and refuses them as duplicates;
    /// a commit that failed is retried until it succeeds).
    async fn store_telemetry(&self, telemetry: &Telemetry, run: Vec<(String, Publish)>, depth: &AtomicUsize) {
        if run.is_empty() {
            return;
        }
        // A transaction that could not commit stored nothing: tried again (the broker holds
        // the messages meanwhile) rather than acknowledged.
        let mut backoff = Duration::from_millis(100);
        let results = loop {
            let frames = run.iter().map(|(device, p)| (device.clone(), p.payload.to_vec())).collect();
            let results = telemetry.ingest_many(frames).await;
            let Some(Err(TelemetryError::Commit(e))) = results.first() else { break results };
            tracing::warn!(frames = run.len(), error = %e, retry_in_ms = backoff.as_millis() as u64, "Telemetry not committed; trying again.");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        for ((device, p), result) in run.iter().zip(results) {
            match result {
                Ok(i) => tracing::debug!(%device, sequence = i.sequence, samples = i.samples, "Telemetry stored."),
                Err(TelemetryError::Refused { class: Refusal::Duplicate, message }) => {
                    tracing::debug!(%device, %message, "Duplicate telemetry batch ignored.");
                }
                Err(e) => tracing::warn!(%device, error = %e, "Telemetry batch not stored."),
            }
            self.ack(p, depth).await;
        }
    }

    async fn ack(&self, p: &Publish, depth: &AtomicUsize) {
        if let Err(e) = self.client.ack(p).await {
            tracing::warn!(error = %e, "Cannot acknowledge an MQTT message.");
        }
        metrics::gauge!(crate::metric::MQTT_BACKLOG).set(depth.fetch_sub(1, Ordering::Relaxed) as f64 - 1.0);
    }

    async fn on_status(&self, fleet: &Fleet, topic: &str, payload: &[u8]) {
        let Some(device) = topics::device_topic(&self.prefix, topic).filter(|(_, l)| *l == "status").map(|(d, _)| d)
        else {
            return;
        };
        let Ok(envelope) = serde_json::from_slice::<SignedEnvelope>(payload) else {
            // Also an unsigned "offline": only the device's own signed notice marks it offline.
            metrics::counter!(crate::metric::STATUS_REJECTED, "reason" => "malformed").increment(1);
            return;
        };
        match fleet.verify_device_envelope(device.to_owned(), envelope).await {
            Ok(bytes) => {
                if let Ok(notice) = serde_json::from_slice::<OfflineNotice>(&bytes) {
                    if notice.kind != OFFLINE_KIND || notice.device != device {
                        metrics::counter!(crate::metric::STATUS_REJECTED, "reason" => "malformed").increment(1);
                        return;
                    }
                    // The broker published the device's last will.
                    if let Err(e) = fleet.mark_offline(device.to_owned()).await {
                        tracing::warn!(%device, error = %e, "Cannot record the device offline.");
                    }
                    return;
                }
                match serde_json::from_slice::<DeviceStatus>(&bytes) {
                    Ok(status) => match fleet.record_status(device.to_owned(), status).await {
                        Ok(()) => metrics::counter!(crate::metric::STATUS_REPORTS).increment(1),
                        Err(e) => tracing::warn!(%device, error = %e, "Cannot record status."),
                    },
                    Err(_) => metrics::counter!(crate::metric::STATUS_REJECTED, "reason" => "malformed").increment(1),
                }
            }
            Err(e) => {
                metrics::counter!(crate::metric::STATUS_REJECTED, "reason" => "signature").increment(1);
                tracing::warn!(%device, error = %e, "Status refused.");
            }
        }
    }
}

fn access_change(change: &'static str, result: &Result<(), dynsec::DynsecError>) {
    let result = if result.is_ok() { "ok" } else { "failed" };
    metrics::counter!(crate::metric::BROKER_ACCESS_CHANGES, "change" => change, "result" => result).increment(1);
}
