//! Drift reports and retraining (`/models/{m}/drift`, `/models/{m}/retrain-policy`, `/retrain`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use edgefleet_shared::api::telemetry::{
    DriftHistory, DriftQuery, DriftReport, HistoryQuery, ListQuery, Policy, RetrainRequest,
};
use edgefleet_shared::api::tokens::Role;

use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::telemetry::TelemetryError;

impl From<TelemetryError> for ApiError {
    fn from(e: TelemetryError) -> Self {
        match e {
            TelemetryError::BadRequest(m) => ApiError::bad_request(m),
            TelemetryError::NotFound(m) => ApiError::not_found(m),
            TelemetryError::Refused { .. } => ApiError::bad_request(e.to_string()),
            TelemetryError::Io(m) | TelemetryError::Commit(m) => {
                tracing::error!(error = %m, "Telemetry storage error.");
                ApiError::internal("internal storage error; see the controller log")
            }
            TelemetryError::Db(d) => d.into(),
        }
    }
}

fn window(q: &DriftQuery) -> Result<Option<u64>, ApiError> {
    q.window
        .as_deref()
        .map(|w| {
            humantime::parse_duration(w)
                .map(|d| d.as_secs())
                .map_err(|e| ApiError::bad_request(format!("window {w:?}: {e} (e.g. 1h, 30m, 90s)")))
        })
        .transpose()
}

/// Drift of a version against its baseline.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/drift", params(DriftQuery), responses((status = 200, body = DriftReport), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn version_drift(
    caller: Caller,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<DriftQuery>,
) -> Result<Json<DriftReport>, ApiError> {
    caller.require(Role::Viewer)?;
    let w = window(&q)?;
    Ok(Json(state.telemetry.report(name, Some(version), w, q.group).await?))
}

/// Drift per telemetry window over time, the newest windows with telemetry, oldest first.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/drift/history", params(HistoryQuery), responses((status = 200, body = DriftHistory), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn drift_history(
    caller: Caller,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<DriftHistory>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.telemetry.history(name, version, q.group, q.windows).await?))
}

/// Drift of the latest version with telemetry.
#[utoipa::path(get, path = "/api/v1/models/{name}/drift", params(DriftQuery), responses((status = 200, body = DriftReport), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn model_drift(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<DriftQuery>,
) -> Result<Json<DriftReport>, ApiError> {
    caller.require(Role::Viewer)?;
    let w = window(&q)?;
    Ok(Json(state.telemetry.report(name, None, w, q.group).await?))
}

/// A model's retraining policy.
#[utoipa::path(get, path = "/api/v1/models/{name}/retrain-policy", responses((status = 200, body = Policy)))]
pub(super) async fn get_policy(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Policy>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.telemetry.policy(name).await?))
}

/// Sets a model's retraining policy.
#[utoipa::path(put, path = "/api/v1/models/{name}/retrain-policy", request_body = Policy, responses((status = 200, body = Policy), (status = 400, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn set_policy(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<Policy>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Policy>, ApiError> {
    caller.require(Role::Operator)?;
    let Json(policy) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(Json(state.telemetry.set_policy(name, policy, caller.actor()).await?))
}

/// Retrain requests, newest first.
#[utoipa::path(get, path = "/api/v1/retrain", params(ListQuery), responses((status = 200, body = Vec<RetrainRequest>)))]
pub(super) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<RetrainRequest>>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.telemetry.requests(q.model).await?))
}

/// One retrain request, with its delivery state and the versions trained on its snapshot.
#[utoipa::path(get, path = "/api/v1/retrain/{id}", responses((status = 200, body = RetrainRequest), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<RetrainRequest>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.telemetry.request(id).await?))
}

/// A snapshot file: `data.csv` or `manifest.json`.
#[utoipa::path(get, path = "/api/v1/retrain/{id}/files/{file}", responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn file(
    caller: Caller,
    State(state): State<AppState>,
    Path((id, file)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let content_type = if file.ends_with(".csv") { "text/csv" } else { "application/json" };
    let bytes = state.telemetry.snapshot_file(id, file).await?;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}
