//! Running the real binaries: spawn, find the port they bound, stop them.
#![allow(dead_code, unreachable_pub, reason = "each test binary uses a different subset")]

pub mod controller;
pub mod device;
pub mod mosquitto;
pub mod pki;
pub mod postgres;
pub mod proxy;
pub mod seaweed;
pub mod telemetry;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `tests/testdata`.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// A scikit-learn fixture's expected answers (`testdata/{name}.expected.json`, written and
/// checked against onnxruntime by `tests/fixtures/make_fixtures.py`) and the KServe request
/// for its input rows (`X`, FP32).
pub fn sklearn_expected(name: &str) -> (serde_json::Value, serde_json::Value) {
    let path = testdata().join(format!("{name}.expected.json"));
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    let rows = expected["inputs"].as_array().expect("inputs");
    let data: Vec<f64> =
        rows.iter().flat_map(|r| r.as_array().expect("row").iter().filter_map(|v| v.as_f64())).collect();
    let width = rows.first().and_then(|r| r.as_array()).map_or(0, Vec::len);
    let request =
        serde_json::json!({"inputs": [{"name": "X", "shape": [rows.len(), width], "datatype": "FP32", "data": data}]});
    (expected, request)
}

/// Runs `tests/clients/SCRIPT ARGS` with the test clients' Python (`EDGEFLEET_TEST_PYTHON`, set by
/// `tests/run.sh`) and returns its stdout, panicking with its output when it fails; `None` (after
/// saying so) when no such Python is configured.
pub fn python_client(script: &str, args: &[&str]) -> Option<String> {
    let Some(python) = std::env::var_os("EDGEFLEET_TEST_PYTHON") else {
        eprintln!("EDGEFLEET_TEST_PYTHON is not set: the {script} run is left to tests/run.sh.");
        return None;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients").join(script);
    let out = Command::new(python).arg(path).args(args).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    Some(stdout)
}

/// The output called `name` of an infer answer.
pub fn output<'a>(answer: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    answer["outputs"].as_array()?.iter().find(|o| o["name"] == name)
}

/// A workspace binary, built beside this test (`cargo nextest run --workspace` builds them).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run the workspace test command from the README (cargo nextest run --workspace ...)",
        path.display()
    );
    path
}

/// Path of libonnxruntime.so for the ort backend.
pub fn ort_library() -> PathBuf {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/onnxruntime/libonnxruntime.so"));
    assert!(path.exists(), "{} missing: run agent/scripts/fetch-onnxruntime.sh", path.display());
    path
}

/// A running `edgefleet-agent`, killed when dropped.
pub struct AgentProcess {
    pub child: Child,
    pub base: String,
    /// Where its gRPC API listens (`host:port`), unless the test turned it off.
    pub grpc: Option<String>,
    pub stderr: mpsc::Receiver<String>,
}

impl AgentProcess {
    /// Starts `edgefleet-agent serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 ARGS` and
    /// waits for its address lines.
    pub fn serve(args: &[&str], env: &[(&str, &Path)]) -> AgentProcess {
        Self::spawn("serve", args, env)
    }

    /// [`AgentProcess::serve`] with another build of the agent (e.g. the `release-edge` one).
    pub fn serve_with_binary(agent: &Path, args: &[&str]) -> AgentProcess {
        Self::spawn_binary(agent, "serve", args, &[])
    }

    /// Starts `edgefleet-agent run --listen 127.0.0.1:0 ARGS` (fleet mode).
    pub fn run(args: &[&str]) -> AgentProcess {
        Self::spawn("run", args, &[])
    }

    /// [`AgentProcess::run`] with extra environment variables (e.g. `ORT_DYLIB_PATH`).
    pub fn run_with_env(args: &[&str], env: &[(&str, &Path)]) -> AgentProcess {
        Self::spawn("run", args, env)
    }

    fn spawn(mode: &str, args: &[&str], env: &[(&str, &Path)]) -> AgentProcess {
        Self::spawn_binary(&binary("edgefleet-agent"), mode, args, env)
    }

    fn spawn_binary(agent: &Path, mode: &str, args: &[&str], env: &[(&str, &Path)]) -> AgentProcess {
        let mut cmd = Command::new(agent);
        cmd.arg(mode).args(["--listen", "127.0.0.1:0"]);
        if !args.contains(&"--grpc-listen") {
            cmd.args(["--grpc-listen", "127.0.0.1:0"]);
        }
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn agent");
        let stdout = child.stdout.take().expect("stdout");
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // The gRPC line (when there is one) comes before the HTTP one.
            let mut grpc = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("edgefleet-agent gRPC listening on ") {
                    grpc = Some(addr.to_owned());
                } else if let Some(url) = line.strip_prefix("edgefleet-agent listening on ") {
                    let _ = addr_tx.send((url.to_owned(), grpc.take()));
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let Ok((base, grpc)) = addr_rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            let log: Vec<String> = err_rx.try_iter().collect();
            panic!("agent did not report its address; stderr:\n{}", log.join("\n"))
        };
        AgentProcess { child, base, grpc, stderr: err_rx }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Polls `/v2/repository/index` until every model is READY.
    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = client.get(self.url("/v2/repository/index")).send().await
                && let Ok(index) = r.json::<serde_json::Value>().await
                && let Some(entries) = index.as_array()
                && !entries.is_empty()
                && entries.iter().all(|e| e["state"] == "READY")
            {
                return;
            }
            assert!(Instant::now() < deadline, "agent not ready in time");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for exit with a deadline.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "agent did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sum of the samples of metric `name` on `/metrics` whose line contains `label`.
    pub async fn metric_sum(&self, name: &str, label: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics")).await.expect("metrics").text().await.expect("text");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the agent serves `version` of `model`.
    pub async fn wait_serving(&self, model: &str, version: &str) {
        let (http, url) = (reqwest::Client::new(), self.url(&format!("/v2/models/{model}/ready")));
        until(&format!("{model} v{version} serving"), 60, async || {
            let Ok(r) = http.get(&url).send().await else { return false };
            r.status() == reqwest::StatusCode::OK
                && r.json::<serde_json::Value>().await.is_ok_and(|v| v["version"] == version)
        })
        .await;
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process leading its own process group (a server that starts children of its own),
/// stopped with the whole group on drop: SIGTERM, 10 s, SIGKILL.
pub struct ProcessGroup(pub Child);

impl ProcessGroup {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<ProcessGroup> {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0).spawn().map(ProcessGroup)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 50 ms until it holds, failing after `secs` seconds.
pub async fn until(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `&[String]` as `&[&str]`.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Reads one metric value from Prometheus text.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// Infers one iris row at `url` (an agent's `/v2/models/iris/infer`) and returns the model
/// version that answered (`x-edgefleet-model-version`), or none on any failure.
pub async fn served_version_at(http: &reqwest::Client, url: &str) -> Option<String> {
    let body = serde_json::json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let r = http.post(url).json(&body).timeout(Duration::from_secs(5)).send().await.ok()?;
    (r.status() == reqwest::StatusCode::OK)
        .then(|| r.headers()["x-edgefleet-model-version"].to_str().ok().map(str::to_owned))
        .flatten()
}

/// [`served_version_at`] for an agent process.
pub async fn served_version(http: &reqwest::Client, agent: &AgentProcess) -> Option<String> {
    served_version_at(http, &agent.url("/v2/models/iris/infer")).await
}
