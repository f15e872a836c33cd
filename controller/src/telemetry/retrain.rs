//! Retraining triggers: per-model policies judged over closed windows; a trigger writes a
//! dataset snapshot of the version's sampled rows (CSV with a header, plus a manifest with the
//! row count, time range and the sha256 of each file) and delivers it by webhook (HMAC-signed,
//! retried with exponential backoff) and/or a command. One request per model version.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sql::{Connection, OptionalExtension as _, params};
use edgefleet_shared::api::telemetry::{Policy, RetrainRequest};
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::judge::{Evidence, Labels, Window, judge, last_settled};
use super::report::{self, Merged};
use super::snapshot::{self, Format};
use super::{Telemetry, TelemetryError};

/// `kind` of a snapshot manifest.
pub const SNAPSHOT_KIND: &str = "edgefleet.snapshot/v1";
/// The manifest of a snapshot.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Header carrying the webhook body's HMAC.
pub const SIGNATURE_HEADER: &str = "x-edgefleet-signature";

impl Telemetry {
    /// A model's policy (its own, else the default).
    pub async fn policy(&self, model: String) -> Result<Policy, TelemetryError> {
        let default = self.retrain.policy.clone();
        self.db.call(move |conn| policy_of(conn, &model, &default)).await
    }

    /// Sets a model's policy.
    pub async fn set_policy(&self, model: String, policy: Policy, actor: String) -> Result<Policy, TelemetryError> {
        policy.validate().map_err(TelemetryError::BadRequest)?;
        self.db
            .call(move |conn| -> Result<Policy, TelemetryError> {
                let exists: Option<i64> =
                    conn.query_row("SELECT id FROM models WHERE name = ?1", params![model], |r| r.get(0)).optional()?;
                if exists.is_none() {
                    return Err(TelemetryError::NotFound(format!("unknown model {model:?}")));
                }
                let text = serde_json::to_string(&policy).unwrap_or_default();
                conn.execute(
                    "INSERT INTO retrain_policies (model, policy) VALUES (?1, ?2)
                     ON CONFLICT(model) DO UPDATE SET policy = excluded.policy",
                    params![model, text],
                )?;
                crate::db::audit(
                    conn,
                    &actor,
                    "retrain.policy",
                    &model,
                    serde_json::to_value(&policy).unwrap_or_default(),
                )?;
                Ok(policy)
            })
            .await
    }

    /// Retrain requests, newest first, optionally of one model.
    pub async fn requests(&self, model: Option<String>) -> Result<Vec<RetrainRequest>, TelemetryError> {
        self.db
            .call(move |conn| -> Result<Vec<RetrainRequest>, TelemetryError> {
                let ids: Vec<i64> = conn
                    .prepare("SELECT id FROM retrain_requests WHERE (CAST(?1 AS TEXT) IS NULL OR model = ?1) ORDER BY id DESC")?
                    .query_map(params![model], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                ids.into_iter().map(|id| load(conn, id as u64)).collect()
            })
            .await
    }

    /// One retrain request.
    pub async fn request(&self, id: u64) -> Result<RetrainRequest, TelemetryError> {
        self.db.call(move |conn| load(conn, id)).await
    }

    /// A file of a request's snapshot: `manifest.json` or a data file its manifest lists.
    pub async fn snapshot_file(&self, id: u64, file: String) -> Result<Vec<u8>, TelemetryError> {
        let names = Format::ALL.map(Format::file_name);
        if file != MANIFEST_FILE && !names.contains(&file.as_str()) {
            return Err(TelemetryError::NotFound(format!(
                "a snapshot has {MANIFEST_FILE} and data files ({}), not {file:?}",
                names.join(", ")
            )));
        }
        let request = self.request(id).await?;
        let listed = request.manifest["files"].as_array().is_some_and(|f| f.iter().any(|f| f["path"] == file.as_str()));
        if file != MANIFEST_FILE && !listed {
            return Err(TelemetryError::NotFound(format!(
                "snapshot {id} has no {file} (the controller's [retrain] format did not include it)"
            )));
        }
        tokio::fs::read(Path::new(&request.snapshot_dir).join(&file))
            .await
            .map_err(|e| TelemetryError::Io(format!("snapshot {id} {file}: {e}")))
    }

    /// Judges every model version with recent telemetry against its policy; returns the
    /// requests created (their delivery runs in the background).
    pub async fn evaluate(&self) -> Result<Vec<RetrainRequest>, TelemetryError> {
        let (default, window, dir, formats) = (
            self.retrain.policy.clone(),
            self.config.window_secs as i64,
            self.snapshots.clone(),
            self.retrain.format.clone(),
        );
        let (now, current) = {
            let now = self.clock.now();
            (now as i64, last_settled(now, self.config.settle_secs, self.config.window_secs) as i64)
        };
        let created = self
            .db
            .call(move |conn| -> Result<Vec<RetrainRequest>, TelemetryError> {
                let candidates: Vec<(String, i64)> = conn
                    .prepare(
                        "SELECT DISTINCT w.model, w.version FROM telemetry_windows w
                         WHERE w.window_start >= ?1 AND NOT EXISTS (
                            SELECT 1 FROM retrain_requests r WHERE r.model = w.model AND r.version = w.version)",
                    )?
                    .query_map(params![current - 64 * window], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let mut created = Vec::new();
                for (model, version) in candidates {
                    let policy = policy_of(conn, &model, &default)?;
                    if !policy.enabled {
                        continue;
                    }
                    let evidence = match evidence(conn, &model, version as u64, &policy, current, window) {
                        // Telemetry of a version the registry does not know (a device that
                        // serves something else): nothing to judge it against.
                        Err(TelemetryError::NotFound(_)) => continue,
                        other => other?,
                    };
                    if let Some(reason) = judge(&policy, &evidence, window as u64) {
                        let request = create(conn, (&dir, &formats), &model, version as u64, &reason, current, now)?;
                        tracing::warn!(model, version, id = request.id, rows = request.rows, %reason, "Retraining triggered.");
                        created.push(request);
                    }
                }
                Ok(created)
            })
            .await?;
        for request in &created {
            metrics::counter!(crate::metric::RETRAIN_REQUESTS).increment(1);
            tokio::spawn(self.clone().deliver(request.clone()));
        }
        Ok(created)
    }

    /// Delivers a request by webhook and command, recording the outcome.
    async fn deliver(self, request: RetrainRequest) {
        let mut delivery = json!({ "webhook": {"state": "none"}, "command": {"state": "none"} });
        if let (Some(url), Some(secret_file)) = (&self.retrain.webhook_url, &self.retrain.webhook_secret_file) {
            delivery["webhook"] = self.post_webhook(url, secret_file, &request).await;
            self.record_delivery(request.id, delivery.clone()).await;
        }
        if let Some(command) = &self.retrain.command {
            delivery["command"] = run_command(command, &request).await;
            self.record_delivery(request.id, delivery).await;
        }
    }

    async fn record_delivery(&self, id: u64, delivery: Value) {
        let text = delivery.to_string();
        let result = self
            .db
            .call(move |conn| -> Result<usize, TelemetryError> {
                Ok(conn.execute("UPDATE retrain_requests SET delivery = ?1 WHERE id = ?2", params![text, id as i64])?)
            })
            .await;
        if let Err(e) = result {
            tracing::error!(id, error = %e, "Cannot record a retrain delivery.");
        }
    }

    async fn post_webhook(&self, url: &str, secret_file: &Path, request: &RetrainRequest) -> Value {
        let secret = match tokio::fs::read(secret_file).await {
            Ok(s) => s.trim_ascii().to_vec(),
            Err(e) => {
                return json!({"state": "failed", "attempts": 0, "error": format!("{}: {e}", secret_file.display())});
            }
        };
        let body = serde_json::to_vec(&json!({"event": "retrain.requested", "request": request})).unwrap_or_default();
        let signature = format!("sha256={}", hmac_hex(&secret, &body));
        let mut delay = Duration::from_secs(1);
        let attempts = self.retrain.webhook_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let sent = self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .header("x-edgefleet-event", "retrain.requested")
                .header("x-edgefleet-delivery", request.id.to_string())
                .body(body.clone())
                .send()
                .await;
            let retry = match sent {
                Ok(r) if r.status().is_success() => {
                    metrics::counter!(crate::metric::WEBHOOK_DELIVERIES, "result" => "delivered").increment(1);
                    return json!({"state": "delivered", "attempts": attempt, "status": r.status().as_u16()});
                }
                Ok(r) => {
                    last = format!("HTTP {}", r.status());
                    r.status().as_u16() == 429 || r.status().is_server_error()
                }
                Err(e) => {
                    last = edgefleet_service::tls::error_chain(&e);
                    true
                }
            };
            metrics::counter!(crate::metric::WEBHOOK_DELIVERIES, "result" => "retry").increment(1);
            tracing::warn!(id = request.id, attempt, error = %last, "Retrain webhook delivery failed.");
            if !retry || attempt == attempts {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(300));
        }
        metrics::counter!(crate::metric::WEBHOOK_DELIVERIES, "result" => "failed").increment(1);
        json!({"state": "failed", "attempts": attempts, "error": last})
    }
}

/// Hex HMAC-SHA256 of `body` under `secret`.
pub fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn run_command(command: &str, request: &RetrainRequest) -> Value {
    let dir = PathBuf::from(&request.snapshot_dir);
    let files: Vec<&str> =
        request.manifest["files"].as_array().into_iter().flatten().filter_map(|f| f["path"].as_str()).collect();
    let mut sh = tokio::process::Command::new("sh");
    for format in Format::ALL.into_iter().filter(|f| files.contains(&f.file_name())) {
        let var = match format {
            Format::Csv => "EDGEFLEET_SNAPSHOT_CSV",
            Format::Parquet => "EDGEFLEET_SNAPSHOT_PARQUET",
        };
        sh.env(var, dir.join(format.file_name()));
    }
    let output = sh
        .arg("-c")
        .arg(command)
        .env("EDGEFLEET_RETRAIN_ID", request.id.to_string())
        .env("EDGEFLEET_MODEL", &request.model)
        .env("EDGEFLEET_MODEL_VERSION", request.version.to_string())
        .env("EDGEFLEET_SNAPSHOT_DIR", &dir)
        .env("EDGEFLEET_SNAPSHOT_DATA", dir.join(files.first().copied().unwrap_or_default()))
        .env("EDGEFLEET_SNAPSHOT_MANIFEST", dir.join(MANIFEST_FILE))
        .env("EDGEFLEET_DATASET_SHA256", &request.dataset_sha256)
        .output()
        .await;
    match output {
        Ok(o) => {
            let tail = |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(2000)..]).into_owned();
            let state = if o.status.success() { "succeeded" } else { "failed" };
            json!({"state": state, "exit_code": o.status.code(), "stdout": tail(&o.stdout), "stderr": tail(&o.stderr)})
        }
        Err(e) => json!({"state": "failed", "error": format!("cannot run sh: {e}")}),
    }
}

fn policy_of(conn: &Connection, model: &str, default: &Policy) -> Result<Policy, TelemetryError> {
    let text: Option<String> = conn
        .query_row("SELECT policy FROM retrain_policies WHERE model = ?1", params![model], |r| r.get(0))
        .optional()?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_else(|| default.clone()))
}

/// What the judge needs about `model:version`: its baseline's size, the last `policy.windows`
/// closed windows before `current` (newest first), and its labels in the last window and before.
fn evidence(
    conn: &Connection,
    model: &str,
    version: u64,
    policy: &Policy,
    current: i64,
    window: i64,
) -> Result<Evidence, TelemetryError> {
    let baseline = report::baseline(conn, model, version)?;
    let mut recent = Vec::new();
    if let Some(baseline) = baseline.as_ref().filter(|b| !b.features.is_empty()) {
        for k in 1..=i64::from(policy.windows) {
            let start = current - k * window;
            let merged = report::merged(conn, model, version, None, start, start + window)?;
            recent.push(Window { rows: merged.rows, psi: report::feature_psi(baseline, &merged) });
        }
    }
    let labels = |m: Merged| Labels { labeled: m.labeled, correct: m.correct };
    Ok(Evidence {
        features: baseline.map_or(0, |b| b.features.len()),
        recent,
        last: labels(report::merged(conn, model, version, None, current - window, current)?),
        before: labels(report::merged(conn, model, version, None, 0, current - window)?),
    })
}

/// Writes the snapshot of `model:version`'s sampled rows from before `until` (Unix seconds: the
/// end of the last settled window) and records the request.
fn create(
    conn: &Connection,
    (dir, formats): (&Path, &[Format]),
    model: &str,
    version: u64,
    reason: &str,
    until: i64,
    now: i64,
) -> Result<RetrainRequest, TelemetryError> {
    let io = |e: std::io::Error| TelemetryError::Io(format!("cannot write the dataset snapshot: {e}"));
    let id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM retrain_requests", [], |r| r.get(0))?;
    let baseline = report::baseline(conn, model, version)?;
    let mut stmt = conn.prepare(
        "SELECT inputs, predicted, label, device_id, device_group, request_id, at_ms FROM telemetry_samples
         WHERE model = ?1 AND version = ?2 AND at_ms < ?3 ORDER BY at_ms, id",
    )?;
    let rows: Vec<snapshot::Row> = stmt
        .query_map(params![model, version as i64, until * 1000], |r| {
            Ok(snapshot::Row {
                values: serde_json::from_str(&r.get::<_, String>(0)?).unwrap_or_default(),
                predicted: r.get(1)?,
                label: r.get(2)?,
                device_id: r.get(3)?,
                device_group: r.get(4)?,
                request_id: r.get(5)?,
                at_ms: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let width = rows.first().map_or(0, |r| r.values.len());
    let features: Vec<String> = match &baseline {
        Some(b) if b.features.len() == width => b.features.iter().map(|f| f.name.clone()).collect(),
        _ => (0..width).map(|i| format!("x{i}")).collect(),
    };
    let snapshot = dir.join(model).join(id.to_string());
    std::fs::create_dir_all(&snapshot).map_err(io)?;
    let mut files = Vec::new();
    for format in formats {
        let path = snapshot.join(format.file_name());
        snapshot::write(&path, *format, &features, &rows)?;
        let data = std::fs::read(&path).map_err(io)?;
        files.push(json!({"path": format.file_name(), "format": format, "sha256": hex::encode(Sha256::digest(&data)), "bytes": data.len()}));
    }
    let sha = files.first().and_then(|f| f["sha256"].as_str()).unwrap_or_default().to_owned();
    let columns: Vec<&str> = features.iter().map(String::as_str).chain(snapshot::TRAILING_COLUMNS).collect();
    let manifest = json!({
        "kind": SNAPSHOT_KIND,
        "id": id,
        "model": model,
        "version": version,
        "reason": reason,
        "created_at": now,
        "rows": rows.len(),
        "columns": columns,
        "time_range": {"from_ms": rows.first().map(|r| r.at_ms), "to_ms": rows.last().map(|r| r.at_ms), "until_ms": until * 1000},
        "files": files,
        "dataset_sha256": sha,
    });
    std::fs::write(snapshot.join(MANIFEST_FILE), serde_json::to_vec_pretty(&manifest).unwrap_or_default())
        .map_err(io)?;
    let delivery = json!({"webhook": {"state": "pending"}, "command": {"state": "pending"}});
    conn.execute(
        "INSERT INTO retrain_requests (id, model, version, reason, created_at, snapshot_dir, dataset_sha256, rows, manifest, delivery)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id,
            model,
            version as i64,
            reason,
            now,
            snapshot.display().to_string(),
            sha,
            rows.len() as i64,
            manifest.to_string(),
            delivery.to_string()
        ],
    )?;
    crate::db::audit(
        conn,
        "controller",
        "retrain.request",
        &format!("{model}:{version}"),
        json!({"id": id, "reason": reason, "dataset_sha256": sha}),
    )?;
    load(conn, id as u64)
}

fn load(conn: &Connection, id: u64) -> Result<RetrainRequest, TelemetryError> {
    let row = conn
        .query_row(
            "SELECT model, version, reason, created_at, snapshot_dir, dataset_sha256, rows, manifest, delivery
             FROM retrain_requests WHERE id = ?1",
            params![id as i64],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| TelemetryError::NotFound(format!("no retrain request {id}")))?;
    let (model, version, reason, created_at, snapshot_dir, dataset_sha256, rows, manifest, delivery) = row;
    let trained_versions = conn
        .prepare(
            "SELECT v.version FROM versions v JOIN models m ON m.id = v.model_id
             WHERE m.name = ?1 AND v.dataset_sha256 = ?2 ORDER BY v.version",
        )?
        .query_map(params![model, dataset_sha256], |r| r.get::<_, i64>(0).map(|v| v as u64))?
        .collect::<Result<_, _>>()?;
    Ok(RetrainRequest {
        id,
        model,
        version: version as u64,
        reason,
        created_at,
        rows: rows as u64,
        dataset_sha256,
        snapshot_dir,
        manifest: serde_json::from_str(&manifest).unwrap_or_default(),
        delivery: serde_json::from_str(&delivery).unwrap_or_default(),
        trained_versions,
    })
}
