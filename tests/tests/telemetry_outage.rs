//! Telemetry through a broker outage (Mosquitto with persistence, stopped for 60 s while both
//! agents keep serving): afterwards every sample produced is stored exactly once; the agent
//! with a tiny spool dropped its oldest batches, counted, and lost nothing else; the agent
//! killed with SIGKILL during the outage lost nothing it had spooled.
//!
//! Needs `mosquitto` (`.ci/run` installs it with apt).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::controller::ControllerProcess;
use common::mosquitto::MosquittoSetup;
use common::telemetry::{agent_config, by_request_id, fleet, infer, iris_rows, stored_samples, wait_serving};
use common::{AgentProcess, metric, until};

/// Samples in an agent's spool (the count is in each batch file's name).
fn spooled_samples(data: &Path) -> u64 {
    std::fs::read_dir(data.join("telemetry-spool"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".eft")?.split_once('-')?.1.parse::<u64>().ok()
                })
                .sum()
        })
        .unwrap_or(0)
}

fn ids(prefix: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("{prefix}-{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60s_broker_outage_loses_nothing_but_the_counted_overflow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = MosquittoSetup::new(&dir.path().join("broker"), &dir.path().join("controller"), true);
    let broker = setup.start();
    let mut c = ControllerProcess::start_with(&dir.path().join("controller"), &common::strs(&setup.controller_args()));
    c.agent_extra = setup.agent_args();
    let http = reqwest::Client::new();
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("config dir");
    }
    let big = agent_config(&dir.path().join("a"), 64 << 20);
    let tiny = agent_config(&dir.path().join("b"), 4096);
    let mut agents = fleet(&c, dir.path(), &[big, tiny], &http).await;
    let rows = iris_rows();
    let row = |n: usize| rows[(n * 37) % rows.len()];

    // Before the outage: delivered and stored.
    for i in 0..40 {
        assert!(infer(&http, &agents[0].0, &format!("pre-a-{i}"), row(i)).await);
        assert!(infer(&http, &agents[1].0, &format!("pre-b-{i}"), row(i)).await);
    }
    until("pre-outage samples stored", 60, async || stored_samples(&c.data_dir).len() == 80).await;

    broker.stop();
    let outage = Instant::now();
    let (mut sent_a, mut sent_b, mut killed) = (0usize, 0usize, false);
    while outage.elapsed() < Duration::from_secs(60) {
        if !killed && outage.elapsed() > Duration::from_secs(30) {
            // Everything agent A answered so far reaches its spool; then SIGKILL and restart it.
            until("agent A's samples spooled", 10, async || spooled_samples(&agents[0].1) as usize >= sent_a).await;
            let restart = restart_args(&agents[0].0);
            let _ = agents[0].0.child.kill();
            let _ = agents[0].0.child.wait();
            agents[0].0 = AgentProcess::run(&common::strs(&restart));
            wait_serving(&http, &agents[0].0, "1").await;
            killed = true;
        }
        assert!(infer(&http, &agents[0].0, &format!("out-a-{sent_a}"), row(sent_a)).await);
        sent_a += 1;
        assert!(infer(&http, &agents[1].0, &format!("out-b-{sent_b}"), row(sent_b)).await);
        sent_b += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _broker = setup.start();
    let returned = Instant::now();

    // Agent A: every sample exactly once.
    let expected_a: BTreeSet<String> = ids("pre-a", 40).chain(ids("out-a", sent_a)).collect();
    until("agent A's samples stored", 120, async || {
        let stored = stored_samples(&c.data_dir);
        expected_a.iter().all(|id| stored.iter().any(|s| s.request_id.as_deref() == Some(id.as_str())))
    })
    .await;
    eprintln!("broker back to everything stored: {:?}", returned.elapsed());
    // Agent B: its spool drains; what it dropped is counted and is the oldest outage rows.
    until("agent B's spool drained", 60, async || spooled_samples(&agents[1].1) == 0).await;
    let metrics = http.get(agents[1].0.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let dropped = metric(&metrics, "edgefleet_agent_telemetry_dropped_samples_total").unwrap_or(0.0) as usize;
    let batches = metric(&metrics, "edgefleet_agent_telemetry_dropped_batches_total").unwrap_or(0.0) as usize;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored = by_request_id(&stored_samples(&c.data_dir));
    assert_eq!(stored.len(), stored.keys().collect::<BTreeSet<_>>().len());
    let missing: Vec<usize> = (0..sent_b).filter(|i| !stored.contains_key(&format!("out-b-{i}"))).collect();
    eprintln!("agent B: {sent_b} outage samples, {dropped} dropped in {batches} batches, {} missing", missing.len());
    assert!(dropped > 0 && batches > 0, "the tiny spool overflowed");
    assert!(!missing.is_empty() && missing.len() <= dropped, "missing {} vs dropped {dropped}", missing.len());
    assert!(missing.windows(2).all(|w| w[1] == w[0] + 1), "what was lost is one run of batches: {missing:?}");
    assert!(missing.last().is_some_and(|&last| last + 20 < sent_b), "the newest samples all arrived: {missing:?}");
    assert!(ids("pre-b", 40).all(|id| stored.contains_key(&id)));
    let a_stored = stored.keys().filter(|k| k.contains("-a-")).count();
    assert_eq!(a_stored, expected_a.len(), "agent A: exactly once");
    let total = stored.len();
    assert_eq!(total, expected_a.len() + 40 + sent_b - missing.len());
}

/// The arguments an agent was started with (read back from /proc), to restart it on its data.
fn restart_args(agent: &AgentProcess) -> Vec<String> {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", agent.child.id())).expect("cmdline");
    let all: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    // Drop the binary, `run`, and the `--listen 127.0.0.1:0` that AgentProcess::run adds again.
    all.into_iter().skip(4).collect()
}
