//! Every metric the controller emits, by name: emit sites use these constants, [`ALL`] describes
//! them (`# HELP` on `/metrics`, and docs/metrics.md's table), and the test below fails on a metric
//! macro anywhere in the crate that names something else.

edgefleet_service::metric_catalog! {
    HTTP_REQUESTS = "edgefleet_controller_http_requests_total", Counter, None, ["method", "route", "status"],
        "API requests answered, by method, route template and status.";
    HTTP_REQUEST_SECONDS = "edgefleet_controller_http_request_seconds", Histogram, Seconds, ["method", "route"],
        "Time to answer an API request, by method and route template.";
    PUSHES = "edgefleet_controller_pushes_total", Counter, None, ["result"],
        "Model pushes, by result (ok, refused).";
    PUSH_SECONDS = "edgefleet_controller_push_seconds", Histogram, Seconds, [],
        "Time to validate, profile and record a push.";
    VALIDATIONS = "edgefleet_controller_validations_total", Counter, None, ["result"],
        "Isolated push validations, by result (ok, refused, crashed, timeout).";
    ARTIFACT_BYTES_SERVED = "edgefleet_controller_artifact_bytes_served_total", Counter, Bytes, [],
        "Compressed artifact bytes sent.";
    ARTIFACT_REDIRECTS = "edgefleet_controller_artifact_redirects_total", Counter, None, [],
        "Device downloads redirected to a presigned URL of the object store.";
    DOCUMENTS_ISSUED = "edgefleet_controller_documents_issued_total", Counter, None, [],
        "Signed deployment documents issued (deploys and rollout waves).";
    ROLLOUT_GATE_FAILURES = "edgefleet_controller_rollout_gate_failures_total", Counter, None, [],
        "Rollout waves whose quality gates failed.";
    ROLLOUT_ROLLBACKS = "edgefleet_controller_rollout_rollbacks_total", Counter, None, [],
        "Devices sent back to their previous version by an aborted rollout.";
    STATUS_REPORTS = "edgefleet_controller_status_reports_total", Counter, None, [],
        "Device status reports recorded (MQTT).";
    STATUS_REJECTED = "edgefleet_controller_status_rejected_total", Counter, None, ["reason"],
        "Device status reports refused, by reason (malformed, signature, unknown_device, ...).";
    STATUS_SHED = "edgefleet_controller_status_shed_total", Counter, None, [],
        "Status reports dropped unread because the ingest backlog was full (the next report replaces them).";
    MQTT_BACKLOG = "edgefleet_controller_mqtt_backlog_messages", Gauge, None, [],
        "Messages from devices received and not yet handled.";
    BROKER_DENIED = "edgefleet_controller_broker_denied_total", Counter, None, ["reason"],
        "Embedded-broker connections and publishes refused by the gate, by reason.";
    BROKER_ACCESS_CHANGES = "edgefleet_controller_broker_access_changes_total", Counter, None, ["change", "result"],
        "Device rights changed on an external Mosquitto's dynamic-security plugin, by change (grant, revoke) and result (ok, failed).";
    DEVICES = "edgefleet_controller_devices", Gauge, None, ["state"],
        "Devices by state (online, offline, decommissioned), counted at each scrape.";
    ROLLOUTS = "edgefleet_controller_rollouts", Gauge, None, ["state"],
        "Rollouts by state (running, paused, promoting, completed, aborted), counted at each scrape.";
    MODELS = "edgefleet_controller_models", Gauge, None, [],
        "Registered models, counted at each scrape.";
    MODEL_VERSIONS = "edgefleet_controller_model_versions", Gauge, None, [],
        "Registered model versions (all models), counted at each scrape.";
    TELEMETRY_BATCHES = "edgefleet_controller_telemetry_batches_total", Counter, None, ["result"],
        "Telemetry batches, by result (accepted, duplicate, signature, wrong_device, replay, unknown_device, malformed, error).";
    TELEMETRY_SAMPLES = "edgefleet_controller_telemetry_samples_total", Counter, None, [],
        "Sampled rows stored.";
    TELEMETRY_ROWS = "edgefleet_controller_telemetry_rows_total", Counter, None, [],
        "Rows counted in merged histograms.";
    RETRAIN_REQUESTS = "edgefleet_controller_retrain_requests_total", Counter, None, [],
        "Retrain requests created.";
    WEBHOOK_DELIVERIES = "edgefleet_controller_webhook_deliveries_total", Counter, None, ["result"],
        "Retrain webhook attempts, by result (delivered, retry, failed).";
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_catalog_is_complete_and_holds_every_emitted_metric() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = dir.join("../docs/metrics.md");
        edgefleet_service::observability::check_catalog_module(
            "edgefleet_controller_",
            super::ALL,
            super::CONSTANTS,
            dir,
            &readme,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
