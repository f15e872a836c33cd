//! The edgefleet controller: model registry, artifact store, signing, fleet, rollouts, telemetry
//! and the operator API.
//!
//! Operators (and training pipelines) push ONNX models; each push is validated by running the
//! model, profiled against its reference data, recorded as an immutable version with lineage in
//! SQLite, stored content-addressed and zstd-compressed, and its manifest signed with the
//! controller's key. Everything is reachable over the REST API, which the `edgefleet` CLI
//! (`controller/cli`) wraps.
//!
//! # Layout
//! - [`analytics`]: reference datasets, baseline profiles, drift statistics.
//! - [`api`]: axum routes under `/api/v1`, the `ApiError` type, the OpenAPI document.
//! - [`auth`]: operator tokens (hashed), roles, the bearer-token extractor.
//! - [`census`]: devices, rollouts and versions counted into gauges at each scrape.
//! - [`config`]: typed TOML configuration and the data-directory layout.
//! - [`db`]: SQLite (WAL), migrations, the blocking-call handle, the audit log.
//! - [`delta`]: delta artifacts made at push, and which device is offered which.
//! - [`device_ca`]: broker client certificates for devices' keys and for the controller.
//! - [`fleet`]: enrollment, device-signed requests, status, signed per-device documents.
//! - [`keyring`]: signing keys and trust sets; key rotation and revocation.
//! - [`mqtt`]: the embedded broker behind its authorizing gate, the Mosquitto set-up, and the
//!   client publishing desired state and trust, taking status and telemetry.
//! - [`lease`]: the database lease that runs background work in one replica at a time.
//! - [`metric`]: every metric name the controller emits, described once.
//! - [`observability`]: logging and the Prometheus recorder.
//! - [`publish`]: delivery of changed documents and trust chains over MQTT.
//! - [`registry`]: the push pipeline, versions, aliases, lineage queries.
//! - [`rollout`]: staged rollouts: waves, bake, quality gates, pause/abort with rollback.
//! - [`serve`]: start-up (data dir, key, bootstrap token) and the server loop.
//! - [`store`]: the content-addressed, compressed artifact store.
//! - [`telemetry`]: telemetry ingest, drift reports, retraining policies, snapshots, webhooks.
//! - [`validate`]: model validation, golden self-test, baseline and output profiles.

pub mod analytics;
pub mod api;
pub mod auth;
mod background;
pub mod census;
pub mod config;
pub mod console;
pub mod db;
pub mod delta;
pub mod device_ca;
pub mod fleet;
pub mod keyring;
pub mod lease;
pub mod metric;
pub mod mqtt;
pub mod observability;
pub mod overview;
pub mod publish;
pub mod registry;
pub mod rollout;
pub mod serve;
pub mod sql;
pub mod store;
pub mod telemetry;
pub mod validate;

/// Controller start-up and top-level failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid (exit 64).
    #[error("{0}")]
    Config(String),
    /// The data directory, key or socket could not be set up (exit 1).
    #[error("{0}")]
    Startup(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db::DbError),
}
