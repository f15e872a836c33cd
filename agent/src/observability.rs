//! Logs (`tracing`) and metrics (`metrics` with the Prometheus exporter).
//!
//! Metric names follow `edgefleet_agent_<name>_<unit>[_total]`; labels are the model name and
//! version only, never anything per request.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 10 µs to 10 s, enough resolution for tiny models.
const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
const ROW_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
///
/// A process has one global recorder; when something else installed one first (a test
/// harness, an embedding program), the handle still renders this crate's own recorder, which
/// then only sees metrics recorded through it.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), ROW_BUCKETS))
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("A metrics recorder was already installed.");
            }
            describe();
            handle
        })
        .clone()
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

/// Sets up `tracing` to stderr; `RUST_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
