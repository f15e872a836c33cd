//! `edgefleet`, the operator CLI: a typed client of the controller's REST API, the `demo` that
//! runs the whole loop on one machine, and `sim`, simulated devices for load tests.
//!
//! It shares the API's request and response types with the server through
//! [`edgefleet_shared::api`] and compiles neither the server (SQLite, the broker) nor an
//! inference engine.
//!
//! Exit codes: 0 success, 1 the controller refused (its `{"error"}` is printed), 2 bad
//! arguments, 69 the controller cannot be reached.
//!
//! # Layout
//! - [`args`]: the command line (clap).
//! - [`commands`]: each command as typed API calls.
//! - [`client`]: the typed HTTP client, one method per route; [`push`] reads a push's files.
//! - `output`: tables and JSON on stdout.
//! - [`demo`], [`sim`]: the demo and the device simulator.
//! - [`trainer`]: the bundled retraining step (logistic regression → ONNX, via `onnx`).

pub mod args;
pub mod client;
pub mod commands;
pub mod demo;
mod onnx;
mod output;
pub mod push;
pub mod sim;
pub mod trainer;

pub use args::Cli;
pub use client::{CliError, Client};
pub use commands::run;
