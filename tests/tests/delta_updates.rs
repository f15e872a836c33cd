//! Delta updates end to end, with a real controller and agents: a fine-tuned version (only its
//! last layer changed) rolls out to a device that holds the previous one as a delta, under load,
//! without a failed request, with the bytes transferred recorded and the bytes saved reported by
//! the rollout, resuming a delta half on the device already; a corrupted delta is
//! refused and the full artifact is downloaded and verified instead; a device without the base
//! gets the full artifact; a fully retrained version is not offered as a delta.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::controller::ControllerProcess;
use common::{testdata, until};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn push(c: &ControllerProcess, file: &str) -> Value {
    c.cli_json(&["model", "push", &testdata().join(file).to_string_lossy(), "--name", "m"])
}

/// The model artifact's compressed size in a push answer.
fn full_size(pushed: &Value) -> u64 {
    let model = pushed["artifacts"].as_array().expect("artifacts").iter().find(|a| a["name"] == "model.onnx");
    model.and_then(|a| a["compressed_size"].as_u64()).expect("compressed size")
}

fn status(c: &ControllerProcess, id: &str) -> Value {
    c.cli_json(&["device", "show", id])["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fine_tuned_head_travels_as_a_delta_and_everything_else_falls_back_to_the_full_artifact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(&dir.path().join("controller"));
    let v1 = push(&c, "delta_base.onnx");
    assert!(v1["deltas"].is_null(), "nothing to make a delta from: {v1}");
    let v2 = push(&c, "delta_tuned.onnx");
    let delta = &v2["deltas"][0];
    let (delta_size, full) = (delta["size"].as_u64().expect("delta size"), full_size(&v2));
    assert_eq!(delta["base_version"], 1, "{v2}");
    eprintln!(
        "fine-tuned head: delta {delta_size} bytes vs full {full} compressed ({:.1}%)",
        100.0 * delta_size as f64 / full as f64
    );
    assert!(delta_size * 20 <= full, "a changed head is at most 5% of the full bytes: {delta_size} vs {full}");

    let (a, a_id) = c.enroll_agent(dir.path(), "a", &["fleet=a"], &[]).await;
    c.cli_json(&["deploy", "m:1", "--device", &a_id]);
    a.wait_serving("m", "1").await;
    until("the device reports v1 and that it applies deltas", 60, async || {
        let s = status(&c, &a_id);
        s["active"]["version"] == 1 && s["deltas"].is_object()
    })
    .await;

    // v1 -> v2 by delta while clients infer.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, stop, ok, failed) = (a.url("/v2/models/m/infer"), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let body =
                    json!({"inputs": [{"name": "x", "shape": [1, 32], "datatype": "FP32", "data": vec![0.1; 32]}]});
                while !stop.load(Ordering::Relaxed) {
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // Half of the delta is on the device already, as after an interrupted transfer: it resumes.
    let sha = delta["sha256"].as_str().expect("delta sha256");
    let blob = dir.path().join("controller/artifacts/blobs").join(&sha[..2]).join(format!("{}.zst", &sha[2..]));
    let bytes = std::fs::read(&blob).expect("the stored delta");
    let staging = dir.path().join("a/staging");
    std::fs::create_dir_all(&staging).expect("staging");
    std::fs::write(staging.join(format!("{sha}.delta.part")), &bytes[..bytes.len() / 2]).expect("half a delta");
    let downloaded_before = a.metric_sum("edgefleet_agent_download_bytes_total", "").await;
    let rollout = c.cli_json(&["rollout", "create", "m:2", "--selector", "fleet=a", "--waves", "100", "--bake", "1s"]);
    let rollout = rollout["id"].to_string();
    a.wait_serving("m", "2").await;
    until("the rollout completes", 60, async || c.cli_json(&["rollout", "status", &rollout])["state"] == "completed")
        .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "requests failed during the delta update ({ok} succeeded)");
    assert!(ok > 50, "{ok} requests");
    let downloaded = a.metric_sum("edgefleet_agent_download_bytes_total", "").await - downloaded_before;
    eprintln!(
        "v1 -> v2: {downloaded} bytes downloaded (the delta, and the small bundle whole) vs {full} for the full model"
    );
    assert_eq!(a.metric_sum("edgefleet_agent_delta_downloads_total", "result=\"applied\"").await, 1.0);
    assert_eq!(a.metric_sum("edgefleet_agent_download_resumes_total", "").await, 1.0, "the delta resumed by Range");
    assert!(downloaded < full as f64 / 4.0, "{downloaded} bytes for a {full}-byte model");
    let report = status(&c, &a_id)["deltas"].clone();
    assert_eq!((report["applied"].clone(), report["fallbacks"].clone()), (json!(1), json!(0)), "{report}");
    assert_eq!(report["bytes_saved"].as_u64(), Some(full - delta_size), "{report}");
    let done = c.cli_json(&["rollout", "status", &rollout]);
    assert_eq!(
        done["delta_bytes_saved"].as_u64(),
        Some(full - delta_size),
        "the rollout reports what it saved: {done}"
    );

    // v3 (the base's bytes again): its delta from v2 is corrupted in the store. The device
    // refuses it, downloads the full artifact, verifies it and serves v3.
    let v3 = push(&c, "delta_base.onnx");
    let sha = v3["deltas"][0]["sha256"].as_str().expect("v3 has a delta from v2").to_owned();
    let newest = dir.path().join("controller/artifacts/blobs").join(&sha[..2]).join(format!("{}.zst", &sha[2..]));
    let mut bytes = std::fs::read(&newest).expect("read delta");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&newest, bytes).expect("corrupt delta");
    c.cli_json(&["deploy", "m:3", "--device", &a_id]);
    a.wait_serving("m", "3").await;
    until("the fallback reported", 60, async || status(&c, &a_id)["deltas"]["fallbacks"] == 1).await;
    let report = status(&c, &a_id)["deltas"].clone();
    assert!(report["last_fallback"].as_str().is_some_and(|w| w.contains("sha256")), "{report}");
    assert_eq!(a.metric_sum("edgefleet_agent_delta_downloads_total", "result=\"fallback\"").await, 1.0);

    // A fully retrained version: its delta is not smaller than half the full artifact, so it is
    // neither kept nor offered.
    let v4 = push(&c, "delta_retrained.onnx");
    let offered = v4["deltas"].as_array().map_or(0, Vec::len);
    eprintln!("retrained: {v4_deltas} (full {full4})", v4_deltas = v4["deltas"], full4 = full_size(&v4));
    c.cli_json(&["deploy", "m:4", "--device", &a_id]);
    a.wait_serving("m", "4").await;
    let report = status(&c, &a_id)["deltas"].clone();
    assert_eq!(report["applied"], 1, "no delta offered for a retrained model ({offered} made): {report}");

    // A device that never held the base gets the full artifact.
    let (b, b_id) = c.enroll_agent(dir.path(), "b", &["fleet=b"], &[]).await;
    until("b reports", 60, async || status(&c, &b_id)["deltas"].is_object()).await;
    c.cli_json(&["deploy", "m:2", "--device", &b_id]);
    b.wait_serving("m", "2").await;
    assert_eq!(b.metric_sum("edgefleet_agent_delta_downloads_total", "").await, 0.0);
    assert!(b.metric_sum("edgefleet_agent_download_bytes_total", "").await >= full as f64);
}

/// A device two versions behind: the delta from the version it runs is made when the
/// deployment is made (at push there was only the retrained version in between to make one from).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_delta_is_made_from_the_version_a_device_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(&dir.path().join("controller"));
    push(&c, "delta_base.onnx");
    push(&c, "delta_retrained.onnx");
    let v3 = push(&c, "delta_tuned.onnx");
    let small = v3["deltas"].as_array().into_iter().flatten().any(|d| d["size"].as_u64() < Some(full_size(&v3) / 2));
    assert!(!small, "at push, only the retrained v2 could be a base: {v3}");
    let (a, a_id) = c.enroll_agent(dir.path(), "a", &["fleet=a"], &[]).await;
    c.cli_json(&["deploy", "m:1", "--device", &a_id]);
    a.wait_serving("m", "1").await;
    until("the device reports v1", 60, async || {
        let s = status(&c, &a_id);
        s["active"]["version"] == 1 && s["deltas"].is_object()
    })
    .await;
    c.cli_json(&["deploy", "m:3", "--device", &a_id]);
    a.wait_serving("m", "3").await;
    assert_eq!(a.metric_sum("edgefleet_agent_delta_downloads_total", "result=\"applied\"").await, 1.0);
    until("the activation reports the bytes saved", 60, async || {
        status(&c, &a_id)["last_activation"]["delta_bytes_saved"].as_u64().is_some_and(|b| b > full_size(&v3) / 2)
    })
    .await;
}
