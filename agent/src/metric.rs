//! Every metric the agent emits, by name: emit sites use these constants, [`ALL`] describes
//! them (`# HELP` on `/metrics`, and docs/metrics.md's table), and the test below fails on a metric
//! macro anywhere in the crate that names something else.

edgefleet_service::metric_catalog! {
    INFERENCE_REQUESTS = "edgefleet_agent_inference_requests_total", Counter, None, ["model", "version"],
        "Inference requests answered, by model and version.";
    INFERENCE_ERRORS = "edgefleet_agent_inference_errors_total", Counter, None, ["model", "version", "reason"],
        "Inference requests that failed, by model, version and reason (engine, queue_full, bad_request, timeout, no_workers).";
    INFERENCE_QUEUE_SECONDS = "edgefleet_agent_inference_queue_seconds", Histogram, Seconds, ["model", "version"],
        "Time a request waited for a worker.";
    INFERENCE_COMPUTE_SECONDS = "edgefleet_agent_inference_compute_seconds", Histogram, Seconds, ["model", "version"],
        "Engine time of the run a request was part of.";
    INFERENCE_REQUEST_SECONDS = "edgefleet_agent_inference_request_seconds", Histogram, Seconds, ["model", "version"],
        "Time from request decoded to response encoded.";
    INFERENCE_BATCH_ROWS = "edgefleet_agent_inference_batch_rows", Histogram, None, ["model", "version"],
        "Rows per engine run (above 1 when batching merges requests).";
    INFERENCE_IN_FLIGHT = "edgefleet_agent_inference_in_flight_requests", Gauge, None, ["model", "version"],
        "Requests being decoded, queued, run or encoded.";
    QUEUE_DEPTH = "edgefleet_agent_queue_depth_requests", Gauge, None, ["model", "version"],
        "Requests waiting for a worker (sampled at scrape).";
    INFERENCE_WORKERS = "edgefleet_agent_inference_workers", Gauge, None, ["model", "version"],
        "Inference worker threads running (sampled at scrape).";
    MODEL_ENGINE = "edgefleet_agent_model_engine", Gauge, None, ["model", "version", "engine"],
        "1 for the engine serving a model version (tract_onnx, onnxruntime_onnx; sampled at scrape).";
    MODELS_READY = "edgefleet_agent_models_ready", Gauge, None, [],
        "Models loaded, warmed up and with a worker running.";
    ENGINE_PANICS = "edgefleet_agent_engine_panics_total", Counter, None, ["model", "version"],
        "Engine panics caught by a worker: the request failed, the worker opened a new session.";
    MODEL_LOADS = "edgefleet_agent_model_loads_total", Counter, None, ["result"],
        "Model loads, by result (ok, error).";
    HTTP_REJECTIONS = "edgefleet_agent_http_rejections_total", Counter, None, ["status"],
        "Requests refused before reaching a model, by HTTP status.";
    GRPC_REQUESTS = "edgefleet_agent_grpc_requests_total", Counter, None, ["method", "code"],
        "gRPC calls answered, by method (ModelInfer, ModelMetadata, ...) and status code (Ok, InvalidArgument, ...).";
    FEEDBACK_LABELS = "edgefleet_agent_feedback_labels_total", Counter, None, [],
        "Ground-truth labels received.";
    TELEMETRY_SAMPLES = "edgefleet_agent_telemetry_samples_total", Counter, None, ["reason"],
        "Rows sampled for telemetry, by reason (rate, low_confidence).";
    TELEMETRY_BATCHES = "edgefleet_agent_telemetry_batches_total", Counter, None, ["result"],
        "Telemetry batches, by result (spooled, acknowledged by the broker).";
    TELEMETRY_BYTES = "edgefleet_agent_telemetry_bytes_total", Counter, Bytes, [],
        "Signed telemetry frame bytes spooled.";
    TELEMETRY_DROPPED_BATCHES = "edgefleet_agent_telemetry_dropped_batches_total", Counter, None, [],
        "Telemetry batches dropped (oldest first) because the spool was full.";
    TELEMETRY_DROPPED_SAMPLES = "edgefleet_agent_telemetry_dropped_samples_total", Counter, None, [],
        "Sampled rows in those dropped batches.";
    TELEMETRY_FEEDBACK_DROPPED = "edgefleet_agent_telemetry_feedback_dropped_total", Counter, None, [],
        "Labels beyond max_feedback per batch.";
    TELEMETRY_SPOOL_BATCHES = "edgefleet_agent_telemetry_spool_batches", Gauge, None, [],
        "Telemetry batches waiting in the spool.";
    TELEMETRY_SPOOL_BYTES = "edgefleet_agent_telemetry_spool_bytes", Gauge, Bytes, [],
        "Bytes in the telemetry spool.";
    ACTIVATIONS = "edgefleet_agent_activations_total", Counter, None, ["result"],
        "Activations of a deployed version, by result (ok, failed: download, verification, load, self-test or watch window).";
    ROLLBACKS = "edgefleet_agent_rollbacks_total", Counter, None, [],
        "Activations that failed or were rolled back after their watch window; the previous version kept serving.";
    VERIFICATIONS = "edgefleet_agent_verifications_total", Counter, None, ["result"],
        "Deployment documents verified, by result (ok or the refusal's attack class).";
    TRUST_ROTATIONS = "edgefleet_agent_trust_rotations_total", Counter, None, ["result"],
        "Trust set rotations, by result (ok, refused).";
    DOWNLOAD_BYTES = "edgefleet_agent_download_bytes_total", Counter, Bytes, [],
        "Compressed artifact bytes downloaded.";
    DOWNLOAD_RESUMES = "edgefleet_agent_download_resumes_total", Counter, None, [],
        "Artifact downloads resumed from a partial file with a Range request.";
    DOWNLOADS_DIRECT = "edgefleet_agent_downloads_direct_total", Counter, None, ["result"],
        "Downloads the controller redirected to its object store, by result (ok: fetched from the store; fallback: the store could not be reached, fetched through the controller).";
    DELTA_DOWNLOADS = "edgefleet_agent_delta_downloads_total", Counter, None, ["result"],
        "Artifacts offered as a delta, by result (applied: made from the delta and verified; fallback: downloaded whole).";
    MQTT_CONNECTED = "edgefleet_agent_mqtt_connected", Gauge, None, [],
        "1 while the MQTT link is connected, else 0 (the agent polls over HTTP).";
    MQTT_RECONNECTS = "edgefleet_agent_mqtt_reconnects_total", Counter, None, [],
        "MQTT connections lost and retried.";
    MQTT_SUBSCRIPTIONS_REFUSED = "edgefleet_agent_mqtt_subscriptions_refused_total", Counter, None, [],
        "Connections whose subscriptions the broker refused (the agent then polls over HTTP and keeps telemetry spooled).";
    SHADOW_MODELS = "edgefleet_agent_shadow_models", Gauge, None, [],
        "Versions running in shadow beside the active ones.";
    SHADOW_COMPARED = "edgefleet_agent_shadow_compared_total", Counter, None, [],
        "Mirrored requests run on a shadow version and compared with the active one.";
    SHADOW_SKIPPED = "edgefleet_agent_shadow_skipped_total", Counter, None, [],
        "Mirrors skipped because the shadow was still busy (its CPU budget).";
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_catalog_is_complete_and_holds_every_emitted_metric() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = dir.join("../docs/metrics.md");
        edgefleet_service::observability::check_catalog_module(
            "edgefleet_agent_",
            super::ALL,
            super::CONSTANTS,
            dir,
            &readme,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
