//! Process plumbing the edgefleet binaries share: logging (and the panic hook), the Prometheus
//! recorder, shutdown signals, and TLS (rustls with the ring provider).
//!
//! # Layout
//! - [`observability`]: `tracing` to stderr, panics logged, the Prometheus recorder.
//! - [`shutdown`]: SIGINT/SIGTERM as a future.
//! - [`tls`]: client and server configurations from PEM files; the plain-TCP-on-loopback rule.
#![deny(missing_docs)]

pub mod observability;
pub mod shutdown;
pub mod tls;
