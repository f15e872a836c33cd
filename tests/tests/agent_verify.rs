//! `edgefleet-agent verify` on the committed signed fixture (tests/testdata/deployment).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{binary, testdata};

fn fixture() -> PathBuf {
    testdata().join("deployment")
}

fn run(doc: &Path, sig: &Path, extra: &[&str]) -> Output {
    let dir = fixture();
    Command::new(binary("edgefleet-agent"))
        .arg("verify")
        .arg("--trust")
        .arg(dir.join("trust.json"))
        .arg("--document")
        .arg(doc)
        .arg("--signature")
        .arg(sig)
        .args(extra)
        .output()
        .expect("run verify")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_fixture_verifies_with_its_artifacts() {
    let d = fixture();
    let artifacts = d.join("artifacts");
    let o = run(
        &d.join("document.json"),
        &d.join("document.sig"),
        &["--device-id", "demo-device-1", "--artifacts", artifacts.to_str().expect("utf-8")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("verified: iris version 1, sequence 1"), "{out}");
    assert!(out.contains("artifact model.onnx: ok"), "{out}");
}

#[test]
fn refusals_exit_1_and_name_the_attack_class() {
    let d = fixture();
    let (doc, sig) = (d.join("document.json"), d.join("document.sig"));
    for (args, class) in [
        (vec!["--device-id", "demo-device-1", "--last-sequence", "1"], "[replayed]"),
        (vec!["--device-id", "demo-device-1", "--last-sequence", "7"], "[older_sequence]"),
        (vec!["--device-id", "someone-else"], "[wrong_device]"),
        (vec!["--device-id", "demo-device-1", "--now", "4102444800"], "[expired]"),
    ] {
        let o = run(&doc, &sig, &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(class), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_tampered_document_or_artifact_is_refused() {
    let d = fixture();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut bytes = std::fs::read(d.join("document.json")).expect("read");
    let pos = bytes.windows(6).position(|w| w == b"\"iris\"").expect("name") + 1;
    bytes[pos] = b'I';
    let tampered = tmp.path().join("document.json");
    std::fs::write(&tampered, &bytes).expect("write");
    let o = run(&tampered, &d.join("document.sig"), &["--device-id", "demo-device-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("[bad_signature]"), "{}", stderr(&o));

    let artifacts = tmp.path().join("artifacts");
    std::fs::create_dir(&artifacts).expect("mkdir");
    std::fs::copy(testdata().join("mlp.onnx"), artifacts.join("model.onnx")).expect("copy");
    let o = run(
        &d.join("document.json"),
        &d.join("document.sig"),
        &["--device-id", "demo-device-1", "--artifacts", artifacts.to_str().expect("utf-8")],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("[too_long]") || err.contains("[hash_mismatch]"), "{err}");
}

#[test]
fn unreadable_input_exits_66() {
    let d = fixture();
    let o = run(&d.join("missing.json"), &d.join("document.sig"), &["--device-id", "demo-device-1"]);
    assert_eq!(o.status.code(), Some(66));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
}
