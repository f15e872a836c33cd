//! Every metric the controller emits, by name: emit sites use these constants, [`ALL`] describes
//! them (`# HELP` on `/metrics`, and the README's table), and the test below fails on a metric
//! macro anywhere in the crate that names something else.

use edgefleet_service::observability::{Kind, Metric};
use metrics::Unit;

/// API requests answered, by method, route template and status.
pub const HTTP_REQUESTS: &str = "edgefleet_controller_http_requests_total";
/// Time to answer an API request, by method and route template.
pub const HTTP_REQUEST_SECONDS: &str = "edgefleet_controller_http_request_seconds";
/// Model pushes, by result (ok, refused).
pub const PUSHES: &str = "edgefleet_controller_pushes_total";
/// Time to validate, profile and record a push.
pub const PUSH_SECONDS: &str = "edgefleet_controller_push_seconds";
/// Isolated push validations, by result (ok, refused, crashed, timeout).
pub const VALIDATIONS: &str = "edgefleet_controller_validations_total";
/// Compressed artifact bytes sent.
pub const ARTIFACT_BYTES_SERVED: &str = "edgefleet_controller_artifact_bytes_served_total";
/// Signed deployment documents issued (deploys and rollout waves).
pub const DOCUMENTS_ISSUED: &str = "edgefleet_controller_documents_issued_total";
/// Rollout waves whose quality gates failed.
pub const ROLLOUT_GATE_FAILURES: &str = "edgefleet_controller_rollout_gate_failures_total";
/// Devices sent back to their previous version by an aborted rollout.
pub const ROLLOUT_ROLLBACKS: &str = "edgefleet_controller_rollout_rollbacks_total";
/// Device status reports recorded (MQTT).
pub const STATUS_REPORTS: &str = "edgefleet_controller_status_reports_total";
/// Device status reports refused, by reason (malformed, signature, unknown_device, ...).
pub const STATUS_REJECTED: &str = "edgefleet_controller_status_rejected_total";
/// Status reports dropped unread because the ingest backlog was full (the next report replaces them).
pub const STATUS_SHED: &str = "edgefleet_controller_status_shed_total";
/// Messages from devices received and not yet handled.
pub const MQTT_BACKLOG: &str = "edgefleet_controller_mqtt_backlog_messages";
/// Embedded-broker connections and publishes refused by the gate, by reason.
pub const BROKER_DENIED: &str = "edgefleet_controller_broker_denied_total";
/// Telemetry batches, by result (accepted, duplicate, signature, wrong_device, replay, unknown_device, malformed, error).
pub const TELEMETRY_BATCHES: &str = "edgefleet_controller_telemetry_batches_total";
/// Sampled rows stored.
pub const TELEMETRY_SAMPLES: &str = "edgefleet_controller_telemetry_samples_total";
/// Rows counted in merged histograms.
pub const TELEMETRY_ROWS: &str = "edgefleet_controller_telemetry_rows_total";
/// Retrain requests created.
pub const RETRAIN_REQUESTS: &str = "edgefleet_controller_retrain_requests_total";
/// Retrain webhook attempts, by result (delivered, retry, failed).
pub const WEBHOOK_DELIVERIES: &str = "edgefleet_controller_webhook_deliveries_total";

/// The catalog, in the order the README lists it.
pub const ALL: &[Metric] = &[
    Metric {
        name: HTTP_REQUESTS,
        kind: Kind::Counter,
        unit: None,
        labels: &["method", "route", "status"],
        help: "API requests answered, by method, route template and status.",
    },
    Metric {
        name: HTTP_REQUEST_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["method", "route"],
        help: "Time to answer an API request, by method and route template.",
    },
    Metric {
        name: PUSHES,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Model pushes, by result (ok, refused).",
    },
    Metric {
        name: PUSH_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time to validate, profile and record a push.",
    },
    Metric {
        name: VALIDATIONS,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Isolated push validations, by result (ok, refused, crashed, timeout).",
    },
    Metric {
        name: ARTIFACT_BYTES_SERVED,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Compressed artifact bytes sent.",
    },
    Metric {
        name: DOCUMENTS_ISSUED,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Signed deployment documents issued (deploys and rollout waves).",
    },
    Metric {
        name: ROLLOUT_GATE_FAILURES,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Rollout waves whose quality gates failed.",
    },
    Metric {
        name: ROLLOUT_ROLLBACKS,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Devices sent back to their previous version by an aborted rollout.",
    },
    Metric {
        name: STATUS_REPORTS,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Device status reports recorded (MQTT).",
    },
    Metric {
        name: STATUS_REJECTED,
        kind: Kind::Counter,
        unit: None,
        labels: &["reason"],
        help: "Device status reports refused, by reason (malformed, signature, unknown_device, ...).",
    },
    Metric {
        name: STATUS_SHED,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Status reports dropped unread because the ingest backlog was full (the next report replaces them).",
    },
    Metric {
        name: MQTT_BACKLOG,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Messages from devices received and not yet handled.",
    },
    Metric {
        name: BROKER_DENIED,
        kind: Kind::Counter,
        unit: None,
        labels: &["reason"],
        help: "Embedded-broker connections and publishes refused by the gate, by reason.",
    },
    Metric {
        name: TELEMETRY_BATCHES,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Telemetry batches, by result (accepted, duplicate, signature, wrong_device, replay, unknown_device, malformed, error).",
    },
    Metric { name: TELEMETRY_SAMPLES, kind: Kind::Counter, unit: None, labels: &[], help: "Sampled rows stored." },
    Metric {
        name: TELEMETRY_ROWS,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Rows counted in merged histograms.",
    },
    Metric { name: RETRAIN_REQUESTS, kind: Kind::Counter, unit: None, labels: &[], help: "Retrain requests created." },
    Metric {
        name: WEBHOOK_DELIVERIES,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Retrain webhook attempts, by result (delivered, retry, failed).",
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
        edgefleet_service::observability::check_catalog("edgefleet_controller_", ALL).expect("catalog");
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
