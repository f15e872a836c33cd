//! Human (table) and script (JSON) renderings of API answers. `--output json` prints the API's
//! own JSON: the typed answer serialized back, field for field.
#![allow(clippy::print_stdout, reason = "this module is the CLI's stdout")]

use std::collections::BTreeMap;
use std::fmt::Display;

use edgefleet_shared::api::fleet::{DeviceInfo, EnrollmentToken, Issued};
use edgefleet_shared::api::models::{ModelSummary, VersionInfo};
use edgefleet_shared::api::rollouts::{RolloutInfo, Strategy};
use edgefleet_shared::api::telemetry::{DriftReport, Policy, RetrainRequest};
use edgefleet_shared::api::three_digits;
use edgefleet_shared::api::tokens::{AuditEntry, CreatedToken, TokenInfo};
use edgefleet_shared::deployment::ModelRef;
use serde::Serialize;

use crate::args::Output;

fn json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// An optional value, `-` when absent.
fn opt(v: Option<impl Display>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Prints rows as aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Unix seconds as RFC 3339.
fn time(t: impl TryInto<u64>) -> String {
    let t = t.try_into().unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t)).to_string()
}

fn time_opt<T: TryInto<u64>>(t: Option<T>) -> String {
    t.map_or_else(|| "-".into(), time)
}

/// A list: as it is, or as a table with one row per element.
fn list<T: Serialize>(out: Output, items: &[T], header: &[&str], row: impl Fn(&T) -> Vec<String>) {
    if out == Output::Json {
        return json(&items);
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    table(header, &rows);
}

fn joined<T: Display>(items: impl IntoIterator<Item = T>, sep: &str) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(sep)
}

/// `k=v,k=v` (labels, aliases).
fn labels<V: Display>(map: &BTreeMap<String, V>) -> String {
    joined(map.iter().map(|(k, v)| format!("{k}={v}")), ",")
}

fn model_ref(m: Option<&ModelRef>) -> String {
    m.map_or_else(|| "-".into(), |m| format!("{}:{}", m.name, m.version))
}

/// `model list`.
pub(crate) fn models(out: Output, models: &[ModelSummary]) {
    list(out, models, &["name", "latest", "versions", "aliases"], |m| {
        vec![m.name.clone(), opt(m.versions.last()), m.versions.len().to_string(), labels(&m.aliases)]
    });
}

/// `model show N`, `model alias`.
pub(crate) fn model(out: Output, m: &ModelSummary) {
    if out == Output::Json {
        return json(m);
    }
    println!("model:    {}", m.name);
    println!("created:  {}", time(m.created_at));
    println!("versions: {}", joined(&m.versions, ", "));
    for (alias, version) in &m.aliases {
        println!("alias:    {alias} -> {version}");
    }
}

/// `model push`, `model show N:V`: the version with its lineage.
pub(crate) fn version(out: Output, v: &VersionInfo) {
    if out == Output::Json {
        return json(v);
    }
    let m = &v.manifest;
    let l = &m.lineage;
    println!("model:     {} version {}", v.name, v.version);
    if !v.aliases.is_empty() {
        println!("aliases:   {}", v.aliases.join(", "));
    }
    println!("created:   {} by {}", time(v.created_at), v.created_by);
    println!(
        "lineage:   parent {}, dataset {}, code {}",
        opt(l.parent_version),
        opt(l.dataset_sha256.as_ref()),
        opt(l.code_commit.as_ref())
    );
    if !l.params.is_empty() {
        println!("params:    {}", labels(&l.params).replace(',', ", "));
    }
    if !l.metrics.is_empty() {
        println!("metrics:   {}", labels(&l.metrics).replace(',', ", "));
    }
    for (label, tensors) in [("input", &m.inputs), ("output", &m.outputs)] {
        for t in tensors {
            println!("{label:<10} {} {} {:?}", t.name, t.datatype, t.shape);
        }
    }
    let baseline =
        m.baseline.as_ref().map_or("none".into(), |b| format!("{} rows, {} features", b.rows, b.features.len()));
    println!("baseline:  {baseline}");
    println!("self-test: {} case(s), tolerance {}", m.self_test.cases.len(), m.self_test.tolerance);
    for a in &v.artifacts {
        println!("artifact:  {} {} bytes ({} compressed) sha256 {}", a.name, a.size, a.compressed_size, a.sha256);
    }
    println!("signed by: {}", v.signature.key_id);
}

/// `token create`.
pub(crate) fn created_token(out: Output, t: &CreatedToken) {
    if out == Output::Json {
        return json(t);
    }
    println!("token {} ({}, role {}): {}", t.id, t.name, t.role, t.token);
    println!("Store it now: the controller keeps only its hash.");
}

/// `token list`.
pub(crate) fn tokens(out: Output, tokens: &[TokenInfo]) {
    list(out, tokens, &["id", "name", "role", "created", "state"], |t| {
        let state = t.revoked_at.map_or_else(|| "active".into(), |at| format!("revoked {}", time(at)));
        vec![t.id.to_string(), t.name.clone(), t.role.clone(), time(t.created_at), state]
    });
}

/// `audit`.
pub(crate) fn audit(out: Output, entries: &[AuditEntry]) {
    list(out, entries, &["at", "actor", "action", "target", "detail"], |a| {
        vec![time(a.at), a.actor.clone(), a.action.clone(), a.target.clone(), a.detail.to_string()]
    });
}

/// `device token create`.
pub(crate) fn enrollment_token(out: Output, t: &EnrollmentToken) {
    if out == Output::Json {
        return json(t);
    }
    println!("enrollment token {} ({} use(s), expires {}): {}", t.id, t.uses, time(t.expires_at), t.token);
}

fn online(d: &DeviceInfo) -> &'static str {
    if d.online { "online" } else { "offline" }
}

/// `device list`.
pub(crate) fn devices(out: Output, devices: &[DeviceInfo]) {
    list(out, devices, &["id", "state", "labels", "desired", "active", "last error"], |d| {
        let st = d.status.as_ref();
        let refusal = st.and_then(|s| s.last_refusal.as_ref()).map(|r| r.class.clone());
        let failed = st
            .and_then(|s| s.last_activation.as_ref())
            .filter(|a| !a.ok)
            .map(|a| a.error.clone().unwrap_or_else(|| "-".into()));
        vec![
            d.id.clone(),
            online(d).into(),
            labels(&d.labels),
            model_ref(d.desired.as_ref()),
            model_ref(st.and_then(|s| s.active.as_ref())),
            refusal.or(failed).unwrap_or_else(|| "-".into()),
        ]
    });
}

/// `device show`.
pub(crate) fn device(out: Output, d: &DeviceInfo) {
    if out == Output::Json {
        return json(d);
    }
    println!("device:    {} ({})", d.id, online(d));
    println!("labels:    {}", labels(&d.labels));
    println!("enrolled:  {}", time(d.enrolled_at));
    println!("last seen: {}", time_opt(d.last_seen));
    println!("desired:   {} (sequence {})", model_ref(d.desired.as_ref()), opt(d.desired_sequence));
    let Some(st) = &d.status else {
        println!("status:    none reported yet");
        return;
    };
    println!("active:    {} (previous {})", model_ref(st.active.as_ref()), model_ref(st.previous.as_ref()));
    println!(
        "serving:   {} requests, error rate {}, latency p50 {} ms, p99 {} ms",
        st.requests,
        st.error_rate,
        opt(st.latency_p50_ms),
        opt(st.latency_p99_ms)
    );
    if let Some(a) = &st.last_activation {
        println!(
            "activation: {} {} in {} ms {}",
            model_ref(Some(&a.model)),
            if a.ok { "ok" } else { "FAILED" },
            a.duration_ms,
            opt(a.error.as_ref())
        );
    }
    if let Some(r) = &st.last_refusal {
        println!("refused:   [{}] {} at {}", r.class, r.message, time(r.at));
    }
}

/// `deploy`.
pub(crate) fn issued(out: Output, issued: &[Issued]) {
    list(out, issued, &["device", "version", "sequence", "expires"], |i| {
        vec![i.device_id.clone(), i.version.to_string(), i.sequence.to_string(), time(i.expires_at)]
    });
}

/// A command with nothing to show but success.
pub(crate) fn done(out: Output, message: &str) {
    if out == Output::Json {
        return json(&serde_json::json!({ "ok": true, "message": message }));
    }
    println!("{message}");
}

fn measured(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), three_digits)
}

/// `rollout list`.
pub(crate) fn rollouts(out: Output, rollouts: &[RolloutInfo]) {
    list(out, rollouts, &["id", "model", "state", "wave", "devices", "reason"], |r| {
        let wave = r.wave.max(1);
        vec![
            r.id.to_string(),
            model_ref(Some(&r.model)),
            r.state.as_str().into(),
            format!("{wave}/{} ({}%)", r.plan.waves.len(), opt(r.plan.waves.get(wave - 1))),
            r.measurements.devices.to_string(),
            opt(r.reason.as_ref()),
        ]
    });
}

/// `rollout create|status|pause|resume|abort`.
pub(crate) fn rollout(out: Output, r: &RolloutInfo) {
    if out == Output::Json {
        return json(r);
    }
    let plan = &r.plan;
    println!("rollout:  {} of {} ({}, {})", r.id, model_ref(Some(&r.model)), r.state.as_str(), plan.strategy.as_str());
    println!("selector: {}", labels(&plan.selector));
    println!(
        "plan:     waves {:?} %, bake {} s, wave deadline {} s ({} then), on failure {}",
        plan.waves,
        plan.bake_secs,
        plan.wave_timeout_secs,
        plan.on_timeout.as_str(),
        plan.on_fail.as_str()
    );
    if let Some(reason) = &r.reason {
        println!("reason:   {reason}");
    }
    let m = &r.measurements;
    println!(
        "devices:  {} in the rollout, {} serving it, {} failed, {} on it already; {} requests, {} errors, p99 {} ms (before {} ms)",
        m.devices,
        m.activated,
        m.failed,
        m.already,
        m.requests,
        m.errors,
        measured(m.p99_ms),
        measured(m.baseline_p99_ms)
    );
    println!("outputs:  {} predictions classified, PSI vs before {}", m.classified, measured(m.psi));
    if plan.strategy == Strategy::Shadow {
        println!("shadow:   {} mirrored requests compared, agreement {}", m.compared, measured(m.agreement));
    }
    let waves: Vec<Vec<String>> = r
        .waves
        .iter()
        .map(|w| {
            vec![
                w.wave.to_string(),
                format!("{}%", w.percent),
                w.devices.len().to_string(),
                w.activated.to_string(),
                w.failed.to_string(),
            ]
        })
        .collect();
    table(&["wave", "percent", "targeted", "activated", "failed"], &waves);
    let gates: Vec<Vec<String>> = r
        .gates
        .iter()
        .map(|g| {
            let verdict = match g.passed {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "pending",
            };
            vec![g.gate.clone(), measured(g.value), verdict.into()]
        })
        .collect();
    if !gates.is_empty() {
        table(&["gate", "value", "verdict"], &gates);
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// `drift report`.
pub(crate) fn drift(out: Output, d: &DriftReport) {
    if out == Output::Json {
        return json(d);
    }
    println!(
        "{}:{}  group {}  {} .. {}  rows {}  samples {}",
        d.model,
        d.version,
        d.group.as_deref().unwrap_or("all"),
        time(d.from),
        time(d.to),
        d.rows,
        d.samples
    );
    if !d.has_baseline {
        println!("This version has no baseline: push it with reference data to measure drift.");
        return;
    }
    let rows: Vec<Vec<String>> = d
        .features
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.count.to_string(),
                f.samples.to_string(),
                num(f.psi, 3),
                num(f.jensen_shannon, 3),
                format!("{} {}", num(f.wasserstein, 3), if f.wasserstein_drift { "drift" } else { "ok" }),
                format!("{} (p={})", num(f.ks_statistic, 3), num(f.ks_pvalue, 4)),
                f.status.clone(),
            ]
        })
        .collect();
    table(&["feature", "values", "samples", "psi", "js", "wasserstein", "ks", "status"], &rows);
    if let Some(o) = &d.output {
        println!(
            "output {}: psi {}  js {}  chi2 {} (p={})  {}  classes {:?} vs baseline {:?}",
            o.name,
            num(o.psi, 3),
            num(o.jensen_shannon, 3),
            num(o.chi2_statistic, 2),
            num(o.chi2_pvalue, 4),
            o.status,
            o.current_counts,
            o.reference_counts
        );
    }
    if let Some(a) = &d.accuracy {
        println!("accuracy {} ({} of {} labels)", num(Some(a.accuracy), 3), a.correct, a.labeled);
    }
    println!("{} of {} features drifted (PSI >= 0.2)", d.drifted_features, d.features.len());
}

/// The delivery state (`pending`, `delivered`, `failed`, ...) of one retrain channel.
fn delivery_state(r: &RetrainRequest, channel: &str) -> String {
    r.delivery[channel]["state"].as_str().unwrap_or("-").to_owned()
}

/// `retrain list`.
pub(crate) fn retrain_requests(out: Output, requests: &[RetrainRequest]) {
    list(out, requests, &["id", "model", "created", "rows", "dataset sha256", "webhook", "command", "trained"], |r| {
        vec![
            r.id.to_string(),
            format!("{}:{}", r.model, r.version),
            time(r.created_at),
            r.rows.to_string(),
            r.dataset_sha256.clone(),
            delivery_state(r, "webhook"),
            delivery_state(r, "command"),
            if r.trained_versions.is_empty() { "-".into() } else { joined(&r.trained_versions, ",") },
        ]
    });
}

/// `retrain show`.
pub(crate) fn retrain_request(out: Output, r: &RetrainRequest) {
    if out == Output::Json {
        return json(r);
    }
    println!("retrain request {} for {}:{}", r.id, r.model, r.version);
    println!("  created         {}", time(r.created_at));
    println!("  reason          {}", r.reason);
    println!("  rows            {}", r.rows);
    println!("  dataset sha256  {}", r.dataset_sha256);
    println!("  snapshot        {}", r.snapshot_dir);
    println!("  webhook         {}", r.delivery["webhook"]);
    println!("  command         {}", r.delivery["command"]);
    let trained = if r.trained_versions.is_empty() { "-".into() } else { joined(&r.trained_versions, ", ") };
    println!("  trained         {trained}");
}

/// `retrain policy`.
pub(crate) fn policy(out: Output, p: &Policy) {
    if out == Output::Json {
        return json(p);
    }
    println!("{:<14} {}", "enabled", p.enabled);
    println!("{:<14} {}", "psi", p.psi);
    println!("{:<14} {}", "feature_share", p.feature_share);
    println!("{:<14} {}", "windows", p.windows);
    println!("{:<14} {}", "min_rows", p.min_rows);
    println!("{:<14} {}", "accuracy_drop", p.accuracy_drop);
    println!("{:<14} {}", "min_labels", p.min_labels);
}
