//! `ApiError`: every failure of the REST API as `{"error": ...}` with its status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use edgefleet_shared::inference::ErrorBody;

use crate::db::DbError;
use crate::registry::RegistryError;

/// An error answered as `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Status.
    pub status: StatusCode,
    /// Message for the caller.
    pub message: String,
}

macro_rules! constructor {
    ($name:ident, $status:ident, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(message: impl Into<String>) -> Self {
            ApiError { status: StatusCode::$status, message: message.into() }
        }
    };
}

impl ApiError {
    constructor!(bad_request, BAD_REQUEST, "400: malformed request.");
    constructor!(unauthorized, UNAUTHORIZED, "401: no valid credentials.");
    constructor!(forbidden, FORBIDDEN, "403: the credentials may not do this.");
    constructor!(not_found, NOT_FOUND, "404: no such thing.");
    constructor!(conflict, CONFLICT, "409: conflicts with what exists.");
    constructor!(unprocessable, UNPROCESSABLE_ENTITY, "422: well-formed but invalid content.");
    constructor!(internal, INTERNAL_SERVER_ERROR, "500: the controller failed.");
    constructor!(unavailable, SERVICE_UNAVAILABLE, "503: a service the controller needs did not answer; try again.");
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self.message, "Request failed.");
        } else {
            tracing::debug!(status = self.status.as_u16(), error = %self.message, "Request refused.");
        }
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

/// Every error answers `{"error": ...}` JSON, axum's own plain-text rejections included.
pub async fn json_errors(response: Response) -> Response {
    edgefleet_service::http::json_errors(response, |status, message| ApiError { status, message }.into_response()).await
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if matches!(e, DbError::Sql(crate::sql::Error::NulInText)) {
            return ApiError::bad_request(e.to_string());
        }
        // Internals stay in the log; the caller learns only that the controller failed.
        tracing::error!(error = %e, "Database error.");
        ApiError::internal("internal database error; see the controller log")
    }
}

impl From<crate::sql::Error> for ApiError {
    fn from(e: crate::sql::Error) -> Self {
        DbError::from(e).into()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::BadRequest(m) => ApiError::bad_request(m),
            RegistryError::Invalid(crate::validate::ValidationError::Validator(m)) => {
                tracing::error!(error = %m, "The model validator could not run.");
                ApiError::internal("the model validator could not run; see the controller log")
            }
            RegistryError::Invalid(v) => ApiError::unprocessable(v.to_string()),
            RegistryError::OutOfRange(m) => ApiError::unprocessable(m),
            RegistryError::NotFound(m) => ApiError::not_found(m),
            RegistryError::Conflict(m) => ApiError::conflict(m),
            RegistryError::Store(s) => {
                tracing::error!(error = %s, "Artifact store error.");
                ApiError::internal("internal storage error; see the controller log")
            }
            RegistryError::Db(d) => d.into(),
        }
    }
}
