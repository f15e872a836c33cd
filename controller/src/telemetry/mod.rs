//! Telemetry from devices, drift against the training baseline, and retraining triggers.
//!
//! - [`ingest`]: verifies each batch (device key, per-device sequence), de-duplicates, merges
//!   histograms per (model version, device group, window), stores sampled rows and labels.
//! - [`report`]: drift per feature and for the output, over a time range, with the handbook's
//!   definitions (`crate::analytics::drift`).
//! - [`retrain`]: per-model policies, judged after every window ([`judge`]); a trigger writes
//!   a dataset snapshot and delivers it by webhook and/or command.
//! - [`window`], [`judge`]: the pure cores: window assignment and merging, the retrain verdict.

pub mod ingest;
pub mod judge;
pub mod report;
pub mod retrain;
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
    #[error("telemetry batch refused ({class}): {message}")]
    Refused {
        /// Metric class.
        class: &'static str,
        /// Why.
        message: String,
    },
    /// Writing a snapshot failed.
    #[error("{0}")]
    Io(String),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for TelemetryError {
    fn from(e: rusqlite::Error) -> Self {
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
