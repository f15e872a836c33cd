//! Which telemetry batch a PUBACK acknowledges.
//!
//! rumqttc does not say which publish a PUBACK is for, only its packet id. The agent sends
//! status at QoS 0, so every QoS 1 publish on its connection is a telemetry batch, and rumqttc
//! assigns packet ids in the order publishes are queued: [`Tracker`] pairs each outgoing packet
//! id with the oldest batch queued and not yet paired, and each PUBACK with its batch. A
//! retransmission after a reconnect keeps its packet id (and pairing).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// An unacknowledged batch is queued again after this long.
pub const RESEND_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct TrackerState {
    /// Batches handed to rumqttc, waiting for their packet id.
    awaiting: VecDeque<u64>,
    /// Packet id → batch, until acknowledged.
    by_pkid: HashMap<u16, u64>,
    /// Batches in flight and when they were queued.
    sent: HashMap<u64, Instant>,
}

/// Pairs QoS 1 packet ids with telemetry batches.
#[derive(Debug)]
pub struct Tracker {
    state: Mutex<TrackerState>,
    acked: mpsc::UnboundedSender<u64>,
}

impl Tracker {
    /// A tracker and the stream of acknowledged batch numbers.
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<u64>) {
        let (acked, rx) = mpsc::unbounded_channel();
        (Arc::new(Tracker { state: Mutex::new(TrackerState::default()), acked }), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `sequence` with `send`, which must queue exactly one QoS 1 publish (or fail).
    pub fn send(&self, sequence: u64, send: impl FnOnce() -> bool) -> bool {
        let mut s = self.lock();
        s.awaiting.push_back(sequence);
        if send() {
            s.sent.insert(sequence, Instant::now());
            true
        } else {
            s.awaiting.pop_back();
            false
        }
    }

    /// rumqttc put a QoS 1 publish on the wire with `pkid`.
    pub fn on_outgoing(&self, pkid: u16) {
        let mut s = self.lock();
        if s.by_pkid.contains_key(&pkid) {
            return; // a retransmission
        }
        if let Some(seq) = s.awaiting.pop_front() {
            s.by_pkid.insert(pkid, seq);
        }
    }

    /// The broker acknowledged `pkid`.
    pub fn on_puback(&self, pkid: u16) {
        let mut s = self.lock();
        if let Some(seq) = s.by_pkid.remove(&pkid) {
            s.sent.remove(&seq);
            let _ = self.acked.send(seq);
        }
    }

    /// Whether `sequence` is in flight and not yet due for a resend.
    pub(crate) fn in_flight(&self, sequence: u64) -> bool {
        self.lock().sent.get(&sequence).is_some_and(|at| at.elapsed() < RESEND_AFTER)
    }

    /// Batches in flight and not yet due for a resend.
    pub(crate) fn in_flight_count(&self) -> usize {
        self.lock().sent.values().filter(|at| at.elapsed() < RESEND_AFTER).count()
    }
}
