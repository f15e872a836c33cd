//! `[database]`: where registry and fleet state live (SQLite in the data directory, or PostgreSQL).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::db::Target;

/// The database: the data directory's SQLite file unless `url` names a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://USER@HOST:PORT/DB` (shared by every replica); absent: SQLite.
    pub url: Option<String>,
    /// A file holding the password (so the configuration carries no secret); else the URL's.
    pub password_file: Option<PathBuf>,
}

impl DatabaseConfig {
    /// The database to open; `sqlite` is the data directory's file.
    pub fn target(&self, sqlite: PathBuf) -> Result<Target, crate::Error> {
        let bad = |m: String| crate::Error::Config(format!("database: {m}"));
        let Some(url) = &self.url else {
            if self.password_file.is_some() {
                return Err(bad("password_file needs url".into()));
            }
            return Ok(Target::Sqlite(sqlite));
        };
        let Target::Postgres { url, .. } = Target::parse(url).map_err(bad)? else {
            return Err(bad(format!("url {url:?} is not a postgres:// URL (SQLite is the default: leave url out)")));
        };
        let password = match &self.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("cannot read password_file {}: {e}", path.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Target::Postgres { url, password: password.map(crate::db::Secret) })
    }
}
