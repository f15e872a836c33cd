//! The KServe v2 / Open Inference Protocol HTTP API (see DESIGN §4 and the README's API table).

mod error;
mod feedback;
mod infer;
mod triton;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgefleet_shared::inference::{ModelMetadata, RepositoryEntry, ServerMetadata};
use serde_json::json;

pub use crate::api::AppState;
pub use error::{ApiError, json_errors};
pub(crate) use triton::{stats_snapshot, triton_type};

use crate::repository::{ModelState, ServedModel};

/// Extensions advertised in `GET /v2`.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository", "model_configuration", "statistics"];

/// The agent's HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/repository/index", get(repository_index).post(repository_index))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer::infer_version))
        .route("/v2/models/{model}/feedback", post(feedback::feedback))
        .route("/v2/models/{model}/config", get(triton::model_config))
        .route("/v2/models/{model}/versions/{version}/config", get(triton::model_config_version))
        .route("/v2/models/stats", get(triton::all_stats))
        .route("/v2/models/{model}/stats", get(triton::model_stats))
        .route("/v2/models/{model}/versions/{version}/stats", get(triton::model_stats_version))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(span))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// A `debug`-level span per request (`RUST_LOG=edgefleet_agent=debug` shows them), so logs of
/// one request line up; disabled spans cost next to nothing on the inference path.
async fn span(
    matched: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument as _;
    let span = tracing::debug_span!("http", method = %request.method(), route = matched.as_str());
    next.run(request).instrument(span).await
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError { status: StatusCode::METHOD_NOT_ALLOWED, message: format!("{method} is not allowed on {}", uri.path()) }
}

async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "edgefleet-agent".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
    })
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.repository.any_ready() {
        Ok(Json(json!({ "ready": true })))
    } else {
        Err(ApiError::unavailable("no model is loaded and warmed up yet"))
    }
}

/// Looks up a ready model, optionally pinned to a version.
pub(crate) fn resolve(state: &AppState, name: &str, version: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
    let entry = state.repository.get(name).ok_or_else(|| {
        let known: Vec<String> = state.repository.list().into_iter().map(|(n, _)| n).collect();
        ApiError::not_found(format!("unknown model {name:?} (serving: {})", known.join(", ")))
    })?;
    if let Some(v) = version
        && v != entry.version()
    {
        return Err(ApiError::not_found(format!(
            "model {name:?} has no version {v:?} (available: {})",
            entry.version()
        )));
    }
    match entry {
        ModelState::Ready(model) if model.pool.serving() => Ok(model),
        ModelState::Ready(model) => Err(ApiError::unavailable(format!(
            "model {name:?} version {} has no running inference worker (they stopped after an engine failure; see the agent log)",
            model.version
        ))),
        ModelState::Loading { version } => {
            Err(ApiError::unavailable(format!("model {name:?} version {version} is still loading")))
        }
        ModelState::Failed { version, error } => {
            Err(ApiError::unavailable(format!("model {name:?} version {version} failed to load: {error}")))
        }
    }
}

fn metadata(model: &Arc<ServedModel>) -> ModelMetadata {
    let sig = model.engine.signature();
    ModelMetadata {
        name: model.name.clone(),
        versions: vec![model.version.clone()],
        platform: model.engine.platform().into(),
        inputs: sig.inputs.iter().map(|t| t.metadata()).collect(),
        outputs: sig.outputs.iter().map(|t| t.metadata()).collect(),
    }
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    Ok(Json(metadata(&resolve(&state, &model, None)?)))
}

async fn model_metadata_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, ApiError> {
    Ok(Json(metadata(&resolve(&state, &model, Some(&version))?)))
}

async fn model_ready(State(state): State<AppState>, Path(model): Path<String>) -> Result<Response, ApiError> {
    let m = resolve(&state, &model, None)?;
    Ok(Json(json!({ "name": m.name, "version": m.version, "ready": true })).into_response())
}

async fn model_ready_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let m = resolve(&state, &model, Some(&version))?;
    Ok(Json(json!({ "name": m.name, "version": m.version, "ready": true })).into_response())
}

async fn repository_index(State(state): State<AppState>) -> Json<Vec<RepositoryEntry>> {
    Json(
        state
            .repository
            .list()
            .into_iter()
            .map(|(name, s)| RepositoryEntry {
                name,
                version: s.version().to_owned(),
                state: match s {
                    ModelState::Ready(_) if s.is_serving() => "READY",
                    ModelState::Loading { .. } => "LOADING",
                    ModelState::Ready(_) | ModelState::Failed { .. } => "UNAVAILABLE",
                }
                .into(),
            })
            .collect(),
    )
}

async fn metrics(State(state): State<AppState>) -> Response {
    for (name, s) in state.repository.list() {
        if let ModelState::Ready(m) = s {
            let labels = [("model", name), ("version", m.version.clone())];
            metrics::gauge!(crate::metric::QUEUE_DEPTH, &labels).set(m.pool.queue_len() as f64);
            metrics::gauge!(crate::metric::INFERENCE_WORKERS, &labels).set(m.pool.workers_alive() as f64);
            let [model, version] = labels;
            let engine = [model, version, ("engine", m.engine.platform().to_owned())];
            metrics::gauge!(crate::metric::MODEL_ENGINE, &engine).set(1.0);
        }
    }
    state.repository.update_ready_gauge();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render()).into_response()
}
