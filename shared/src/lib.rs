//! The contract between the edgefleet agent and the controller.
//!
//! Both binaries depend on this crate and never on each other, so every byte that crosses
//! between them (or between the agent and the apps that call it) is described once, here.
//!
//! # Layout
//! - [`inference`]: the KServe v2 / Open Inference Protocol wire types the agent serves and
//!   clients (the CLI, the demo, tests) send, with the datatype table and protocol headers.
#![deny(missing_docs)]

pub mod inference;
