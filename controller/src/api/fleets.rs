//! `/api/v1/fleets`: declarative fleets (a selector and the models its members serve).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use edgefleet_shared::api::fleets::{CreateFleet, FleetInfo, UpdateFleet};
use edgefleet_shared::api::tokens::Role;

use super::{ApiError, AppState};
use crate::auth::Caller;

/// Creates a fleet; every matching device is given its models.
#[utoipa::path(post, path = "/api/v1/fleets", request_body = CreateFleet, responses((status = 201, body = FleetInfo), (status = 400, body = edgefleet_shared::api::ErrorBody), (status = 409, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: Result<Json<CreateFleet>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<FleetInfo>), ApiError> {
    caller.require(Role::Operator)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (info, changed) = state.fleet.create_fleet(req, caller.actor()).await?;
    state.publisher.documents(&changed).await;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Every fleet with its members and conflicts.
#[utoipa::path(get, path = "/api/v1/fleets", responses((status = 200, body = Vec<FleetInfo>)))]
pub(super) async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<Vec<FleetInfo>>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.fleet.fleet_list().await?))
}

/// One fleet.
#[utoipa::path(get, path = "/api/v1/fleets/{name}", responses((status = 200, body = FleetInfo), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FleetInfo>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.fleet.fleet_info(name).await?))
}

/// Changes a fleet's selector or models (a new version of one of its models: a rollout with `fleet`).
#[utoipa::path(patch, path = "/api/v1/fleets/{name}", request_body = UpdateFleet, responses((status = 200, body = FleetInfo), (status = 404, body = edgefleet_shared::api::ErrorBody), (status = 409, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<UpdateFleet>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<FleetInfo>, ApiError> {
    caller.require(Role::Operator)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (info, changed) = state.fleet.update_fleet(name, req, caller.actor()).await?;
    state.publisher.documents(&changed).await;
    Ok(Json(info))
}

/// Deletes a fleet: its members stop serving its models.
#[utoipa::path(delete, path = "/api/v1/fleets/{name}", responses((status = 204), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    let changed = state.fleet.delete_fleet(name, caller.actor()).await?;
    state.publisher.documents(&changed).await;
    Ok(StatusCode::NO_CONTENT)
}
