//! Telemetry (fleet mode): what the agent saw, sent to the controller without ever blocking
//! inference and without losing what it has written down.
//!
//! - [`recorder`]: per served version, histograms of every input feature over the baseline's
//!   bins and predicted-class counts for all rows (atomic counters: no allocation, no lock),
//!   sampled rows under a rate and per-minute/per-hour caps (low-confidence rows always), and
//!   feedback labels matched to recent predictions.
//! - [`spool`]: every flush interval the recorders are drained into one batch that is signed
//!   with the device key, zstd-compressed, numbered and written durably to a bounded directory.
//! - [`publish`]: spooled batches go out on `PREFIX/devices/{id}/telemetry` at QoS 1 and are
//!   deleted only once the broker acknowledged them.

pub mod publish;
pub mod recorder;
pub mod spool;

use std::sync::{Arc, Mutex};

use edgefleet_shared::telemetry::{ModelTelemetry, TelemetryBatch};

pub use crate::config::TelemetryConfig;
pub use recorder::Recorder;

/// Every recorder of this process, so a flush drains versions that stopped serving too.
#[derive(Debug)]
pub struct Hub {
    config: TelemetryConfig,
    recorders: Mutex<Vec<Arc<Recorder>>>,
    caps: Arc<recorder::Caps>,
}

impl Hub {
    /// A hub for `config`.
    pub fn new(config: TelemetryConfig) -> Arc<Self> {
        let caps = Arc::new(recorder::Caps::new(config.samples_per_minute, config.samples_per_hour));
        Arc::new(Hub { config, recorders: Mutex::new(Vec::new()), caps })
    }

    /// A recorder for a model version about to serve; `baseline` gives the bins.
    pub fn recorder(
        &self,
        model: &str,
        version: u64,
        baseline: Option<&edgefleet_shared::profile::BaselineProfile>,
    ) -> Arc<Recorder> {
        let recorder = Arc::new(Recorder::new(model, version, baseline, &self.config, self.caps.clone()));
        self.lock().push(recorder.clone());
        recorder
    }

    /// Drains every recorder into a batch (sequence 0 until the spool numbers it); None when
    /// nothing happened. Recorders of versions no longer served are dropped once drained.
    pub fn drain(&self, device: &str, start: u64, end: u64) -> Option<TelemetryBatch> {
        let mut recorders = self.lock();
        let models: Vec<ModelTelemetry> = recorders.iter().filter_map(|r| r.drain()).collect();
        recorders.retain(|r| Arc::strong_count(r) > 1);
        drop(recorders);
        let capped = self.caps.take_capped();
        if models.is_empty() && capped == 0 {
            return None;
        }
        Some(TelemetryBatch { samples_capped: capped, ..TelemetryBatch::new(device, 0, (start, end), models) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Recorder>>> {
        self.recorders.lock().unwrap_or_else(|p| p.into_inner())
    }
}
