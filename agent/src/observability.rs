//! The agent's metrics: names `edgefleet_agent_<name>_<unit>[_total]`, labelled by model and
//! version only, never by anything per request.

use metrics_exporter_prometheus::PrometheusHandle;

pub use edgefleet_service::observability::init_logging;

/// The process's Prometheus handle, with the agent's metric descriptions.
pub fn prometheus() -> PrometheusHandle {
    edgefleet_service::observability::prometheus(describe)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("edgefleet_agent_inference_requests_total", "Inference requests answered, by model and version.");
    describe_counter!(
        "edgefleet_agent_inference_errors_total",
        "Inference requests that failed, by model, version and reason."
    );
    describe_histogram!(
        "edgefleet_agent_inference_queue_seconds",
        Unit::Seconds,
        "Time a request waited for a worker."
    );
    describe_histogram!(
        "edgefleet_agent_inference_compute_seconds",
        Unit::Seconds,
        "Engine time of the run a request was part of."
    );
    describe_histogram!(
        "edgefleet_agent_inference_request_seconds",
        Unit::Seconds,
        "Time from request decoded to response encoded."
    );
    describe_histogram!(
        "edgefleet_agent_inference_batch_rows",
        "Rows per engine run (above 1 when batching merges requests)."
    );
    describe_gauge!("edgefleet_agent_inference_in_flight_requests", "Requests being decoded, queued, run or encoded.");
    describe_gauge!("edgefleet_agent_queue_depth_requests", "Requests waiting for a worker (sampled at scrape).");
    describe_gauge!("edgefleet_agent_models_ready", "Models loaded, warmed up and with a worker running.");
    describe_gauge!("edgefleet_agent_inference_workers", "Inference worker threads running (sampled at scrape).");
    describe_counter!(
        "edgefleet_agent_engine_panics_total",
        "Engine panics caught by a worker: the request failed, the worker opened a new session."
    );
    describe_counter!("edgefleet_agent_model_loads_total", "Model loads, by result.");
    describe_counter!(
        "edgefleet_agent_http_rejections_total",
        "Requests refused before reaching a model, by HTTP status."
    );
    describe_counter!("edgefleet_agent_telemetry_samples_total", "Rows sampled for telemetry, by reason.");
    describe_counter!(
        "edgefleet_agent_telemetry_batches_total",
        "Telemetry batches, by result (spooled, acknowledged by the broker)."
    );
    describe_counter!("edgefleet_agent_telemetry_bytes_total", Unit::Bytes, "Signed telemetry frame bytes spooled.");
    describe_counter!(
        "edgefleet_agent_telemetry_dropped_batches_total",
        "Telemetry batches dropped (oldest first) because the spool was full."
    );
    describe_counter!("edgefleet_agent_telemetry_dropped_samples_total", "Sampled rows in those dropped batches.");
    describe_gauge!("edgefleet_agent_telemetry_spool_batches", "Telemetry batches waiting in the spool.");
    describe_gauge!("edgefleet_agent_telemetry_spool_bytes", "Bytes in the telemetry spool.");
    describe_counter!("edgefleet_agent_feedback_labels_total", "Ground-truth labels received.");
    describe_counter!("edgefleet_agent_telemetry_feedback_dropped_total", "Labels beyond max_feedback per batch.");
}
