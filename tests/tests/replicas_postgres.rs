//! The scale-out deployment, every component real and started here on free loopback ports:
//! two controller replicas sharing one PostgreSQL (Debian's, through tests/postgres-cluster.sh),
//! one S3-compatible bucket (SeaweedFS from PyPI) and one Mosquitto (shared subscriptions,
//! dynamic security), ten agents. A push lands in the bucket and the database (no SQLite file,
//! no artifact on disk); a rollout in waves with gates is started through one replica, which is
//! killed with SIGKILL while the first wave bakes, and the other resumes and completes it; then,
//! with both replicas up again, shifted traffic on every agent flows as telemetry split between
//! the replicas, stored once per device and sequence, is flagged as drift and makes one retrain
//! request, seen through either replica. And a SQLite controller moved to PostgreSQL with
//! `edgefleet-controller migrate` keeps its registry, fleet, tokens and audit.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::controller::{ADMIN, ControllerProcess, LEADS, controller_cmd, kill_leader_mid_rollout};
use common::device::TestDevice;
use common::mosquitto::MosquittoSetup;
use common::postgres::Postgres;
use common::seaweed::{ACCESS_KEY, SECRET_KEY, Seaweed};
use common::telemetry::{agent_config, infer, iris_rows, shifted};
use common::{AgentProcess, metric, strs, testdata, until};

const AGENTS: usize = 10;
const BUCKET: &str = "edgefleet";

/// A replica's configuration: the shared database, bucket and broker group.
fn replica_args(setup: &MosquittoSetup, dir: &Path, name: &str, database: &str, s3: &str) -> Vec<String> {
    let secret = dir.join("s3.secret");
    std::fs::write(&secret, SECRET_KEY).expect("secret");
    setup.controller_args_with(
        &dir.join(format!("{name}.toml")),
        &format!("client_id = \"replica-{name}\"\nshared_group = \"edgefleet\"\n"),
        &format!(
            "[server]\nreplica_id = \"{name}\"\nlease_secs = 3\n\n[database]\nurl = \"{database}\"\n\n\
             [artifacts.s3]\nendpoint = \"{s3}\"\nbucket = \"{BUCKET}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
             secret_access_key_file = \"{}\"\n\n[telemetry]\nwindow_secs = 2\nsettle_secs = 3\n\n\
             [retrain.policy]\nwindows = 3\nmin_rows = 20\n",
            secret.display()
        ),
    )
}

async fn leads(c: &ControllerProcess) {
    until("a replica holding the lease", 30, async || c.stderr.try_iter().any(|l| l.contains(LEADS))).await;
}

async fn accepted(c: &ControllerProcess) -> f64 {
    let text = reqwest::get(c.url("/metrics")).await.expect("metrics").text().await.expect("text");
    metric(&text, "edgefleet_controller_telemetry_batches_total{result=\"accepted\"}").unwrap_or(0.0)
}

/// The baseline row for request `n` sent round-robin to `agents`: each agent cycles through
/// every row (a stride coprime with the row count), so each one's traffic is like the baseline.
fn row_for(n: usize, agents: usize, rows: usize) -> usize {
    ((n / agents) * 37 + n % agents) % rows
}

fn count(database: &str, sql: &str) -> u64 {
    Postgres::query(database, sql).first().and_then(|l| l.parse().ok()).expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_postgres_s3_and_mosquitto_run_the_whole_loop_through_a_replica_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The cluster runs as the `postgres` user when the tests run as root: it must reach its dir.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let Some(weed) = Seaweed::start(&dir.path().join("weed"), BUCKET) else {
        eprintln!("EDGEFLEET_TEST_PYTHON is not set: SeaweedFS comes with tests/run.sh.");
        return;
    };
    let pg = Postgres::start(&dir.path().join("pg"));
    let database = pg.database("edgefleet");
    // The replicas share the data directory for their keys (signing key, device CA) and the
    // retrain snapshots; registry and fleet state are in PostgreSQL, artifacts in the bucket.
    let data = dir.path().join("controller");
    let setup = MosquittoSetup::new(&dir.path().join("mq"), &data, false);
    let _mosquitto = setup.start();
    let args = |name: &str| replica_args(&setup, dir.path(), name, &database, &weed.s3);
    // The environment too: it overrides `[database] url`, and would otherwise carry the suite's
    // PostgreSQL pass's database (tests/run.sh).
    let env = [("EDGEFLEET_DATABASE_URL", Path::new(&database))];
    let start = |name: &str| ControllerProcess::start_with_env(&data, &strs(&args(name)), &env);
    let a = start("a");
    leads(&a).await;
    let mut b = start("b");
    b.agent_extra = setup.agent_args();

    // The push: its artifacts in the bucket, its version in PostgreSQL, nothing on disk.
    let pushed = a.cli_json(&[
        "model",
        "push",
        &testdata().join("iris_logreg.onnx").to_string_lossy(),
        "--name",
        "iris",
        "--baseline",
        &testdata().join("iris_baseline.csv").to_string_lossy(),
    ]);
    let sha = pushed["artifacts"][0]["sha256"].as_str().expect("sha256").to_owned();
    let object = format!("{}/buckets/{BUCKET}/artifacts/{}/{}.zst", weed.filer, &sha[..2], &sha[2..]);
    assert_eq!(reqwest::get(&object).await.expect("filer").status(), 200, "{object} is in the bucket");
    assert_eq!(count(&database, "SELECT COUNT(*) FROM versions"), 1);
    assert!(!data.join("controller.db").exists(), "no SQLite database beside PostgreSQL");
    assert_eq!(std::fs::read_dir(data.join("artifacts")).map(|d| d.count()).unwrap_or(0), 0, "no artifact on disk");
    assert_eq!(b.cli_json(&["model", "show", "iris:1"])["version"], 1, "b reads what a pushed");
    // No drift judging while the rollout runs (its traffic reaches a few devices at first).
    b.cli_json(&["retrain", "policy", "iris", "--enabled", "false"]);

    // Ten agents, enrolled through b, sampling every row into 1 s telemetry batches.
    let agent_conf = agent_config(dir.path(), 64 << 20);
    let trust = b.trust_file(dir.path());
    let token = b.cli_json(&["device", "token", "create", "--uses", "10", "--label", "fleet=r"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let agents: Vec<AgentProcess> = (0..AGENTS)
        .map(|i| {
            let mut args = b.agent_args(&trust, &dir.path().join(format!("agent-{i}")), 1);
            args.extend(["--enroll-token".into(), token.clone(), "--config".into(), agent_conf.display().to_string()]);
            AgentProcess::run(&strs(&args))
        })
        .collect();
    until("every agent enrolled", 60, async || {
        a.cli_json(&["device", "list"]).as_array().is_some_and(|d| d.len() == AGENTS)
    })
    .await;

    // A rollout in three waves with gates under live traffic, started through a (the lease
    // holder); a is killed while the first wave bakes, b takes the lease and completes it, each
    // wave advanced once.
    let urls: Vec<String> = agents.iter().map(|a| a.url("/v2/models/iris/infer")).collect();
    let traffic = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let rows = iris_rows();
        for n in 0usize.. {
            let row = rows[row_for(n, urls.len(), rows.len())];
            let body = serde_json::json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]});
            // Agents not serving yet answer 404: only served requests count in the gates.
            let _ = http.post(&urls[n % urls.len()]).json(&body).timeout(Duration::from_secs(5)).send().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let created = a.cli_json(&[
        "rollout",
        "create",
        "iris:1",
        "--selector",
        "fleet=r",
        "--waves",
        "20,60,100",
        "--bake",
        "4s",
        "--gate",
        "error_rate<0.05",
    ]);
    let id = created["id"].to_string();
    let took = kill_leader_mid_rollout(a, &b, &id).await;
    eprintln!("the rollout completed {took:.1} s after its owner was killed");
    traffic.abort();
    for agent in &agents {
        agent.wait_serving("iris", "1").await;
    }
    let advanced =
        count(&database, &format!("SELECT COUNT(*) FROM audit WHERE action = 'rollout.advance' AND target = '{id}'"));
    assert_eq!(advanced, 2, "waves two and three, each advanced once");

    // Replica a again, judging on again through it; shifted traffic on every agent until drift
    // makes a retrain request.
    let a = start("a");
    a.cli_json(&["retrain", "policy", "iris", "--enabled", "true"]);
    let http = reqwest::Client::new();
    let rows = iris_rows();
    let started = Instant::now();
    let mut n = 0usize;
    loop {
        for agent in &agents {
            let row = shifted(rows[row_for(n, agents.len(), rows.len())]);
            assert!(infer(&http, agent, &format!("r{n}"), row).await, "answered");
            n += 1;
        }
        if n.is_multiple_of(100) && !a.cli_json(&["retrain", "list"]).as_array().expect("list").is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "no retrain request after 90 s of drift");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("{n} shifted requests to a retrain request in {:.1} s", started.elapsed().as_secs_f64());
    let list_a = a.cli_json(&["retrain", "list"]);
    assert_eq!(list_a, b.cli_json(&["retrain", "list"]), "either replica answers the same");
    assert_eq!(list_a.as_array().map(Vec::len), Some(1), "one request: {list_a}");
    let csv = a.download("/api/v1/retrain/1/files/data.csv").await.expect("csv");
    assert!(csv.len() > 100, "the snapshot downloads through either replica");

    // Every telemetry batch stored once per (device, sequence) and none lost: each device's
    // sequences run without a gap (the last ones may still be on their way, or queued in the
    // broker for a while it was down), both replicas taking a share.
    until("every device's batches stored without a gap", 30, async || {
        count(
            &database,
            "SELECT COUNT(*) FROM (SELECT device_id FROM telemetry_batches GROUP BY device_id
             HAVING COUNT(*) <> MAX(sequence) - MIN(sequence) + 1) gaps",
        ) == 0
    })
    .await;
    let counts = Postgres::query(
        &database,
        "SELECT COUNT(*), COUNT(DISTINCT (device_id, sequence)), COUNT(DISTINCT device_id) FROM telemetry_batches",
    );
    let [stored, distinct, devices]: [u64; 3] =
        counts[0].split('|').map(|n| n.parse().expect("count")).collect::<Vec<_>>().try_into().expect("three counts");
    let (by_a, by_b) = (accepted(&a).await, accepted(&b).await);
    eprintln!("{stored} batches from {devices} devices; since a restarted, a stored {by_a} and b {by_b}");
    assert_eq!(stored, distinct, "no batch stored twice");
    assert_eq!(devices, AGENTS as u64);
    assert!(by_a > 0.0 && by_b > 0.0, "both replicas took a share: {by_a} + {by_b}");
    let data_path: PathBuf = data;
    assert!(!data_path.join("controller.db").exists(), "still no SQLite database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_controller_moves_to_postgres_with_everything_it_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let pg = Postgres::start(&dir.path().join("pg"));
    let database = pg.database("moved");
    let data = dir.path().join("controller");
    // On SQLite whatever pass of the suite this is (an empty URL is no URL).
    let sqlite = [("EDGEFLEET_DATABASE_URL", Path::new(""))];
    let c = ControllerProcess::start_with_env(&data, &["--mqtt-listen", "127.0.0.1:0"], &sqlite);
    for _ in 0..2 {
        c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    }
    c.cli_json(&["model", "alias", "iris:2", "production"]);
    let viewer = c.cli_json(&["token", "create", "--role", "viewer", "--name", "dashboard"]);
    let enroll =
        c.cli_json(&["device", "token", "create", "--label", "site=x"])["token"].as_str().expect("token").to_owned();
    let device = TestDevice::enroll(&c, &enroll).await;
    let audit_before = c.cli_json(&["audit", "--limit", "500"]).as_array().map_or(0, Vec::len);
    c.stop();

    let migrate = || {
        controller_cmd(&data)
            .args(["migrate", "--from"])
            .arg(format!("sqlite:{}", data.join("controller.db").display()))
            .args(["--to", &database])
            .output()
            .expect("migrate")
    };
    let out = migrate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("versions") && stdout.contains("devices"), "{stdout}");
    // A second run finds rows there and changes nothing.
    let again = migrate();
    assert!(!again.status.success(), "a non-empty destination is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{}", String::from_utf8_lossy(&again.stderr));

    let env = [("EDGEFLEET_DATABASE_URL", Path::new(&database))];
    let moved = ControllerProcess::start_with_env(&data, &["--mqtt-listen", "127.0.0.1:0"], &env);
    std::fs::remove_file(data.join("controller.db")).expect("the SQLite file is no longer read");
    assert_eq!(moved.cli_json(&["model", "show", "iris:production"])["version"], 2);
    let devices = moved.cli_json(&["device", "list"]);
    assert_eq!(devices[0]["id"].as_str(), Some(device.id.as_str()), "{devices}");
    assert_eq!(devices[0]["labels"]["site"], "x");
    let viewer_token = viewer["token"].as_str().expect("secret");
    let seen = moved.cli(viewer_token, &["--output", "json", "model", "list"]);
    assert!(seen.status.success(), "the viewer's token still signs in: {}", String::from_utf8_lossy(&seen.stderr));
    let audit_after = moved.cli_json(&["audit", "--limit", "500"]).as_array().map_or(0, Vec::len);
    assert!(audit_after >= audit_before, "audit kept: {audit_before} -> {audit_after}");
    // New rows continue after the copied ids.
    let pushed =
        moved.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "mlp"]);
    assert_eq!(pushed["version"], 1, "{pushed}");
    let another = moved.cli_json(&["token", "create", "--role", "viewer", "--name", "second"]);
    assert!(another["id"].as_i64() > viewer["id"].as_i64(), "{another} after {viewer}");
    assert_eq!(moved.cli(ADMIN, &["device", "list"]).status.code(), Some(0));
}
