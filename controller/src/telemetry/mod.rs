//! Telemetry from devices, drift against the training baseline, and retraining triggers.
//!
//! - [`ingest`]: verifies each batch (device key, per-device sequence), de-duplicates, merges
//!   histograms per (model version, device group, window), stores sampled rows and labels.
//! - [`report`]: drift per feature and for the output, over a time range, with the statistics of
//!   `crate::analytics::drift`.
//! - [`retrain`]: per-model policies, judged after every window ([`judge`]); a trigger writes
//!   a dataset snapshot and delivers it by webhook and/or command.
//! - [`window`], [`judge`]: the pure cores: window assignment and merging, the retrain verdict.

mod history;
pub mod ingest;
pub mod judge;
pub mod report;
pub mod retrain;
pub mod snapshot;
pub mod window;

use std::path::PathBuf;

use edgefleet_shared::clock::SharedClock;

use crate::config::{RetrainConfig, TelemetryConfig};
use crate::db::{Db, DbError};

/// Telemetry failures.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Unknown model, version or request (404).
    #[error("{0}")]
    NotFound(String),
    /// A batch was refused (bad signature, unknown device, replay, malformed).
    #[error("telemetry batch refused ({}): {message}", class.as_str())]
    Refused {
        /// The refusal's class (the metric label).
        class: Refusal,
        /// Why.
        message: String,
    },
    /// Writing a snapshot failed.
    #[error("{0}")]
    Io(String),
    /// A group of telemetry batches could not be committed (none of them is stored).
    #[error("storing the telemetry group failed: {0}")]
    Commit(String),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Why a telemetry batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sender is not an enrolled device (or its key is unreadable).
    UnknownDevice,
    /// Not a frame, not JSON, or numbers out of range.
    Malformed,
    /// The frame is not signed by the device's key.
    Signature,
    /// The frame names another device.
    WrongDevice,
    /// Older than the retained history.
    Replay,
    /// Stored already (a QoS 1 redelivery).
    Duplicate,
}

impl Refusal {
    /// The class as metrics and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownDevice => "unknown_device",
            Refusal::Malformed => "malformed",
            Refusal::Signature => "signature",
            Refusal::WrongDevice => "wrong_device",
            Refusal::Replay => "replay",
            Refusal::Duplicate => "duplicate",
        }
    }
}

impl From<&edgefleet_shared::telemetry::FrameError> for Refusal {
    fn from(e: &edgefleet_shared::telemetry::FrameError) -> Self {
        use edgefleet_shared::telemetry::FrameError;
        match e {
            FrameError::Malformed(_) => Refusal::Malformed,
            FrameError::Signature => Refusal::Signature,
            FrameError::WrongDevice { .. } => Refusal::WrongDevice,
        }
    }
}

impl From<crate::sql::Error> for TelemetryError {
    fn from(e: crate::sql::Error) -> Self {
        TelemetryError::Db(DbError::from(e))
    }
}

/// The telemetry service: ingest, reports, retraining.
#[derive(Debug, Clone)]
pub struct Telemetry {
    db: Db,
    config: TelemetryConfig,
    retrain: RetrainConfig,
    snapshots: PathBuf,
    http: reqwest::Client,
    clock: SharedClock,
}

impl Telemetry {
    /// A service over `db`, writing snapshots under `snapshots`; webhooks go out with `http`.
    /// Windows are assigned and judged on `clock`'s time.
    pub fn new(
        db: Db,
        config: TelemetryConfig,
        retrain: RetrainConfig,
        snapshots: PathBuf,
        http: reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        Telemetry { db, config, retrain, snapshots, http, clock }
    }

    /// The window length.
    pub fn window_secs(&self) -> u64 {
        self.config.window_secs
    }
}
