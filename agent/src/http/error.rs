//! How an [`ApiError`] answers over HTTP: `{"error": ...}` with its status.

use axum::Json;
use axum::response::{IntoResponse, Response};
use edgefleet_shared::inference::ErrorBody;

pub use crate::api::ApiError;

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
