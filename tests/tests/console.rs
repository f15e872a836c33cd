//! The web console in a real browser: headless Chromium (Debian's `chromium`, driven by
//! Playwright for Python, tests/clients/console_browser.py) against a controller with three
//! agents under live traffic whose petal features are shifted. The script signs in, compares
//! the overview with the API, watches a CLI-started rollout's waves advance without a reload,
//! sees a failing gate's measured value and aborts that rollout from the page, checks a viewer
//! gets no action buttons and that forged POSTs are refused, and that the drift page flags the
//! shifted features first; no console error and no request to another origin.
//! `EDGEFLEET_CONSOLE_SCREENSHOTS=DIR` keeps a screenshot of every page.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::controller::{ADMIN, ControllerProcess};
use common::telemetry::{agent_config, fleet, iris_rows};
use common::{binary, python_client, testdata};

/// Iris rows with the petal features moved (the sepal ones as in the baseline).
fn petals_shifted(row: [f32; 4]) -> [f32; 4] {
    [row[0], row[1], row[2] + 2.5, row[3] + 1.2]
}

fn chromium() -> Option<String> {
    let path = std::env::var("EDGEFLEET_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    std::path::Path::new(&path).exists().then_some(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_fleet_live_and_refuses_what_a_role_may_not_do() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "No Chromium at /usr/bin/chromium (EDGEFLEET_TEST_CHROMIUM): the browser run is left to tests/run.sh."
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        "[telemetry]\nwindow_secs = 2\nsettle_secs = 3\n\n[retrain.policy]\nwindows = 3\nmin_rows = 20\n",
    )
    .expect("controller config");
    let c = ControllerProcess::start_with(
        &dir.path().join("controller"),
        &["--mqtt-listen", "127.0.0.1:0", "--config", &config.to_string_lossy()],
    );
    let http = reqwest::Client::new();
    let agent_conf = agent_config(dir.path(), 64 << 20);
    let agents = fleet(&c, dir.path(), &[agent_conf.clone(), agent_conf.clone(), agent_conf], &http).await;
    // Versions 2 and 3 for the rollouts (the same model: the rollouts' story is in their gates).
    let model = testdata().join("iris_logreg.onnx").to_string_lossy().into_owned();
    for _ in 0..2 {
        c.cli_json(&["model", "push", &model, "--name", "iris"]);
    }
    let operator = c.cli_json(&["token", "create", "--name", "console-operator", "--role", "operator"])["token"]
        .as_str()
        .expect("operator token")
        .to_owned();
    let viewer = c.cli_json(&["token", "create", "--name", "console-viewer", "--role", "viewer"])["token"]
        .as_str()
        .expect("viewer")
        .to_owned();

    // Traffic on every agent for the whole run: what the gates and the drift report measure.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (stop, answered, http) = (stop.clone(), answered.clone(), http.clone());
        let bases: Vec<String> = agents.iter().map(|(a, _)| a.base.clone()).collect();
        tokio::spawn(async move {
            let rows = iris_rows();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for base in &bases {
                    let row = petals_shifted(rows[(n * 37) % rows.len()]);
                    if infer_at(&http, base, &format!("c{n}"), row).await {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };

    let screenshots = std::env::var("EDGEFLEET_CONSOLE_SCREENSHOTS").ok();
    let spec = serde_json::json!({
        "url": c.url(""),
        "chromium": chromium,
        "edgefleet": binary("edgefleet"),
        "admin": ADMIN,
        "operator": operator,
        "viewer": viewer,
        "screenshots": screenshots,
        "drifted": ["petal_length", "petal_width"],
        "steady": ["sepal_length", "sepal_width"],
    });
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).expect("spec");
    let spec_arg = spec_file.to_string_lossy().into_owned();
    let out = tokio::task::spawn_blocking(move || python_client("console_browser.py", &[&spec_arg]))
        .await
        .expect("browser run");
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic");
    let Some(out) = out else { return };
    let measured: serde_json::Value = serde_json::from_str(out.trim()).expect("the script's JSON line");
    eprintln!("console: {measured}");
    assert!(measured["live_waves"].as_array().is_some_and(|w| w.len() >= 2), "{measured}");
    assert!(answered.load(Ordering::Relaxed) > 0);
}

/// One iris inference at an agent's base URL (the traffic task owns no agent handle).
async fn infer_at(http: &reqwest::Client, base: &str, id: &str, row: [f32; 4]) -> bool {
    let body =
        serde_json::json!({"id": id, "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]});
    let r = http
        .post(format!("{base}/v2/models/iris/infer"))
        .json(&body)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    r.is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
}
