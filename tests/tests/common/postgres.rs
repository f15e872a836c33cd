//! A real PostgreSQL (Debian's `postgresql`), through `tests/postgres-cluster.sh`: a cluster of
//! the test's own on a free loopback port, stopped on drop; and schemas in a shared cluster for
//! the suite's PostgreSQL pass.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("postgres-cluster.sh")
}

/// A running cluster, stopped when dropped.
pub struct Postgres {
    dir: PathBuf,
    /// The URL of its `postgres` database.
    pub url: String,
}

impl Postgres {
    /// initdb + start in `dir` (its parents must be searchable by the `postgres` user when root).
    pub fn start(dir: &Path) -> Postgres {
        let out = Command::new(script()).arg("start").arg(dir).output().expect("postgres-cluster.sh");
        assert!(out.status.success(), "PostgreSQL did not start: {}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
        Postgres { dir: dir.to_owned(), url }
    }

    /// A new database's URL in this cluster.
    pub fn database(&self, name: &str) -> String {
        psql(&self.url, &[], &format!("CREATE DATABASE {name}"));
        self.url.replace("/postgres", &format!("/{name}"))
    }

    /// Runs one SQL statement in database `url`; its rows, `|`-separated.
    pub fn query(url: &str, sql: &str) -> Vec<String> {
        psql(url, &[], sql).lines().map(str::to_owned).collect()
    }

    /// Runs one query in database `url`; its rows' fields ([`NULL`] for NULL).
    pub fn rows(url: &str, sql: &str) -> Vec<Vec<String>> {
        let out = psql(url, &["-F", "\u{1f}", "-R", "\u{1e}", "-P", &format!("null={NULL}")], sql);
        out.trim_end_matches('\n')
            .split('\u{1e}')
            .filter(|r| !r.is_empty())
            .map(|r| r.split('\u{1f}').map(str::to_owned).collect())
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).output();
    }
}

/// How [`Postgres::rows`] shows NULL.
pub const NULL: &str = "<edgefleet-null>";

fn psql(url: &str, extra: &[&str], sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t"])
        .args(extra)
        .args(["-c", sql])
        .output()
        .expect("psql (apt-get install postgresql-client)");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Creates `schema` in the cluster at `url` unless it exists.
pub fn create_schema(url: &str, schema: &str) {
    let sql = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    // Two processes creating it at once: one of them fails on the catalog's unique index.
    let first = Command::new("psql").arg(url).args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", &sql]).output();
    if !first.is_ok_and(|o| o.status.success()) {
        psql(url, &[], &sql);
    }
}
