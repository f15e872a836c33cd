//! The trust store: which controller keys a device accepts, and how that set may change.
//!
//! Devices get their first trust file out of band (image or provisioning). After that the set
//! changes only by **rotation**: a new trust file, with a higher `version`, signed by a key the
//! device trusts now. Trust is never learnt from the network it protects against.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::keys::{PublicKey, Signer};
use crate::refusal::VerifyError;
use crate::signature::DocumentSignature;

/// `kind` of a trust file.
pub const TRUST_FILE_KIND: &str = "edgefleet.trust/v1";

/// One trusted key as written in a trust file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// Key id (first 16 hex digits of SHA-256 of the public key).
    pub id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// Base64 of the 32-byte public key.
    pub public_key: String,
}

/// The trust file (`trust.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    /// Always [`TRUST_FILE_KIND`].
    pub kind: String,
    /// Increases with every rotation; a device refuses a set that is not newer than its own.
    pub version: u64,
    /// The keys.
    pub keys: Vec<TrustedKey>,
}

/// A validated set of trusted public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustStore {
    version: u64,
    keys: BTreeMap<String, PublicKey>,
}

impl TrustStore {
    /// A store of the given keys at `version`.
    pub fn new(version: u64, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        TrustStore { version, keys: keys.into_iter().map(|k| (k.key_id(), k)).collect() }
    }

    /// Parses and validates trust file bytes (ids must match their keys; no empty set).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VerifyError> {
        let file: TrustFile =
            serde_json::from_slice(bytes).map_err(|e| VerifyError::Malformed(format!("trust file: {e}")))?;
        if file.kind != TRUST_FILE_KIND {
            return Err(VerifyError::Malformed(format!("trust file kind {:?} is not {TRUST_FILE_KIND}", file.kind)));
        }
        if file.keys.is_empty() {
            return Err(VerifyError::Malformed("trust file lists no keys".into()));
        }
        let mut keys = BTreeMap::new();
        for k in &file.keys {
            if k.algorithm != "ed25519" {
                return Err(VerifyError::Malformed(format!(
                    "key {}: algorithm {:?} is not ed25519",
                    k.id, k.algorithm
                )));
            }
            let key = PublicKey::from_base64(&k.public_key)
                .ok_or_else(|| VerifyError::Malformed(format!("key {}: public_key is not an ed25519 key", k.id)))?;
            if key.key_id() != k.id {
                return Err(VerifyError::Malformed(format!(
                    "key {}: id does not match the key ({})",
                    k.id,
                    key.key_id()
                )));
            }
            keys.insert(k.id.clone(), key);
        }
        Ok(TrustStore { version: file.version, keys })
    }

    /// The trust file for this store (pretty JSON, keys sorted by id).
    pub fn to_file(&self) -> TrustFile {
        TrustFile {
            kind: TRUST_FILE_KIND.into(),
            version: self.version,
            keys: self
                .keys
                .iter()
                .map(|(id, k)| TrustedKey { id: id.clone(), algorithm: "ed25519".into(), public_key: k.to_base64() })
                .collect(),
        }
    }

    /// Trust file bytes: pretty JSON with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&self.to_file()).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The set's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The key with this id.
    pub fn get(&self, key_id: &str) -> Option<&PublicKey> {
        self.keys.get(key_id)
    }

    /// Key ids, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Checks a signature over exact bytes against this store.
    pub fn check(&self, bytes: &[u8], signature: &DocumentSignature) -> Result<(), VerifyError> {
        let key =
            self.get(&signature.key_id).ok_or_else(|| VerifyError::UnknownKey { key_id: signature.key_id.clone() })?;
        let sig = signature.bytes().ok_or_else(|| VerifyError::BadSignature { key_id: signature.key_id.clone() })?;
        if key.verify(bytes, &sig) {
            Ok(())
        } else {
            Err(VerifyError::BadSignature { key_id: signature.key_id.clone() })
        }
    }

    /// Key rotation: accepts `new_trust_file` only if a key trusted now signed it and its
    /// version is newer; the returned store then replaces this one entirely.
    pub fn rotate(&self, new_trust_file: &[u8], signature: &DocumentSignature) -> Result<TrustStore, VerifyError> {
        self.check(new_trust_file, signature)?;
        let next = TrustStore::from_bytes(new_trust_file)?;
        if next.version == self.version {
            return Err(VerifyError::Replayed { sequence: next.version });
        }
        if next.version < self.version {
            return Err(VerifyError::OlderSequence { sequence: next.version, last: self.version });
        }
        Ok(next)
    }

    /// Signs trust file bytes for rotation.
    pub fn sign_rotation(bytes: &[u8], signer: &dyn Signer) -> DocumentSignature {
        DocumentSignature::sign(bytes, signer)
    }

    /// Applies, in order, every rotation of `chain` newer than this set; each must be signed by a
    /// key of the set before it ([`TrustStore::rotate`]). Rotations at or below this version
    /// were applied before and are skipped. All or nothing: on any refusal this store stays.
    /// Returns the resulting store and the rotations it applied.
    pub fn apply_chain(&self, chain: &TrustChain) -> Result<(TrustStore, Vec<TrustRotation>), VerifyError> {
        let mut store = self.clone();
        let mut applied = Vec::new();
        for rotation in &chain.rotations {
            let bytes =
                rotation.trust_bytes().ok_or_else(|| VerifyError::Malformed("rotation: trust is not base64".into()))?;
            if TrustStore::from_bytes(&bytes)?.version <= store.version {
                continue;
            }
            store = store.rotate(&bytes, &rotation.signature)?;
            applied.push(rotation.clone());
        }
        Ok((store, applied))
    }
}

/// One key rotation as it travels: a trust file's exact bytes and the signature over them by a
/// key of the set it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRotation {
    /// Base64 of the new trust file's bytes.
    pub trust: String,
    /// Signature over those bytes by a key trusted before.
    pub signature: DocumentSignature,
}

impl TrustRotation {
    /// Signs `trust_file` bytes with `signer` (a key of the set being replaced).
    pub fn sign(trust_file: &[u8], signer: &dyn Signer) -> Self {
        TrustRotation { trust: B64.encode(trust_file), signature: DocumentSignature::sign(trust_file, signer) }
    }

    /// The trust file bytes, if the base64 decodes.
    pub fn trust_bytes(&self) -> Option<Vec<u8>> {
        B64.decode(&self.trust).ok()
    }
}

/// Every rotation since a fleet's first trust set, oldest first: what the controller serves to
/// devices (`GET /api/v1/devices/{id}/trust`, retained on `PREFIX/trust`), and what a device
/// keeps of the rotations it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustChain {
    /// The rotations, oldest first.
    pub rotations: Vec<TrustRotation>,
}

/// Largest trust chain a device reads (a rotation is a few hundred bytes).
pub const MAX_TRUST_CHAIN_BYTES: usize = 256 * 1024;
