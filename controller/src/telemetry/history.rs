//! Drift per telemetry window over time: the statistics of a drift report, computed for each of
//! a version's newest windows with telemetry (the console's drift page draws them against the
//! thresholds).

use edgefleet_shared::api::telemetry::{DriftHistory, DriftWindow, WindowFeature};

use super::report::{
    KS_P_DRIFT, Minimums, PSI_DRIFT, PSI_WARN, WASSERSTEIN_DRIFT, baseline, columns, compute, merged, sample_rows,
};
use super::{Telemetry, TelemetryError};
use crate::registry::{RegistryError, resolve_version};
use crate::sql::params;

/// Windows a history has when the query does not say.
const DEFAULT_WINDOWS: u32 = 48;

/// Most windows one history computes.
const MAX_WINDOWS: u32 = 500;

impl Telemetry {
    /// Drift of `model` at `version` (number or alias) per window, the newest `windows` windows
    /// with telemetry, optionally for one device group.
    pub async fn history(
        &self,
        model: String,
        version: String,
        group: Option<String>,
        windows: Option<u32>,
    ) -> Result<DriftHistory, TelemetryError> {
        let count = windows.unwrap_or(DEFAULT_WINDOWS);
        if count == 0 || count > MAX_WINDOWS {
            return Err(TelemetryError::BadRequest(format!("windows must be 1 to {MAX_WINDOWS}")));
        }
        let window = self.config.window_secs;
        let min = Minimums { rows: self.config.drift_min_rows, samples: self.config.drift_min_samples };
        self.db
            .call(move |conn| -> Result<DriftHistory, TelemetryError> {
                let (_, version) = resolve_version(conn, &model, &version).map_err(|e| match e {
                    RegistryError::NotFound(m) => TelemetryError::NotFound(m),
                    RegistryError::Db(d) => TelemetryError::Db(d),
                    other => TelemetryError::BadRequest(other.to_string()),
                })?;
                let mut starts: Vec<i64> = conn
                    .prepare(
                        "SELECT DISTINCT window_start FROM telemetry_windows
                         WHERE model = ?1 AND version = ?2 AND (CAST(?3 AS TEXT) IS NULL OR device_group = ?3)
                         ORDER BY window_start DESC LIMIT ?4",
                    )?
                    .query_map(params![model, version as i64, group, count as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                starts.reverse();
                let base = baseline(conn, &model, version)?;
                let mut out = Vec::with_capacity(starts.len());
                for from in starts {
                    let to = from + window as i64;
                    let m = merged(conn, &model, version, group.as_deref(), from, to)?;
                    let features = match &base {
                        Some(b) => {
                            let rows = sample_rows(conn, &model, version, group.as_deref(), from, to)?;
                            compute(b, &m, &columns(&rows, b.features.len()), min).0
                        }
                        None => Vec::new(),
                    };
                    out.push(DriftWindow {
                        from,
                        rows: m.rows,
                        features: features
                            .into_iter()
                            .map(|f| WindowFeature {
                                name: f.name,
                                psi: f.psi,
                                ks_pvalue: f.ks_pvalue,
                                wasserstein: f.wasserstein,
                                status: f.status,
                            })
                            .collect(),
                        accuracy: (m.labeled > 0).then(|| m.correct as f64 / m.labeled as f64),
                    });
                }
                Ok(DriftHistory {
                    model,
                    version,
                    group,
                    window_secs: window,
                    psi_warn: PSI_WARN,
                    psi_drift: PSI_DRIFT,
                    wasserstein_drift: WASSERSTEIN_DRIFT,
                    ks_p_drift: KS_P_DRIFT,
                    windows: out,
                })
            })
            .await
    }
}
