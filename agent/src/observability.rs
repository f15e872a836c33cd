//! The agent's metrics: names `edgefleet_agent_<name>_<unit>[_total]`, labelled by model and
//! version only, never by anything per request.

use metrics_exporter_prometheus::PrometheusHandle;

pub use edgefleet_shared::observability::init_logging;

/// The process's Prometheus handle, with the agent's metric descriptions.
pub fn prometheus() -> PrometheusHandle {
    edgefleet_shared::observability::prometheus(describe)
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
    describe_gauge!("edgefleet_agent_models_ready", "Models loaded, warmed up and serving.");
    describe_counter!("edgefleet_agent_model_loads_total", "Model loads, by result.");
    describe_counter!(
        "edgefleet_agent_http_rejections_total",
        "Requests refused before reaching a model, by HTTP status."
    );
}
