//! The authenticated operator behind a request: the bearer-token extractor and role checks.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use edgefleet_shared::api::tokens::Role;

use super::{ApiError, AppState};
use crate::auth::{Caller, lookup};

impl Caller {
    /// 403 unless the caller has at least `role`.
    pub(crate) fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("this needs the {role} role; token {:?} is {}", self.name, self.role)))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be \"Bearer <token>\""))?
            .to_owned();
        let caller = state.db.call(move |conn| lookup(conn, &token).map_err(ApiError::from)).await?;
        caller.ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
    }
}
