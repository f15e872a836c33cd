//! Ed25519 keys: generation, files written 0600, key ids, and the [`Signer`] trait that lets a
//! hardware or cloud key replace the file key later.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `kind` of a key file.
pub const KEY_FILE_KIND: &str = "edgefleet.key/v1";

/// Key file problems.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a key file of this format.
    #[error("key file {path} is invalid: {reason}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The system's random source failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// Something that signs bytes with an Ed25519 key.
pub trait Signer: Send + Sync {
    /// Id of the key, as listed in trust files.
    fn key_id(&self) -> String;
    /// The public half.
    fn public_key(&self) -> PublicKey;
    /// Signs `message`; returns the 64-byte signature.
    fn sign(&self, message: &[u8]) -> [u8; 64];
}

/// An Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(crate) VerifyingKey);

impl PublicKey {
    /// Decodes 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        VerifyingKey::from_bytes(&arr).ok().map(PublicKey)
    }

    /// Decodes base64 of the 32 raw bytes.
    pub fn from_base64(s: &str) -> Option<Self> {
        B64.decode(s).ok().and_then(|b| Self::from_bytes(&b))
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Base64 of the 32 raw bytes.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.to_bytes())
    }

    /// The key id: the first 16 hex digits of SHA-256 over the raw public key.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.to_bytes())[..8])
    }

    /// Checks `signature` over the exact `message` bytes (strict: no malleable encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(signature) else { return false };
        self.0.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
    }
}

/// Checks many `(key, message, signature)`s at once; one answer per item, in order.
///
/// The signatures that can be checked (64 bytes, a key that is not of small order) are checked
/// together by Ed25519 batch verification: one multi-scalar multiplication for all of them,
/// with coefficients derived from every input, so nobody can choose a set that passes without
/// every signature being made with its key. When the batch fails, each is checked on its own
/// with [`PublicKey::verify`], so a bad signature refuses only its own item. A batch accepts
/// what strict verification accepts, and also a signature whose `R` is of small order, which
/// only the holder of the key can make (it forges nothing).
#[cfg(feature = "batch-verify")]
pub fn verify_many(items: &[(&PublicKey, &[u8], &[u8])]) -> Vec<bool> {
    let mut answers = vec![false; items.len()];
    let mut batch = Vec::with_capacity(items.len());
    for (i, (key, message, signature)) in items.iter().enumerate() {
        if let Ok(sig) = <[u8; 64]>::try_from(*signature)
            && !key.0.is_weak()
        {
            batch.push((i, key.0, *message, ed25519_dalek::Signature::from_bytes(&sig)));
        }
    }
    if batch.len() > 1 {
        let messages: Vec<&[u8]> = batch.iter().map(|b| b.2).collect();
        let signatures: Vec<ed25519_dalek::Signature> = batch.iter().map(|b| b.3).collect();
        let keys: Vec<VerifyingKey> = batch.iter().map(|b| b.1).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            for (i, ..) in &batch {
                answers[*i] = true;
            }
            return answers;
        }
    }
    for (i, key, message, signature) in &batch {
        answers[*i] = key.verify_strict(message, signature).is_ok();
    }
    answers
}

/// An Ed25519 private key held in memory (loaded from, or saved to, a 0600 file).
pub struct FileKey {
    key: SigningKey,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKey").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    kind: String,
    algorithm: String,
    key_id: String,
    secret_key: String,
}

impl FileKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(FileKey { key: SigningKey::from_bytes(&seed) })
    }

    /// A key from a 32-byte seed (deterministic; for fixtures and tests).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        FileKey { key: SigningKey::from_bytes(&seed) }
    }

    /// Loads the key at `path`, or generates one there (mode 0600) if the file does not exist.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        match fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                key.save(path)?;
                Ok(key)
            }
            Err(source) => Err(KeyError::Io { path: path.into(), source }),
        }
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io { path: path.into(), source };
        let invalid = |reason: String| KeyError::Invalid { path: path.into(), reason };
        let text = fs::read_to_string(path).map_err(io)?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if file.kind != KEY_FILE_KIND || file.algorithm != "ed25519" {
            return Err(invalid(format!("kind {:?}/{:?} is not {KEY_FILE_KIND}/ed25519", file.kind, file.algorithm)));
        }
        let seed: [u8; 32] = B64
            .decode(&file.secret_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("secret_key is not 32 bytes of base64".into()))?;
        let key = FileKey { key: SigningKey::from_bytes(&seed) };
        if key.key_id() != file.key_id {
            return Err(invalid(format!("key_id {} does not match the key ({})", file.key_id, key.key_id())));
        }
        Ok(key)
    }

    /// The key as PKCS#8 v1 DER (RFC 8410): what TLS stacks load as a private key, so the
    /// device's identity key can also authenticate it to a broker by certificate.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 (Ed25519) }, OCTET STRING { OCTET STRING seed } }
        const PREFIX: [u8; 16] =
            [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        let mut der = PREFIX.to_vec();
        der.extend_from_slice(&self.key.to_bytes());
        der
    }

    /// Writes the key to `path` with mode 0600, atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io { path: path.into(), source };
        let file = KeyFile {
            kind: KEY_FILE_KIND.into(),
            algorithm: "ed25519".into(),
            key_id: self.key_id(),
            secret_key: B64.encode(self.key.to_bytes()),
        };
        let mut text = serde_json::to_string_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
        text.push('\n');
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }
}

impl Signer for FileKey {
    fn key_id(&self) -> String {
        self.public_key().key_id()
    }

    fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_keys_are_0600_and_load_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/device.key");
        let key = FileKey::load_or_generate(&path).expect("generate");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = FileKey::load_or_generate(&path).expect("load");
        assert_eq!(again.key_id(), key.key_id());
        let sig = key.sign(b"hello");
        assert!(again.public_key().verify(b"hello", &sig));
        assert!(!again.public_key().verify(b"hellO", &sig));
    }

    #[test]
    fn a_tampered_key_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        FileKey::generate().expect("key").save(&path).expect("save");
        let text = fs::read_to_string(&path).expect("read").replace("\"key_id\": \"", "\"key_id\": \"00");
        fs::write(&path, text).expect("write");
        assert!(matches!(FileKey::load(&path), Err(KeyError::Invalid { .. })));
    }
}
