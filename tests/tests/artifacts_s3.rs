//! Artifacts on S3-compatible storage, against a real SeaweedFS (`weed server -s3` from PyPI on
//! free ports): a push lands in the bucket (nothing in the data directory), the operator route
//! streams ranges from it, a device is redirected to a presigned URL that serves the bytes
//! without credentials, agents download full artifacts and deltas straight from the bucket, and
//! an agent that cannot reach the bucket gets the bytes through the controller instead; a
//! filesystem store is copied into a bucket (`copy-artifacts`) and served from there.

mod common;

use std::path::Path;

use common::controller::{ADMIN, ControllerProcess};
use common::device::TestDevice;
use common::seaweed::{ACCESS_KEY, SECRET_KEY, Seaweed};
use common::{binary, metric, testdata, until};
use edgefleet_shared::verify::sha256_hex;
use reqwest::StatusCode;
use serde_json::Value;

const BUCKET: &str = "edgefleet";
const PREFIX: &str = "fleet-a";

fn push(c: &ControllerProcess, file: &str) -> Value {
    c.cli_json(&["model", "push", &testdata().join(file).to_string_lossy(), "--name", "m"])
}

/// `(sha256, compressed_sha256)` of the pushed model artifact.
fn model_artifact(pushed: &Value) -> (String, String) {
    let a = pushed["artifacts"].as_array().expect("artifacts").iter().find(|a| a["name"] == "model.onnx");
    let a = a.expect("model.onnx");
    (a["sha256"].as_str().expect("sha").to_owned(), a["compressed_sha256"].as_str().expect("sha").to_owned())
}

/// An object's bytes read back through SeaweedFS's own filer API (not through edgefleet).
async fn in_bucket(weed: &Seaweed, kind: &str, sha: &str) -> Option<Vec<u8>> {
    let url = format!("{}/buckets/{BUCKET}/{PREFIX}/{kind}/{}/{}.zst", weed.filer, &sha[..2], &sha[2..]);
    let resp = reqwest::get(url).await.expect("filer");
    (resp.status() == StatusCode::OK).then_some(resp.bytes().await.expect("bytes").to_vec())
}

/// A controller configuration with the bucket at `endpoint` (its secret in a file beside it).
fn write_config(dir: &Path, endpoint: &str) -> std::path::PathBuf {
    let secret = dir.join("s3.secret");
    std::fs::write(&secret, format!("{SECRET_KEY}\n")).expect("secret");
    let config = dir.join("controller.toml");
    let text = format!(
        "[artifacts.s3]\nendpoint = \"{endpoint}\"\nbucket = \"{BUCKET}\"\nprefix = \"{PREFIX}/\"\n\
         access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key_file = \"{}\"\npresign_secs = 300\n",
        secret.display()
    );
    std::fs::write(&config, text).expect("config");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn artifacts_live_in_the_bucket_and_devices_download_them_by_presigned_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(weed) = Seaweed::start(&dir.path().join("weed"), BUCKET) else {
        eprintln!("EDGEFLEET_TEST_PYTHON is not set: SeaweedFS comes with tests/run.sh.");
        return;
    };
    // `localhost`, not 127.0.0.1: the agent below that is told to use a dead proxy for every
    // host but 127.0.0.1 then reaches the controller and not the bucket.
    let endpoint = weed.s3.replace("127.0.0.1", "localhost");
    let config = write_config(dir.path(), &endpoint);
    let data = dir.path().join("controller");
    let c =
        ControllerProcess::start_with(&data, &["--mqtt-listen", "127.0.0.1:0", "--config", &config.to_string_lossy()]);

    // The push is in the bucket, byte for byte what the controller recorded; the data directory
    // holds no artifact.
    let v1 = push(&c, "delta_base.onnx");
    let (sha, compressed_sha) = model_artifact(&v1);
    let stored = in_bucket(&weed, "artifacts", &sha).await.expect("the model is in the bucket");
    assert_eq!(sha256_hex(&stored), compressed_sha);
    let local = std::fs::read_dir(data.join("artifacts")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(local, 0, "no artifact in the data directory");

    // Operators read through the controller: a range streamed from the bucket, and the bundle.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let resp = http
        .get(c.url(&format!("/api/v1/artifacts/{sha}")))
        .bearer_auth(ADMIN)
        .header("range", "bytes=100-")
        .send()
        .await
        .expect("range");
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await.expect("body"), stored[100..]);
    let bundle = http.get(c.url("/api/v1/models/m/versions/1/bundle")).bearer_auth(ADMIN).send().await.expect("bundle");
    assert_eq!(bundle.json::<Value>().await.expect("bundle JSON")["kind"], "edgefleet.bundle/v1");

    // A device is redirected to a presigned URL: no credentials in it, enough on its own; one
    // that asks for the bytes from the controller gets them there.
    let token = c.cli_json(&["device", "token", "create"])["token"].as_str().expect("token").to_owned();
    let device = TestDevice::enroll(&c, &token).await;
    c.cli_json(&["deploy", "m:1", "--device", &device.id]);
    let path = format!("/api/v1/devices/{}/artifacts/{sha}", device.id);
    let resp = device.request_with(&http, &c, reqwest::Method::GET, &path).send().await.expect("device GET");
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = resp.headers()["location"].to_str().expect("location").to_owned();
    assert!(location.starts_with(&format!("{endpoint}/{BUCKET}/{PREFIX}/artifacts/")), "{location}");
    assert!(location.contains("X-Amz-Signature=") && !location.contains(SECRET_KEY), "{location}");
    let direct = http.get(&location).header("range", "bytes=0-99").send().await.expect("presigned GET");
    assert_eq!(direct.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(direct.bytes().await.expect("body"), stored[..100]);
    let unsigned = http.get(location.split('?').next().expect("url")).send().await.expect("unsigned GET");
    assert!(unsigned.status().is_client_error(), "the bucket is not public: {}", unsigned.status());
    let here = device.request_with(&http, &c, reqwest::Method::GET, &path).header("x-edgefleet-via", "controller");
    let here = here.send().await.expect("via the controller");
    assert_eq!(here.status(), StatusCode::OK);
    assert_eq!(here.bytes().await.expect("body"), stored);

    // A real agent downloads v1 from the bucket, then v2 as a delta kept in the bucket too.
    let (a, a_id) = c.enroll_agent(dir.path(), "a", &[], &[]).await;
    c.cli_json(&["deploy", "m:1", "--device", &a_id]);
    a.wait_serving("m", "1").await;
    until("the device reports v1 and that it applies deltas", 60, async || {
        let status = &c.cli_json(&["device", "show", &a_id])["status"];
        status["active"]["version"] == 1 && status["deltas"].is_object()
    })
    .await;
    let v2 = push(&c, "delta_tuned.onnx");
    let delta_sha = v2["deltas"][0]["sha256"].as_str().expect("a delta").to_owned();
    assert!(in_bucket(&weed, "blobs", &delta_sha).await.is_some(), "the delta is in the bucket");
    c.cli_json(&["deploy", "m:2", "--device", &a_id]);
    a.wait_serving("m", "2").await;
    assert_eq!(a.metric_sum("edgefleet_agent_delta_downloads_total", "applied").await, 1.0);
    // v1's model and bundle, v2's bundle and delta.
    assert_eq!(a.metric_sum("edgefleet_agent_downloads_direct_total", "\"ok\"").await, 4.0);
    assert_eq!(a.metric_sum("edgefleet_agent_downloads_direct_total", "fallback").await, 0.0);

    // An agent whose every host but the controller's goes through a dead proxy cannot reach the
    // bucket: it gets v2 through the controller.
    let (proxy, no_proxy) = (Path::new("http://127.0.0.1:9"), Path::new("127.0.0.1"));
    let env = [("HTTP_PROXY", proxy), ("http_proxy", proxy), ("NO_PROXY", no_proxy), ("no_proxy", no_proxy)];
    let (b, b_id) = c.enroll_agent(dir.path(), "b", &[], &env).await;
    c.cli_json(&["deploy", "m:2", "--device", &b_id]);
    b.wait_serving("m", "2").await;
    assert_eq!(b.metric_sum("edgefleet_agent_downloads_direct_total", "fallback").await, 2.0);
    assert!(b.log().contains("could not be reached"), "{}", b.log());

    let scrape = reqwest::get(c.url("/metrics")).await.expect("metrics").text().await.expect("text");
    let redirects = metric(&scrape, "edgefleet_controller_artifact_redirects_total").unwrap_or(0.0);
    assert!(redirects >= 7.0, "the device's, a's four and b's two downloads were redirected: {redirects}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filesystem_store_is_copied_into_a_bucket_and_served_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(weed) = Seaweed::start(&dir.path().join("weed"), BUCKET) else {
        eprintln!("EDGEFLEET_TEST_PYTHON is not set: SeaweedFS comes with tests/run.sh.");
        return;
    };
    let data = dir.path().join("controller");
    let c = ControllerProcess::start(&data);
    let v1 = push(&c, "delta_base.onnx");
    let v2 = push(&c, "delta_tuned.onnx");
    let delta_sha = v2["deltas"][0]["sha256"].as_str().expect("a delta").to_owned();
    let (sha, compressed_sha) = model_artifact(&v1);
    let local = c.download(&format!("/api/v1/artifacts/{sha}")).await.expect("body");
    c.stop();

    let config = write_config(dir.path(), &weed.s3);
    let copy = || {
        let out = common::controller::controller_cmd(&data)
            .args(["copy-artifacts", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("copy-artifacts");
        assert!(out.status.success(), "copy-artifacts: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("report")
    };
    // Two versions' model and bundle, and the delta between them.
    let first = copy();
    assert_eq!((first["copied"].as_u64(), first["present"].as_u64()), (Some(5), Some(0)), "{first}");
    let again = copy();
    assert_eq!((again["copied"].as_u64(), again["present"].as_u64()), (Some(0), Some(5)), "{again}");
    assert_eq!(in_bucket(&weed, "artifacts", &sha).await.map(|b| sha256_hex(&b)), Some(compressed_sha));
    assert!(in_bucket(&weed, "blobs", &delta_sha).await.is_some());

    // The data directory's copies are gone: the controller serves from the bucket.
    std::fs::remove_dir_all(data.join("artifacts")).expect("remove the local store");
    let c =
        ControllerProcess::start_with(&data, &["--mqtt-listen", "127.0.0.1:0", "--config", &config.to_string_lossy()]);
    let http = reqwest::Client::new();
    let served =
        http.get(c.url(&format!("/api/v1/artifacts/{sha}"))).bearer_auth(ADMIN).send().await.expect("download");
    assert_eq!(served.bytes().await.expect("body"), local);
    let bundle = http.get(c.url("/api/v1/models/m/versions/2/bundle")).bearer_auth(ADMIN).send().await.expect("bundle");
    assert_eq!(bundle.json::<Value>().await.expect("bundle JSON")["version"], 2);

    // A bucket that does not exist is refused at start, naming it.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, std::fs::read_to_string(&config).expect("config").replace(BUCKET, "no-such-bucket"))
        .expect("write");
    let out = std::process::Command::new(binary("edgefleet-controller"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-mqtt", "--data-dir"])
        .arg(dir.path().join("other"))
        .arg("--config")
        .arg(&wrong)
        .output()
        .expect("serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no-such-bucket"), "{stderr}");
}
