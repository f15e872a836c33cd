//! Logs and metrics of the controller; metric names live in [`crate::metric`].

use metrics_exporter_prometheus::PrometheusHandle;

pub use edgefleet_service::observability::init_logging;

/// The process's Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> PrometheusHandle {
    edgefleet_service::observability::prometheus(describe)
}

fn describe() {
    edgefleet_service::observability::describe(crate::metric::ALL);
}
