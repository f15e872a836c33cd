//! The operator REST API under `/api/v1` (JSON; bearer tokens with roles).

mod artifacts;
mod caller;
mod console;
mod devices;
mod error;
mod fleets;
mod models;
mod observe;
mod rollouts;
mod telemetry;
mod tokens;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi;

use crate::db::Db;
use crate::fleet::Fleet;
use crate::registry::Registry;

pub use error::{ApiError, json_errors};

/// State shared by the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Database.
    pub db: Db,
    /// Registry service.
    pub registry: Registry,
    /// Fleet service.
    pub fleet: Fleet,
    /// Rollout service.
    pub rollouts: crate::rollout::Rollouts,
    /// Telemetry, drift and retraining.
    pub telemetry: crate::telemetry::Telemetry,
    /// Sends changed documents to the devices (MQTT, when the controller has a broker).
    pub publisher: crate::publish::Publisher,
    /// The device CA (broker client certificates).
    pub ca: std::sync::Arc<crate::device_ca::DeviceCa>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Whether console session cookies are marked `Secure` (the listener serves TLS).
    pub secure_cookies: bool,
}

/// The OpenAPI description of `/api/v1`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "edgefleet controller API",
        description = "Model registry, artifacts, tokens, audit log, fleet, rollouts, drift and retraining. Every route needs `Authorization: Bearer <token>` (or the console's session cookie, with `X-CSRF-Token` on state-changing requests) except the OpenAPI document and signing in."
    ),
    paths(
        models::list_models,
        models::push,
        models::show_model,
        models::show_version,
        models::bundle,
        models::signature,
        models::set_alias,
        models::delete_alias,
        artifacts::download,
        tokens::create,
        tokens::list,
        tokens::revoke,
        tokens::audit,
        devices::create_enrollment_token,
        devices::enroll,
        devices::desired,
        devices::trust,
        devices::mqtt_certificate,
        devices::delta,
        devices::artifact,
        devices::status,
        devices::list,
        devices::show,
        devices::relabel,
        devices::decommission,
        devices::enrollment_tokens,
        devices::revoke_enrollment_token,
        devices::deploy,
        devices::undeploy,
        fleets::create,
        fleets::list,
        fleets::show,
        fleets::update,
        fleets::delete,
        rollouts::create,
        rollouts::list,
        rollouts::show,
        rollouts::act,
        rollouts::history,
        devices::metrics,
        console::overview,
        console::sign_in,
        console::current,
        console::sign_out,
        telemetry::version_drift,
        telemetry::model_drift,
        telemetry::drift_history,
        telemetry::get_policy,
        telemetry::set_policy,
        telemetry::list,
        telemetry::show,
        telemetry::file
    ),
    components(schemas(
        edgefleet_shared::api::models::VersionInfo,
        edgefleet_shared::api::models::ArtifactInfo,
        edgefleet_shared::api::models::ModelSummary,
        edgefleet_shared::api::models::PushMetadata,
        edgefleet_shared::api::tokens::Role,
        edgefleet_shared::api::tokens::CreateToken,
        edgefleet_shared::api::tokens::CreatedToken,
        edgefleet_shared::api::tokens::TokenInfo,
        edgefleet_shared::api::tokens::AuditEntry,
        edgefleet_shared::api::models::AliasTarget,
        edgefleet_shared::api::fleet::CreateEnrollmentToken,
        edgefleet_shared::api::fleet::EnrollmentToken,
        edgefleet_shared::api::fleet::DeviceInfo,
        edgefleet_shared::api::fleet::DeviceState,
        edgefleet_shared::api::fleet::Relabel,
        edgefleet_shared::api::fleet::Decommission,
        edgefleet_shared::api::fleet::EnrollmentTokenInfo,
        edgefleet_shared::api::fleet::DeployRequest,
        edgefleet_shared::api::fleet::UndeployRequest,
        edgefleet_shared::api::fleets::CreateFleet,
        edgefleet_shared::api::fleets::UpdateFleet,
        edgefleet_shared::api::fleets::FleetInfo,
        edgefleet_shared::api::fleets::FleetConflict,
        edgefleet_shared::api::fleet::Issued,
        edgefleet_shared::api::rollouts::RolloutRequest,
        edgefleet_shared::api::rollouts::RolloutInfo,
        edgefleet_shared::api::telemetry::DriftReport,
        edgefleet_shared::api::telemetry::FeatureDrift,
        edgefleet_shared::api::telemetry::DriftHistory,
        edgefleet_shared::api::telemetry::DriftWindow,
        edgefleet_shared::api::telemetry::WindowFeature,
        edgefleet_shared::api::telemetry::OutputDrift,
        edgefleet_shared::api::telemetry::Accuracy,
        edgefleet_shared::api::telemetry::Policy,
        edgefleet_shared::api::telemetry::RetrainRequest,
        edgefleet_shared::api::rollouts::RolloutHistory,
        edgefleet_shared::api::rollouts::GatePoint,
        edgefleet_shared::api::rollouts::RolloutEvent,
        edgefleet_shared::api::console::Overview,
        edgefleet_shared::api::console::InService,
        edgefleet_shared::api::console::RolloutSummary,
        edgefleet_shared::api::console::DeviceEvent,
        edgefleet_shared::api::console::DeviceMetricPoint,
        edgefleet_shared::api::console::SignIn,
        edgefleet_shared::api::console::SessionInfo,
        edgefleet_shared::api::ErrorBody
    ))
)]
pub struct ApiDoc;

/// All routes; `max_upload_bytes` bounds model pushes.
pub fn router(state: AppState, max_upload_bytes: usize) -> Router {
    let api = Router::new()
        .route("/models", get(models::list_models))
        .route("/models/{name}", get(models::show_model))
        .route("/models/{name}/versions", post(models::push).layer(DefaultBodyLimit::max(max_upload_bytes)))
        .route("/models/{name}/versions/{version}", get(models::show_version))
        .route("/models/{name}/versions/{version}/bundle", get(models::bundle))
        .route("/models/{name}/versions/{version}/signature", get(models::signature))
        .route("/models/{name}/aliases/{alias}", put(models::set_alias).delete(models::delete_alias))
        .route("/artifacts/{sha256}", get(artifacts::download))
        .route("/tokens", post(tokens::create).get(tokens::list))
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/audit", get(tokens::audit))
        .route("/enrollment-tokens", post(devices::create_enrollment_token).get(devices::enrollment_tokens))
        .route("/enrollment-tokens/{id}", axum::routing::delete(devices::revoke_enrollment_token))
        .route("/enroll", post(devices::enroll))
        .route("/devices", get(devices::list))
        .route("/devices/{id}", get(devices::show))
        .route("/devices/{id}/metrics", get(devices::metrics))
        .route("/devices/{id}/labels", post(devices::relabel))
        .route("/devices/{id}/decommission", post(devices::decommission))
        .route("/devices/{id}/desired", get(devices::desired))
        .route("/devices/{id}/trust", get(devices::trust))
        .route("/devices/{id}/mqtt-certificate", post(devices::mqtt_certificate))
        .route("/devices/{id}/deltas/{sha256}", get(devices::delta))
        .route("/devices/{id}/artifacts/{sha256}", get(devices::artifact))
        .route("/devices/{id}/status", post(devices::status))
        .route("/deployments", post(devices::deploy))
        .route("/undeploy", post(devices::undeploy))
        .route("/fleets", post(fleets::create).get(fleets::list))
        .route("/fleets/{name}", get(fleets::show).patch(fleets::update).delete(fleets::delete))
        .route("/rollouts", post(rollouts::create).get(rollouts::list))
        .route("/rollouts/{id}", get(rollouts::show))
        .route("/rollouts/{id}/history", get(rollouts::history))
        .route("/rollouts/{id}/{action}", post(rollouts::act))
        .route("/overview", get(console::overview))
        .route("/sessions", post(console::sign_in))
        .route("/sessions/current", get(console::current).delete(console::sign_out))
        .route("/models/{name}/drift", get(telemetry::model_drift))
        .route("/models/{name}/versions/{version}/drift", get(telemetry::version_drift))
        .route("/models/{name}/versions/{version}/drift/history", get(telemetry::drift_history))
        .route("/models/{name}/retrain-policy", get(telemetry::get_policy).put(telemetry::set_policy))
        .route("/retrain", get(telemetry::list))
        .route("/retrain/{id}", get(telemetry::show))
        .route("/retrain/{id}/files/{file}", get(telemetry::file))
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { Json(serde_json::json!({"ok": true})) }))
        .route("/metrics", get(metrics))
        .merge(crate::console::routes())
        .route_layer(axum::middleware::from_fn(observe::tag_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Err(e) = crate::census::publish(&state.db, state.fleet.online_window_secs()).await {
        tracing::warn!(error = %e, "Cannot count devices, rollouts and versions for /metrics.");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render()).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError { status: StatusCode::METHOD_NOT_ALLOWED, message: format!("{method} is not allowed on {}", uri.path()) }
}
