//! What the HTTP and gRPC APIs share: the state their handlers read and the one error type they
//! return (a status, named as in HTTP, and a message for the caller; gRPC maps the status to its
//! code).

use std::sync::Arc;

use axum::http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::repository::Repository;

/// Shared state of the API handlers, behind one reference count: the router hands every request
/// its own copy, which then costs one atomic increment however many parts the state has.
#[derive(Debug, Clone)]
pub struct AppState(Arc<ApiShared>);

impl AppState {
    /// Wraps the parts the handlers share.
    pub fn new(shared: ApiShared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = ApiShared;

    fn deref(&self) -> &ApiShared {
        &self.0
    }
}

/// What the API handlers share.
#[derive(Debug)]
pub struct ApiShared {
    /// Served models.
    pub repository: Arc<Repository>,
    /// Shadow versions beside them, fed mirrored requests.
    pub shadows: Arc<crate::shadow::Shadows>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long an inference request waits for its answer.
    pub request_timeout: std::time::Duration,
}

/// A refusal or failure with its status (HTTP; gRPC answers the matching code) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What the caller did wrong, or why the server cannot answer.
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// 404: no such model, version or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into() }
    }

    /// 413: the body exceeds the configured limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body exceeds the limit of {limit} bytes (server.max_body_bytes)"),
        }
    }

    /// 422: well-formed, but does not fit the model (input names, shapes, datatypes).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, message: message.into() }
    }

    /// 503: not ready or overloaded; retrying later may work.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: message.into() }
    }

    /// 504: the model did not answer within the request deadline.
    pub fn timeout(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::GATEWAY_TIMEOUT, message: message.into() }
    }

    /// 500: the engine failed on a request that passed validation.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
    }
}
