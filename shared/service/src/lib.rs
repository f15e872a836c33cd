//! Process plumbing the edgefleet binaries share: logging (and the panic hook), the Prometheus
//! recorder, shutdown signals, and TLS (rustls with the ring provider).
//!
//! # Layout
//! - [`http`] (feature `http`): the daemons' shared HTTP layer (JSON error bodies).
//! - [`observability`]: `tracing` to stderr, panics logged, the Prometheus recorder, metric
//!   catalogs.
//! - [`shutdown`]: SIGINT/SIGTERM as a future.
//! - [`tls`]: client and server configurations from PEM files; the plain-TCP-on-loopback rule.
#![deny(missing_docs)]

#[cfg(feature = "http")]
pub mod http;
pub mod observability;
pub mod shutdown;
pub mod tls;
