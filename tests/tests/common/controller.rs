//! Running `edgefleet-controller` and the `edgefleet` CLI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{AgentProcess, binary, strs, until};

/// The admin token tests preset through `EDGEFLEET_ADMIN_TOKEN`.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// A running controller, killed when dropped.
pub struct ControllerProcess {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub admin_token_line: Option<String>,
    pub stderr: mpsc::Receiver<String>,
    /// The CA the CLI trusts when the controller serves HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Extra `edgefleet-agent run` arguments every agent of this controller needs (e.g. the CA
    /// of an external broker).
    pub agent_extra: Vec<String>,
    /// The environment it was started with beyond the defaults, for its offline commands too.
    pub env: Vec<(String, std::ffi::OsString)>,
}

/// `edgefleet-controller`, with the database of `data_dir` when the suite runs on PostgreSQL:
/// `EDGEFLEET_TEST_POSTGRES` (a cluster's URL, set by tests/run.sh for its PostgreSQL pass) gives
/// each data directory a schema of its own there, created on first use, named to the
/// controller by `EDGEFLEET_DATABASE_URL`.
pub fn controller_cmd(data_dir: &Path) -> Command {
    let mut cmd = Command::new(binary("edgefleet-controller"));
    if let Some(url) = postgres_database(data_dir) {
        cmd.env("EDGEFLEET_DATABASE_URL", url);
    }
    cmd
}

/// The PostgreSQL database URL for `data_dir`'s controllers, when the suite runs on PostgreSQL.
pub fn postgres_database(data_dir: &Path) -> Option<String> {
    use std::hash::{Hash as _, Hasher as _};
    let cluster = std::env::var("EDGEFLEET_TEST_POSTGRES").ok()?;
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hash);
    let schema = format!("t{:016x}", hash.finish());
    super::postgres::create_schema(&cluster, &schema);
    let sep = if cluster.contains('?') { '&' } else { '?' };
    Some(format!("{cluster}{sep}options=-csearch_path%3D{schema}"))
}

/// The replica failover both replica tests run: waits until rollout `id` serves its first wave
/// (seen through `survivor`, which must not have led the background work so far), kills
/// `leader` with SIGKILL, and waits until `survivor` completes the rollout; the seconds that took.
pub async fn kill_leader_mid_rollout(mut leader: ControllerProcess, survivor: &ControllerProcess, id: &str) -> f64 {
    until("the first wave serving", 60, async || {
        survivor.cli_json(&["rollout", "status", id])["devices"]
            .as_array()
            .is_some_and(|m| m.iter().any(|d| d["outcome"] == "serving"))
    })
    .await;
    let status = survivor.cli_json(&["rollout", "status", id]);
    assert_eq!((status["state"].as_str(), status["wave"].as_u64()), (Some("running"), Some(1)), "{status}");
    let before: Vec<String> = survivor.stderr.try_iter().collect();
    assert!(!before.iter().any(|l| l.contains(LEADS)), "the survivor never led before");
    leader.child.kill().expect("kill -9");
    let _ = leader.child.wait();
    let killed = Instant::now();
    until("the rollout completed by the survivor", 90, async || {
        survivor.cli_json(&["rollout", "status", id])["state"] == "completed"
    })
    .await;
    killed.elapsed().as_secs_f64()
}

/// What the replica holding the background lease logs when it takes it.
pub const LEADS: &str = "This replica runs the background work";

impl ControllerProcess {
    /// Starts `edgefleet-controller serve --data-dir DIR --listen 127.0.0.1:0` with its
    /// embedded broker on a free port.
    pub fn start(data_dir: &Path) -> ControllerProcess {
        Self::start_with(data_dir, &["--mqtt-listen", "127.0.0.1:0"])
    }

    /// Starts the controller with extra arguments (e.g. `--mqtt-url`; `--listen` replaces the
    /// default 127.0.0.1:0).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> ControllerProcess {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// [`ControllerProcess::start_with`] with extra environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &Path)]) -> ControllerProcess {
        let listen = if extra.contains(&"--listen") { &[][..] } else { &["--listen", "127.0.0.1:0"][..] };
        let mut child = controller_cmd(data_dir)
            .arg("serve")
            .args(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .env("EDGEFLEET_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn controller");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = etx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut admin_token_line = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                let log: Vec<String> = erx.try_iter().collect();
                panic!("controller did not start; stderr:\n{}", log.join("\n"))
            };
            if line.starts_with("admin token: ") {
                admin_token_line = Some(line);
            } else if let Some(url) = line.strip_prefix("edgefleet-controller listening on ") {
                return ControllerProcess {
                    child,
                    base: url.to_owned(),
                    data_dir: data_dir.to_owned(),
                    admin_token_line,
                    stderr: erx,
                    ca_file: None,
                    agent_extra: Vec::new(),
                    env: env.iter().map(|(k, v)| ((*k).to_owned(), v.as_os_str().to_owned())).collect(),
                };
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                assert!(s.success(), "controller exit {s:?}");
                return;
            }
            assert!(Instant::now() < deadline, "controller did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes this controller's trust file (`edgefleet-controller public-key`) into `dir`.
    pub fn trust_file(&self, dir: &Path) -> PathBuf {
        let trust = dir.join("trust.json");
        let out = controller_cmd(&self.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["public-key", "--data-dir"])
            .arg(&self.data_dir)
            .arg("--out")
            .arg(&trust)
            .output()
            .expect("public-key");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        trust
    }

    /// `edgefleet-agent run` arguments against this controller: its trust file, a data dir,
    /// 1 s poll and status intervals, the given watch window, tract.
    pub fn agent_args(&self, trust: &Path, data: &Path, watch_window_secs: u64) -> Vec<String> {
        let mut args: Vec<String> = ["--controller", &self.base, "--trust"].map(str::to_owned).to_vec();
        args.push(trust.display().to_string());
        args.push("--data-dir".into());
        args.push(data.display().to_string());
        args.extend(
            ["--poll-interval-secs", "1", "--status-interval-secs", "1", "--backend", "tract"].map(str::to_owned),
        );
        args.push("--watch-window-secs".into());
        args.push(watch_window_secs.to_string());
        args.extend(self.agent_extra.iter().cloned());
        args
    }

    /// Runs the `edgefleet` CLI against this controller with `token`.
    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary("edgefleet"));
        cmd.args(["--controller", &self.base, "--token", token]);
        if let Some(ca) = &self.ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.args(args).output().expect("run edgefleet")
    }

    /// Starts an agent in fleet mode (data in `dir/name`, extra environment `env`) enrolled with
    /// a token carrying `labels` (`k=v`), and returns it with its device id once enrolled.
    pub async fn enroll_agent(
        &self,
        dir: &Path,
        name: &str,
        labels: &[&str],
        env: &[(&str, &Path)],
    ) -> (AgentProcess, String) {
        let ids = || -> Vec<String> {
            let list = self.cli_json(&["device", "list"]);
            list.as_array().into_iter().flatten().filter_map(|d| d["id"].as_str().map(str::to_owned)).collect()
        };
        let before = ids();
        let mut create = vec!["device", "token", "create"];
        for label in labels {
            create.extend(["--label", label]);
        }
        let token = self.cli_json(&create)["token"].as_str().expect("token").to_owned();
        let trust = self.trust_file(dir);
        let mut args = self.agent_args(&trust, &dir.join(name), 1);
        args.extend(["--enroll-token".to_owned(), token]);
        let agent = AgentProcess::run_with_env(&strs(&args), env);
        until("enrollment", 30, async || ids().len() > before.len()).await;
        let id = ids().into_iter().find(|i| !before.contains(i)).expect("the new device");
        (agent, id)
    }

    /// The body of an admin `GET path` (asserting the request was answered).
    pub async fn download(&self, path: &str) -> reqwest::Result<axum::body::Bytes> {
        reqwest::Client::new().get(self.url(path)).bearer_auth(ADMIN).send().await.expect("download").bytes().await
    }

    /// Runs the CLI with `--output json`, asserting success, and parses the answer.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.cli(ADMIN, &all);
        assert!(out.status.success(), "edgefleet {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
