//! API tokens, roles and the audit log.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a token may do. Each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything except tokens.
    Viewer,
    /// Also push models, move aliases, deploy.
    Operator,
    /// Also manage tokens.
    Admin,
}

impl Role {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role named `s` exactly as [`Role::as_str`] writes it.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s).ok_or_else(|| format!("unknown role {s:?} (admin, operator or viewer)"))
    }
}

/// Body of `POST /tokens`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Human name (who or what uses it).
    pub name: String,
    /// Role.
    pub role: Role,
}

/// A new token: the plaintext is shown once, here.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// Token id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The bearer token. Store it: the controller keeps only its hash.
    pub token: String,
}

/// A token without its secret.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
}

/// One audit record.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Sequence.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What (`model.push`, `model.alias`, `token.create`, ...).
    pub action: String,
    /// On what.
    pub target: String,
    /// Details.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}

/// Query of `GET /audit`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Newest records to return (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// A new random bearer token: `efk_` and 43 characters of URL-safe base64 (256 bits). The
/// controller makes operator and enrollment tokens this way; `edgefleet demo` presets its admin
/// token with one.
pub fn new_token() -> Result<String, getrandom::Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("efk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_strictly_and_order_by_power() {
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(serde_json::to_value(role).ok(), Some(serde_json::Value::from(role.as_str())));
        }
        for bad in ["", "Admin", "root", "admin\0"] {
            assert_eq!(Role::parse(bad), None, "{bad:?}");
            assert!(bad.parse::<Role>().is_err());
        }
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn tokens_are_fresh_and_url_safe() {
        let (a, b) = (new_token().expect("token"), new_token().expect("token"));
        assert_ne!(a, b);
        assert!(a.starts_with("efk_") && a.len() == 47, "{a}");
        assert!(a[4..].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
