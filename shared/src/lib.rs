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
//! - [`deployment`]: the signed deployment document.
//! - [`fleet`]: enrollment, device-signed requests, status reports, MQTT topics.
//! - [`telemetry`]: signed, compressed telemetry batches (sketches, samples, feedback).
//! - [`signature`]: detached signatures and the signed envelope.
//! - [`names`]: model and file names that are safe as path segments.
//! - [`refusal`]: why a document or trust step was refused (attack classes).
//! - [`keys`]: Ed25519 keys, key ids, the `Signer` trait, 0600 key files.
//! - [`trust`]: the trust store and key rotation.
//! - [`verify`]: the verifier (attack classes) and streaming artifact checks.
//! - [`compress`]: zstd and the capped decoder.
//! - [`clock`]: Unix time in one place, and the test clock services can be driven by.
//! - [`api`]: the controller's typed HTTP API, shared by the server and the `edgefleet` CLI.
//!
//! It has no async runtime and no inference engine: the engines are `edgefleet-engine`
//! (`shared/engine`), process plumbing is `edgefleet-service` (`shared/service`).
#![deny(missing_docs)]

pub mod api;
pub mod bundle;
pub mod clock;
pub mod compress;
pub mod deployment;
pub mod fleet;
pub mod inference;
pub mod keys;
pub mod names;
pub mod profile;
pub mod refusal;
pub mod signature;
pub mod telemetry;
pub mod trust;
pub mod verify;

/// The message a panic was raised with (`panic!("...")` or a formatted one), if it has one: how
/// the engines' isolation and the binaries' panic hook report a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
