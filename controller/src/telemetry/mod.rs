//! Telemetry from devices, drift against the training baseline, and retraining triggers.
//!
//! - [`ingest`]: verifies each batch (device key, per-device sequence), de-duplicates, merges
//!   histograms per (model version, device group, window), stores sampled rows and labels.
//! - [`report`]: drift per feature and for the output, over a time range, with the handbook's
//!   definitions (`crate::analytics::drift`).
//! - [`retrain`]: per-model policies, judged after every window; a trigger writes a dataset
//!   snapshot and delivers it by webhook and/or command.

pub mod ingest;
pub mod report;
pub mod retrain;

use std::path::PathBuf;

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
}

impl Telemetry {
    /// A service over `db`, writing snapshots under `snapshots`; webhooks go out with `http`.
    pub fn new(
        db: Db,
        config: TelemetryConfig,
        retrain: RetrainConfig,
        snapshots: PathBuf,
        http: reqwest::Client,
    ) -> Self {
        Telemetry { db, config, retrain, snapshots, http }
    }

    /// The window length.
    pub fn window_secs(&self) -> u64 {
        self.config.window_secs
    }
}
