//! Operator routes for staged rollouts (`/rollouts`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use edgefleet_shared::api::rollouts::{RolloutHistory, RolloutInfo, RolloutRequest};
use edgefleet_shared::api::tokens::Role;

use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::rollout::Action;

/// Starts a rollout.
#[utoipa::path(post, path = "/api/v1/rollouts", request_body = RolloutRequest, responses((status = 201, body = RolloutInfo), (status = 409, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: Result<Json<RolloutRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<RolloutInfo>), ApiError> {
    caller.require(Role::Operator)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    state.registry.prepare_deltas(req.model.clone(), req.version.clone()).await;
    let created = state.rollouts.create(req, caller.actor()).await?;
    // The first wave goes out now rather than on the next tick.
    let issued = state.rollouts.tick().await?;
    state.publisher.documents(&issued).await;
    let shown = state.rollouts.show(created.id).await?;
    Ok((StatusCode::CREATED, Json(shown)))
}

/// Lists rollouts, newest first.
#[utoipa::path(get, path = "/api/v1/rollouts", responses((status = 200, body = Vec<RolloutInfo>)))]
pub(super) async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<Vec<RolloutInfo>>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.rollouts.list().await?))
}

/// One rollout: waves, devices, measurements, gate values.
#[utoipa::path(get, path = "/api/v1/rollouts/{id}", responses((status = 200, body = RolloutInfo), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<RolloutInfo>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.rollouts.show(id).await?))
}

/// A rollout's gate evaluations (each one that changed a value or verdict) and audited events,
/// oldest first.
#[utoipa::path(get, path = "/api/v1/rollouts/{id}/history", responses((status = 200, body = RolloutHistory), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn history(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<RolloutHistory>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.rollouts.history(id).await?))
}

/// `pause`, `resume` or `abort` (abort sends every changed device back).
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/{action}", responses((status = 200, body = RolloutInfo), (status = 409, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn act(
    caller: Caller,
    State(state): State<AppState>,
    Path((id, action)): Path<(i64, String)>,
) -> Result<Json<RolloutInfo>, ApiError> {
    caller.require(Role::Operator)?;
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "abort" => Action::Abort,
        other => return Err(ApiError::not_found(format!("unknown rollout action {other:?}: pause, resume or abort"))),
    };
    let (info, changed) = state.rollouts.act(id, action, caller.actor()).await?;
    state.publisher.documents(&changed).await;
    Ok(Json(info))
}
