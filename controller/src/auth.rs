//! Operator bearer tokens with roles, stored hashed: creation, the bootstrap admin, lookup.

use crate::sql::{Connection, OptionalExtension, params};
use edgefleet_shared::api::tokens::{Role, new_token};

use crate::db::{self, now};

/// The authenticated operator behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token id.
    pub token_id: i64,
    /// Token name.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("token:{}:{}", self.token_id, self.name)
    }
}

/// SHA-256 (hex) of a token: what the database stores.
pub fn hash_token(token: &str) -> String {
    edgefleet_shared::verify::sha256_hex(token.as_bytes())
}

/// Stores a token (hashed) and audits it; returns its id.
pub fn insert_token(conn: &Connection, name: &str, role: Role, token: &str, actor: &str) -> crate::sql::Result<i64> {
    let id: i64 = conn.query_row(
        "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        params![name, role.as_str(), hash_token(token), now(), actor],
        |r| r.get(0),
    )?;
    db::audit(conn, actor, "token.create", &format!("token:{id}"), serde_json::json!({"name": name, "role": role}))?;
    Ok(id)
}

/// Creates the bootstrap admin token when the database has none. Returns the plaintext
/// token to print once, or `None` when tokens exist already. `preset` (from
/// `EDGEFLEET_ADMIN_TOKEN`) is used instead of a random token.
pub fn bootstrap_admin(conn: &mut Connection, preset: Option<String>) -> Result<Option<String>, crate::Error> {
    let tx = conn.transaction().map_err(db::DbError::from)?;
    let existing: i64 = tx.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0)).map_err(db::DbError::from)?;
    if existing > 0 {
        return Ok(None);
    }
    let token = match preset {
        Some(t) if t.len() >= 16 => t,
        Some(_) => return Err(crate::Error::Config("EDGEFLEET_ADMIN_TOKEN must be at least 16 characters".into())),
        None => new_token().map_err(|e| crate::Error::Config(format!("cannot generate a token: {e}")))?,
    };
    insert_token(&tx, "bootstrap-admin", Role::Admin, &token, "controller").map_err(db::DbError::from)?;
    tx.commit().map_err(db::DbError::from)?;
    Ok(Some(token))
}

/// Creates a new admin token for an operator who lost every admin token: only someone who can
/// write the controller's data directory can run it (`edgefleet-controller recover-admin`).
/// Returns the plaintext.
pub fn recover_admin(conn: &mut Connection) -> Result<String, crate::Error> {
    let token = new_token().map_err(|e| crate::Error::Config(format!("cannot generate a token: {e}")))?;
    let tx = conn.transaction().map_err(db::DbError::from)?;
    insert_token(&tx, "recovered-admin", Role::Admin, &token, "recover-admin").map_err(db::DbError::from)?;
    tx.commit().map_err(db::DbError::from)?;
    Ok(token)
}

/// Writes `token` to `path` readable by the owner only (0600), replacing any older file, so
/// that it never passes through a log or the journal.
pub fn write_token_file(path: &std::path::Path, token: &str) -> Result<(), crate::Error> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| crate::Error::Startup(format!("cannot write {}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(format!("{token}\n").as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Finds the live token with this plaintext.
pub fn lookup(conn: &Connection, token: &str) -> crate::sql::Result<Option<Caller>> {
    conn.query_row(
        "SELECT id, name, role FROM tokens WHERE hash = ?1 AND revoked_at IS NULL",
        params![hash_token(token)],
        |r| {
            let text: String = r.get(2)?;
            let role = Role::parse(&text).ok_or_else(|| crate::sql::Error::conversion(2, format!("role {text:?}")))?;
            Ok(Caller { token_id: r.get(0)?, name: r.get(1)?, role })
        },
    )
    .optional()
}
