//! Cutting batches into the spool and sending them until the broker acknowledges them.
//!
//! The MQTT link's [`Tracker`] pairs each batch with its PUBACK; a batch that stays
//! unacknowledged for [`RESEND_AFTER`](crate::fleet::acks::RESEND_AFTER) is queued again, and the controller de-duplicates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_shared::keys::FileKey;
use tokio::sync::{mpsc, oneshot};

use super::Hub;
use super::spool::Spool;
use crate::fleet::acks::Tracker;
use crate::fleet::mqtt::MqttLink;

/// Batches in flight (queued, not acknowledged) at most.
const MAX_IN_FLIGHT: usize = 16;
/// How often spooled batches are offered to the broker link.
const PUMP_INTERVAL: Duration = Duration::from_millis(250);

/// Asks the telemetry task to cut a batch now (at shutdown).
#[derive(Debug, Clone)]
pub struct Flusher(mpsc::Sender<oneshot::Sender<()>>);

impl Flusher {
    /// Cuts and spools a batch of what was recorded so far; waits up to `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(tx).await.is_ok() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }
}

/// What the telemetry task needs.
#[derive(Debug)]
pub struct Task {
    /// Recorders to drain.
    pub hub: Arc<Hub>,
    /// The spool (opened at start).
    pub spool: Spool,
    /// This device.
    pub device: String,
    /// Its key, which signs batches.
    pub key: Arc<FileKey>,
    /// The broker link, when there is a broker.
    pub link: Option<MqttLink>,
    /// Packet-id pairing shared with the link.
    pub tracker: Arc<Tracker>,
    /// Acknowledged batches.
    pub acked: mpsc::UnboundedReceiver<u64>,
    /// Batch interval.
    pub interval: Duration,
}

impl Task {
    /// Runs the task in the background.
    pub fn spawn(self) -> Flusher {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(self.run(rx));
        Flusher(tx)
    }

    async fn run(self, mut flushes: mpsc::Receiver<oneshot::Sender<()>>) {
        let Task { hub, spool, device, key, link, tracker, mut acked, interval } = self;
        let spool = Arc::new(Mutex::new(spool));
        let mut cut = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut pump = tokio::time::interval(PUMP_INTERVAL);
        let mut start = edgefleet_shared::clock::unix_secs();
        loop {
            tokio::select! {
                _ = cut.tick() => start = cut_batch(&hub, &spool, &device, &key, start).await,
                Some(done) = flushes.recv() => {
                    start = cut_batch(&hub, &spool, &device, &key, start).await;
                    let _ = done.send(());
                }
                Some(seq) = acked.recv() => {
                    let spool = spool.clone();
                    let result = tokio::task::spawn_blocking(move || lock(&spool).ack(seq)).await;
                    if let Ok(Err(e)) = result {
                        tracing::error!(error = %e, "Cannot delete an acknowledged telemetry batch.");
                    }
                    metrics::counter!(crate::metric::TELEMETRY_BATCHES, "result" => "acknowledged").increment(1);
                }
                _ = pump.tick() => {
                    if let Some(link) = &link {
                        offer(link, &tracker, &spool).await;
                    }
                }
            }
        }
    }
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drains the recorders into a numbered, signed batch in the spool; returns the next start.
async fn cut_batch(hub: &Arc<Hub>, spool: &Arc<Mutex<Spool>>, device: &str, key: &Arc<FileKey>, start: u64) -> u64 {
    let end = edgefleet_shared::clock::unix_secs();
    let Some(mut batch) = hub.drain(device, start, end) else { return end };
    let (spool, key) = (spool.clone(), key.clone());
    let result = tokio::task::spawn_blocking(move || {
        let mut spool = lock(&spool);
        batch.sequence = spool.next_sequence()?;
        let frame = batch.encode(key.as_ref());
        spool.append(batch.sequence, &frame, batch.sample_count() as u64)?;
        Ok::<_, super::spool::SpoolError>((
            batch.sequence,
            frame.len(),
            batch.models.iter().map(|m| m.rows).sum::<u64>(),
        ))
    })
    .await;
    match result {
        Ok(Ok((sequence, bytes, rows))) => {
            metrics::counter!(crate::metric::TELEMETRY_BATCHES, "result" => "spooled").increment(1);
            metrics::counter!(crate::metric::TELEMETRY_BYTES).increment(bytes as u64);
            tracing::debug!(sequence, bytes, rows, "Telemetry batch spooled.");
        }
        Ok(Err(e)) => tracing::error!(error = %e, "Cannot spool a telemetry batch; it is lost."),
        Err(e) => tracing::error!(error = %e, "The spool writer panicked."),
    }
    end
}

/// Queues spooled batches that are not in flight, oldest first, while the link is up.
async fn offer(link: &MqttLink, tracker: &Arc<Tracker>, spool: &Arc<Mutex<Spool>>) {
    if !link.connected() {
        return;
    }
    let room = MAX_IN_FLIGHT.saturating_sub(tracker.in_flight_count());
    if room == 0 {
        return;
    }
    let (spool, tracker2) = (spool.clone(), tracker.clone());
    let frames = tokio::task::spawn_blocking(move || {
        let spool = lock(&spool);
        let due: Vec<u64> = spool.sequences().filter(|s| !tracker2.in_flight(*s)).take(room).collect();
        due.into_iter().filter_map(|s| spool.read(s).ok().flatten().map(|f| (s, f))).collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (seq, frame) in frames {
        if !tracker.send(seq, || link.try_publish_telemetry(frame)) {
            break;
        }
    }
}
