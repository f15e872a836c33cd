//! MLflow → edgefleet against a real tracking server (`mlflow server` from PyPI on a free port,
//! SQLite backend, its artifact proxy): a run trains a scikit-learn classifier, converts it to
//! ONNX and registers it (tests/clients/mlflow_register.py); `edgefleet model import` brings it
//! in with its params, metrics, commit, dataset digest and baseline; a second import finds the
//! first; a follower of the alias starts a rollout of the version it points at and, when the
//! alias moves to a newly registered version, imports that one and rolls it out to the device.

mod common;

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::controller::{ADMIN, ControllerProcess};
use common::{AgentProcess, ProcessGroup, binary, python_client, served_version_at, strs, until};

/// `mlflow server` in its own process group (it runs uvicorn as a child), stopped on drop.
struct MlflowServer {
    /// Stopped, with uvicorn, on drop.
    _group: ProcessGroup,
    url: String,
}

impl MlflowServer {
    fn start(python: &Path, dir: &Path) -> MlflowServer {
        let mlflow = python.with_file_name("mlflow");
        let log = dir.join("mlflow.log");
        let mut child = ProcessGroup::spawn(
            Command::new(&mlflow)
                .args(["server", "--host", "127.0.0.1", "--port", "0", "--workers", "1", "--backend-store-uri"])
                .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
                .arg("--artifacts-destination")
                .arg(dir.join("artifacts"))
                // No job runner (a dozen huey worker processes this test has no use for).
                .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log")),
        )
        .expect("start mlflow server");
        let deadline = Instant::now() + Duration::from_secs(120);
        let marker = "Uvicorn running on http://127.0.0.1:";
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = text.split(marker).nth(1).and_then(|r| r.split(' ').next()) {
                let server = MlflowServer { _group: child, url: format!("http://127.0.0.1:{port}") };
                wait_healthy(&server.url, deadline);
                return server;
            }
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("mlflow server exited ({status}): {text}");
            }
            assert!(Instant::now() < deadline, "mlflow server did not start: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn wait_healthy(url: &str, deadline: Instant) {
    while !get_ok(url, "/health") {
        assert!(Instant::now() < deadline, "mlflow server at {url} never became healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a plain GET of `path` at `url` (`http://host:port`) answers 200.
fn get_ok(url: &str, path: &str) -> bool {
    use std::io::Write as _;
    let Some(addr) = url.strip_prefix("http://") else { return false };
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// The `edgefleet model import --follow-alias` process, its JSON lines in a file, stopped on drop.
struct Follower {
    child: Child,
    out: std::path::PathBuf,
}

impl Follower {
    fn lines(&self) -> Vec<serde_json::Value> {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.out) {
            let _ = f.read_to_string(&mut text);
        }
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn register(url: &str, c: &str, commit: &str) -> serde_json::Value {
    let out = python_client("mlflow_register.py", &[url, "iris-mlflow", "champion", c, commit]).expect("python");
    serde_json::from_str(out.lines().last().expect("one line")).expect("register JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mlflow_version_is_imported_with_its_lineage_and_a_moved_alias_is_rolled_out() {
    let Some(python) = std::env::var_os("EDGEFLEET_TEST_PYTHON") else {
        eprintln!("EDGEFLEET_TEST_PYTHON is not set: the MLflow server and client come with tests/run.sh.");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mlflow = MlflowServer::start(Path::new(&python), dir.path());
    let c = ControllerProcess::start_with(&dir.path().join("controller"), &["--mqtt-listen", "127.0.0.1:0"]);

    // v1: trained, converted and registered in MLflow; imported here with its lineage.
    let commit1 = "1111111111111111111111111111111111111111";
    let v1 = register(&mlflow.url, "1.0", commit1);
    let imported = c.cli_json(&["model", "import", "--mlflow-uri", &mlflow.url, "models:/iris-mlflow/1"]);
    assert_eq!(imported["imported"], true, "{imported}");
    assert_eq!(imported["source"], "models:/iris-mlflow/1");
    let version = &imported["version"];
    assert_eq!(version["name"], "iris-mlflow");
    let lineage = &version["manifest"]["lineage"];
    assert_eq!(lineage["params"]["C"], "1.0");
    assert_eq!(lineage["params"]["max_iter"], "500");
    assert_eq!(lineage["metrics"]["accuracy"], v1["accuracy"]);
    assert_eq!(lineage["code_commit"], commit1);
    let source = &lineage["source"];
    assert_eq!(source["system"], "mlflow");
    assert_eq!(source["uri"], mlflow.url.as_str());
    assert_eq!(source["run_id"], v1["run_id"]);
    assert_eq!(source["datasets"][0]["name"], "iris");
    assert_eq!(source["datasets"][0]["digest"], v1["dataset_digest"]);
    assert_eq!(source["datasets"][0]["context"], "training");
    assert_eq!(source["link"], format!("{}/#/models/iris-mlflow/versions/1", mlflow.url).as_str());
    assert_eq!(version["manifest"]["baseline"]["rows"], 150, "baseline.csv of the run became the baseline");

    // `model show` says all of it.
    let shown = c.cli(ADMIN, &["model", "show", "iris-mlflow:1"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    for expected in [
        "params:    C=1.0, max_iter=500, solver=lbfgs".to_owned(),
        format!("metrics:   accuracy={}", v1["accuracy"]),
        format!(
            "source:    mlflow models:/iris-mlflow/1 at {}, run {}",
            mlflow.url,
            v1["run_id"].as_str().expect("run")
        ),
        format!("dataset:   iris (training), mlflow digest {}", v1["dataset_digest"].as_str().expect("digest")),
        format!("code {commit1}"),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in:\n{text}");
    }

    // The same version again: found, not pushed twice.
    let again = c.cli_json(&["model", "import", "--mlflow-uri", &mlflow.url, "models:/iris-mlflow@champion"]);
    assert_eq!(again["imported"], false, "{again}");
    assert_eq!(again["version"]["version"], 1);
    assert_eq!(c.cli_json(&["model", "show", "iris-mlflow"])["versions"], serde_json::json!([1]));

    // Clear errors: an unknown version (exit 1), a server that is not there (exit 69).
    let missing = c.cli(ADMIN, &["model", "import", "--mlflow-uri", &mlflow.url, "models:/iris-mlflow/9"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"), "{missing:?}");
    let gone = c.cli(ADMIN, &["model", "import", "--mlflow-uri", "http://127.0.0.1:9", "models:/iris-mlflow/1"]);
    assert_eq!(gone.status.code(), Some(69), "{gone:?}");

    // A device of site x, and a follower of the alias that rolls each target out to site=x.
    let trust = c.trust_file(dir.path());
    let token =
        c.cli_json(&["device", "token", "create", "--label", "site=x"])["token"].as_str().expect("token").to_owned();
    let mut args = c.agent_args(&trust, &dir.path().join("agent"), 0);
    args.extend(["--enroll-token".to_owned(), token]);
    let agent = AgentProcess::run(&strs(&args));
    until("the device enrolled", 60, async || c.cli_json(&["device", "list"]).as_array().is_some_and(|a| a.len() == 1))
        .await;
    let out = dir.path().join("follower.jsonl");
    let follower = Follower {
        child: Command::new(binary("edgefleet"))
            .args(["--controller", &c.base, "--token", ADMIN, "--output", "json", "model", "import"])
            .args(["--mlflow-uri", &mlflow.url, "models:/iris-mlflow", "--follow-alias", "champion", "--poll", "1s"])
            .args(["--selector", "site=x", "--strategy", "direct", "--bake", "1s"])
            .stdout(std::fs::File::create(&out).expect("out"))
            .spawn()
            .expect("start the follower"),
        out,
    };
    let http = reqwest::Client::new();
    let infer = agent.url("/v2/models/iris-mlflow/infer");
    until("the follower rolled v1 out", 120, async || served_version_at(&http, &infer).await.as_deref() == Some("1"))
        .await;
    let first = follower.lines();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["imported"], false, "v1 was imported before");
    assert_eq!(first[0]["rollout"]["model"]["version"], 1);

    // v2 registered and the alias moved: imported with its own lineage, rolled out.
    let commit2 = "2222222222222222222222222222222222222222";
    let v2 = register(&mlflow.url, "0.05", commit2);
    assert_eq!(v2["version"], 2);
    until("the follower rolled v2 out", 120, async || served_version_at(&http, &infer).await.as_deref() == Some("2"))
        .await;
    let lines = follower.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["imported"], true);
    assert_eq!(lines[1]["source"], "models:/iris-mlflow/2");
    assert_eq!(lines[1]["rollout"]["model"]["version"], 2);
    let shown = c.cli_json(&["model", "show", "iris-mlflow:2"]);
    assert_eq!(shown["manifest"]["lineage"]["params"]["C"], "0.05");
    assert_eq!(shown["manifest"]["lineage"]["code_commit"], commit2);
    assert_eq!(shown["manifest"]["lineage"]["source"]["run_id"], v2["run_id"]);
    let rollouts = c.cli_json(&["rollout", "list"]);
    assert_eq!(rollouts.as_array().map(Vec::len), Some(2), "one rollout per version: {rollouts}");
    drop(follower);
}
