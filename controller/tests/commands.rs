//! Command-line contracts of `edgefleet-controller` that need no server.

use std::process::Command;

fn controller() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgefleet-controller"))
}

#[test]
fn print_default_config_round_trips() {
    let out = controller().arg("print-default-config").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let parsed: edgefleet_controller::config::ControllerConfig = toml::from_str(&text).expect("parses");
    assert_eq!(parsed, edgefleet_controller::config::ControllerConfig::default());
}

#[test]
fn public_key_without_a_key_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = controller().args(["public-key", "--data-dir"]).arg(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("start the controller once"));
}

#[test]
fn invalid_config_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[registry]\nbaseline_bins = 1\n").expect("write");
    let out = controller()
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("baseline_bins"));
}
