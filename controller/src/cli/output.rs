//! Human (table) and script (JSON) renderings of API answers.
#![allow(clippy::print_stdout, reason = "this module is the CLI's stdout")]

use serde_json::Value;

use super::Output;

fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
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

fn time(v: &Value) -> String {
    v.as_u64().or_else(|| v.as_i64().map(|x| x.max(0) as u64)).map_or("-".into(), |t| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t)).to_string()
    })
}

/// Prints a JSON array: as it is, or as a table with one row per element.
fn list(out: Output, v: &Value, header: &[&str], row: impl Fn(&Value) -> Vec<String>) {
    if out == Output::Json {
        return json(v);
    }
    let rows: Vec<Vec<String>> = v.as_array().into_iter().flatten().map(row).collect();
    table(header, &rows);
}

/// `model list`.
pub(super) fn models(out: Output, v: &Value) {
    list(out, v, &["name", "latest", "versions", "aliases"], |m| {
        let versions = m["versions"].as_array().map_or(0, Vec::len);
        let latest = m["versions"].as_array().and_then(|a| a.last()).map_or("-".into(), s);
        vec![s(&m["name"]), latest, versions.to_string(), labels(&m["aliases"])]
    });
}

/// `model show N`, `model alias`.
pub(super) fn model(out: Output, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    println!("model:    {}", s(&v["name"]));
    println!("created:  {}", time(&v["created_at"]));
    println!(
        "versions: {}",
        v["versions"].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    );
    if let Some(aliases) = v["aliases"].as_object() {
        for (k, version) in aliases {
            println!("alias:    {k} -> {version}");
        }
    }
}

/// `model push`, `model show N:V`: the version with its lineage.
pub(super) fn version(out: Output, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    let m = &v["manifest"];
    let l = &m["lineage"];
    println!("model:     {} version {}", s(&v["name"]), s(&v["version"]));
    let aliases = v["aliases"].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    if !aliases.is_empty() {
        println!("aliases:   {aliases}");
    }
    println!("created:   {} by {}", time(&v["created_at"]), s(&v["created_by"]));
    println!(
        "lineage:   parent {}, dataset {}, code {}",
        s(&l["parent_version"]),
        s(&l["dataset_sha256"]),
        s(&l["code_commit"])
    );
    if let Some(p) = l["params"].as_object().filter(|p| !p.is_empty()) {
        println!("params:    {}", p.iter().map(|(k, v)| format!("{k}={}", s(v))).collect::<Vec<_>>().join(", "));
    }
    if let Some(p) = l["metrics"].as_object().filter(|p| !p.is_empty()) {
        println!("metrics:   {}", p.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "));
    }
    for (label, key) in [("input", "inputs"), ("output", "outputs")] {
        for t in m[key].as_array().into_iter().flatten() {
            println!("{label:<10} {} {} {}", s(&t["name"]), s(&t["datatype"]), t["shape"]);
        }
    }
    let baseline = match m["baseline"]["rows"].as_u64() {
        Some(rows) => format!("{rows} rows, {} features", m["baseline"]["features"].as_array().map_or(0, Vec::len)),
        None => "none".into(),
    };
    println!("baseline:  {baseline}");
    println!(
        "self-test: {} case(s), tolerance {}",
        m["self_test"]["cases"].as_array().map_or(0, Vec::len),
        m["self_test"]["tolerance"]
    );
    for a in v["artifacts"].as_array().into_iter().flatten() {
        println!(
            "artifact:  {} {} bytes ({} compressed) sha256 {}",
            s(&a["name"]),
            a["size"],
            a["compressed_size"],
            s(&a["sha256"])
        );
    }
    println!("signed by: {}", s(&v["signature"]["key_id"]));
}

/// `token create`.
pub(super) fn created_token(out: Output, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    println!("token {} ({}, role {}): {}", s(&v["id"]), s(&v["name"]), s(&v["role"]), s(&v["token"]));
    println!("Store it now: the controller keeps only its hash.");
}

/// `token list`.
pub(super) fn tokens(out: Output, v: &Value) {
    list(out, v, &["id", "name", "role", "created", "state"], |t| {
        let state =
            if t["revoked_at"].is_null() { "active".into() } else { format!("revoked {}", time(&t["revoked_at"])) };
        vec![s(&t["id"]), s(&t["name"]), s(&t["role"]), time(&t["created_at"]), state]
    });
}

/// `audit`.
pub(super) fn audit(out: Output, v: &Value) {
    list(out, v, &["at", "actor", "action", "target", "detail"], |a| {
        vec![time(&a["at"]), s(&a["actor"]), s(&a["action"]), s(&a["target"]), a["detail"].to_string()]
    });
}

/// `device token create`.
pub(super) fn enrollment_token(out: Output, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    println!(
        "enrollment token {} ({} use(s), expires {}): {}",
        s(&v["id"]),
        s(&v["uses"]),
        time(&v["expires_at"]),
        s(&v["token"])
    );
}

fn model_ref(v: &Value) -> String {
    if v.is_null() { "-".into() } else { format!("{}:{}", s(&v["name"]), s(&v["version"])) }
}

/// `k=v,k=v` of an object (labels, aliases).
fn labels(v: &Value) -> String {
    v.as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={}", s(v))).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// `device list`.
pub(super) fn devices(out: Output, v: &Value) {
    list(out, v, &["id", "state", "labels", "desired", "active", "last error"], |d| {
        let st = &d["status"];
        let error = st["last_refusal"]["class"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| (st["last_activation"]["ok"] == false).then(|| s(&st["last_activation"]["error"])));
        vec![
            s(&d["id"]),
            if d["online"] == true { "online".into() } else { "offline".into() },
            labels(&d["labels"]),
            model_ref(&d["desired"]),
            model_ref(&st["active"]),
            error.unwrap_or_else(|| "-".into()),
        ]
    });
}

/// `device show`.
pub(super) fn device(out: Output, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    let st = &v["status"];
    println!("device:    {} ({})", s(&v["id"]), if v["online"] == true { "online" } else { "offline" });
    println!("labels:    {}", labels(&v["labels"]));
    println!("enrolled:  {}", time(&v["enrolled_at"]));
    println!("last seen: {}", time(&v["last_seen"]));
    println!("desired:   {} (sequence {})", model_ref(&v["desired"]), s(&v["desired_sequence"]));
    println!("active:    {} (previous {})", model_ref(&st["active"]), model_ref(&st["previous"]));
    println!(
        "serving:   {} requests, error rate {}, latency p50 {} ms, p99 {} ms",
        s(&st["requests"]),
        s(&st["error_rate"]),
        s(&st["latency_p50_ms"]),
        s(&st["latency_p99_ms"])
    );
    if !st["last_activation"].is_null() {
        let a = &st["last_activation"];
        println!(
            "activation: {} {} in {} ms {}",
            model_ref(&a["model"]),
            if a["ok"] == true { "ok" } else { "FAILED" },
            s(&a["duration_ms"]),
            s(&a["error"])
        );
    }
    if !st["last_refusal"].is_null() {
        let r = &st["last_refusal"];
        println!("refused:   [{}] {} at {}", s(&r["class"]), s(&r["message"]), time(&r["at"]));
    }
}

/// `deploy`.
pub(super) fn issued(out: Output, v: &Value) {
    list(out, v, &["device", "version", "sequence", "expires"], |i| {
        vec![s(&i["device_id"]), s(&i["version"]), s(&i["sequence"]), time(&i["expires_at"])]
    });
}

/// A command with nothing to show but success.
pub(super) fn done(out: Output, message: &str) {
    if out == Output::Json {
        return json(&serde_json::json!({ "ok": true, "message": message }));
    }
    println!("{message}");
}

/// `rollout list`.
pub(super) fn rollouts(out: Output, v: &Value) {
    list(out, v, &["id", "model", "state", "wave", "devices", "reason"], |r| {
        let waves = r["plan"]["waves"].as_array().map_or(0, Vec::len);
        let wave = r["wave"].as_u64().unwrap_or(1).max(1) as usize;
        vec![
            s(&r["id"]),
            model_ref(&r["model"]),
            s(&r["state"]),
            format!("{wave}/{waves} ({}%)", s(&r["plan"]["waves"][wave - 1])),
            s(&r["measurements"]["devices"]),
            s(&r["reason"]),
        ]
    });
}

/// `rollout create|status|pause|resume|abort`.
pub(super) fn rollout(out: Output, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    let plan = &v["plan"];
    println!("rollout:  {} of {} ({}, {})", s(&v["id"]), model_ref(&v["model"]), s(&v["state"]), s(&plan["strategy"]));
    println!("selector: {}", labels(&plan["selector"]));
    println!(
        "plan:     waves {} %, bake {} s, wave deadline {} s ({} then), on failure {}",
        s(&plan["waves"]),
        s(&plan["bake_secs"]),
        s(&plan["wave_timeout_secs"]),
        s(&plan["on_timeout"]),
        s(&plan["on_fail"])
    );
    if !v["reason"].is_null() {
        println!("reason:   {}", s(&v["reason"]));
    }
    let m = &v["measurements"];
    let n = |v: &Value| v.as_f64().map_or_else(|| "-".to_owned(), edgefleet_shared::api::three_digits);
    println!(
        "devices:  {} in the rollout, {} serving it, {} failed, {} on it already; {} requests, {} errors, p99 {} ms (before {} ms)",
        s(&m["devices"]),
        s(&m["activated"]),
        s(&m["failed"]),
        s(&m["already"]),
        s(&m["requests"]),
        s(&m["errors"]),
        n(&m["p99_ms"]),
        n(&m["baseline_p99_ms"])
    );
    println!("outputs:  {} predictions classified, PSI vs before {}", s(&m["classified"]), n(&m["psi"]));
    if plan["strategy"] == "shadow" {
        println!("shadow:   {} mirrored requests compared, agreement {}", s(&m["compared"]), n(&m["agreement"]));
    }
    let waves: Vec<Vec<String>> = v["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let devices = w["devices"].as_array().map_or(0, Vec::len);
            vec![
                s(&w["wave"]),
                format!("{}%", s(&w["percent"])),
                devices.to_string(),
                s(&w["activated"]),
                s(&w["failed"]),
            ]
        })
        .collect();
    table(&["wave", "percent", "targeted", "activated", "failed"], &waves);
    let gates: Vec<Vec<String>> = v["gates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let verdict = match g["passed"].as_bool() {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "pending",
            };
            let value = g["value"].as_f64().map_or_else(|| "-".to_owned(), edgefleet_shared::api::three_digits);
            vec![s(&g["gate"]), value, verdict.into()]
        })
        .collect();
    if !gates.is_empty() {
        table(&["gate", "value", "verdict"], &gates);
    }
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// `drift report`.
pub(super) fn drift(out: Output, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    println!(
        "{}:{}  group {}  {} .. {}  rows {}  samples {}",
        s(&v["model"]),
        s(&v["version"]),
        v["group"].as_str().unwrap_or("all"),
        time(&v["from"]),
        time(&v["to"]),
        s(&v["rows"]),
        s(&v["samples"])
    );
    if v["has_baseline"] == Value::Bool(false) {
        println!("This version has no baseline: push it with reference data to measure drift.");
        return;
    }
    let rows: Vec<Vec<String>> = v["features"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let flag = |b: &Value| if b == &Value::Bool(true) { "drift" } else { "ok" };
            vec![
                s(&f["name"]),
                s(&f["count"]),
                s(&f["samples"]),
                num(&f["psi"], 3),
                num(&f["jensen_shannon"], 3),
                format!("{} {}", num(&f["wasserstein"], 3), flag(&f["wasserstein_drift"])),
                format!("{} (p={})", num(&f["ks_statistic"], 3), num(&f["ks_pvalue"], 4)),
                s(&f["status"]),
            ]
        })
        .collect();
    table(&["feature", "values", "samples", "psi", "js", "wasserstein", "ks", "status"], &rows);
    if let Some(o) = v["output"].as_object() {
        println!(
            "output {}: psi {}  js {}  chi2 {} (p={})  {}  classes {} vs baseline {}",
            s(&o["name"]),
            num(&o["psi"], 3),
            num(&o["jensen_shannon"], 3),
            num(&o["chi2_statistic"], 2),
            num(&o["chi2_pvalue"], 4),
            s(&o["status"]),
            o["current_counts"],
            o["reference_counts"]
        );
    }
    if let Some(a) = v["accuracy"].as_object() {
        println!("accuracy {} ({} of {} labels)", num(&a["accuracy"], 3), s(&a["correct"]), s(&a["labeled"]));
    }
    println!(
        "{} of {} features drifted (PSI >= 0.2)",
        s(&v["drifted_features"]),
        v["features"].as_array().map_or(0, Vec::len)
    );
}

/// `retrain list`.
pub(super) fn retrain_requests(out: Output, v: &Value) {
    list(out, v, &["id", "model", "created", "rows", "dataset sha256", "webhook", "command", "trained"], |r| {
        vec![
            s(&r["id"]),
            format!("{}:{}", s(&r["model"]), s(&r["version"])),
            time(&r["created_at"]),
            s(&r["rows"]),
            s(&r["dataset_sha256"]),
            s(&r["delivery"]["webhook"]["state"]),
            s(&r["delivery"]["command"]["state"]),
            r["trained_versions"].as_array().map_or("-".into(), |a| a.iter().map(s).collect::<Vec<_>>().join(",")),
        ]
    });
}

/// `retrain show`.
pub(super) fn retrain_request(out: Output, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    println!("retrain request {} for {}:{}", s(&v["id"]), s(&v["model"]), s(&v["version"]));
    println!("  created         {}", time(&v["created_at"]));
    println!("  reason          {}", s(&v["reason"]));
    println!("  rows            {}", s(&v["rows"]));
    println!("  dataset sha256  {}", s(&v["dataset_sha256"]));
    println!("  snapshot        {}", s(&v["snapshot_dir"]));
    println!("  webhook         {}", v["delivery"]["webhook"]);
    println!("  command         {}", v["delivery"]["command"]);
    let trained = v["trained_versions"].as_array().map_or(Vec::new(), |a| a.iter().map(s).collect());
    println!("  trained         {}", if trained.is_empty() { "-".into() } else { trained.join(", ") });
}

/// Any object, as `key value` lines.
pub(super) fn object(out: Output, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    for (k, val) in v.as_object().into_iter().flatten() {
        println!("{k:<14} {}", s(val));
    }
}
