//! The authenticated operator behind a request: a bearer token, or the console's session cookie
//! (with its CSRF token on every state-changing request), and role checks.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use edgefleet_shared::api::tokens::Role;

use super::{ApiError, AppState};
use crate::auth::{Caller, Session, lookup, session};

/// The console's session cookie.
pub(crate) const SESSION_COOKIE: &str = "edgefleet_session";

/// The header a cookie-authenticated state-changing request must carry its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

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

/// The session cookie's value, if the request has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The live session behind a cookie's value (401 once it expired or was ended).
pub(crate) async fn live_session(state: &AppState, cookie: String) -> Result<Session, ApiError> {
    let now = crate::db::now();
    state
        .db
        .call(move |conn| session(conn, &cookie, now).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::unauthorized("the session has expired or was ended; sign in again"))
}

/// Whether a method changes state (and so needs the CSRF token with a cookie).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return from_session(parts, state).await;
        };
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

/// The caller of a console request: its live session, and for a state-changing request the
/// session's CSRF token in `X-CSRF-Token`.
async fn from_session(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let cookie = session_cookie(&parts.headers)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
    let live = live_session(state, cookie).await?;
    if changes_state(&parts.method) {
        let sent = parts.headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !same_secret(sent, live.csrf.as_bytes()) {
            return Err(ApiError::forbidden("a request made with the session cookie needs its X-CSRF-Token"));
        }
    }
    Ok(live.caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_secrets_compare_whole() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "theme=dark; edgefleet_session=efk_abc ; other=1".parse().expect("header"));
        assert_eq!(session_cookie(&headers).as_deref(), Some("efk_abc"));
        headers.clear();
        headers.append(COOKIE, "edgefleet_session_x=1".parse().expect("header"));
        headers.append(COOKIE, "edgefleet_session=".parse().expect("header"));
        assert_eq!(session_cookie(&headers), None);
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd") && !same_secret(b"abc", b"ab") && !same_secret(b"", b"a"));
        assert!(changes_state(&Method::POST) && changes_state(&Method::DELETE) && !changes_state(&Method::GET));
    }
}
