//! Writes `tests/testdata/deployment/`: a signed deployment document for the README's
//! `edgefleet-agent verify` walk-through and the verify command's tests.
//!
//! Deterministic (fixed seed, Ed25519 signatures are deterministic, fixed zstd level), so
//! re-running it changes nothing. The key is a published test key: never trust it anywhere.
//!
//! Run from the repository root: `cargo run -p edgefleet-shared --example deployment_fixture`
#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a fixture generator")]

use std::fs;
use std::path::Path;

use edgefleet_shared::compress::{DEFAULT_LEVEL, compress};
use edgefleet_shared::deployment::{DEPLOYMENT_KIND, DeployedArtifact, DeploymentDocument, ModelRef};
use edgefleet_shared::keys::{FileKey, Signer};
use edgefleet_shared::trust::TrustStore;
use edgefleet_shared::verify::sha256_hex;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata");
    let out = root.join("deployment");
    fs::create_dir_all(out.join("artifacts")).unwrap();

    let key = FileKey::from_seed([42; 32]);
    key.save(&out.join("controller.key")).unwrap();
    fs::write(out.join("trust.json"), TrustStore::new(1, [key.public_key()]).to_bytes()).unwrap();

    let model = fs::read(root.join("iris_logreg.onnx")).unwrap();
    let packed = compress(&model, DEFAULT_LEVEL).unwrap();
    fs::write(out.join("artifacts/model.onnx.zst"), &packed).unwrap();
    let doc = DeploymentDocument {
        kind: DEPLOYMENT_KIND.into(),
        key_id: key.key_id(),
        sequence: 1,
        issued_at: 1_790_000_000,
        expires_at: 4_102_444_800,
        devices: vec!["demo-device-1".into()],
        model: Some(ModelRef { name: "iris".into(), version: 1 }),
        artifacts: vec![DeployedArtifact {
            name: "model.onnx".into(),
            sha256: sha256_hex(&model),
            size: model.len() as u64,
            compressed_sha256: sha256_hex(&packed),
            compressed_size: packed.len() as u64,
            delta: None,
        }],
        shadow: None,
        models: Vec::new(),
    };
    let (bytes, sig) = doc.sign(&key);
    fs::write(out.join("document.json"), &bytes).unwrap();
    fs::write(out.join("document.sig"), serde_json::to_string_pretty(&sig).unwrap() + "\n").unwrap();
    println!("wrote {}", out.display());
}
