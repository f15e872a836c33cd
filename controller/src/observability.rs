//! Logs and metrics of the controller; metric names live in [`crate::metric`].

use metrics_exporter_prometheus::PrometheusHandle;

pub use edgefleet_service::observability::init_logging;

/// The process's Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> PrometheusHandle {
    edgefleet_service::observability::prometheus(describe)
}

fn describe() {
    edgefleet_service::observability::describe(crate::metric::ALL);
    // Every telemetry result from the first scrape, so a rate or increase sees its first batch
    // (ops/prometheus/edgefleet-alerts.yml alerts on the refusals).
    for result in
        ["accepted", "duplicate", "signature", "wrong_device", "replay", "unknown_device", "malformed", "error"]
    {
        metrics::counter!(crate::metric::TELEMETRY_BATCHES, "result" => result).increment(0);
    }
}
