//! The edgefleet device agent.
//!
//! The agent serves ONNX models to local apps over the KServe v2 / Open Inference Protocol.
//! Requests arrive on an async HTTP or gRPC server ([`http`], [`grpc`]), are decoded into engine-neutral
//! [`tensor`]s, and are queued to the worker threads of the model they name ([`worker`]),
//! which run them on tract or ONNX Runtime ([`engine`]). The async runtime's threads run only
//! models whose warm-up took microseconds (`inline_below_us`), and turn them away once their
//! runs grow slower.
//!
//! # Layout
//! - [`api`]: the state and error type the HTTP and gRPC APIs share.
//! - [`cli`]: command-line arguments and how they map onto the configuration.
//! - [`config`]: the typed TOML configuration and its shipped defaults.
//! - [`engine`]: (re-exported from `edgefleet-engine`) the backend trait, tract and ONNX Runtime.
//! - [`fleet`]: fleet mode: enrollment, desired state, verified download, activation, status.
//! - [`grpc`]: the KServe v2 gRPC service (Triton's clients), decoding and encoding.
//! - [`http`]: the KServe v2 routes, request decoding and response encoding.
//! - [`inference`]: one inference whatever the transport: checks, queue, deadline, accounting.
//! - [`inspect`]: offline verification of deployment documents (`verify`).
//! - [`metric`]: every metric name the agent emits, described once.
//! - [`observability`]: logging set-up and the Prometheus recorder.
//! - [`predictions`]: a model's predicted classes and scores, read from its outputs.
//! - [`repository`]: the served models and their load/ready state.
//! - [`serve`]: standalone mode: bind, load, serve, drain.
//! - [`shadow`]: a candidate version fed mirrored requests and compared with the served one.
//! - [`shutdown`] (from `edgefleet-service`), [`tensor`] (from `edgefleet-engine`).
//! - [`telemetry`]: drift sketches, sampling, feedback, the signed spool and its sender.
//! - [`systemd`]: readiness, status and watchdog notifications for `Type=notify` units.
//! - [`worker`]: bounded per-model queues, worker threads and dynamic batching.

pub mod api;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod grpc;
pub mod http;
pub mod inference;
pub mod inspect;
pub mod metric;
pub mod observability;
pub mod predictions;
pub mod repository;
pub mod serve;
pub mod shadow;
pub mod systemd;
pub mod telemetry;
pub mod worker;

pub use edgefleet_engine as engine;
pub use edgefleet_engine::tensor;
pub use edgefleet_service::shutdown;
