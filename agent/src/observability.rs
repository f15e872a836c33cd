//! The agent's logging and Prometheus set-up; metric names live in [`crate::metric`] (labelled
//! by model and version only, never by anything per request).

use metrics_exporter_prometheus::PrometheusHandle;

pub use edgefleet_service::observability::init_logging;

/// The process's Prometheus handle, with the agent's metric descriptions.
pub fn prometheus() -> PrometheusHandle {
    edgefleet_service::observability::prometheus(describe)
}

fn describe() {
    edgefleet_service::observability::describe(crate::metric::ALL);
    // Both results from the first scrape, so an increase sees the first failed activation
    // (ops/prometheus/edgefleet-alerts.yml alerts on it).
    for result in ["ok", "failed"] {
        metrics::counter!(crate::metric::ACTIVATIONS, "result" => result).increment(0);
    }
}
