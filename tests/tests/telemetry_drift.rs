//! The drift loop end to end: two agents serve iris traffic drawn like the baseline (no drift
//! flagged, no retrain request), then shifted traffic: drift is flagged within the policy's
//! three windows, one retrain request is created whose snapshot holds exactly the sampled rows
//! stored before its cutoff, a webhook receiver gets it HMAC-signed (after one 503 and a retry),
//! the configured command runs with the snapshot in its environment, and a version pushed with
//! the snapshot's hash is linked to it. Feedback labels give the accuracy.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::controller::{ADMIN, ControllerProcess};
use common::telemetry::{agent_config, as_stored, by_request_id, fleet, infer, iris_rows, shifted, stored_samples};
use common::{testdata, until};
use hmac::{KeyInit as _, Mac as _};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SECRET: &str = "webhook-secret-for-tests";

/// One webhook delivery: headers (lower-case names) and body.
type Delivery = (BTreeMap<String, String>, Vec<u8>);

/// A minimal HTTP/1.1 receiver: answers 503 to the first POST and 200 after, recording each.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let seen: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let header_end = loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(p + 4);
                }
            };
            let Some(header_end) = header_end else { continue };
            let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
            let headers: BTreeMap<String, String> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < header_end + length {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[header_end..].to_vec();
            let first = {
                let mut seen = log.lock().expect("lock");
                seen.push((headers, body));
                seen.len() == 1
            };
            let status = if first { "503 Service Unavailable" } else { "200 OK" };
            let _ = stream
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                .await;
        }
    });
    (url, seen)
}

/// Sends `rows` round-robin to the agents with ids `{prefix}-{n}`; returns id → row.
struct Traffic {
    sent: BTreeMap<String, [f32; 4]>,
    n: usize,
}

impl Traffic {
    async fn send(&mut self, http: &reqwest::Client, agents: &[&common::AgentProcess], prefix: &str, row: [f32; 4]) {
        let id = format!("{prefix}-{}", self.n);
        let agent = agents[self.n % agents.len()];
        self.n += 1;
        assert!(infer(http, agent, &id, row).await, "request {id} failed");
        self.sent.insert(id, row);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifted_traffic_triggers_one_retrain_request_with_an_exact_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook, deliveries) = webhook_receiver().await;
    std::fs::write(dir.path().join("secret"), SECRET).expect("secret");
    let out = dir.path().join("command-out");
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[telemetry]\nwindow_secs = 2\nsettle_secs = 3\n\n[retrain]\nwebhook_url = \"{hook}\"\n\
             webhook_secret_file = \"{}\"\nwebhook_attempts = 4\nformat = [\"csv\", \"parquet\"]\n\
             command = 'cp \"$EDGEFLEET_SNAPSHOT_MANIFEST\" {out}.json && printf %s \"$EDGEFLEET_DATASET_SHA256\" > {out}.sha'\n\n\
             [retrain.policy]\nwindows = 3\nmin_rows = 20\n",
            dir.path().join("secret").display(),
            out = out.display()
        ),
    )
    .expect("controller config");
    let c = ControllerProcess::start_with(
        &dir.path().join("controller"),
        &["--mqtt-listen", "127.0.0.1:0", "--config", &config.to_string_lossy()],
    );
    let http = reqwest::Client::new();
    let agent_conf = agent_config(dir.path(), 64 << 20);
    let agents = fleet(&c, dir.path(), &[agent_conf.clone(), agent_conf], &http).await;
    let refs: Vec<&common::AgentProcess> = agents.iter().map(|(a, _)| a).collect();
    let rows = iris_rows();
    // Rows in a stride that mixes the classes (the file is sorted by class).
    let pick = |n: usize| (n * 37) % rows.len();
    let mut traffic = Traffic { sent: BTreeMap::new(), n: 0 };

    // Phase A: traffic like the baseline for five windows, with labels for half of it.
    let started = Instant::now();
    let mut labels = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        let ix = pick(traffic.n);
        if traffic.n.is_multiple_of(2) {
            labels.push((format!("a-{}", traffic.n), ix / 50, traffic.n % refs.len()));
        }
        traffic.send(&http, &refs, "a", rows[ix]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (agent_ix, agent) in refs.iter().enumerate() {
        let feedback: Vec<serde_json::Value> = labels
            .iter()
            .filter(|l| l.2 == agent_ix)
            .map(|(id, class, _)| serde_json::json!({"id": id, "label": class}))
            .collect();
        let r = http
            .post(agent.url("/v2/models/iris/feedback"))
            .json(&serde_json::json!({ "feedback": feedback }))
            .send()
            .await
            .expect("feedback");
        assert_eq!(r.status(), 200);
        let answer: serde_json::Value = r.json().await.expect("json");
        assert_eq!(answer["matched"], answer["accepted"], "every label matches a prediction: {answer}");
    }
    let bad = http.post(refs[0].url("/v2/models/iris/feedback")).body("{\"id\": 3}").send().await.expect("post");
    assert_eq!(bad.status(), 400, "a label without a class is refused");

    until("phase A telemetry stored", 30, async || stored_samples(&c.data_dir).len() == traffic.sent.len()).await;
    let report = c.cli_json(&["drift", "report", "iris:1", "--window", "8s"]);
    assert!(report["rows"].as_u64().unwrap_or(0) >= 200, "{report}");
    for f in report["features"].as_array().expect("features") {
        assert_ne!(f["status"], "drift", "no drift on baseline-like traffic: {f}");
    }
    let accuracy = &report["accuracy"];
    assert!(accuracy["labeled"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(accuracy["accuracy"].as_f64().unwrap_or(0.0) > 0.9, "the iris model is accurate: {accuracy}");
    assert_eq!(c.cli_json(&["retrain", "list"]), serde_json::json!([]), "no retrain request on baseline traffic");

    // Phase B: shifted traffic until the policy fires.
    let shift_started = Instant::now();
    loop {
        traffic.send(&http, &refs, "b", shifted(rows[pick(traffic.n)])).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if traffic.n.is_multiple_of(20) && !c.cli_json(&["retrain", "list"]).as_array().expect("list").is_empty() {
            break;
        }
        assert!(shift_started.elapsed() < Duration::from_secs(60), "no retrain request after 60 s of drift");
    }
    let detected = shift_started.elapsed();
    eprintln!("shifted traffic to retrain request: {detected:?}");
    // Three drifting 2 s windows, 3 s settling, a 1 s batch interval, a 1 s judging tick.
    assert!(detected < Duration::from_secs(20), "drift took {detected:?} to trigger");

    let report = c.cli_json(&["drift", "report", "iris:1", "--window", "4s"]);
    for f in report["features"].as_array().expect("features") {
        assert_eq!(f["status"], "drift", "every feature drifted: {f}");
        assert_eq!(f["ks_drift"], true, "{f}");
        assert_eq!(f["wasserstein_drift"], true, "{f}");
    }
    let table = c.cli(ADMIN, &["drift", "report", "iris"]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("petal_length"), "the table names the features");

    // Everything sent is stored exactly once, with the values sent.
    until("all telemetry stored", 30, async || stored_samples(&c.data_dir).len() == traffic.sent.len()).await;
    let stored = by_request_id(&stored_samples(&c.data_dir));
    assert_eq!(stored.len(), traffic.sent.len());
    for (id, row) in &traffic.sent {
        assert_eq!(stored[id].inputs, as_stored(*row), "request {id}");
    }

    // One request; its snapshot is exactly the stored samples before its cutoff.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list = c.cli_json(&["retrain", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let request = &list[0];
    let manifest = &request["manifest"];
    let until_ms = manifest["time_range"]["until_ms"].as_i64().expect("cutoff");
    let csv = c.download("/api/v1/retrain/1/files/data.csv").await.expect("csv");
    let sha = hex::encode(sha2::Sha256::digest(&csv));
    assert_eq!(request["dataset_sha256"], sha.as_str());
    assert_eq!(manifest["files"][0]["sha256"], sha.as_str());
    let text = String::from_utf8(csv.to_vec()).expect("utf-8");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "sepal_length,sepal_width,petal_length,petal_width,predicted,label,device_id,device_group,request_id,at_ms"
        )
    );
    let snapshot: BTreeMap<String, Vec<f64>> = lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[8].to_owned(), cells[..4].iter().map(|v| v.parse().expect("value")).collect())
        })
        .collect();
    let expected: BTreeMap<String, Vec<f64>> =
        stored.iter().filter(|(_, s)| s.at_ms < until_ms).map(|(id, s)| (id.clone(), s.inputs.clone())).collect();
    assert_eq!(snapshot.len(), manifest["rows"].as_u64().expect("rows") as usize);
    assert_eq!(snapshot, expected, "the snapshot holds exactly the sampled rows before its cutoff");
    assert!(snapshot.keys().any(|k| k.starts_with("b-")), "the drifted rows are in it");
    let labelled = text.lines().skip(1).filter(|l| l.split(',').nth(5).is_some_and(|v| !v.is_empty())).count();
    assert_eq!(labelled, labels.len(), "feedback labels are joined to their rows");

    // The same rows as Parquet, read by pandas and polars.
    let parquet = http
        .get(c.url("/api/v1/retrain/1/files/data.parquet"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("download")
        .error_for_status()
        .expect("data.parquet")
        .bytes()
        .await
        .expect("parquet");
    assert_eq!(manifest["files"][1]["path"], "data.parquet");
    assert_eq!(manifest["files"][1]["sha256"], hex::encode(sha2::Sha256::digest(&parquet)).as_str());
    assert_eq!(&parquet[..4], b"PAR1");
    let (csv_file, parquet_file) = (dir.path().join("data.csv"), dir.path().join("data.parquet"));
    std::fs::write(&csv_file, &csv).expect("csv copy");
    std::fs::write(&parquet_file, &parquet).expect("parquet copy");
    let rows = snapshot.len().to_string();
    let (csv_arg, parquet_arg) = (csv_file.to_string_lossy(), parquet_file.to_string_lossy());
    let features = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    let args: Vec<&str> = [&*csv_arg, &*parquet_arg, &rows].into_iter().chain(features).collect();
    if let Some(out) = common::python_client("snapshot_parquet.py", &args) {
        eprintln!("snapshot_parquet.py: {out}");
    }

    // The webhook: one 503, then delivered; both carry a valid HMAC over the body.
    until("webhook delivered", 30, async || {
        c.cli_json(&["retrain", "show", "1"])["delivery"]["webhook"]["state"] == "delivered"
    })
    .await;
    let seen = deliveries.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "one retry after the 503");
    for (headers, body) in &seen {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers.get("x-edgefleet-signature"), Some(&expected));
        let payload: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
        assert_eq!(payload["event"], "retrain.requested");
        assert_eq!(payload["request"]["dataset_sha256"], sha.as_str());
        assert_eq!(payload["request"]["model"], "iris");
    }
    until("the command ran", 30, async || {
        c.cli_json(&["retrain", "show", "1"])["delivery"]["command"]["state"] == "succeeded"
    })
    .await;
    assert_eq!(std::fs::read_to_string(out.with_extension("sha")).expect("command output"), sha);
    let copied: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("json")).expect("manifest copy")).expect("json");
    assert_eq!(copied["dataset_sha256"], sha.as_str());

    // Lineage: a version trained on the snapshot names its hash.
    let model = testdata().join("iris_logreg.onnx");
    c.cli_json(&["model", "push", &model.to_string_lossy(), "--name", "iris", "--dataset-hash", &sha]);
    assert_eq!(c.cli_json(&["retrain", "show", "1"])["trained_versions"], serde_json::json!([2]));
}
