//! Command-line contracts of `edgefleet` that need no server.

use std::process::Command;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgefleet"))
}

#[test]
fn cli_usage_errors_exit_2() {
    let out = cli().args(["model", "alias", "iris", "production"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected NAME:VERSION"));
    let out = cli().args(["model", "push", "/nonexistent.onnx", "--name", "x"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.onnx"));
    let out = cli().args(["model", "push", "m.onnx", "--name", "x", "--metric", "noequals"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "clap refuses a malformed key=value");
}

#[test]
fn enum_flags_are_checked_before_anything_is_sent() {
    for args in [
        &["token", "create", "--role", "root"][..],
        &["rollout", "create", "iris:1", "--selector", "a=b", "--strategy", "blue-green"],
        &["rollout", "create", "iris:1", "--selector", "a=b", "--on-fail", "retry"],
    ] {
        let out = cli().args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
