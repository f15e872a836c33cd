//! Logs and metrics of the controller (names `edgefleet_controller_*`).

use metrics_exporter_prometheus::PrometheusHandle;

pub use edgefleet_service::observability::init_logging;

/// The process's Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> PrometheusHandle {
    edgefleet_service::observability::prometheus(describe)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!("edgefleet_controller_pushes_total", "Model pushes, by result (ok, refused).");
    describe_histogram!(
        "edgefleet_controller_push_seconds",
        Unit::Seconds,
        "Time to validate, profile and record a push."
    );
    describe_counter!(
        "edgefleet_controller_artifact_bytes_served_total",
        Unit::Bytes,
        "Compressed artifact bytes sent."
    );
    describe_counter!(
        "edgefleet_controller_telemetry_batches_total",
        "Telemetry batches, by result (accepted, duplicate, signature, wrong_device, replay, unknown_device, malformed, error)."
    );
    describe_counter!("edgefleet_controller_telemetry_samples_total", "Sampled rows stored.");
    describe_counter!("edgefleet_controller_status_reports_total", "Device status reports recorded (MQTT).");
    describe_counter!("edgefleet_controller_telemetry_rows_total", "Rows counted in merged histograms.");
    describe_counter!("edgefleet_controller_retrain_requests_total", "Retrain requests created.");
    describe_counter!(
        "edgefleet_controller_webhook_deliveries_total",
        "Retrain webhook attempts, by result (delivered, retry, failed)."
    );
}
