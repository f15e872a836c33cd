//! Key rotation end to end, under a running fleet of three agents (one of them offline during
//! the rotation, one reaching the controller only over HTTP through a man in the middle, one
//! killed with SIGKILL while the rotation arrives): `edgefleet-controller rotate-key` makes a new
//! key and trust set; every agent verifies it against the set it holds, persists it and ends on
//! it; documents signed by the old key are then refused; a rotation signed by a key the agent
//! does not trust is refused; `--revoke` rotates again and deletes the old private keys.

mod common;

use std::path::Path;
use std::time::Duration;

use common::controller::ControllerProcess;
use common::proxy::{Desired, Proxy};
use common::{AgentProcess, served_version, strs, testdata, until};
use edgefleet_shared::deployment::DeploymentDocument;
use edgefleet_shared::keys::{FileKey, Signer as _};
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::trust::{TrustChain, TrustRotation, TrustStore};

fn rotate(c: &ControllerProcess, extra: &[&str]) -> serde_json::Value {
    let out = common::controller::controller_cmd(&c.data_dir)
        .args(["rotate-key", "--data-dir"])
        .arg(&c.data_dir)
        .args(extra)
        .output()
        .expect("rotate-key");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON summary")
}

fn device(c: &ControllerProcess, id: &str) -> serde_json::Value {
    c.cli_json(&["device", "show", id])
}

fn trust_version(c: &ControllerProcess, id: &str) -> Option<u64> {
    device(c, id)["status"]["trust_version"].as_u64()
}

fn device_id(data: &Path) -> String {
    edgefleet_shared::fleet::device_id(&FileKey::load(&data.join("device.key")).expect("key").public_key())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_key_under_a_running_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(&dir.path().join("controller"));
    for _ in 0..2 {
        c.cli_json(&["model", "push", &testdata().join("iris_logreg.onnx").to_string_lossy(), "--name", "iris"]);
    }
    let trust = c.trust_file(dir.path());
    let token = c.cli_json(&["device", "token", "create", "--uses", "3", "--label", "site=lab"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let proxy = Proxy::start(&c.base).await;
    let args = |name: &str| {
        let mut a = c.agent_args(&trust, &dir.path().join(name), 0);
        a.extend(["--enroll-token".to_owned(), token.clone()]);
        a
    };
    // A: HTTP only, through the proxy (its broker address leads nowhere).
    let mut a_args = args("a");
    let at = a_args.iter().position(|x| x == "--controller").expect("flag") + 1;
    a_args[at] = proxy.url.clone();
    a_args.extend(["--mqtt".to_owned(), "mqtt://127.0.0.1:9".to_owned()]);
    let (b_args, c_args) = (args("b"), args("c"));
    let agent_a = AgentProcess::run(&strs(&a_args));
    let mut agent_b = AgentProcess::run(&strs(&b_args));
    let mut agent_c = AgentProcess::run(&strs(&c_args));
    let http = reqwest::Client::new();
    until("three devices", 60, async || c.cli_json(&["device", "list"]).as_array().is_some_and(|l| l.len() == 3)).await;
    c.cli_json(&["deploy", "iris:1", "--selector", "site=lab"]);
    for agent in [&agent_a, &agent_b, &agent_c] {
        until("v1 everywhere", 60, async || served_version(&http, agent).await.as_deref() == Some("1")).await;
    }
    let (id_a, id_b, id_c) =
        (device_id(&dir.path().join("a")), device_id(&dir.path().join("b")), device_id(&dir.path().join("c")));
    agent_c.terminate();
    assert!(agent_c.wait_exit(Duration::from_secs(10)).success());

    // The rotation, while B is killed at three moments of its arrival.
    let old_key = FileKey::load(&c.data_dir.join("keys/controller.key")).expect("old key");
    let rotation = rotate(&c, &["--overlap-secs", "0"]);
    assert_eq!(rotation["version"], 2);
    assert_eq!(rotation["replaced_key_id"], old_key.key_id());
    for delay_ms in [300, 600, 800] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = agent_b.child.kill();
        let _ = agent_b.child.wait();
        agent_b = AgentProcess::run(&strs(&b_args));
    }
    for id in [&id_a, &id_b] {
        until("the new trust set on the online devices", 60, async || trust_version(&c, id) == Some(2)).await;
    }
    let chain: TrustChain =
        serde_json::from_slice(&std::fs::read(dir.path().join("b/trust-chain.json")).expect("kept chain"))
            .expect("json");
    assert_eq!(chain.rotations.len(), 1);

    // New documents are signed by the new key and serve; C, started now, catches up.
    c.cli_json(&["deploy", "iris:2", "--selector", "site=lab"]);
    for agent in [&agent_a, &agent_b] {
        until("v2 under the new key", 60, async || served_version(&http, agent).await.as_deref() == Some("2")).await;
    }
    let agent_c = AgentProcess::run(&strs(&c_args));
    until("C on the new set", 60, async || trust_version(&c, &id_c) == Some(2)).await;
    until("C serving v2", 60, async || served_version(&http, &agent_c).await.as_deref() == Some("2")).await;

    // A newer document signed by the old key is refused.
    let current = proxy.forwarded_desired().pop().expect("a document A fetched");
    let envelope: SignedEnvelope = serde_json::from_slice(&current).expect("envelope");
    let mut doc: DeploymentDocument =
        serde_json::from_slice(&envelope.document_bytes().expect("bytes")).expect("document");
    doc.sequence += 10;
    doc.key_id = old_key.key_id();
    let (bytes, _) = doc.sign(&old_key);
    let forged = SignedEnvelope::sign(&bytes, &old_key);
    proxy.set_desired(Desired::Serve(serde_json::to_vec(&forged).expect("json")));
    until("the old key's document refused", 60, async || {
        device(&c, &id_a)["status"]["last_refusal"]["class"] == "unknown_key"
    })
    .await;
    assert_eq!(served_version(&http, &agent_a).await.as_deref(), Some("2"));
    proxy.set_desired(Desired::Forward);

    // A rotation signed by a key A does not trust is refused; A stays on its set.
    let evil = FileKey::from_seed([66; 32]);
    let v3 = TrustStore::new(3, [evil.public_key()]).to_bytes();
    let forged_chain = TrustChain { rotations: vec![chain.rotations[0].clone(), TrustRotation::sign(&v3, &evil)] };
    proxy.set_trust(serde_json::to_vec(&forged_chain).expect("json"), 3);
    until("the forged rotation refused", 60, async || {
        device(&c, &id_a)["status"]["last_refusal"]["class"] == "trust_unknown_key"
    })
    .await;
    assert_eq!(trust_version(&c, &id_a), Some(2));
    proxy.clear_trust();

    // Revocation: a third set, no overlap, and the old private keys are gone.
    let revoked = rotate(&c, &["--revoke"]);
    assert_eq!((revoked["version"].as_u64(), revoked["revoked"].as_bool()), (Some(3), Some(true)));
    assert!(!c.data_dir.join("keys/controller.key").exists(), "the first key was deleted");
    for id in [&id_a, &id_b, &id_c] {
        until("the third set everywhere", 60, async || trust_version(&c, id) == Some(3)).await;
    }
    c.cli_json(&["deploy", "iris:1", "--selector", "site=lab"]);
    for agent in [&agent_a, &agent_b, &agent_c] {
        until("v1 under the third key", 60, async || served_version(&http, agent).await.as_deref() == Some("1")).await;
    }
}
