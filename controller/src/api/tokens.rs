//! `/api/v1/tokens` (admin) and `/api/v1/audit` (operator).

use crate::sql::params;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use edgefleet_shared::api::tokens::{AuditEntry, AuditQuery, CreateToken, CreatedToken, Role, TokenInfo};

use super::{ApiError, AppState};
use crate::auth::{self, Caller};
use crate::db;

/// Creates a token.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = CreateToken, responses((status = 201, body = CreatedToken), (status = 403, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: Result<Json<CreateToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if req.name.trim().is_empty() || req.name.len() > 128 {
        return Err(ApiError::bad_request("token name must be 1-128 characters"));
    }
    let token = edgefleet_shared::api::tokens::new_token()
        .map_err(|e| ApiError::internal(format!("cannot generate a token: {e}")))?;
    let actor = caller.actor();
    let (name, role, secret) = (req.name.clone(), req.role, token.clone());
    let id = state
        .db
        .call(move |conn| auth::insert_token(conn, &name, role, &secret, &actor).map_err(ApiError::from))
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { id, name: req.name, role: req.role, token })))
}

/// Lists tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = Vec<TokenInfo>)))]
pub(super) async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.require(Role::Admin)?;
    let rows = state
        .db
        .call(|conn| -> Result<Vec<TokenInfo>, ApiError> {
            let mut stmt =
                conn.prepare("SELECT id, name, role, created_at, created_by, revoked_at FROM tokens ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(TokenInfo {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        role: r.get(2)?,
                        created_at: r.get(3)?,
                        created_by: r.get(4)?,
                        revoked_at: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    Ok(Json(rows))
}

/// Revokes a token.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", responses((status = 204), (status = 404, body = edgefleet_shared::api::ErrorBody)))]
pub(super) async fn revoke(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let actor = caller.actor();
    state
        .db
        .call(move |conn| -> Result<(), ApiError> {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                params![db::now(), id],
            )?;
            if n == 0 {
                return Err(ApiError::not_found(format!("no active token {id}")));
            }
            db::audit(&tx, &actor, "token.revoke", &format!("token:{id}"), serde_json::json!({}))?;
            tx.commit()?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The newest audit records first.
#[utoipa::path(get, path = "/api/v1/audit", responses((status = 200, body = Vec<AuditEntry>)))]
pub(super) async fn audit(
    caller: Caller,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    caller.require(Role::Operator)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let rows = state
        .db
        .call(move |conn| -> Result<Vec<AuditEntry>, ApiError> {
            let mut stmt =
                conn.prepare("SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1")?;
            let rows = stmt
                .query_map(params![limit], |r| {
                    let detail: String = r.get(5)?;
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    Ok(Json(rows))
}
