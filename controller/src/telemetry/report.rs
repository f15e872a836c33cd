//! Drift reports: a model version's merged telemetry over a time range against its baseline.
//!
//! Binned statistics (PSI, Jensen–Shannon) use every row the agents counted; sample statistics
//! (normalised Wasserstein, KS) use the sampled rows against the baseline's reservoir sample;
//! the output uses predicted-class counts (PSI, Jensen–Shannon, chi-squared). Definitions and
//! thresholds: `crate::analytics::drift` and the README's drift section.

use crate::sql::{Connection, OptionalExtension as _, params};
use edgefleet_shared::api::telemetry::{Accuracy, DriftReport, FeatureDrift, OutputDrift};
use edgefleet_shared::api::three_digits;
use edgefleet_shared::bundle::BundleManifest;
use edgefleet_shared::profile::{BaselineProfile, OutputProfile};

use super::{Telemetry, TelemetryError};
use crate::analytics::drift;
use crate::registry::{RegistryError, resolve_version};

/// PSI at or above this: warn.
pub const PSI_WARN: f64 = 0.1;
/// PSI at or above this: drift.
pub const PSI_DRIFT: f64 = 0.2;
/// Normalised Wasserstein at or above this: drift.
pub const WASSERSTEIN_DRIFT: f64 = 0.1;
/// KS p-value at or below this: drift.
pub const KS_P_DRIFT: f64 = 0.05;
/// Sampled rows read for sample statistics at most (the most recent).
const MAX_REPORT_SAMPLES: i64 = 100_000;

/// Merged histograms of a range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// Rows.
    pub rows: u64,
    /// Per feature: bin counts, then the missing count.
    pub features: Vec<Vec<u64>>,
    /// Rows per predicted class.
    pub classes: Vec<u64>,
    /// Labels matched.
    pub labeled: u64,
    /// Correct among them.
    pub correct: u64,
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn status(psi: Option<f64>) -> String {
    match psi {
        Some(p) if p >= PSI_DRIFT => "drift",
        Some(p) if p >= PSI_WARN => "warn",
        Some(_) => "ok",
        None => "no_data",
    }
    .into()
}

/// How much data a statistic needs before it counts in a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minimums {
    /// Values counted (binned statistics).
    pub rows: u64,
    /// Sampled values, on each side (sample statistics).
    pub samples: u64,
}

/// The statistics of one feature row, with the data each rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// PSI and the values it was computed from.
    pub psi: Option<f64>,
    /// Values counted in the range.
    pub count: u64,
    /// Normalised Wasserstein distance.
    pub wasserstein: Option<f64>,
    /// KS p-value.
    pub ks_pvalue: Option<f64>,
    /// Sampled values in the range.
    pub samples: u64,
    /// Values in the baseline's sample.
    pub reference: u64,
}

/// A feature row's verdict (`drift`, `warn`, `ok`, `insufficient`), why, and whether each
/// sample statistic flags drift. Statistics without enough data say nothing; drift from the
/// samples needs both the KS test (a difference) and Wasserstein (one large enough to matter).
pub fn verdict(e: &Evidence, min: Minimums) -> (&'static str, String, bool, bool) {
    let psi = e.psi.filter(|_| e.count >= min.rows.max(1));
    let sampled = e.samples >= min.samples.max(1) && e.reference >= min.samples.max(1);
    let wasserstein = e.wasserstein.filter(|_| sampled);
    let ks = e.ks_pvalue.filter(|_| sampled);
    let w_drift = wasserstein.is_some_and(|w| w >= WASSERSTEIN_DRIFT);
    let ks_drift = ks.is_some_and(|p| p <= KS_P_DRIFT);
    let mut why = Vec::new();
    if let Some(p) = psi {
        why.push(format!("psi {}", three_digits(p)));
    } else {
        why.push(format!("psi needs {} values, has {}", min.rows.max(1), e.count));
    }
    match (wasserstein, ks) {
        (Some(w), Some(p)) => why.push(format!("wasserstein {}, ks p {}", three_digits(w), three_digits(p))),
        _ if !sampled => why.push(format!(
            "sample statistics need {} samples on each side, have {} (baseline {})",
            min.samples.max(1),
            e.samples,
            e.reference
        )),
        _ => {}
    }
    let psi_drift = psi.is_some_and(|p| p >= PSI_DRIFT);
    let psi_warn = psi.is_some_and(|p| p >= PSI_WARN);
    let verdict = if psi_drift || (w_drift && ks_drift) {
        "drift"
    } else if psi_warn || w_drift || ks_drift {
        "warn"
    } else if psi.is_some() || (wasserstein.is_some() && ks.is_some()) {
        "ok"
    } else {
        "insufficient"
    };
    (verdict, why.join("; "), w_drift, ks_drift)
}

/// PSI per feature of `merged` against `baseline` (None where either side is empty).
pub fn feature_psi(baseline: &BaselineProfile, merged: &Merged) -> Vec<Option<f64>> {
    baseline
        .features
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let counts = merged.features.get(j)?;
            let bins = counts.get(..f.counts.len())?;
            drift::psi(&f.counts, bins)
        })
        .collect()
}

/// Reference class counts, indexed by class number, from the baseline's first class output.
fn reference_classes(baseline: &BaselineProfile) -> Option<(String, Vec<u64>)> {
    baseline.outputs.iter().find_map(|o| match o {
        OutputProfile::Classes { name, classes } => {
            let mut counts = Vec::new();
            for (label, n) in classes {
                let ix = label.parse::<f64>().ok().filter(|v| *v >= 0.0 && v.fract() == 0.0)? as usize;
                if counts.len() <= ix {
                    counts.resize(ix + 1, 0);
                }
                counts[ix] += n;
            }
            Some((name.clone(), counts))
        }
        OutputProfile::Numeric(_) => None,
    })
}

/// Builds a report from merged counts and sampled rows (`samples[j]` = values of feature j).
pub fn compute(
    baseline: &BaselineProfile,
    merged: &Merged,
    samples: &[Vec<f64>],
    min: Minimums,
) -> (Vec<FeatureDrift>, Option<OutputDrift>) {
    let psis = feature_psi(baseline, merged);
    let features = baseline
        .features
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let counts = merged.features.get(j).cloned().unwrap_or_default();
            let bins = counts.get(..f.counts.len()).unwrap_or(&[]);
            let reference: Vec<f64> = baseline.sample.rows.iter().filter_map(|r| r.get(j).copied()).collect();
            let current = samples.get(j).map(Vec::as_slice).unwrap_or(&[]);
            let ks = drift::ks_2samp(&reference, current);
            let wasserstein = finite(drift::wasserstein_normed(&reference, current));
            let count = bins.iter().sum();
            let evidence = Evidence {
                psi: finite(psis[j]),
                count,
                wasserstein,
                ks_pvalue: ks.map(|k| k.pvalue),
                samples: current.len() as u64,
                reference: reference.len() as u64,
            };
            let (status, reason, wasserstein_drift, ks_drift) = verdict(&evidence, min);
            FeatureDrift {
                name: f.name.clone(),
                count,
                missing: counts.get(f.counts.len()).copied().unwrap_or(0),
                samples: current.len() as u64,
                psi: finite(psis[j]),
                jensen_shannon: finite(drift::jensen_shannon(&f.counts, bins)),
                wasserstein,
                ks_statistic: ks.map(|k| k.statistic),
                ks_pvalue: ks.map(|k| k.pvalue),
                status: status.into(),
                reason,
                wasserstein_drift,
                ks_drift,
                edges: f.edges.clone(),
                reference_counts: f.counts.clone(),
                current_counts: {
                    let mut current = bins.to_vec();
                    current.resize(f.counts.len(), 0);
                    current
                },
            }
        })
        .collect();
    let output = reference_classes(baseline).map(|(name, mut reference)| {
        let mut current = merged.classes.clone();
        let len = reference.len().max(current.len());
        reference.resize(len, 0);
        current.resize(len, 0);
        let psi = finite(drift::psi(&reference, &current));
        let chi = drift::chi_square(&reference, &current);
        OutputDrift {
            name,
            psi,
            jensen_shannon: finite(drift::jensen_shannon(&reference, &current)),
            chi2_statistic: finite(chi.map(|c| c.statistic)),
            chi2_pvalue: chi.map(|c| c.pvalue),
            status: if current.iter().sum::<u64>() < min.rows.max(1) { "insufficient".into() } else { status(psi) },
            reference_counts: reference,
            current_counts: current,
        }
    });
    (features, output)
}

/// The baseline stored with a version (None when it was pushed without reference data).
pub fn baseline(conn: &Connection, model: &str, version: u64) -> Result<Option<BaselineProfile>, TelemetryError> {
    let manifest: Option<String> = conn
        .query_row(
            "SELECT v.manifest FROM versions v JOIN models m ON m.id = v.model_id WHERE m.name = ?1 AND v.version = ?2",
            params![model, version as i64],
            |r| r.get(0),
        )
        .optional()?;
    let manifest = manifest.ok_or_else(|| TelemetryError::NotFound(format!("no version {model}:{version}")))?;
    Ok(BundleManifest::from_bytes(manifest.as_bytes()).ok().and_then(|m| m.baseline))
}

/// Longest range a drift report covers.
pub const MAX_REPORT_SPAN_SECS: u64 = 366 * 24 * 3600;

/// Window rows of a version from `from` (window starts) to `to`, optionally one group, merged.
pub fn merged(
    conn: &Connection,
    model: &str,
    version: u64,
    group: Option<&str>,
    from: i64,
    to: i64,
) -> Result<Merged, TelemetryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT rows, features, output_classes, labeled, correct FROM telemetry_windows
         WHERE model = ?1 AND version = ?2 AND (CAST(?3 AS TEXT) IS NULL OR device_group = ?3) AND window_start >= ?4 AND window_start < ?5",
    )?;
    let mut out = Merged::default();
    let rows = stmt.query_map(params![model, version as i64, group, from, to], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (n, features, classes, labeled, correct) = row?;
        out.rows += n as u64;
        out.labeled += labeled as u64;
        out.correct += correct as u64;
        let features: Vec<Vec<u64>> = serde_json::from_str(&features).unwrap_or_default();
        if out.features.len() < features.len() {
            out.features.resize(features.len(), Vec::new());
        }
        for (into, f) in out.features.iter_mut().zip(&features) {
            drift::add_counts(into, f);
        }
        drift::add_counts(&mut out.classes, &serde_json::from_str::<Vec<u64>>(&classes).unwrap_or_default());
    }
    Ok(out)
}

/// Sampled input rows of a version whose batches were merged into the windows starting in
/// `[from, to)` (the same batches [`merged`] counts), most recent first, capped. Values are read
/// back as the `f32` the model saw.
pub fn sample_rows(
    conn: &Connection,
    model: &str,
    version: u64,
    group: Option<&str>,
    from: i64,
    to: i64,
) -> Result<Vec<Vec<f64>>, TelemetryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT inputs FROM telemetry_samples
         WHERE model = ?1 AND version = ?2 AND (CAST(?3 AS TEXT) IS NULL OR device_group = ?3)
           AND ((window_start >= ?4 AND window_start < ?5)
                OR (window_start IS NULL AND at_ms >= ?4 * 1000 AND at_ms < ?5 * 1000))
         ORDER BY at_ms DESC, id DESC LIMIT ?6",
    )?;
    let rows =
        stmt.query_map(params![model, version as i64, group, from, to, MAX_REPORT_SAMPLES], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(parse_inputs(&row?));
    }
    Ok(out)
}

/// A stored sample's inputs: the `f32` values the model saw, widened exactly.
pub fn parse_inputs(json: &str) -> Vec<f64> {
    serde_json::from_str::<Vec<f32>>(json).unwrap_or_default().into_iter().map(f64::from).collect()
}

/// The whole telemetry windows a report over the last `span` seconds at `now` covers: from the
/// start of the window holding `now - span + 1` to the end of the current window.
pub fn report_range(now: i64, span: i64, window: i64) -> (i64, i64) {
    let window = window.max(1);
    let to = (now.div_euclid(window) + 1) * window;
    let from = (now - span + 1).max(0).div_euclid(window) * window;
    (from, to)
}

/// Columns of `rows` (`width` of them).
pub fn columns(rows: &[Vec<f64>], width: usize) -> Vec<Vec<f64>> {
    (0..width).map(|j| rows.iter().filter_map(|r| r.get(j).copied()).collect()).collect()
}

impl Telemetry {
    /// The drift report of `model` at `version` (else the latest version with telemetry, else
    /// the latest version) over the last `window_secs`, optionally for one device group.
    pub async fn report(
        &self,
        model: String,
        version: Option<String>,
        window_secs: Option<u64>,
        group: Option<String>,
    ) -> Result<DriftReport, TelemetryError> {
        let window = self.config.window_secs as i64;
        let span = window_secs.unwrap_or(self.config.window_secs);
        if span == 0 || span > MAX_REPORT_SPAN_SECS {
            return Err(TelemetryError::BadRequest(format!(
                "the report window must be 1 to {MAX_REPORT_SPAN_SECS} seconds (a year)"
            )));
        }
        let (span, now) = (span as i64, self.clock.now() as i64);
        let min = Minimums { rows: self.config.drift_min_rows, samples: self.config.drift_min_samples };
        self.db
            .call(move |conn| -> Result<DriftReport, TelemetryError> {
                let version = resolve(conn, &model, version.as_deref())?;
                let (from, to) = report_range(now, span, window);
                let baseline = baseline(conn, &model, version)?;
                let merged = merged(conn, &model, version, group.as_deref(), from, to)?;
                let rows = sample_rows(conn, &model, version, group.as_deref(), from, to)?;
                let (features, output) = match &baseline {
                    Some(b) => compute(b, &merged, &columns(&rows, b.features.len()), min),
                    None => (Vec::new(), None),
                };
                let drifted = features.iter().filter(|f| f.status == "drift").count();
                Ok(DriftReport {
                    model,
                    version,
                    group,
                    from,
                    to,
                    rows: merged.rows,
                    samples: rows.len() as u64,
                    drifted_share: if features.is_empty() { 0.0 } else { drifted as f64 / features.len() as f64 },
                    drifted_features: drifted,
                    features,
                    output,
                    accuracy: (merged.labeled > 0).then(|| Accuracy {
                        labeled: merged.labeled,
                        correct: merged.correct,
                        accuracy: merged.correct as f64 / merged.labeled as f64,
                    }),
                    has_baseline: baseline.is_some(),
                    min_rows: min.rows,
                    min_samples: min.samples,
                })
            })
            .await
    }
}

/// A version number or alias; none: the latest version with telemetry, else the latest.
fn resolve(conn: &Connection, model: &str, version: Option<&str>) -> Result<u64, TelemetryError> {
    if let Some(v) = version {
        return resolve_version(conn, model, v).map(|(_, v)| v).map_err(|e| match e {
            RegistryError::NotFound(m) => TelemetryError::NotFound(m),
            RegistryError::Db(d) => TelemetryError::Db(d),
            other => TelemetryError::BadRequest(other.to_string()),
        });
    }
    let latest = |sql: &str| -> Result<Option<i64>, TelemetryError> {
        Ok(conn.query_row(sql, params![model], |r| r.get::<_, Option<i64>>(0))?)
    };
    let with_data = latest("SELECT MAX(version) FROM telemetry_windows WHERE model = ?1")?;
    let registered =
        || latest("SELECT MAX(v.version) FROM versions v JOIN models m ON m.id = v.model_id WHERE m.name = ?1");
    match with_data {
        Some(v) => Ok(v as u64),
        None => {
            registered()?.map(|v| v as u64).ok_or_else(|| TelemetryError::NotFound(format!("unknown model {model:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::params;

    use super::*;
    use crate::db::Db;

    #[test]
    fn a_report_covers_whole_windows() {
        assert_eq!(report_range(111, 10, 10), (100, 120), "just past a boundary: the window before too");
        assert_eq!(report_range(119, 10, 10), (110, 120));
        assert_eq!(report_range(7_205, 3_600, 3_600), (3_600, 10_800));
        assert_eq!(report_range(5, 3_600, 3_600), (0, 3_600));
    }

    #[test]
    fn binned_and_sampled_metrics_cover_the_same_batches_across_a_window_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db.sqlite")).expect("db");
        db.call_blocking(|conn| {
            // Window [100, 110): 5 rows, 2 sampled, one sampled a moment before the window start
            // of the next batch; window [110, 120): 3 rows, 1 sampled.
            for (start, rows, at_ms) in [(100i64, 5i64, [104_000i64, 109_900].as_slice()), (110, 3, [110_500].as_slice())] {
                conn.execute(
                    "INSERT INTO telemetry_windows (model, version, device_group, window_start, rows, features, output_classes, labeled, correct)
                     VALUES ('m', 1, 'g', ?1, ?2, '[[1, 2]]', '[1]', 0, 0)",
                    params![start, rows],
                )
                .expect("window");
                for at in at_ms {
                    conn.execute(
                        "INSERT INTO telemetry_samples (model, version, device_id, device_group, batch_sequence, at_ms, inputs, outputs, low_confidence, window_start)
                         VALUES ('m', 1, 'd', 'g', 1, ?1, '[5.1]', '[1.0]', 0, ?2)",
                        params![at, start],
                    )
                    .expect("sample");
                }
            }
            // Just after the boundary, over the last 10 s: both windows, all three samples.
            let (from, to) = report_range(111, 10, 10);
            let m = merged(conn, "m", 1, None, from, to).expect("merged");
            let rows = sample_rows(conn, "m", 1, None, from, to).expect("samples");
            assert_eq!((m.rows, rows.len()), (8, 3));
            // Read back as the f32 the model saw, not as the decimal 5.1.
            assert_eq!(rows[0], vec![f64::from(5.1f32)]);
            // A range of only the first window has its rows and exactly its samples.
            assert_eq!((merged(conn, "m", 1, None, 100, 110).expect("m").rows, sample_rows(conn, "m", 1, None, 100, 110).expect("s").len()), (5, 2));
        });
    }

    const MIN: Minimums = Minimums { rows: 100, samples: 50 };

    fn evidence(psi: f64, count: u64, wasserstein: f64, ks_pvalue: f64, samples: u64) -> Evidence {
        Evidence {
            psi: Some(psi),
            count,
            wasserstein: Some(wasserstein),
            ks_pvalue: Some(ks_pvalue),
            samples,
            reference: 500,
        }
    }

    #[test]
    fn sample_statistics_on_a_handful_of_samples_say_nothing() {
        // 17 samples: a large distance and a small p-value by chance flag nothing.
        let (v, why, w, ks) = verdict(&evidence(0.01, 500, 0.3, 0.01, 17), MIN);
        assert_eq!((v, w, ks), ("ok", false, false));
        assert!(why.contains("need 50 samples on each side, have 17"), "{why}");
        // The baseline side counts too.
        let small_reference = Evidence { reference: 20, ..evidence(0.01, 500, 0.3, 0.01, 400) };
        assert_eq!(verdict(&small_reference, MIN).0, "ok");
    }

    #[test]
    fn psi_on_too_few_values_says_nothing() {
        let (v, why, ..) = verdict(&evidence(5.8, 17, 0.0, 1.0, 17), MIN);
        assert_eq!(v, "insufficient");
        assert!(why.contains("psi needs 100 values, has 17"), "{why}");
        assert_eq!(
            verdict(&Evidence { psi: None, wasserstein: None, ks_pvalue: None, ..evidence(0.0, 0, 0.0, 0.0, 0) }, MIN)
                .0,
            "insufficient"
        );
    }

    #[test]
    fn one_verdict_from_every_statistic_with_enough_data() {
        assert_eq!(verdict(&evidence(0.25, 500, 0.0, 0.9, 400), MIN).0, "drift", "psi alone");
        assert_eq!(verdict(&evidence(0.01, 500, 0.2, 0.001, 400), MIN).0, "drift", "ks and wasserstein together");
        assert_eq!(verdict(&evidence(0.01, 500, 0.2, 0.5, 400), MIN).0, "warn", "wasserstein alone");
        assert_eq!(
            verdict(&evidence(0.01, 500, 0.01, 0.001, 400), MIN).0,
            "warn",
            "ks alone (a tiny shift on many samples)"
        );
        assert_eq!(verdict(&evidence(0.15, 500, 0.01, 0.5, 400), MIN).0, "warn", "psi warn");
        let (v, why, w, ks) = verdict(&evidence(0.01, 500, 0.01, 0.5, 400), MIN);
        assert_eq!((v, w, ks), ("ok", false, false));
        assert_eq!(why, "psi 0.01; wasserstein 0.01, ks p 0.5");
        // Enough samples but too few counted values (a short range): the samples decide.
        assert_eq!(verdict(&evidence(3.0, 60, 0.3, 0.0001, 60), MIN).0, "drift");
    }
}
