//! The one error type HTTP handlers return: a status and a message for the caller.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use edgefleet_shared::inference::ErrorBody;

/// An error answered as `{"error": "..."}` with an HTTP status.
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

/// Every error answers `{"error": ...}` JSON, axum's own plain-text rejections included.
pub async fn json_errors(response: Response) -> Response {
    edgefleet_service::http::json_errors(response, |status, message| ApiError { status, message }.into_response()).await
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "Request failed.");
        } else {
            tracing::debug!(status = self.status.as_u16(), error = %self.message, "Request refused.");
        }
        metrics::counter!(crate::metric::HTTP_REJECTIONS, "status" => self.status.as_str().to_owned()).increment(1);
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}
