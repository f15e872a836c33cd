//! The controller's API in this process (`router(state).oneshot(...)`) on a [`ManualClock`]:
//! rollouts and retraining run through the real services, SQLite and signing, with time moved
//! by hand instead of waited for. Pushes are validated by the real `edgefleet-controller`
//! binary, as in production.

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use edgefleet_controller::api::{AppState, router};
use edgefleet_controller::config::{ControllerConfig, DataDir};
use edgefleet_controller::serve;
use edgefleet_service::observability::Kind;
use edgefleet_shared::api::models::VersionInfo;
use edgefleet_shared::api::rollouts::{RolloutInfo, RolloutState};
use edgefleet_shared::api::telemetry::RetrainRequest;
use edgefleet_shared::clock::{Clock as _, ManualClock};
use edgefleet_shared::deployment::ModelRef;
use edgefleet_shared::fleet::{
    DEVICE_HEADER, DeviceStatus, EnrollRequest, EnrollResponse, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_request,
};
use edgefleet_shared::keys::{FileKey, Signer as _};
use edgefleet_shared::telemetry::{FeatureCounts, ModelTelemetry, TELEMETRY_KIND, TelemetryBatch};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ADMIN: &str = "in-process-admin-token";
/// A Unix time on a 300 s window boundary.
const T0: u64 = 1_800_000_000;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata")
}

struct Controller {
    app: Router,
    state: AppState,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

fn controller() -> Controller {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ControllerConfig::default();
    config.mqtt.enabled = false;
    config.telemetry.window_secs = 300;
    config.telemetry.settle_secs = 30;
    config.retrain.policy.windows = 2;
    config.retrain.policy.min_rows = 50;
    let clock = ManualClock::at(T0);
    let data = DataDir { root: dir.path().join("data") };
    let validator = PathBuf::from(env!("CARGO_BIN_EXE_edgefleet-controller"));
    let (state, admin) =
        serve::in_process(&config, &data, Some(ADMIN.into()), clock.shared(), validator).expect("controller");
    assert_eq!(admin.as_deref(), Some(ADMIN));
    Controller { app: router(state.clone(), 64 << 20), state, clock, _dir: dir }
}

impl Controller {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(request.body(body).expect("request")).await
    }

    async fn ok<T: serde::de::DeserializeOwned>(&self, method: Method, path: &str, body: Option<Value>) -> T {
        let (status, value) = self.call(method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {value}");
        serde_json::from_value(value).expect("typed answer")
    }

    /// Pushes the iris classifier with its training data as the baseline.
    async fn push_iris(&self) -> VersionInfo {
        let model = std::fs::read(testdata().join("iris_logreg.onnx")).expect("model");
        let baseline = std::fs::read(testdata().join("iris_baseline.csv")).expect("baseline");
        let boundary = "edgefleet-in-process";
        let mut body = Vec::new();
        let part = |body: &mut Vec<u8>, head: &str, bytes: &[u8]| {
            body.extend_from_slice(format!("--{boundary}\r\n{head}\r\n\r\n").as_bytes());
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        };
        part(&mut body, "Content-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json", b"{}");
        part(&mut body, "Content-Disposition: form-data; name=\"model\"; filename=\"iris.onnx\"", &model);
        part(&mut body, "Content-Disposition: form-data; name=\"baseline\"; filename=\"iris.csv\"", &baseline);
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let request = Request::post("/api/v1/models/iris/versions")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(Body::from(body))
            .expect("request");
        let (status, value) = self.send(request).await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        serde_json::from_value(value).expect("version")
    }

    async fn enroll(&self, labels: Value) -> Device {
        let token: Value =
            self.ok(Method::POST, "/api/v1/enrollment-tokens", Some(json!({"uses": 1, "labels": labels}))).await;
        let key = FileKey::generate().expect("key");
        let body = EnrollRequest {
            token: token["token"].as_str().expect("token").into(),
            public_key: key.public_key().to_base64(),
            labels: Default::default(),
        };
        let request = Request::post("/api/v1/enroll")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("request");
        let (status, value) = self.send(request).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        let enrolled: EnrollResponse = serde_json::from_value(value).expect("enrolled");
        Device { id: enrolled.device_id, key }
    }

    /// A status report from `device`, signed by its key (the device API's own authentication).
    async fn report(&self, device: &Device, status: &DeviceStatus) {
        let path = format!("/api/v1/devices/{}/status", device.id);
        let body = serde_json::to_vec(status).expect("json");
        let at = edgefleet_shared::clock::unix_secs();
        let request = Request::post(path.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(DEVICE_HEADER, &device.id)
            .header(TIMESTAMP_HEADER, at.to_string())
            .header(SIGNATURE_HEADER, sign_request(&device.key, "POST", &path, at, &body))
            .body(Body::from(body))
            .expect("request");
        let (status, value) = self.send(request).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{value}");
    }
}

struct Device {
    id: String,
    key: FileKey,
}

/// A device serving `model` that answered `requests` requests with `errors` failures on it.
fn serving(model: &ModelRef, requests: u64, errors: u64) -> DeviceStatus {
    DeviceStatus {
        active: Some(model.clone()),
        active_requests: requests,
        active_errors: errors,
        latency_p99_ms: Some(1.0),
        ..DeviceStatus::default()
    }
}

#[tokio::test]
async fn errors_are_json_and_every_route_needs_a_token() {
    let c = controller();
    let request = Request::get("/api/v1/models").body(Body::empty()).expect("request");
    let (status, body) = c.send(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Bearer")), "{body}");
    let (status, body) = c.call(Method::GET, "/api/v1/models/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].is_string());
    let (status, body) = c.call(Method::POST, "/api/v1/rollouts", Some(json!({"model": 1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = c.call(Method::GET, "/api/v1/../../etc/passwd", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Each request was counted under its route template; unmatched paths share one label.
    let response = c.app.clone().oneshot(Request::get("/metrics").body(Body::empty()).expect("request")).await;
    let bytes = response.expect("infallible").into_body().collect().await.expect("body").to_bytes();
    let metrics = String::from_utf8_lossy(&bytes);
    for line in [
        r#"edgefleet_controller_http_requests_total{method="GET",route="/api/v1/models",status="401"}"#,
        r#"edgefleet_controller_http_requests_total{method="GET",route="/api/v1/models/{name}",status="404"}"#,
        r#"edgefleet_controller_http_requests_total{method="GET",route="unmatched",status="404"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    assert!(!metrics.contains("passwd"), "raw paths never become labels");
    // A fresh controller already lists its unlabelled counters and gauges.
    for m in edgefleet_controller::metric::ALL.iter().filter(|m| m.labels.is_empty() && m.kind != Kind::Histogram) {
        assert!(metrics.contains(&format!("# HELP {} ", m.name)), "{} not listed", m.name);
    }
}

#[tokio::test]
async fn a_rollout_bakes_judges_and_completes_on_the_injected_clock() {
    let c = controller();
    let v1 = c.push_iris().await;
    let candidate = ModelRef { name: "iris".into(), version: v1.version };
    let devices = [c.enroll(json!({"site": "a"})).await, c.enroll(json!({"site": "a"})).await];
    let created: RolloutInfo = c
        .ok(
            Method::POST,
            "/api/v1/rollouts",
            Some(json!({"model": "iris", "version": "1", "selector": {"site": "a"}, "waves": [100],
                "bake_secs": 600, "gates": ["error_rate<0.05"], "min_requests": 10})),
        )
        .await;
    assert_eq!((created.state, created.wave), (RolloutState::Running, 1));
    assert_eq!(created.waves[0].devices.len(), 2, "creating the rollout issues its first wave");
    assert!(c.state.rollouts.tick().await.expect("tick").is_empty(), "each device gets its document once");

    // Both devices serve the candidate well, but the wave bakes for 600 s.
    for d in &devices {
        c.report(d, &serving(&candidate, 40, 0)).await;
    }
    c.clock.advance(Duration::from_secs(599));
    assert!(c.state.rollouts.tick().await.expect("tick").is_empty());
    let baking: RolloutInfo = c.ok(Method::GET, &format!("/api/v1/rollouts/{}", created.id), None).await;
    assert_eq!(baking.state, RolloutState::Running, "still baking at 599 s");
    assert!(baking.gates.is_empty(), "gates are judged only after the bake");

    c.clock.advance(Duration::from_secs(1));
    c.state.rollouts.tick().await.expect("tick");
    let done: RolloutInfo = c.ok(Method::GET, &format!("/api/v1/rollouts/{}", created.id), None).await;
    assert_eq!(done.state, RolloutState::Completed, "{done:?}");
    assert_eq!((done.measurements.activated, done.measurements.requests), (2, 80));
    assert_eq!(done.gates[0].passed, Some(true));
    let (status, body) = c.call(Method::POST, &format!("/api/v1/rollouts/{}/pause", created.id), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a completed rollout cannot pause: {body}");
}

#[tokio::test]
async fn a_failing_gate_aborts_and_operators_pause_and_resume() {
    let c = controller();
    c.push_iris().await;
    let first = ModelRef { name: "iris".into(), version: 1 };
    let device = c.enroll(json!({"site": "b"})).await;
    let create = |gate: &str| {
        json!({"model": "iris", "version": "1", "selector": {"site": "b"}, "waves": [100], "bake_secs": 60,
            "gates": [gate], "min_requests": 10, "on_fail": "abort"})
    };
    let r: RolloutInfo = c.ok(Method::POST, "/api/v1/rollouts", Some(create("error_rate<0.05"))).await;
    let path = format!("/api/v1/rollouts/{}", r.id);
    let paused: RolloutInfo = c.ok(Method::POST, &format!("{path}/pause"), None).await;
    assert_eq!(paused.state, RolloutState::Paused);
    let (status, _) = c.call(Method::POST, &format!("{path}/pause"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "pausing twice");
    c.report(&device, &serving(&first, 50, 10)).await;
    c.clock.advance(Duration::from_secs(3600));
    c.state.rollouts.tick().await.expect("tick");
    let still: RolloutInfo = c.ok(Method::GET, &path, None).await;
    assert_eq!(still.state, RolloutState::Paused, "a paused rollout is not stepped");
    let resumed: RolloutInfo = c.ok(Method::POST, &format!("{path}/resume"), None).await;
    assert_eq!(resumed.state, RolloutState::Running);
    c.clock.advance(Duration::from_secs(60));
    c.state.rollouts.tick().await.expect("tick");
    let aborted: RolloutInfo = c.ok(Method::GET, &path, None).await;
    assert_eq!(aborted.state, RolloutState::Aborted, "{aborted:?}");
    assert!(aborted.reason.as_deref().is_some_and(|r| r.contains("error_rate<0.05 (measured 0.2)")), "{aborted:?}");
}

/// A telemetry batch from `device` for iris:1 with `rows` rows, every feature's values in bin
/// `bin` of its baseline (`bins` bins).
fn batch(device: &Device, sequence: u64, end: u64, rows: u64, bins: usize, bin: usize) -> Vec<u8> {
    let mut counts = vec![0; bins];
    counts[bin] = rows;
    TelemetryBatch {
        kind: TELEMETRY_KIND.into(),
        device: device.id.clone(),
        sequence,
        start: end - 60,
        end,
        models: vec![ModelTelemetry {
            model: "iris".into(),
            version: 1,
            rows,
            features: (0..4).map(|_| FeatureCounts { counts: counts.clone(), missing: 0 }).collect(),
            output_classes: vec![rows, 0, 0],
            samples: Vec::new(),
            feedback: Vec::new(),
            labeled: 0,
            correct: 0,
        }],
        samples_capped: 0,
    }
    .encode(&device.key)
}

#[tokio::test]
async fn drift_in_consecutive_windows_triggers_retraining_on_the_injected_clock() {
    let c = controller();
    let version = c.push_iris().await;
    let bins = version.manifest.baseline.as_ref().expect("baseline").features[0].edges.len() + 1;
    let device = c.enroll(json!({})).await;
    let telemetry = &c.state.telemetry;
    // Window 1 (T0 .. T0+300): every value in the top bin, far from the training data.
    telemetry.ingest(device.id.clone(), batch(&device, 1, T0 + 100, 200, bins, bins - 1)).await.expect("ingest");
    c.clock.set(T0 + 300 + 30);
    assert!(telemetry.evaluate().await.expect("judge").is_empty(), "one drifting window of two");

    // Window 2, delivered late (after an outage): it still counts where it was served.
    c.clock.set(T0 + 900);
    telemetry.ingest(device.id.clone(), batch(&device, 2, T0 + 400, 200, bins, bins - 1)).await.expect("ingest");
    let created = telemetry.evaluate().await.expect("judge");
    assert_eq!(created.len(), 1, "two consecutive drifting windows");
    assert!(created[0].reason.contains("2 consecutive windows of 300 s"), "{}", created[0].reason);
    let listed: Vec<RetrainRequest> = c.ok(Method::GET, "/api/v1/retrain?model=iris", None).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].created_at, c.clock.now() as i64, "stamped with the injected clock");

    // The same batch again is refused as a duplicate; the drift report covers both windows.
    let again = telemetry.ingest(device.id.clone(), batch(&device, 2, T0 + 400, 200, bins, bins - 1)).await;
    assert!(again.is_err(), "replayed batch");
    let report: Value = c.ok(Method::GET, "/api/v1/models/iris/versions/1/drift?window=15m", None).await;
    assert_eq!(report["rows"], 400, "{report}");
    assert!(report["drifted_features"].as_u64() >= Some(1), "{report}");
}
