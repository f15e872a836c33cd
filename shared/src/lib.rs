//! The contract between the edgefleet agent and the controller.
//!
//! Both binaries depend on this crate and never on each other, so every byte that crosses
//! between them (or between the agent and the apps that call it) is described once, here,
//! together with the code that signs and verifies it. File formats are documented in
//! `shared/FORMATS.md`.
//!
//! # Layout
//! - [`inference`]: the KServe v2 / Open Inference Protocol wire types.
//! - [`bundle`]: the bundle manifest (`bundle.json`): schema, lineage, baseline, self-test.
//! - [`profile`]: baseline profiles (quantile bins, moments, reservoir sample).
//! - [`dataset`]: reference data from CSV or `.npy`.
//! - [`deployment`]: the signed deployment document.
//! - [`fleet`]: enrollment, device-signed requests, status reports, MQTT topics.
//! - [`telemetry`]: signed, compressed telemetry batches (sketches, samples, feedback).
//! - [`signature`]: detached signatures and the signed envelope.
//! - [`keys`]: Ed25519 keys, key ids, the `Signer` trait, 0600 key files.
//! - [`trust`]: the trust store and key rotation.
//! - [`verify`]: the verifier (attack classes) and streaming artifact checks.
//! - [`compress`]: zstd and the capped decoder.
//! - [`tensor`]: engine-neutral tensors and their KServe JSON/binary encodings.
//! - [`engine`]: the inference engine trait, tract (feature `tract`) and ONNX Runtime
//!   (feature `ort`); shared because the controller runs models to make golden outputs.
//! - [`observability`], [`shutdown`]: logging, Prometheus and signals for the binaries
//!   (feature `service`).
#![deny(missing_docs)]

pub mod bundle;
pub mod compress;
pub mod dataset;
pub mod deployment;
pub mod drift;
pub mod engine;
pub mod fleet;
pub mod inference;
pub mod keys;
#[cfg(feature = "service")]
pub mod observability;
pub mod profile;
#[cfg(feature = "service")]
pub mod shutdown;
pub mod signature;
pub mod telemetry;
pub mod tensor;
#[cfg(feature = "tls")]
pub mod tls;
pub mod trust;
pub mod verify;
