//! Human (table) and script (JSON) renderings of API answers. `--output json` prints the API's
//! own JSON: the typed answer serialized back, field for field.

use std::collections::BTreeMap;
use std::fmt::Display;

use edgefleet_shared::api::fleet::{DeviceInfo, EnrollmentToken, EnrollmentTokenInfo};
use edgefleet_shared::api::models::{ModelSummary, VersionInfo};
use edgefleet_shared::api::rollouts::{DeviceOutcome, RolloutInfo, RolloutState, Strategy};
use edgefleet_shared::api::telemetry::{DriftReport, Policy, RetrainRequest};
use edgefleet_shared::api::three_digits;
use edgefleet_shared::api::tokens::{AuditEntry, CreatedToken, TokenInfo};
use edgefleet_shared::deployment::ModelRef;
use serde::Serialize;

use crate::args::Output;

mod fleets;
pub(crate) use fleets::{fleet, fleet_update, fleets, issued};

fn json(v: &impl Serialize) {
    say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// An optional value, `-` when absent.
fn opt(v: Option<impl Display>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Rows as aligned columns under a header.
fn table_text(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut text = line(header.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        text.push_str(&line(r.clone()));
    }
    text
}

/// Prints rows as aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) {
    crate::stdout_text(&table_text(header, rows));
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

/// A JSON value as readable `key value` fields (objects flattened with dotted keys, strings
/// unquoted, fractions to three significant digits), for audit details and delivery records.
fn fields(v: &serde_json::Value) -> String {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        let scalar = match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
                return;
            }
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(|| n.to_string(), three_digits),
            other => other.to_string(),
        };
        out.push(if prefix.is_empty() { scalar } else { format!("{prefix} {scalar}") });
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out.join(", ")
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
    say!("model:    {}", m.name);
    say!("created:  {}", time(m.created_at));
    say!("versions: {}", joined(&m.versions, ", "));
    for (alias, version) in &m.aliases {
        say!("alias:    {alias} -> {version}");
    }
}

/// `model push`, `model show N:V`: the version with its lineage.
pub(crate) fn version(out: Output, v: &VersionInfo) {
    if out == Output::Json {
        return json(v);
    }
    let m = &v.manifest;
    let l = &m.lineage;
    say!("model:     {} version {}", v.name, v.version);
    if !v.aliases.is_empty() {
        say!("aliases:   {}", v.aliases.join(", "));
    }
    say!("created:   {} by {}", time(v.created_at), v.created_by);
    say!(
        "lineage:   parent {}, dataset {}, code {}",
        opt(l.parent_version),
        opt(l.dataset_sha256.as_ref()),
        opt(l.code_commit.as_ref())
    );
    if !l.params.is_empty() {
        say!("params:    {}", labels(&l.params).replace(',', ", "));
    }
    if !l.metrics.is_empty() {
        say!("metrics:   {}", labels(&l.metrics).replace(',', ", "));
    }
    if let Some(s) = &l.source {
        let run = s.run_id.as_ref().map_or(String::new(), |r| format!(", run {r}"));
        say!("source:    {} {} at {}{run}", s.system, s.reference, s.uri);
        if let Some(link) = &s.link {
            say!("link:      {link}");
        }
        for d in &s.datasets {
            let context = d.context.as_ref().map_or(String::new(), |c| format!(" ({c})"));
            say!("dataset:   {}{context}, {} digest {}", d.name, s.system, d.digest);
        }
    }
    for (label, tensors) in [("input", &m.inputs), ("output", &m.outputs)] {
        for t in tensors {
            say!("{label:<10} {} {} {:?}", t.name, t.datatype, t.shape);
        }
    }
    let baseline =
        m.baseline.as_ref().map_or("none".into(), |b| format!("{} rows, {} features", b.rows, b.features.len()));
    say!("baseline:  {baseline}");
    say!("self-test: {} case(s), tolerance {}", m.self_test.cases.len(), m.self_test.tolerance);
    for a in &v.artifacts {
        say!("artifact:  {} {} bytes ({} compressed) sha256 {}", a.name, a.size, a.compressed_size, a.sha256);
    }
    for d in &v.deltas {
        let share = 100.0 * d.size as f64 / d.full_size.max(1) as f64;
        say!("delta:     from version {}: {} bytes ({share:.1}% of the compressed model)", d.base_version, d.size);
    }
    say!("signed by: {}", v.signature.key_id);
}

/// `token create`.
pub(crate) fn created_token(out: Output, t: &CreatedToken) {
    if out == Output::Json {
        return json(t);
    }
    say!("token {} ({}, role {}): {}", t.id, t.name, t.role, t.token);
    say!("Store it now: the controller keeps only its hash.");
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
        vec![time(a.at), a.actor.clone(), a.action.clone(), a.target.clone(), fields(&a.detail)]
    });
}

/// `device token create`.
pub(crate) fn enrollment_token(out: Output, t: &EnrollmentToken) {
    if out == Output::Json {
        return json(t);
    }
    say!("enrollment token {} ({} use(s), expires {}): {}", t.id, t.uses, time(t.expires_at), t.token);
}

fn online(d: &DeviceInfo) -> &'static str {
    d.state().as_str()
}

/// `device token list`.
pub(crate) fn enrollment_tokens(out: Output, tokens: &[EnrollmentTokenInfo]) {
    list(out, tokens, &["id", "uses left", "devices", "labels", "expires", "created by", "state"], |t| {
        let state = match t.revoked_at {
            Some(at) => format!("revoked {}", time(at)),
            None if t.expires_at <= now() => "expired".into(),
            None if t.uses_left == 0 => "used up".into(),
            None => "active".into(),
        };
        vec![
            t.id.to_string(),
            t.uses_left.to_string(),
            t.devices.to_string(),
            labels(&t.labels),
            time(t.expires_at),
            t.created_by.clone(),
            state,
        ]
    });
}

/// `device list`.
pub(crate) fn devices(out: Output, devices: &[DeviceInfo]) {
    list(out, devices, &["id", "state", "labels", "desired", "active", "last seen", "last error"], |d| {
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
            time_opt(d.last_seen),
            refusal.or(failed).unwrap_or_else(|| "-".into()),
        ]
    });
}

/// `device show`.
pub(crate) fn device(out: Output, d: &DeviceInfo) {
    if out == Output::Json {
        return json(d);
    }
    say!("device:    {} ({})", d.id, online(d));
    if let Some(at) = d.decommissioned_at {
        say!("decommissioned: {} ({})", time(at), opt(d.decommission_reason.as_ref()));
    }
    say!("labels:    {}", labels(&d.labels));
    say!("enrolled:  {}", time(d.enrolled_at));
    say!("last seen: {}", time_opt(d.last_seen));
    say!("desired:   {} (sequence {})", model_ref(d.desired.as_ref()), opt(d.desired_sequence));
    let Some(st) = &d.status else {
        say!("status:    none reported yet");
        return;
    };
    say!("active:    {} (previous {})", model_ref(st.active.as_ref()), model_ref(st.previous.as_ref()));
    say!(
        "serving:   {} requests, error rate {}, latency p50 {} ms, p99 {} ms",
        st.requests,
        three_digits(st.error_rate),
        measured(st.latency_p50_ms),
        measured(st.latency_p99_ms)
    );
    if let Some(a) = &st.last_activation {
        say!(
            "activation: {} {} in {} ms {}",
            model_ref(Some(&a.model)),
            if a.ok { "ok" } else { "FAILED" },
            a.duration_ms,
            opt(a.error.as_ref())
        );
    }
    if let Some(r) = &st.last_refusal {
        say!("refused:   [{}] {} at {}", r.class, r.message, time(r.at));
    }
}

/// A command with nothing to show but success.
pub(crate) fn done(out: Output, message: &str) {
    if out == Output::Json {
        return json(&serde_json::json!({ "ok": true, "message": message }));
    }
    say!("{message}");
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
    crate::stdout_text(&rollout_text(r, now()));
}

/// Unix seconds now, for countdowns.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds from `now` to `at` as `4m 10s` (`now` once passed).
fn countdown(at: u64, now: u64) -> String {
    match at.checked_sub(now).filter(|s| *s > 0) {
        Some(secs) => humantime::format_duration(std::time::Duration::from_secs(secs)).to_string(),
        None => "now".into(),
    }
}

/// `rollout status` as text (a function of the answer and the time, so `--watch` redraws it).
pub(crate) fn rollout_text(r: &RolloutInfo, now: u64) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let plan = &r.plan;
    let _ = writeln!(
        o,
        "rollout:  {} of {} ({}, {})",
        r.id,
        model_ref(Some(&r.model)),
        r.state.as_str(),
        plan.strategy.as_str()
    );
    let _ = writeln!(o, "selector: {}", labels(&plan.selector));
    let _ = writeln!(
        o,
        "plan:     waves {:?} %, bake {} s, wave deadline {} s ({} then), at least {} samples per side, not enough data by the deadline: {}, on failure {}",
        plan.waves,
        plan.bake_secs,
        plan.wave_timeout_secs,
        plan.on_timeout.as_str(),
        plan.min_requests,
        plan.on_insufficient.as_str(),
        plan.on_fail.as_str()
    );
    if let Some(reason) = &r.reason {
        let _ = writeln!(o, "reason:   {reason}");
    }
    if r.state == RolloutState::Running {
        let wave = r.wave.max(1);
        let mut timing = format!("wave {wave} of {}", plan.waves.len());
        match r.bake_until {
            Some(bake) if bake > now => {
                let _ = write!(timing, ", bake ends in {}", countdown(bake, now));
            }
            Some(_) => timing.push_str(", baked"),
            None => {}
        }
        if let Some(deadline) = r.deadline {
            let _ = write!(timing, ", deadline in {}", countdown(deadline, now));
        }
        let _ = writeln!(o, "now:      {timing}");
        if let Some(waiting) = &r.waiting_for {
            let _ = writeln!(o, "waiting:  {waiting}");
        }
    }
    let m = &r.measurements;
    let _ = writeln!(
        o,
        "devices:  {} in the rollout, {} serving it, {} failed, {} on it already, {} unsettled",
        m.devices,
        m.activated,
        m.failed,
        m.already,
        m.unsettled()
    );
    if r.delta_bytes_saved > 0 {
        let _ = writeln!(o, "deltas:   {} compressed bytes not downloaded", r.delta_bytes_saved);
    }
    let _ = writeln!(
        o,
        "traffic:  {} requests, {} errors, p99 {} ms (before {} ms, ratio {} over {} device(s))",
        m.requests,
        m.errors,
        measured(m.p99_ms),
        measured(m.baseline_p99_ms),
        measured(m.p99_ratio),
        m.p99_pairs
    );
    let _ = writeln!(
        o,
        "outputs:  {} predictions classified ({} before), PSI vs before {}",
        m.classified,
        m.baseline_classified,
        measured(m.psi)
    );
    if plan.strategy == Strategy::Shadow {
        let _ = writeln!(o, "shadow:   {} mirrored requests compared, agreement {}", m.compared, measured(m.agreement));
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
    o.push_str(&table_text(&["wave", "percent", "targeted", "activated", "failed"], &waves));
    let gates: Vec<Vec<String>> = r
        .gates
        .iter()
        .map(|g| {
            let verdict = match (g.passed, g.skipped) {
                (_, true) => "skipped",
                (Some(true), _) => "pass",
                (Some(false), _) => "FAIL",
                (None, _) => "pending",
            };
            vec![g.gate.clone(), measured(g.value), verdict.into(), opt(g.waiting.as_ref())]
        })
        .collect();
    if !gates.is_empty() {
        o.push_str(&table_text(&["gate", "value", "verdict", "waiting for"], &gates));
    }
    let problems: Vec<Vec<String>> = r
        .devices
        .iter()
        .filter(|d| !d.online || matches!(d.outcome, DeviceOutcome::Failed | DeviceOutcome::Unsettled))
        .map(|d| {
            let seen = d.last_seen.map_or_else(
                || "never".to_owned(),
                |t| {
                    format!("{} ago", humantime::format_duration(std::time::Duration::from_secs(now.saturating_sub(t))))
                },
            );
            vec![
                d.device.clone(),
                d.wave.to_string(),
                d.outcome.as_str().into(),
                if d.online { "online".into() } else { "OFFLINE".into() },
                seen,
                opt(d.error.as_ref()),
            ]
        })
        .collect();
    if !problems.is_empty() {
        o.push_str(&table_text(&["device", "wave", "outcome", "link", "last seen", "error"], &problems));
    }
    o
}

/// `drift report`.
pub(crate) fn drift(out: Output, d: &DriftReport) {
    if out == Output::Json {
        return json(d);
    }
    say!(
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
        say!("This version has no baseline: push it with reference data to measure drift.");
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
                measured(f.psi),
                measured(f.jensen_shannon),
                measured(f.wasserstein),
                format!("{} (p={})", measured(f.ks_statistic), measured(f.ks_pvalue)),
                f.status.clone(),
                f.reason.clone(),
            ]
        })
        .collect();
    table(&["feature", "values", "samples", "psi", "js", "wasserstein", "ks", "verdict", "why"], &rows);
    if let Some(o) = &d.output {
        say!(
            "output {}: psi {}  js {}  chi2 {} (p={})  {}  classes {:?} vs baseline {:?}",
            o.name,
            measured(o.psi),
            measured(o.jensen_shannon),
            measured(o.chi2_statistic),
            measured(o.chi2_pvalue),
            o.status,
            o.current_counts,
            o.reference_counts
        );
    }
    if let Some(a) = &d.accuracy {
        say!("accuracy {} ({} of {} labels)", three_digits(a.accuracy), a.correct, a.labeled);
    }
    say!(
        "{} of {} features drifted (PSI >= 0.2 on at least {} values, or KS p <= 0.05 with Wasserstein >= 0.1 on at least {} samples)",
        d.drifted_features,
        d.features.len(),
        d.min_rows,
        d.min_samples
    );
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
    say!("retrain request {} for {}:{}", r.id, r.model, r.version);
    say!("  created         {}", time(r.created_at));
    say!("  reason          {}", r.reason);
    say!("  rows            {}", r.rows);
    say!("  dataset sha256  {}", r.dataset_sha256);
    say!("  snapshot        {}", r.snapshot_dir);
    say!("  webhook         {}", fields(&r.delivery["webhook"]));
    say!("  command         {}", fields(&r.delivery["command"]));
    let trained = if r.trained_versions.is_empty() { "-".into() } else { joined(&r.trained_versions, ", ") };
    say!("  trained         {trained}");
}

/// `retrain policy`.
pub(crate) fn policy(out: Output, p: &Policy) {
    if out == Output::Json {
        return json(p);
    }
    say!("{:<14} {}", "enabled", p.enabled);
    say!("{:<14} {}", "psi", p.psi);
    say!("{:<14} {}", "feature_share", p.feature_share);
    say!("{:<14} {}", "windows", p.windows);
    say!("{:<14} {}", "min_rows", p.min_rows);
    say!("{:<14} {}", "accuracy_drop", p.accuracy_drop);
    say!("{:<14} {}", "min_labels", p.min_labels);
}
