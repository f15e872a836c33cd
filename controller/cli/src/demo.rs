//! `edgefleet demo`: the whole loop on embedded defaults, narrated.
//!
//! A controller (embedded MQTT broker, SQLite, filesystem artifacts) and `--agents` agents run as
//! child processes in a temporary directory (or `--dir`), enrolled with a generated token. The
//! bundled iris classifier and its training data are pushed and rolled out in waves; traffic
//! like the training data flows through the agents' KServe APIs with ground-truth feedback; then
//! the inputs shift, drift is flagged and a retrain request with a dataset snapshot fires; the
//! bundled trainer fits a new model on the snapshot (no Python), pushes it as v2 with lineage to
//! the snapshot, and a canary rollout with gates promotes it.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgefleet_shared::api::fleet::CreateEnrollmentToken;
use edgefleet_shared::api::rollouts::{OnFail, OnInsufficient, OnTimeout, RolloutRequest, RolloutState, Strategy};
use edgefleet_shared::api::telemetry::{DriftQuery, ListQuery};
use edgefleet_shared::api::tokens::new_token;
use edgefleet_shared::inference::{InferRequest, InferResponse, ModelMetadata, RequestInput};
use serde_json::json;

use crate::args::{DemoArgs, Output, PushArgs};
use crate::client::{CliError, Client};
use crate::output;
use crate::push::push_request;
use crate::trainer::{Labelled, fit, to_onnx};

const MODEL: &[u8] = include_bytes!("../../../tests/testdata/iris_logreg.onnx");
const BASELINE: &str = include_str!("../../../tests/testdata/iris_baseline.csv");

/// A child process, killed when dropped, logging to a file.
struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo controller's drift window (production default 3600 s).
const DEMO_WINDOW_SECS: u64 = 4;

/// A drift query over the whole telemetry windows that start at or after `since_ms` (the
/// window holding `since_ms` itself is left out: it mixes traffic from before).
fn since(since_ms: u64) -> DriftQuery {
    let now = edgefleet_shared::clock::unix_ms() / 1000;
    let first = (since_ms / 1000).div_ceil(DEMO_WINDOW_SECS) * DEMO_WINDOW_SECS;
    DriftQuery { window: Some(format!("{}s", now.saturating_sub(first) + 1)), group: None }
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(m.into())
}

/// A workspace binary: beside this executable, else on PATH.
fn binary(name: &str) -> Result<PathBuf, CliError> {
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join(name)));
    let on_path =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()));
    beside.filter(|p| p.is_file()).or(on_path).ok_or_else(|| {
        usage(format!(
            "{name} not found beside edgefleet or on PATH: build the workspace first (cargo build --workspace)"
        ))
    })
}

/// Starts `exe args`, logging stderr (and stdout past the address line) to `log`, and waits for
/// the stdout line starting with `ready` (its rest is the URL).
fn spawn(exe: &Path, args: &[String], envs: &[(&str, &str)], log: &Path, ready: &str) -> Result<Proc, CliError> {
    let file = std::fs::File::create(log).map_err(|e| usage(format!("{}: {e}", log.display())))?;
    let err = file.try_clone().map_err(|e| usage(e.to_string()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::from(err));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| usage(format!("cannot start {}: {e}", exe.display())))?;
    let stdout = child.stdout.take().ok_or_else(|| usage("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    std::thread::spawn(move || {
        let mut file = file;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix(&ready) {
                let _ = tx.send(url.to_owned());
            }
            let _ = writeln!(file, "{line}");
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| {
        let _ = child.kill();
        usage(format!("{} did not start; see {}", exe.display(), log.display()))
    })?;
    Ok(Proc { child, url })
}

fn step(started: Instant, n: u32, text: &str) {
    say!("\n[{:>5.1}s] {n}. {text}", started.elapsed().as_secs_f64());
}

fn iris() -> Vec<([f32; 4], u64)> {
    BASELINE
        .lines()
        .skip(1)
        .enumerate()
        .filter_map(|(i, l)| {
            let v: Vec<f32> = l.split(',').filter_map(|x| x.parse().ok()).collect();
            // The file lists 50 rows per class, in class order.
            (v.len() == 4).then(|| ([v[0], v[1], v[2], v[3]], (i / 50) as u64))
        })
        .collect()
}

/// A recalibrated sensor: every measurement now reads longer.
fn shift(row: [f32; 4]) -> [f32; 4] {
    [row[0] + 1.5, row[1] + 1.0, row[2] + 2.5, row[3] + 1.2]
}

/// Sends traffic (with ground-truth feedback) round-robin to the agents until `stop` is set.
#[derive(Clone)]
struct Traffic {
    http: reqwest::Client,
    agents: Arc<Vec<String>>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    correct: Arc<AtomicU64>,
}

impl Traffic {
    async fn run(self, shifted: bool, stop: Arc<AtomicBool>) {
        let rows = iris();
        while !stop.load(Ordering::Relaxed) {
            let n = self.sent.fetch_add(1, Ordering::Relaxed) as usize;
            let (row, class) = rows[(n * 37) % rows.len()];
            let row = if shifted { shift(row) } else { row };
            let agent = &self.agents[n % self.agents.len()];
            let id = format!("demo-{n}");
            let body = InferRequest {
                id: Some(id.clone()),
                inputs: vec![RequestInput {
                    name: "X".into(),
                    shape: vec![1, 4],
                    datatype: "FP32".into(),
                    parameters: None,
                    data: Some(json!(row)),
                }],
                ..InferRequest::default()
            };
            let answer = self.http.post(format!("{agent}/v2/models/iris/infer")).json(&body).send().await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    let answer: Option<InferResponse> = r.json().await.ok();
                    let label = answer.and_then(|a| a.outputs.first()?.data.as_ref()?.first()?.as_u64());
                    if label == Some(class) {
                        self.correct.fetch_add(1, Ordering::Relaxed);
                    }
                    let feedback = json!({"id": id, "label": class});
                    let _ = self.http.post(format!("{agent}/v2/models/iris/feedback")).json(&feedback).send().await;
                }
                _ => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
    }

    fn reset(&self) -> (u64, u64, u64) {
        (
            self.sent.swap(0, Ordering::Relaxed),
            self.failed.swap(0, Ordering::Relaxed),
            self.correct.swap(0, Ordering::Relaxed),
        )
    }
}

/// Runs traffic while `until` polls false (every 500 ms), up to `limit`.
async fn with_traffic<F: AsyncFnMut() -> Result<bool, CliError>>(
    traffic: &Traffic,
    shifted: bool,
    limit: Duration,
    mut until: F,
) -> Result<bool, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(traffic.clone().run(shifted, stop.clone()));
    let deadline = Instant::now() + limit;
    let mut done = false;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if until().await? {
            done = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = task.await;
    Ok(done)
}

async fn serving(http: &reqwest::Client, agents: &[String], version: &str) -> bool {
    for a in agents {
        let metadata: Option<ModelMetadata> = match http.get(format!("{a}/v2/models/iris")).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if metadata.is_none_or(|m| m.versions.first().map(String::as_str) != Some(version)) {
            return false;
        }
    }
    true
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let (controller_bin, agent_bin) = (binary("edgefleet-controller")?, binary("edgefleet-agent")?);
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("edgefleet-demo-").tempdir().map_err(|e| usage(e.to_string()))?),
    };
    let dir = args.dir.clone().or_else(|| temp.as_ref().map(|t| t.path().to_owned())).ok_or_else(|| usage("no dir"))?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| usage(format!("{}: {e}", logs.display())))?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, CliError> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| usage(format!("{}: {e}", p.display())))?;
        Ok(p)
    };
    let token = new_token().map_err(|e| usage(format!("no randomness: {e}")))?;
    say!("edgefleet demo: a controller and {} agents in {}", args.agents, dir.display());
    say!("Shortened so the loop runs in about a minute (production defaults in brackets):");
    say!("  controller [telemetry] window_secs = {DEMO_WINDOW_SECS} (3600), settle_secs = 2 (120);");
    say!("             [retrain.policy] windows = 2 (3), min_rows = 40 (100);");
    say!("  agents     [telemetry] flush_interval_secs = 1 (60), sample_rate = 1.0 (0.01), higher sample caps.");

    step(started, 1, "Starting the controller: embedded MQTT broker, SQLite registry, filesystem artifacts.");
    let config = write(
        "controller.toml",
        format!("[telemetry]\nwindow_secs = {DEMO_WINDOW_SECS}\nsettle_secs = 2\n\n[retrain.policy]\nwindows = 2\nmin_rows = 40\n")
            .as_bytes(),
    )?;
    let data = dir.join("controller");
    let controller_args: Vec<String> =
        ["serve", "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--data-dir"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([data.display().to_string(), "--config".into(), config.display().to_string()])
            .collect();
    let controller = spawn(
        &controller_bin,
        &controller_args,
        &[("EDGEFLEET_ADMIN_TOKEN", &token)],
        &logs.join("controller.log"),
        "edgefleet-controller listening on ",
    )?;
    let client = Client::new(&controller.url, Some(token.clone()), None)?;
    say!("         API {}  (metrics at {}/metrics)", controller.url, controller.url);
    let trust = dir.join("trust.json");
    let status = Command::new(&controller_bin)
        .args(["public-key", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&trust)
        .status()
        .map_err(|e| usage(e.to_string()))?;
    if !status.success() {
        return Err(usage("edgefleet-controller public-key failed"));
    }

    step(started, 2, "Pushing the bundled iris classifier with its training data as the baseline.");
    let model = write("iris_v1.onnx", MODEL)?;
    let baseline = write("iris_train.csv", BASELINE.as_bytes())?;
    let v1 = push(&client, &push_args(&model, Some(&baseline), None, None, vec![])).await?;
    say!("         iris:{v1} registered, signed, profiled over {} rows", 150);

    step(
        started,
        3,
        &format!("Enrolling {} agents with a one-time token (device keys generated on first start).", args.agents),
    );
    let demo_labels = BTreeMap::from([("demo".to_owned(), "true".to_owned())]);
    let enroll_request =
        CreateEnrollmentToken { uses: u32::from(args.agents), ttl_secs: 600, labels: demo_labels.clone() };
    let enroll_token = client.create_enrollment_token(&enroll_request).await?.token;
    let agent_config = write(
        "agent.toml",
        b"[telemetry]\nflush_interval_secs = 1\nsample_rate = 1.0\nsamples_per_minute = 100000\nsamples_per_hour = 1000000\n",
    )?;
    let mut agents = Vec::new();
    for i in 0..args.agents {
        let a: Vec<String> = [
            "run",
            "--listen",
            "127.0.0.1:0",
            // Several agents on one host: each its own gRPC port too.
            "--grpc-listen",
            "127.0.0.1:0",
            "--controller",
            &controller.url,
            "--enroll-token",
            &enroll_token,
            "--poll-interval-secs",
            "1",
            "--status-interval-secs",
            "1",
            "--watch-window-secs",
            "2",
            "--backend",
            "tract",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["--trust".into(), trust.display().to_string(), "--data-dir".into()])
        .chain([
            dir.join(format!("agent-{i}")).display().to_string(),
            "--config".into(),
            agent_config.display().to_string(),
        ])
        .chain(["--label".into(), format!("site=bench-{}", i % 2)])
        .collect();
        let log = logs.join(format!("agent-{i}.log"));
        agents.push(spawn(&agent_bin, &a, &[], &log, "edgefleet-agent listening on ")?);
    }
    let urls: Vec<String> = agents.iter().map(|a| a.url.clone()).collect();
    let enrolled = poll(Duration::from_secs(60), async || {
        Ok(client.devices(&Default::default()).await?.len() == usize::from(args.agents))
    })
    .await?;
    if !enrolled {
        return Err(usage(format!("the agents did not enroll; see {}", logs.display())));
    }
    for (i, u) in urls.iter().enumerate() {
        say!("         agent-{i}: KServe v2 API at {u}");
    }

    step(started, 4, "Rolling iris:1 out in waves (34% of the devices, then all).");
    let rollout = client.create_rollout(&rollout_request("1", &demo_labels, 1, vec![], 100)).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| usage(e.to_string()))?;
    if !poll(Duration::from_secs(60), async || Ok(serving(&http, &urls, "1").await)).await? {
        return Err(usage(format!("iris:1 did not reach every agent; see {}", logs.display())));
    }
    say!("         rollout {} done: every agent serves iris:1", rollout.id);

    let traffic = Traffic {
        http: http.clone(),
        agents: Arc::new(urls.clone()),
        sent: Arc::default(),
        failed: Arc::default(),
        correct: Arc::default(),
    };
    step(started, 5, "Traffic like the training data, with ground-truth feedback, for three drift windows (12 s).");
    let phase_ms = edgefleet_shared::clock::unix_ms();
    with_traffic(&traffic, false, Duration::from_secs(12), async || Ok(false)).await?;
    let (sent, failed, correct) = traffic.reset();
    say!(
        "         {sent} requests, {failed} failed; {:.1}% answered right (counted here, on every request)",
        percent(correct, sent)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    say!("         The controller's drift report over the whole windows since the traffic began:");
    output::drift(Output::Table, &client.drift("iris", Some("1"), &since(phase_ms)).await?);

    step(started, 6, "The sensors are recalibrated: every input now reads longer. Waiting for the drift policy.");
    let shift_ms = edgefleet_shared::clock::unix_ms() as i64;
    let iris_requests = ListQuery { model: Some("iris".into()) };
    let fired = with_traffic(&traffic, true, Duration::from_secs(60), async || {
        Ok(!client.retrain_requests(&iris_requests).await?.is_empty())
    })
    .await?;
    let (sent, failed, correct) = traffic.reset();
    if !fired {
        return Err(usage("no retrain request after 60 s of drifted traffic"));
    }
    say!(
        "         {sent} requests, {failed} failed; iris:1 answered {:.1}% of them right (counted here, on every request)",
        percent(correct, sent)
    );
    say!("         The drift report over the whole windows after the shift (the window holding it mixes both):");
    output::drift(Output::Table, &client.drift("iris", Some("1"), &since(shift_ms as u64)).await?);
    let requests = client.retrain_requests(&iris_requests).await?;
    let request = requests.first().ok_or_else(|| usage("the retrain request disappeared"))?;
    let id = request.id;
    say!("         retrain request {id}, from the policy's judgement of its last closed window: {}", request.reason);
    say!("         snapshot: {} sampled rows of the judged windows, sha256 {}", request.rows, request.dataset_sha256);

    step(started, 7, "Retraining on the snapshot's drifted rows (logistic regression, fitted here, exported as ONNX).");
    let csv = client.retrain_file(id, "data.csv").await?;
    let rows = Labelled::from_snapshot(&csv, shift_ms).map_err(|e| usage(e.to_string()))?;
    let fitted = fit(&rows).map_err(|e| usage(e.to_string()))?;
    let sha = request.dataset_sha256.clone();
    let onnx = to_onnx(&fitted, "X", &HashMap::from([("dataset_sha256".to_owned(), sha.clone())]));
    let v2_model = write("iris_v2.onnx", &onnx)?;
    let mut baseline_csv = rows.features.join(",");
    for x in &rows.x {
        baseline_csv.push('\n');
        baseline_csv.push_str(&x.iter().map(f64::to_string).collect::<Vec<_>>().join(","));
    }
    baseline_csv.push('\n');
    let v2_baseline = write("iris_v2_train.csv", baseline_csv.as_bytes())?;
    say!(
        "         {} of those rows have a label and come after the shift; training accuracy {:.1}%",
        rows.x.len(),
        fitted.train_accuracy * 100.0
    );
    let metric = vec![("train_accuracy".to_owned(), format!("{:.4}", fitted.train_accuracy))];
    let v2 = push(&client, &push_args(&v2_model, Some(&v2_baseline), Some(sha.clone()), Some(1), metric)).await?;
    say!("         iris:{v2} pushed with --dataset-hash {sha} (parent 1)");

    step(started, 8, "Canary rollout of iris:2, gated on error rate, under live traffic.");
    let gates = vec!["error_rate<0.01".to_owned(), "activation_failure_rate<0.1".to_owned()];
    let r2_id = client.create_rollout(&rollout_request("2", &demo_labels, 3, gates, 10)).await?.id;
    let done = with_traffic(&traffic, true, Duration::from_secs(60), async || {
        let r = client.rollout(r2_id).await?;
        if r.state == RolloutState::Aborted {
            return Err(usage(format!("rollout {r2_id} aborted: {}", r.reason.unwrap_or_default())));
        }
        Ok(r.state == RolloutState::Completed && serving(&http, &urls, "2").await)
    })
    .await?;
    if !done {
        return Err(usage(format!("rollout {r2_id} did not complete in 60 s")));
    }
    traffic.reset();
    with_traffic(&traffic, true, Duration::from_secs(4), async || Ok(false)).await?;
    let (sent, failed, correct) = traffic.reset();
    let lineage = client.retrain_request(id).await?;
    say!("         rollout {r2_id} completed; on the drifted inputs iris:2 answers {sent} requests, {failed} failed,");
    say!(
        "         {:.1}% answered right (counted here); retrain request {id} lists trained versions {:?}",
        percent(correct, sent),
        lineage.trained_versions
    );

    say!(
        "\nDone in {:.1}s. The whole loop ran: rollout, inference, drift, retrain request, retraining, canary.",
        started.elapsed().as_secs_f64()
    );
    say!("Explore (with --keep, while it runs):");
    say!("  export EDGEFLEET_CONTROLLER={} EDGEFLEET_TOKEN={token}", controller.url);
    say!(
        "  edgefleet model show iris:2 | edgefleet drift report iris:1 | edgefleet retrain show {id} | edgefleet rollout list"
    );
    say!("  curl {}/v2/models/iris        logs: {}", urls[0], logs.display());
    say!("  console: {}/ui/  (sign in with the token above)", controller.url);
    if args.keep {
        say!("Leaving everything running; Ctrl-C stops it.");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(agents);
    drop(controller);
    Ok(())
}

/// Pushes a version of iris; returns its number.
async fn push(client: &Client, args: &PushArgs) -> Result<u64, CliError> {
    let (upload, metadata) = push_request(args).await?;
    Ok(client.push(&args.name, upload, &metadata).await?.version)
}

/// A canary rollout of `iris:version` to the demo's devices in two waves (34%, 100%).
fn rollout_request(
    version: &str,
    selector: &BTreeMap<String, String>,
    bake_secs: u64,
    gates: Vec<String>,
    min_requests: u64,
) -> RolloutRequest {
    RolloutRequest {
        model: "iris".into(),
        version: version.into(),
        selector: selector.clone(),
        waves: Some(vec![34, 100]),
        bake_secs,
        gates,
        no_default_gate: false,
        wave_timeout_secs: 3600,
        on_timeout: OnTimeout::Fail,
        on_insufficient: OnInsufficient::Pause,
        allow_empty: false,
        min_requests,
        on_fail: OnFail::Abort,
        strategy: Strategy::Canary,
        shadow_share: 0.25,
        fleet: None,
        group_by: Vec::new(),
        max_unavailable: None,
    }
}

fn push_args(
    path: &Path,
    baseline: Option<&Path>,
    hash: Option<String>,
    parent: Option<u64>,
    metrics: Vec<(String, String)>,
) -> PushArgs {
    PushArgs {
        path: path.to_owned(),
        name: "iris".into(),
        baseline: baseline.map(Path::to_owned),
        metrics,
        params: vec![],
        dataset_hash: hash,
        code_commit: None,
        parent,
        version: None,
        allow_schema_change: false,
        allow_nondeterministic: false,
    }
}

async fn poll<F: AsyncFnMut() -> Result<bool, CliError>>(limit: Duration, mut check: F) -> Result<bool, CliError> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await? {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(false)
}
