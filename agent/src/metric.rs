//! Every metric the agent emits, by name: emit sites use these constants, [`ALL`] describes
//! them (`# HELP` on `/metrics`, and the README's table), and the test below fails on a metric
//! macro anywhere in the crate that names something else.

use edgefleet_service::observability::{Kind, Metric};
use metrics::Unit;

/// Inference requests answered, by model and version.
pub const INFERENCE_REQUESTS: &str = "edgefleet_agent_inference_requests_total";
/// Inference requests that failed, by model, version and reason (engine, queue_full, bad_request, timeout, no_workers).
pub const INFERENCE_ERRORS: &str = "edgefleet_agent_inference_errors_total";
/// Time a request waited for a worker.
pub const INFERENCE_QUEUE_SECONDS: &str = "edgefleet_agent_inference_queue_seconds";
/// Engine time of the run a request was part of.
pub const INFERENCE_COMPUTE_SECONDS: &str = "edgefleet_agent_inference_compute_seconds";
/// Time from request decoded to response encoded.
pub const INFERENCE_REQUEST_SECONDS: &str = "edgefleet_agent_inference_request_seconds";
/// Rows per engine run (above 1 when batching merges requests).
pub const INFERENCE_BATCH_ROWS: &str = "edgefleet_agent_inference_batch_rows";
/// Requests being decoded, queued, run or encoded.
pub const INFERENCE_IN_FLIGHT: &str = "edgefleet_agent_inference_in_flight_requests";
/// Requests waiting for a worker (sampled at scrape).
pub const QUEUE_DEPTH: &str = "edgefleet_agent_queue_depth_requests";
/// Inference worker threads running (sampled at scrape).
pub const INFERENCE_WORKERS: &str = "edgefleet_agent_inference_workers";
/// Models loaded, warmed up and with a worker running.
pub const MODELS_READY: &str = "edgefleet_agent_models_ready";
/// Engine panics caught by a worker: the request failed, the worker opened a new session.
pub const ENGINE_PANICS: &str = "edgefleet_agent_engine_panics_total";
/// Model loads, by result (ok, error).
pub const MODEL_LOADS: &str = "edgefleet_agent_model_loads_total";
/// Requests refused before reaching a model, by HTTP status.
pub const HTTP_REJECTIONS: &str = "edgefleet_agent_http_rejections_total";
/// Ground-truth labels received.
pub const FEEDBACK_LABELS: &str = "edgefleet_agent_feedback_labels_total";
/// Rows sampled for telemetry, by reason (rate, low_confidence).
pub const TELEMETRY_SAMPLES: &str = "edgefleet_agent_telemetry_samples_total";
/// Telemetry batches, by result (spooled, acknowledged by the broker).
pub const TELEMETRY_BATCHES: &str = "edgefleet_agent_telemetry_batches_total";
/// Signed telemetry frame bytes spooled.
pub const TELEMETRY_BYTES: &str = "edgefleet_agent_telemetry_bytes_total";
/// Telemetry batches dropped (oldest first) because the spool was full.
pub const TELEMETRY_DROPPED_BATCHES: &str = "edgefleet_agent_telemetry_dropped_batches_total";
/// Sampled rows in those dropped batches.
pub const TELEMETRY_DROPPED_SAMPLES: &str = "edgefleet_agent_telemetry_dropped_samples_total";
/// Labels beyond max_feedback per batch.
pub const TELEMETRY_FEEDBACK_DROPPED: &str = "edgefleet_agent_telemetry_feedback_dropped_total";
/// Telemetry batches waiting in the spool.
pub const TELEMETRY_SPOOL_BATCHES: &str = "edgefleet_agent_telemetry_spool_batches";
/// Bytes in the telemetry spool.
pub const TELEMETRY_SPOOL_BYTES: &str = "edgefleet_agent_telemetry_spool_bytes";
/// Activations of a deployed version, by result (ok, failed: download, verification, load, self-test or watch window).
pub const ACTIVATIONS: &str = "edgefleet_agent_activations_total";
/// Activations that failed or were rolled back after their watch window; the previous version kept serving.
pub const ROLLBACKS: &str = "edgefleet_agent_rollbacks_total";
/// Deployment documents verified, by result (ok or the refusal's attack class).
pub const VERIFICATIONS: &str = "edgefleet_agent_verifications_total";
/// Trust set rotations, by result (ok, refused).
pub const TRUST_ROTATIONS: &str = "edgefleet_agent_trust_rotations_total";
/// Compressed artifact bytes downloaded.
pub const DOWNLOAD_BYTES: &str = "edgefleet_agent_download_bytes_total";
/// Artifact downloads resumed from a partial file with a Range request.
pub const DOWNLOAD_RESUMES: &str = "edgefleet_agent_download_resumes_total";
/// 1 while the MQTT link is connected, else 0 (the agent polls over HTTP).
pub const MQTT_CONNECTED: &str = "edgefleet_agent_mqtt_connected";
/// MQTT connections lost and retried.
pub const MQTT_RECONNECTS: &str = "edgefleet_agent_mqtt_reconnects_total";
/// Versions running in shadow beside the active ones.
pub const SHADOW_MODELS: &str = "edgefleet_agent_shadow_models";
/// Mirrored requests run on a shadow version and compared with the active one.
pub const SHADOW_COMPARED: &str = "edgefleet_agent_shadow_compared_total";
/// Mirrors skipped because the shadow was still busy (its CPU budget).
pub const SHADOW_SKIPPED: &str = "edgefleet_agent_shadow_skipped_total";

/// The catalog, in the order the README lists it.
pub const ALL: &[Metric] = &[
    Metric {
        name: INFERENCE_REQUESTS,
        kind: Kind::Counter,
        unit: None,
        labels: &["model", "version"],
        help: "Inference requests answered, by model and version.",
    },
    Metric {
        name: INFERENCE_ERRORS,
        kind: Kind::Counter,
        unit: None,
        labels: &["model", "version", "reason"],
        help: "Inference requests that failed, by model, version and reason (engine, queue_full, bad_request, timeout, no_workers).",
    },
    Metric {
        name: INFERENCE_QUEUE_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["model", "version"],
        help: "Time a request waited for a worker.",
    },
    Metric {
        name: INFERENCE_COMPUTE_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["model", "version"],
        help: "Engine time of the run a request was part of.",
    },
    Metric {
        name: INFERENCE_REQUEST_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["model", "version"],
        help: "Time from request decoded to response encoded.",
    },
    Metric {
        name: INFERENCE_BATCH_ROWS,
        kind: Kind::Histogram,
        unit: None,
        labels: &["model", "version"],
        help: "Rows per engine run (above 1 when batching merges requests).",
    },
    Metric {
        name: INFERENCE_IN_FLIGHT,
        kind: Kind::Gauge,
        unit: None,
        labels: &["model", "version"],
        help: "Requests being decoded, queued, run or encoded.",
    },
    Metric {
        name: QUEUE_DEPTH,
        kind: Kind::Gauge,
        unit: None,
        labels: &["model", "version"],
        help: "Requests waiting for a worker (sampled at scrape).",
    },
    Metric {
        name: INFERENCE_WORKERS,
        kind: Kind::Gauge,
        unit: None,
        labels: &["model", "version"],
        help: "Inference worker threads running (sampled at scrape).",
    },
    Metric {
        name: MODELS_READY,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Models loaded, warmed up and with a worker running.",
    },
    Metric {
        name: ENGINE_PANICS,
        kind: Kind::Counter,
        unit: None,
        labels: &["model", "version"],
        help: "Engine panics caught by a worker: the request failed, the worker opened a new session.",
    },
    Metric {
        name: MODEL_LOADS,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Model loads, by result (ok, error).",
    },
    Metric {
        name: HTTP_REJECTIONS,
        kind: Kind::Counter,
        unit: None,
        labels: &["status"],
        help: "Requests refused before reaching a model, by HTTP status.",
    },
    Metric {
        name: FEEDBACK_LABELS,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Ground-truth labels received.",
    },
    Metric {
        name: TELEMETRY_SAMPLES,
        kind: Kind::Counter,
        unit: None,
        labels: &["reason"],
        help: "Rows sampled for telemetry, by reason (rate, low_confidence).",
    },
    Metric {
        name: TELEMETRY_BATCHES,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Telemetry batches, by result (spooled, acknowledged by the broker).",
    },
    Metric {
        name: TELEMETRY_BYTES,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Signed telemetry frame bytes spooled.",
    },
    Metric {
        name: TELEMETRY_DROPPED_BATCHES,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Telemetry batches dropped (oldest first) because the spool was full.",
    },
    Metric {
        name: TELEMETRY_DROPPED_SAMPLES,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Sampled rows in those dropped batches.",
    },
    Metric {
        name: TELEMETRY_FEEDBACK_DROPPED,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Labels beyond max_feedback per batch.",
    },
    Metric {
        name: TELEMETRY_SPOOL_BATCHES,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Telemetry batches waiting in the spool.",
    },
    Metric {
        name: TELEMETRY_SPOOL_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Bytes in the telemetry spool.",
    },
    Metric {
        name: ACTIVATIONS,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Activations of a deployed version, by result (ok, failed: download, verification, load, self-test or watch window).",
    },
    Metric {
        name: ROLLBACKS,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Activations that failed or were rolled back after their watch window; the previous version kept serving.",
    },
    Metric {
        name: VERIFICATIONS,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Deployment documents verified, by result (ok or the refusal's attack class).",
    },
    Metric {
        name: TRUST_ROTATIONS,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Trust set rotations, by result (ok, refused).",
    },
    Metric {
        name: DOWNLOAD_BYTES,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Compressed artifact bytes downloaded.",
    },
    Metric {
        name: DOWNLOAD_RESUMES,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Artifact downloads resumed from a partial file with a Range request.",
    },
    Metric {
        name: MQTT_CONNECTED,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "1 while the MQTT link is connected, else 0 (the agent polls over HTTP).",
    },
    Metric {
        name: MQTT_RECONNECTS,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "MQTT connections lost and retried.",
    },
    Metric {
        name: SHADOW_MODELS,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Versions running in shadow beside the active ones.",
    },
    Metric {
        name: SHADOW_COMPARED,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Mirrored requests run on a shadow version and compared with the active one.",
    },
    Metric {
        name: SHADOW_SKIPPED,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Mirrors skipped because the shadow was still busy (its CPU budget).",
    },
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn consts() -> Vec<&'static str> {
        include_str!("metric.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split(':').next())
            .filter(|c| *c != "ALL")
            .collect()
    }

    #[test]
    fn the_catalog_is_well_formed_and_complete() {
        edgefleet_service::observability::check_catalog("edgefleet_agent_", ALL).expect("catalog");
        let names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        assert_eq!(consts().len(), ALL.len(), "every constant is in ALL once");
        for name in &names {
            assert!(
                consts()
                    .iter()
                    .any(|c| include_str!("metric.rs").contains(&format!("pub const {c}: &str = \"{name}\"")))
            );
        }
    }

    #[test]
    fn every_emitted_metric_is_in_the_catalog() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let stray = edgefleet_service::observability::uncatalogued_emits(&src, "metric", &consts());
        assert!(stray.is_empty(), "metrics emitted outside the catalog:\n{}", stray.join("\n"));
    }

    #[test]
    fn the_readme_lists_every_metric() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
        let missing: Vec<&str> = ALL.iter().map(|m| m.name).filter(|n| !readme.contains(&format!("`{n}`"))).collect();
        assert!(missing.is_empty(), "not in the README: {missing:?}");
    }
}
