//! `edgefleet sim`: many simulated devices in one process, for load tests of a controller.
//!
//! Each device has its own Ed25519 key and goes through the real paths: enrollment over HTTP
//! with a token, its own MQTT connection (client id = device id, last will), the retained
//! desired-state subscription, device-signed status (QoS 0) and device-signed telemetry batches
//! in the real frame format (QoS 1) with per-feature histograms and sampled rows. No model runs:
//! a document is "activated" on arrival (reported in the next status, immediately).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgefleet_shared::api::fleet::CreateEnrollmentToken;
use edgefleet_shared::deployment::DeploymentDocument;
use edgefleet_shared::fleet::{
    ActivationReport, DeviceStatus, EnrollRequest, EnrollResponse, MAX_MQTT_PACKET_BYTES, parse_mqtt_url, topics,
};
use edgefleet_shared::keys::{FileKey, Signer as _};
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::telemetry::{FeatureCounts, ModelTelemetry, Sample, TELEMETRY_KIND, TelemetryBatch};
use futures::StreamExt as _;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};

use crate::args::SimArgs;
use crate::client::{CliError, Client};

#[derive(Debug, Default)]
struct Stats {
    enrolled: AtomicU64,
    connected: AtomicU64,
    disconnects: AtomicU64,
    statuses: AtomicU64,
    batches: AtomicU64,
    acked: AtomicU64,
    documents: AtomicU64,
}

/// One simulated device's state.
struct Device {
    key: FileKey,
    id: String,
    sequence: u64,
    active: Option<DeploymentDocument>,
}

impl Device {
    fn status(&self, started: Instant) -> DeviceStatus {
        // A simulated device serves the first model its document names.
        let doc = self.active.as_ref();
        let model = doc.and_then(|d| d.model.clone());
        DeviceStatus {
            agent_version: format!("sim-{}", env!("CARGO_PKG_VERSION")),
            uptime_secs: started.elapsed().as_secs(),
            active: model.clone(),
            last_sequence: doc.map(|d| d.sequence),
            last_activation: doc.zip(model).map(|(d, model)| ActivationReport {
                model,
                sequence: d.sequence,
                ok: true,
                error: None,
                at: edgefleet_shared::clock::unix_secs(),
                duration_ms: 0,
                delta_bytes_saved: 0,
            }),
            ..DeviceStatus::default()
        }
    }

    fn batch(&mut self, samples: usize, interval: u64) -> TelemetryBatch {
        self.sequence += 1;
        let end = edgefleet_shared::clock::unix_secs();
        let model = self
            .active
            .as_ref()
            .and_then(|d| d.model.as_ref())
            .map_or(("sim".to_owned(), 0), |m| (m.name.clone(), m.version));
        let sample = |i: usize| Sample {
            request_id: Some(format!("{}-{}-{i}", &self.id[..8.min(self.id.len())], self.sequence)),
            at_ms: end * 1000 - i as u64,
            inputs: vec![
                5.0 + (i % 9) as f32 * 0.2,
                3.0 + (i % 4) as f32 * 0.2,
                1.5 + (i % 11) as f32 * 0.4,
                0.2 + (i % 6) as f32 * 0.3,
            ],
            outputs: vec![0.8, 0.15, 0.05],
            predicted: Some((i % 3) as u64),
            low_confidence: false,
        };
        TelemetryBatch {
            kind: TELEMETRY_KIND.into(),
            device: self.id.clone(),
            sequence: self.sequence,
            start: end.saturating_sub(interval),
            end,
            models: vec![ModelTelemetry {
                model: model.0,
                version: model.1,
                rows: 100,
                features: (0..4).map(|_| FeatureCounts { counts: vec![10; 10], missing: 0 }).collect(),
                output_classes: vec![34, 33, 33],
                samples: (0..samples).map(sample).collect(),
                feedback: Vec::new(),
                labeled: 0,
                correct: 0,
            }],
            samples_capped: 0,
        }
    }
}

/// Runs the simulator against the CLI's controller.
pub async fn run(client: &Client, args: SimArgs) -> Result<(), CliError> {
    let labels: BTreeMap<String, String> = if args.labels.is_empty() {
        BTreeMap::from([("sim".into(), "true".into())])
    } else {
        args.labels.into_iter().collect()
    };
    let request = CreateEnrollmentToken { uses: args.devices, ttl_secs: 3600, labels };
    let token = client.create_enrollment_token(&request).await?.token;
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    say!("sim: enrolling {} devices at {} ({} at a time)", args.devices, client.base(), args.concurrency);
    let enrolled: Vec<Result<(FileKey, EnrollResponse), CliError>> = futures::stream::iter(0..args.devices)
        .map(|_| {
            let (token, stats) = (token.clone(), stats.clone());
            async move {
                let key = FileKey::generate().map_err(|e| CliError::Usage(e.to_string()))?;
                let body = EnrollRequest { token, public_key: key.public_key().to_base64(), labels: BTreeMap::new() };
                let answer = client.enroll(&body).await?;
                stats.enrolled.fetch_add(1, Ordering::Relaxed);
                Ok((key, answer))
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let devices: Vec<(FileKey, EnrollResponse)> = enrolled.into_iter().collect::<Result<_, _>>()?;
    let enroll_time = started.elapsed();
    say!("sim: {} enrolled in {:.1}s", devices.len(), enroll_time.as_secs_f64());
    let mqtt_url = args
        .mqtt
        .clone()
        .or_else(|| devices.first().and_then(|d| d.1.mqtt_url.clone()))
        .ok_or_else(|| CliError::Usage("the controller has no MQTT broker; give --mqtt".into()))?;
    let broker = parse_mqtt_url(&mqtt_url).map_err(CliError::Usage)?;
    if broker.tls {
        return Err(CliError::Usage("the simulator speaks plain MQTT only; give --mqtt mqtt://...".into()));
    }
    let connect_started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    for (key, answer) in devices {
        let device = Device { id: answer.device_id.clone(), key, sequence: 0, active: None };
        let options = {
            let mut o = MqttOptions::new(answer.device_id.clone(), broker.host.clone(), broker.port);
            o.set_keep_alive(Duration::from_secs(60));
            o.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
            login(&mut o, &device, &answer.topic_prefix);
            o
        };
        let permit = gate.clone().acquire_owned().await.map_err(|e| CliError::Usage(e.to_string()))?;
        tokio::spawn(simulate(
            device,
            options,
            answer.topic_prefix,
            stats.clone(),
            permit,
            Timing { status: args.status_interval, telemetry: args.telemetry_interval, samples: args.samples, started },
        ));
    }
    while stats.connected.load(Ordering::Relaxed) < u64::from(args.devices) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if connect_started.elapsed() > Duration::from_secs(600) {
            return Err(CliError::Usage(format!(
                "only {} of {} devices connected in 10 min",
                stats.connected.load(Ordering::Relaxed),
                args.devices
            )));
        }
    }
    say!(
        "sim: {} connected over MQTT in {:.1}s (enrolled + connected: {:.1}s)",
        args.devices,
        connect_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let run_started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let snapshot = |s: &Stats| {
        (s.statuses.load(Ordering::Relaxed), s.batches.load(Ordering::Relaxed), s.acked.load(Ordering::Relaxed))
    };
    let (s0, b0, a0) = snapshot(&stats);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let secs = run_started.elapsed().as_secs_f64();
        let (s, b, a) = snapshot(&stats);
        say!(
            "sim: t={secs:.0}s status/s={:.0} telemetry batches/s={:.0} acked/s={:.0} documents={} disconnects={}",
            (s - s0) as f64 / secs,
            (b - b0) as f64 / secs,
            (a - a0) as f64 / secs,
            stats.documents.load(Ordering::Relaxed),
            stats.disconnects.load(Ordering::Relaxed)
        );
        if !args.duration.is_zero() && run_started.elapsed() >= args.duration {
            break;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    status: Duration,
    telemetry: Duration,
    samples: usize,
    started: Instant,
}

async fn simulate(
    mut device: Device,
    options: MqttOptions,
    prefix: String,
    stats: Arc<Stats>,
    permit: tokio::sync::OwnedSemaphorePermit,
    timing: Timing,
) {
    let (client, mut events) = AsyncClient::new(options, 16);
    let (status_topic, telemetry_topic) = (topics::status(&prefix, &device.id), topics::telemetry(&prefix, &device.id));
    let desired_topic = topics::desired(&prefix, &device.id);
    let mut permit = Some(permit);
    // Spread the devices' timers over their intervals.
    let phase = |every: Duration| {
        let n = u64::from_le_bytes(device.key.public_key().to_base64().as_bytes()[..8].try_into().unwrap_or([0; 8]));
        Duration::from_millis(n % every.as_millis().max(1) as u64)
    };
    let mut status = tokio::time::interval_at(tokio::time::Instant::now() + phase(timing.status), timing.status);
    let mut telemetry =
        tokio::time::interval_at(tokio::time::Instant::now() + phase(timing.telemetry), timing.telemetry);
    let mut connected = false;
    loop {
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if permit.take().is_some() {
                        stats.connected.fetch_add(1, Ordering::Relaxed);
                    }
                    connected = true;
                    let _ = client.try_subscribe(&desired_topic, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == desired_topic => {
                    let doc = serde_json::from_slice::<SignedEnvelope>(&p.payload)
                        .ok()
                        .and_then(|e| e.document_bytes())
                        .and_then(|b| serde_json::from_slice::<DeploymentDocument>(&b).ok());
                    if let Some(doc) = doc {
                        stats.documents.fetch_add(1, Ordering::Relaxed);
                        device.active = Some(doc);
                        publish_status(&client, &status_topic, &device, timing.started, &stats);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    stats.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => {
                    if connected {
                        stats.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    connected = false;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    login(&mut events.mqtt_options, &device, &prefix);
                }
            },
            _ = status.tick(), if connected => publish_status(&client, &status_topic, &device, timing.started, &stats),
            _ = telemetry.tick(), if connected => {
                let frame = device.batch(timing.samples, timing.telemetry.as_secs()).encode(&device.key);
                if client.try_publish(&telemetry_topic, QoS::AtLeastOnce, false, frame).is_ok() {
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A device's broker login and signed will, fresh for each connection attempt (as the agent's).
fn login(options: &mut MqttOptions, device: &Device, prefix: &str) {
    let now = edgefleet_shared::clock::unix_secs();
    let login = edgefleet_shared::fleet::device_login(&device.key, &device.id, prefix, now);
    options.set_credentials(login.username, login.password);
    options.set_last_will(LastWill::new(login.will_topic, login.will_payload, QoS::AtLeastOnce, false));
}

fn publish_status(client: &AsyncClient, topic: &str, device: &Device, started: Instant, stats: &Stats) {
    let env = SignedEnvelope::sign(&serde_json::to_vec(&device.status(started)).unwrap_or_default(), &device.key);
    if client.try_publish(topic, QoS::AtMostOnce, false, serde_json::to_vec(&env).unwrap_or_default()).is_ok() {
        stats.statuses.fetch_add(1, Ordering::Relaxed);
    }
}
