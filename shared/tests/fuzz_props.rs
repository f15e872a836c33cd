//! Property tests: arbitrary bytes thrown at every parser of untrusted input never panic.

use edgefleet_shared::bundle::BundleManifest;
use edgefleet_shared::keys::{FileKey, Signer};
use edgefleet_shared::signature::{DocumentSignature, SignedEnvelope};
use edgefleet_shared::trust::TrustStore;
use edgefleet_shared::verify::verify_deployment;
use proptest::prelude::*;

fn trusted() -> (FileKey, TrustStore) {
    let key = FileKey::from_seed([3; 32]);
    let trust = TrustStore::new(1, [key.public_key()]);
    (key, trust)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn signed_arbitrary_bytes_never_panic_the_verifier(bytes in proptest::collection::vec(any::<u8>(), 0..2048), last in proptest::option::of(any::<u64>()), now in any::<u64>()) {
        let (key, trust) = trusted();
        // Signed by the trusted key, so the parser behind the signature check is reached.
        let sig = DocumentSignature::sign(&bytes, &key);
        let _ = verify_deployment(&bytes, &sig, &trust, "d", last, now);
    }

    #[test]
    fn signed_json_like_documents_never_panic(doc in "\\{\"kind\":\"edgefleet.deployment/v1\",\"key_id\":\"[0-9a-f]{16}\",\"sequence\":[0-9]{1,20},\"issued_at\":[0-9]{1,5},\"expires_at\":[0-9]{1,21},\"devices\":\\[\"[a-z./]{0,8}\"\\],\"model\":\\{\"name\":\"m\",\"version\":1\\},\"artifacts\":\\[\\{\"name\":\"[a-z./\\\\]{0,8}\",\"sha256\":\"[0-9a-f]{0,64}\",\"size\":[0-9]{1,20},\"compressed_sha256\":\"[0-9a-f]{64}\",\"compressed_size\":1\\}\\]\\}") {
        let (key, trust) = trusted();
        let sig = DocumentSignature::sign(doc.as_bytes(), &key);
        let _ = verify_deployment(doc.as_bytes(), &sig, &trust, "d", Some(5), 10);
        prop_assert!(key.key_id().len() == 16);
    }

    #[test]
    fn arbitrary_envelopes_signatures_trust_files_and_bundles_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let (_, trust) = trusted();
        if let Ok(env) = serde_json::from_slice::<SignedEnvelope>(&bytes) {
            let _ = env.document_bytes();
            let _ = env.signature.bytes();
        }
        if let Ok(sig) = serde_json::from_slice::<DocumentSignature>(&bytes) {
            let _ = trust.check(&bytes, &sig);
            let _ = trust.rotate(&bytes, &sig);
        }
        let _ = TrustStore::from_bytes(&bytes);
        let _ = BundleManifest::from_bytes(&bytes);
    }
}
