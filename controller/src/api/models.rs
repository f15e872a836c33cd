//! `/api/v1/models`: push, list, show, bundle and signature, aliases.

use axum::Json;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefleet_shared::api::models::{AliasTarget, ModelSummary, PushMetadata, VersionInfo};
use edgefleet_shared::api::tokens::Role;

use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::registry::PushRequest;
use crate::validate::BaselineData;

/// Lists models with their versions and aliases.
#[utoipa::path(get, path = "/api/v1/models", responses((status = 200, body = Vec<ModelSummary>)))]
pub(super) async fn list_models(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<ModelSummary>>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.registry.list().await?))
}

/// One model.
#[utoipa::path(get, path = "/api/v1/models/{name}", responses((status = 200, body = ModelSummary), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn show_model(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelSummary>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.registry.model(name).await?))
}

/// Registers a new version: `multipart/form-data` with `model` (the ONNX file), optional
/// `baseline` (CSV with header, or `.npy`; named by the part's file name) and optional
/// `metadata` (JSON, see `PushMetadata`).
#[utoipa::path(post, path = "/api/v1/models/{name}/versions",
    responses((status = 201, body = VersionInfo), (status = 400, body = edgefleet_shared::api::ErrorBody), (status = 409, body = edgefleet_shared::api::ErrorBody), (status = 422, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn push(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<VersionInfo>), ApiError> {
    // The role first: a viewer learns it may not push, whatever it sent.
    caller.require(Role::Operator)?;
    let mut form =
        form.map_err(|e| ApiError::bad_request(format!("expected a multipart/form-data upload: {}", e.body_text())))?;
    let mut req = PushRequest { name, ..PushRequest::default() };
    let mut got_model = false;
    while let Some(field) =
        form.next_field().await.map_err(|e| ApiError::bad_request(format!("malformed upload: {e}")))?
    {
        let part = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_ascii_lowercase);
        let bytes = field.bytes().await.map_err(|e| ApiError::bad_request(format!("upload part {part:?}: {e}")))?;
        match part.as_str() {
            "model" => {
                req.model = bytes.to_vec();
                got_model = true;
            }
            "baseline" => {
                let npy = file_name.as_deref().is_some_and(|n| n.ends_with(".npy")) || bytes.starts_with(b"\x93NUMPY");
                req.baseline =
                    Some(if npy { BaselineData::Npy(bytes.to_vec()) } else { BaselineData::Csv(bytes.to_vec()) });
            }
            "metadata" => {
                req.meta = serde_json::from_slice::<PushMetadata>(&bytes)
                    .map_err(|e| ApiError::bad_request(format!("metadata: {e}")))?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected upload part {other:?} (model, baseline, metadata)"
                )));
            }
        }
    }
    if !got_model {
        return Err(ApiError::bad_request("the upload has no \"model\" part"));
    }
    let started = std::time::Instant::now();
    let result = state.registry.push(req, caller.actor()).await;
    let outcome = if result.is_ok() { "ok" } else { "refused" };
    metrics::counter!(crate::metric::PUSHES, "result" => outcome).increment(1);
    metrics::histogram!(crate::metric::PUSH_SECONDS).record(started.elapsed().as_secs_f64());
    Ok((StatusCode::CREATED, Json(result?)))
}

/// One version, by number or alias.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}", responses((status = 200, body = VersionInfo), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn show_version(
    caller: Caller,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<VersionInfo>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.registry.version(name, version).await?))
}

/// The exact `bundle.json` bytes (what the signature covers).
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/bundle", responses((status = 200, description = "bundle.json bytes")))]
pub(super) async fn bundle(
    caller: Caller,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let info = state.registry.version(name, version).await?;
    let store = state.registry.store().clone();
    let sha256 = info.bundle_sha256.clone();
    let packed = tokio::task::spawn_blocking(move || store.read(crate::store::Object::Artifact(&sha256)))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "Bundle missing from the store.");
            ApiError::internal("bundle missing from the artifact store")
        })?;
    let bytes = edgefleet_shared::compress::decompress_to_vec(&packed, info.manifest_size())
        .map_err(|e| ApiError::internal(format!("stored bundle unreadable: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The controller's detached signature over the bundle bytes.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/signature", responses((status = 200, description = "{key_id, signature}")))]
pub(super) async fn signature(
    caller: Caller,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let info = state.registry.version(name, version).await?;
    Ok(Json(info.signature).into_response())
}

/// Points an alias at a version (moves it atomically if it exists).
#[utoipa::path(put, path = "/api/v1/models/{name}/aliases/{alias}", request_body = AliasTarget, responses((status = 200, body = ModelSummary)))]
pub(super) async fn set_alias(
    caller: Caller,
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    body: Result<Json<AliasTarget>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ModelSummary>, ApiError> {
    caller.require(Role::Operator)?;
    let Json(target) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(Json(state.registry.set_alias(name, alias, target.version, caller.actor()).await?))
}

/// Removes an alias.
#[utoipa::path(delete, path = "/api/v1/models/{name}/aliases/{alias}", responses((status = 204)))]
pub(super) async fn delete_alias(
    caller: Caller,
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    state.registry.delete_alias(name, alias, caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
