//! Telemetry test fleets: a controller with short drift windows, agents that sample every row,
//! iris traffic (as in the baseline, or shifted), and a read-only look at the stored samples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::controller::ControllerProcess;
use super::{AgentProcess, strs, testdata, until};

/// The iris baseline rows (150 × 4).
pub fn iris_rows() -> Vec<[f32; 4]> {
    let text = std::fs::read_to_string(testdata().join("iris_baseline.csv")).expect("iris_baseline.csv");
    text.lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f32> = l.split(',').map(|x| x.parse().expect("number")).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect()
}

/// A row moved well outside the baseline on every feature.
pub fn shifted(row: [f32; 4]) -> [f32; 4] {
    [row[0] + 1.5, row[1] + 1.0, row[2] + 2.5, row[3] + 1.2]
}

/// Writes an agent config: 1 s batches, every row sampled, no caps in the way, the given spool.
pub fn agent_config(dir: &Path, spool_max_bytes: u64) -> PathBuf {
    let path = dir.join("agent-telemetry.toml");
    std::fs::write(
        &path,
        format!(
            "[telemetry]\nflush_interval_secs = 1\nsample_rate = 1.0\nsamples_per_minute = 1000000\n\
             samples_per_hour = 1000000\nspool_max_bytes = {spool_max_bytes}\n"
        ),
    )
    .expect("agent config");
    path
}

/// Infers one row with request id `id`; true when answered.
pub async fn infer(http: &reqwest::Client, agent: &AgentProcess, id: &str, row: [f32; 4]) -> bool {
    let body =
        serde_json::json!({"id": id, "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]});
    let r = http.post(agent.url("/v2/models/iris/infer")).json(&body).timeout(Duration::from_secs(5)).send().await;
    r.is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
}

/// Waits until `agent` serves iris version `version` (without sending inference traffic).
pub async fn wait_serving(http: &reqwest::Client, agent: &AgentProcess, version: &str) {
    until(&format!("iris:{version} on {}", agent.base), 90, async || {
        let r = http.get(agent.url("/v2/models/iris")).send().await;
        match r {
            Ok(r) => r.json::<serde_json::Value>().await.is_ok_and(|m| m["versions"][0] == version),
            Err(_) => false,
        }
    })
    .await;
}

/// Pushes iris (v1) with its baseline, creates an enrollment token for `n` devices labelled
/// `group=lab`, starts `n` agents with `extra` arguments each, waits for enrollment, deploys v1
/// and waits until every agent serves it. Returns the agents and their data directories.
pub async fn fleet(
    c: &ControllerProcess,
    dir: &Path,
    configs: &[PathBuf],
    http: &reqwest::Client,
) -> Vec<(AgentProcess, PathBuf)> {
    let model = testdata().join("iris_logreg.onnx");
    let baseline = testdata().join("iris_baseline.csv");
    c.cli_json(&[
        "model",
        "push",
        &model.to_string_lossy(),
        "--name",
        "iris",
        "--baseline",
        &baseline.to_string_lossy(),
    ]);
    let trust = c.trust_file(dir);
    let uses = configs.len().to_string();
    let token = c.cli_json(&["device", "token", "create", "--uses", &uses, "--label", "group=lab"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut agents = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let data = dir.join(format!("agent-{i}"));
        let mut args = c.agent_args(&trust, &data, 0);
        args.extend(["--enroll-token".to_owned(), token.clone(), "--config".to_owned()]);
        args.push(config.display().to_string());
        agents.push((AgentProcess::run(&strs(&args)), data));
    }
    until("every agent enrolled", 60, async || {
        c.cli_json(&["device", "list"]).as_array().is_some_and(|a| a.len() == configs.len())
    })
    .await;
    c.cli_json(&["deploy", "iris:1", "--selector", "group=lab"]);
    for (agent, _) in &agents {
        wait_serving(http, agent, "1").await;
    }
    agents
}

/// One stored sample, as the controller's database holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    pub device: String,
    pub request_id: Option<String>,
    pub inputs: Vec<f64>,
    pub at_ms: i64,
}

/// Every sampled row the controller stored for iris, read-only, in id order.
pub fn stored_samples(controller_data: &Path) -> Vec<StoredSample> {
    const QUERY: &str =
        "SELECT device_id, request_id, inputs, at_ms FROM telemetry_samples WHERE model = 'iris' ORDER BY id";
    if let Some(url) = super::controller::postgres_database(controller_data) {
        // psql's unaligned rows: NULL prints as the marker, fields split on the unit separator.
        return super::postgres::Postgres::rows(&url, QUERY)
            .into_iter()
            .map(|f| StoredSample {
                device: f[0].clone(),
                request_id: (f[1] != super::postgres::NULL).then(|| f[1].clone()),
                inputs: serde_json::from_str(&f[2]).unwrap_or_default(),
                at_ms: f[3].parse().expect("at_ms"),
            })
            .collect();
    }
    let conn = rusqlite::Connection::open_with_flags(
        controller_data.join("controller.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the controller database");
    let mut stmt = conn.prepare(QUERY).expect("query");
    stmt.query_map([], |r| {
        Ok(StoredSample {
            device: r.get(0)?,
            request_id: r.get(1)?,
            inputs: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
            at_ms: r.get(3)?,
        })
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("samples")
}

/// Stored samples per request id (asserting none is stored twice).
pub fn by_request_id(samples: &[StoredSample]) -> BTreeMap<String, StoredSample> {
    let mut map = BTreeMap::new();
    for s in samples {
        let id = s.request_id.clone().expect("every test request has an id");
        assert!(map.insert(id.clone(), s.clone()).is_none(), "request {id} stored twice");
    }
    map
}

/// The values of `row` as the controller stores them (f32 printed shortest, read as f64).
pub fn as_stored(row: [f32; 4]) -> Vec<f64> {
    row.iter().map(|v| v.to_string().parse::<f64>().expect("number")).collect()
}

/// A signed-ready telemetry batch `sequence` of `device` with `samples` sampled iris rows of
/// model iris v1, for tests that publish telemetry themselves.
pub fn iris_batch(device: &str, sequence: u64, samples: usize) -> edgefleet_shared::telemetry::TelemetryBatch {
    use edgefleet_shared::telemetry::{ModelTelemetry, Sample, TelemetryBatch};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let sample = |i: usize| Sample {
        request_id: Some(format!("r-{sequence}-{i}")),
        at_ms: now * 1000 + i as u64,
        inputs: vec![5.1, 3.5, 1.4 + i as f32 * 0.1, 0.2],
        outputs: vec![0.9, 0.05, 0.05],
        predicted: Some(0),
        low_confidence: false,
    };
    let iris = ModelTelemetry {
        model: "iris".into(),
        version: 1,
        rows: samples as u64,
        output_classes: vec![samples as u64],
        samples: (0..samples).map(sample).collect(),
        ..Default::default()
    };
    TelemetryBatch::new(device, sequence, (now - 1, now), vec![iris])
}
