//! One test per attack class: each must produce its specific typed error.

use edgefleet_shared::compress::{self, DEFAULT_LEVEL};
use edgefleet_shared::deployment::{DEPLOYMENT_KIND, DeployedArtifact, DeploymentDocument, ModelRef};
use edgefleet_shared::keys::{FileKey, Signer};
use edgefleet_shared::signature::DocumentSignature;
use edgefleet_shared::trust::{TrustChain, TrustRotation, TrustStore};
use edgefleet_shared::verify::{
    ArtifactError, VerifyError, sha256_hex, verify_artifact, verify_compressed_artifact, verify_deployment,
};

const NOW: u64 = 1_800_000_000;
const DEVICE: &str = "device-7";

struct Fixture {
    key: FileKey,
    trust: TrustStore,
    model: Vec<u8>,
    packed: Vec<u8>,
}

fn fixture() -> Fixture {
    let key = FileKey::from_seed([7; 32]);
    let trust = TrustStore::new(1, [key.public_key()]);
    let model: Vec<u8> = (0..50_000u32).flat_map(|i| (i % 97).to_le_bytes()).collect();
    let packed = compress::compress(&model, DEFAULT_LEVEL).expect("compress");
    Fixture { key, trust, model, packed }
}

fn artifact(name: &str, content: &[u8], packed: &[u8]) -> DeployedArtifact {
    DeployedArtifact {
        name: name.into(),
        sha256: sha256_hex(content),
        size: content.len() as u64,
        compressed_sha256: sha256_hex(packed),
        compressed_size: packed.len() as u64,
        delta: None,
    }
}

fn document(f: &Fixture, sequence: u64) -> DeploymentDocument {
    DeploymentDocument {
        kind: DEPLOYMENT_KIND.into(),
        key_id: f.key.key_id(),
        sequence,
        issued_at: NOW - 60,
        expires_at: NOW + 3600,
        devices: vec![DEVICE.into(), "device-8".into()],
        model: Some(ModelRef { name: "iris".into(), version: 3 }),
        artifacts: vec![artifact("model.onnx", &f.model, &f.packed)],
        shadow: None,
        models: Vec::new(),
    }
}

fn verify(
    bytes: &[u8],
    sig: &DocumentSignature,
    f: &Fixture,
    last: Option<u64>,
) -> Result<DeploymentDocument, VerifyError> {
    verify_deployment(bytes, sig, &f.trust, DEVICE, last, NOW)
}

#[test]
fn a_valid_document_verifies() {
    let f = fixture();
    let (bytes, sig) = document(&f, 5).sign(&f.key);
    assert_eq!(verify(&bytes, &sig, &f, Some(4)).expect("valid"), document(&f, 5));
    assert!(verify(&bytes, &sig, &f, None).is_ok(), "a fresh device accepts any sequence");
}

#[test]
fn tampered_document_byte_is_a_bad_signature() {
    let f = fixture();
    let (mut bytes, sig) = document(&f, 5).sign(&f.key);
    let pos = bytes.windows(6).position(|w| w == b"\"iris\"").expect("model name") + 1;
    bytes[pos] = b'I';
    let err = verify(&bytes, &sig, &f, None).expect_err("tampered");
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
    assert_eq!(err.class(), "bad_signature");
}

#[test]
fn signature_by_an_untrusted_key_claiming_a_trusted_id_is_a_bad_signature() {
    let f = fixture();
    let attacker = FileKey::from_seed([66; 32]);
    let doc = document(&f, 5);
    let (bytes, mut sig) = doc.sign(&attacker);
    sig.key_id = f.key.key_id();
    assert!(matches!(verify(&bytes, &sig, &f, None), Err(VerifyError::BadSignature { .. })));
}

#[test]
fn unknown_key_id_is_refused_before_parsing() {
    let f = fixture();
    let attacker = FileKey::from_seed([66; 32]);
    let (_, sig) = document(&f, 5).sign(&attacker);
    let err = verify(b"not even json", &sig, &f, None).expect_err("unknown key");
    assert_eq!(err, VerifyError::UnknownKey { key_id: attacker.key_id() });
}

#[test]
fn document_for_another_device_is_refused() {
    let f = fixture();
    let mut doc = document(&f, 5);
    doc.devices = vec!["device-8".into()];
    let (bytes, sig) = doc.sign(&f.key);
    let err = verify(&bytes, &sig, &f, None).expect_err("other device");
    assert!(matches!(err, VerifyError::WrongDevice { ref device_id, .. } if device_id == DEVICE), "{err}");
}

#[test]
fn same_sequence_replayed_is_refused() {
    let f = fixture();
    let (bytes, sig) = document(&f, 5).sign(&f.key);
    assert_eq!(verify(&bytes, &sig, &f, Some(5)).expect_err("replay"), VerifyError::Replayed { sequence: 5 });
}

#[test]
fn older_sequence_is_refused() {
    let f = fixture();
    let (bytes, sig) = document(&f, 3).sign(&f.key);
    assert_eq!(
        verify(&bytes, &sig, &f, Some(5)).expect_err("rollback"),
        VerifyError::OlderSequence { sequence: 3, last: 5 }
    );
}

#[test]
fn expired_document_is_refused() {
    let f = fixture();
    let mut doc = document(&f, 5);
    doc.expires_at = NOW;
    let (bytes, sig) = doc.sign(&f.key);
    assert_eq!(
        verify(&bytes, &sig, &f, None).expect_err("expired"),
        VerifyError::Expired { expires_at: NOW, now: NOW }
    );
}

#[test]
fn path_traversal_in_an_artifact_name_is_refused() {
    let f = fixture();
    for name in ["../../etc/passwd", "/etc/passwd", "a/b", "..", ".hidden", "c:evil", "a\\b", "sp ace", ""] {
        let mut doc = document(&f, 5);
        doc.artifacts[0].name = name.into();
        let (bytes, sig) = doc.sign(&f.key);
        let err = verify(&bytes, &sig, &f, None).expect_err(name);
        assert!(matches!(err, VerifyError::UnsafeName { .. }), "{name}: {err}");
    }
}

#[test]
fn every_model_of_a_document_is_checked_like_the_first() {
    let f = fixture();
    let second = |name: &str, artifact_name: &str| edgefleet_shared::deployment::DesiredModel {
        model: ModelRef { name: name.into(), version: 1 },
        artifacts: vec![artifact(artifact_name, &f.model, &f.packed)],
        shadow: None,
    };
    let mut doc = document(&f, 5);
    doc.models = vec![second("mlp", "model.onnx")];
    let (bytes, sig) = doc.sign(&f.key);
    let ok = verify(&bytes, &sig, &f, None).expect("two models");
    assert_eq!(ok.split().iter().map(|d| d.model.name.as_str()).collect::<Vec<_>>(), ["iris", "mlp"]);
    assert_eq!(ok.all_artifacts().count(), 2);

    doc.models = vec![second("mlp", "../../etc/passwd")];
    let (bytes, sig) = doc.sign(&f.key);
    assert!(matches!(verify(&bytes, &sig, &f, None), Err(VerifyError::UnsafeName { .. })));

    doc.models = vec![second("../x", "model.onnx")];
    let (bytes, sig) = doc.sign(&f.key);
    assert!(verify(&bytes, &sig, &f, None).is_err(), "an unsafe model name");

    doc.models = vec![second("iris", "model.onnx")];
    let (bytes, sig) = doc.sign(&f.key);
    assert!(matches!(verify(&bytes, &sig, &f, None), Err(VerifyError::Malformed(m)) if m.contains("twice")));

    doc.models = vec![edgefleet_shared::deployment::DesiredModel { artifacts: Vec::new(), ..second("mlp", "x") }];
    let (bytes, sig) = doc.sign(&f.key);
    assert!(matches!(verify(&bytes, &sig, &f, None), Err(VerifyError::Malformed(_))), "a model without artifacts");

    let empty = document(&f, 5).with_models(Vec::new());
    let (bytes, sig) = empty.sign(&f.key);
    assert!(verify(&bytes, &sig, &f, None).expect("an empty set").split().is_empty());
    let mut orphan = document(&f, 5).with_models(Vec::new());
    orphan.models = vec![second("mlp", "model.onnx")];
    let (bytes, sig) = orphan.sign(&f.key);
    assert!(matches!(verify(&bytes, &sig, &f, None), Err(VerifyError::Malformed(_))), "further models without a first");
}

#[test]
fn a_delta_digest_that_is_not_hex_is_refused() {
    let f = fixture();
    let hex = "ab".repeat(32);
    for (sha256, base_sha256) in [("../../staging/x", hex.as_str()), (hex.as_str(), "../base"), ("ABC", hex.as_str())] {
        let mut doc = document(&f, 5);
        doc.artifacts[0].delta = Some(edgefleet_shared::deployment::ArtifactDelta {
            base_sha256: base_sha256.into(),
            sha256: sha256.into(),
            size: 10,
        });
        let (bytes, sig) = doc.sign(&f.key);
        let err = verify(&bytes, &sig, &f, None).expect_err(sha256);
        assert!(matches!(&err, VerifyError::Malformed(m) if m.contains("delta.")), "{sha256}: {err}");
    }
    let mut doc = document(&f, 5);
    doc.artifacts[0].delta =
        Some(edgefleet_shared::deployment::ArtifactDelta { base_sha256: hex.clone(), sha256: hex.clone(), size: 10 });
    let (bytes, sig) = doc.sign(&f.key);
    assert!(verify(&bytes, &sig, &f, None).is_ok(), "hex digests pass");
}

#[test]
fn signed_garbage_is_malformed() {
    let f = fixture();
    let sig = DocumentSignature::sign(b"{\"kind\": 1}", &f.key);
    assert!(matches!(verify(b"{\"kind\": 1}", &sig, &f, None), Err(VerifyError::Malformed(_))));
}

#[test]
fn swapped_artifact_from_another_release_is_a_hash_mismatch() {
    let f = fixture();
    let doc = document(&f, 5);
    let other: Vec<u8> = f.model.iter().map(|b| b.wrapping_add(1)).collect();
    let err = verify_artifact(&doc.artifacts[0], other.as_slice()).expect_err("swapped");
    assert!(matches!(err, ArtifactError::HashMismatch { .. }), "{err}");
    // The same swap on the compressed transfer is caught before decompression.
    let other_packed = compress::compress(&other, DEFAULT_LEVEL).expect("compress");
    let mut doc2 = doc.clone();
    doc2.artifacts[0].compressed_size = other_packed.len() as u64;
    let err = verify_compressed_artifact(&doc2.artifacts[0], other_packed.as_slice(), Vec::new()).expect_err("swapped");
    assert!(matches!(err, ArtifactError::HashMismatch { .. }), "{err}");
    // And the genuine artifact passes both ways.
    verify_artifact(&doc.artifacts[0], f.model.as_slice()).expect("genuine");
    let mut out = Vec::new();
    verify_compressed_artifact(&doc.artifacts[0], f.packed.as_slice(), &mut out).expect("genuine compressed");
    assert_eq!(out, f.model);
}

/// A reader that never ends, counting what was pulled from it.
struct Endless {
    pulled: u64,
}

impl std::io::Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.fill(0xAB);
        self.pulled += buf.len() as u64;
        Ok(buf.len())
    }
}

#[test]
fn artifact_longer_than_declared_stops_at_once() {
    let f = fixture();
    let doc = document(&f, 5);
    let mut endless = Endless { pulled: 0 };
    let err = verify_artifact(&doc.artifacts[0], &mut endless).expect_err("endless");
    assert!(matches!(err, ArtifactError::TooLong { .. }), "{err}");
    assert!(endless.pulled < doc.artifacts[0].size + 128 * 1024, "read {} bytes", endless.pulled);

    let mut endless = Endless { pulled: 0 };
    let err = verify_compressed_artifact(&doc.artifacts[0], &mut endless, Vec::new()).expect_err("endless");
    assert!(matches!(err, ArtifactError::TooLong { .. } | ArtifactError::Corrupt { .. }), "{err}");
    assert!(endless.pulled < doc.artifacts[0].compressed_size + 256 * 1024);
}

#[test]
fn zstd_bomb_beyond_the_declared_size_is_refused() {
    let f = fixture();
    let bomb_content = vec![0u8; 64 * 1024 * 1024];
    let bomb = compress::compress(&bomb_content, 19).expect("compress");
    let mut doc = document(&f, 5);
    // The attacker declares a small model but ships a stream that inflates to 64 MiB.
    doc.artifacts[0] = DeployedArtifact {
        name: "model.onnx".into(),
        sha256: sha256_hex(&bomb_content[..1000]),
        size: 1000,
        compressed_sha256: sha256_hex(&bomb),
        compressed_size: bomb.len() as u64,
        delta: None,
    };
    let mut sink = Vec::new();
    let err = verify_compressed_artifact(&doc.artifacts[0], bomb.as_slice(), &mut sink).expect_err("bomb");
    assert!(matches!(err, ArtifactError::DecompressedTooLarge { declared: 1000, .. }), "{err}");
    assert!(sink.len() <= 1000, "wrote {} bytes", sink.len());
}

#[test]
fn key_rotation_needs_a_currently_trusted_signature() {
    let f = fixture();
    let next_key = FileKey::from_seed([8; 32]);
    let next = TrustStore::new(2, [next_key.public_key()]);
    let bytes = next.to_bytes();

    let attacker = FileKey::from_seed([66; 32]);
    let err = f.trust.rotate(&bytes, &TrustStore::sign_rotation(&bytes, &attacker)).expect_err("untrusted");
    assert_eq!(err, VerifyError::UnknownKey { key_id: attacker.key_id() });
    let mut forged = TrustStore::sign_rotation(&bytes, &attacker);
    forged.key_id = f.key.key_id();
    assert!(matches!(f.trust.rotate(&bytes, &forged), Err(VerifyError::BadSignature { .. })));

    let rotated = f.trust.rotate(&bytes, &TrustStore::sign_rotation(&bytes, &f.key)).expect("trusted rotation");
    assert_eq!(rotated, next);
    // The old key is no longer trusted; the new one is.
    let (doc, sig) = document(&f, 9).sign(&f.key);
    let err = verify_deployment(&doc, &sig, &rotated, DEVICE, None, NOW).expect_err("old key");
    assert_eq!(err, VerifyError::UnknownKey { key_id: f.key.key_id() });
    let mut new_doc = document(&f, 9);
    new_doc.key_id = next_key.key_id();
    let (doc, sig) = new_doc.sign(&next_key);
    verify_deployment(&doc, &sig, &rotated, DEVICE, None, NOW).expect("new key");

    // A rotation back to an older set, even correctly signed, is refused.
    let old = f.trust.to_bytes();
    let err = rotated.rotate(&old, &TrustStore::sign_rotation(&old, &next_key)).expect_err("downgrade");
    assert_eq!(err, VerifyError::OlderSequence { sequence: 1, last: 2 });
}

#[test]
fn a_trust_chain_applies_each_rotation_signed_by_the_set_before_it() {
    let f = fixture();
    let (k2, k3) = (FileKey::from_seed([8; 32]), FileKey::from_seed([9; 32]));
    let v2 = TrustStore::new(2, [k2.public_key()]).to_bytes();
    let v3 = TrustStore::new(3, [k3.public_key()]).to_bytes();
    let chain = TrustChain { rotations: vec![TrustRotation::sign(&v2, &f.key), TrustRotation::sign(&v3, &k2)] };

    // A device on v1 takes both steps; one already on v2 skips the first.
    let (at_v3, applied) = f.trust.apply_chain(&chain).expect("chain");
    assert_eq!((at_v3.version(), applied.len()), (3, 2));
    assert_eq!(at_v3.key_ids().collect::<Vec<_>>(), [k3.key_id().as_str()]);
    let (again, applied) = TrustStore::from_bytes(&v2).expect("v2").apply_chain(&chain).expect("from v2");
    assert_eq!((again, applied.len()), (at_v3.clone(), 1));
    assert!(at_v3.apply_chain(&chain).expect("up to date").1.is_empty());

    // A step signed by a key the set before it does not hold breaks the chain: nothing applies.
    let attacker = FileKey::from_seed([66; 32]);
    let forged = TrustChain { rotations: vec![TrustRotation::sign(&v2, &f.key), TrustRotation::sign(&v3, &attacker)] };
    assert_eq!(f.trust.apply_chain(&forged), Err(VerifyError::UnknownKey { key_id: attacker.key_id() }));
    let skipping = TrustChain { rotations: vec![TrustRotation::sign(&v3, &k2)] };
    assert_eq!(f.trust.apply_chain(&skipping), Err(VerifyError::UnknownKey { key_id: k2.key_id() }));
}
