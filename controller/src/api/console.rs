//! The routes the web console needs beyond the CLI's: the fleet at a glance, and signing in
//! (an operator token exchanged for an HttpOnly, SameSite=Strict session cookie) and out.

use axum::Json;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use edgefleet_shared::api::console::{Overview, SessionInfo, SignIn};
use edgefleet_shared::api::tokens::Role;

use super::caller::{SESSION_COOKIE, live_session, session_cookie};
use super::{ApiError, AppState};
use crate::auth::{Caller, create_session, end_session};

/// The fleet at a glance: devices online and offline, versions in service, unfinished rollouts,
/// open retrain requests, the newest refusals and failed activations.
#[utoipa::path(get, path = "/api/v1/overview", responses((status = 200, body = Overview)))]
pub(super) async fn overview(caller: Caller, State(state): State<AppState>) -> Result<Json<Overview>, ApiError> {
    caller.require(Role::Viewer)?;
    let window = state.fleet.online_window_secs();
    let now = crate::db::now();
    Ok(Json(state.db.call(move |conn| crate::overview::take(conn, now, window).map_err(ApiError::from)).await?))
}

fn cookie(state: &AppState, value: &str, max_age: i64) -> String {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// Signs in: exchanges an operator token for a session cookie; answers the CSRF token to send
/// with every state-changing request.
#[utoipa::path(post, path = "/api/v1/sessions", request_body = SignIn, responses((status = 201, body = SessionInfo), (status = 401, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn sign_in(
    State(state): State<AppState>,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(SignIn { token }) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let now = crate::db::now();
    let created = state
        .db
        .call(move |conn| create_session(conn, token.trim(), now).map_err(|e| ApiError::internal(e.to_string())))
        .await?;
    let (caller, new) = created.ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
    let info = SessionInfo { name: caller.name, role: caller.role, csrf: new.csrf, expires_at: new.expires_at as u64 };
    let set = cookie(&state, &new.cookie, new.expires_at - now);
    Ok((StatusCode::CREATED, [(SET_COOKIE, set)], Json(info)).into_response())
}

/// The session behind the request's cookie: who, with what role, its CSRF token; 204 when the
/// request has no session cookie at all (nobody signed in here: the console shows its sign-in
/// page without an error), 401 when its session expired or was ended.
#[utoipa::path(get, path = "/api/v1/sessions/current", responses((status = 200, body = SessionInfo), (status = 204), (status = 401, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn current(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(cookie) = session_cookie(&headers) else { return Ok(StatusCode::NO_CONTENT.into_response()) };
    let live = live_session(&state, cookie).await?;
    Ok(Json(SessionInfo {
        name: live.caller.name,
        role: live.caller.role,
        csrf: live.csrf,
        expires_at: live.expires_at.max(0) as u64,
    })
    .into_response())
}

/// Signs out: ends the session (its CSRF token required, as for any change) and clears the cookie.
#[utoipa::path(delete, path = "/api/v1/sessions/current", responses((status = 204), (status = 401, body = edgefleet_shared::api::ErrorBody), (status = 403, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn sign_out(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cookie_value = session_cookie(&headers).ok_or_else(|| ApiError::bad_request("no session cookie to end"))?;
    state.db.call(move |conn| end_session(conn, &cookie_value).map_err(ApiError::from)).await?;
    tracing::info!(actor = %caller.actor(), "Console session ended.");
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, cookie(&state, "", 0))]).into_response())
}
