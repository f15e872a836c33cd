//! The device-side verifier: one function decides whether a deployment document may be acted
//! on, and streaming checks decide whether an artifact is the one it names.
//!
//! Order matters. The signature is checked over the exact bytes **before** anything is parsed,
//! so a forged document never reaches the JSON parser; then, in order: the key id the document
//! claims, the device, the sequence (replay and rollback), the expiry (freeze), and the model
//! and artifact names (path traversal). Each refusal is a [`VerifyError`] naming its attack
//! class.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::compress::{DecompressError, decompress_capped};
use crate::deployment::{DEPLOYMENT_KIND, DeployedArtifact, DeploymentDocument, DesiredModel};
use crate::names::{ModelName, check_file_name};
pub use crate::refusal::VerifyError;
use crate::signature::DocumentSignature;
use crate::trust::TrustStore;

/// Verifies a deployment document for this device.
///
/// `last_sequence` is the highest sequence this device accepted before (`None` for a fresh
/// device); `now` is the device's clock in unix seconds.
pub fn verify_deployment(
    document: &[u8],
    signature: &DocumentSignature,
    trust: &TrustStore,
    device_id: &str,
    last_sequence: Option<u64>,
    now: u64,
) -> Result<DeploymentDocument, VerifyError> {
    trust.check(document, signature)?;
    let doc: DeploymentDocument =
        serde_json::from_slice(document).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if doc.kind != DEPLOYMENT_KIND {
        return Err(VerifyError::Malformed(format!("kind {:?} is not {DEPLOYMENT_KIND}", doc.kind)));
    }
    if doc.key_id != signature.key_id {
        // Signed, but by a different key than the document says: refuse rather than guess.
        return Err(VerifyError::Malformed(format!(
            "document names key {} but was signed by {}",
            doc.key_id, signature.key_id
        )));
    }
    if !doc.devices.iter().any(|d| d == device_id) {
        return Err(VerifyError::WrongDevice { device_id: device_id.into(), devices: doc.devices.clone() });
    }
    match last_sequence {
        Some(last) if doc.sequence == last => return Err(VerifyError::Replayed { sequence: doc.sequence }),
        Some(last) if doc.sequence < last => {
            return Err(VerifyError::OlderSequence { sequence: doc.sequence, last });
        }
        _ => {}
    }
    if now >= doc.expires_at {
        return Err(VerifyError::Expired { expires_at: doc.expires_at, now });
    }
    if doc.model.is_none() && (!doc.artifacts.is_empty() || doc.shadow.is_some() || !doc.models.is_empty()) {
        return Err(VerifyError::Malformed("artifacts, shadow or further models without a model".into()));
    }
    let desired = doc.desired();
    let mut models: Vec<&str> = desired.iter().map(|m| m.model.name.as_str()).collect();
    models.sort_unstable();
    if models.windows(2).any(|w| w[0] == w[1]) {
        return Err(VerifyError::Malformed("a model is named twice".into()));
    }
    for m in &desired {
        check_model(m)?;
    }
    Ok(doc)
}

/// One model of a document: a valid name, and artifacts with safe, distinct names and digests.
fn check_model(m: &DesiredModel) -> Result<(), VerifyError> {
    ModelName::new(m.model.name.as_str())?;
    if m.artifacts.is_empty() {
        return Err(VerifyError::Malformed(format!("{}: no artifacts", m.model.name)));
    }
    for a in &m.artifacts {
        check_file_name(&a.name)?;
        let delta = a.delta.as_ref();
        let digests = [
            ("sha256", Some(&a.sha256)),
            ("compressed_sha256", Some(&a.compressed_sha256)),
            ("delta.sha256", delta.map(|d| &d.sha256)),
            ("delta.base_sha256", delta.map(|d| &d.base_sha256)),
        ];
        for (what, hex) in digests.into_iter().filter_map(|(w, h)| Some((w, h?))) {
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(VerifyError::Malformed(format!("artifact {}: {what} is not 64 hex digits", a.name)));
            }
        }
    }
    let mut names: Vec<&str> = m.artifacts.iter().map(|a| a.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(VerifyError::Malformed(format!("{}: an artifact name appears twice", m.model.name)));
    }
    Ok(())
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// More bytes arrived than the document declares (endless-data attack); reading stopped.
    #[error("artifact {name}: more than the declared {declared} bytes arrived")]
    TooLong {
        /// Artifact.
        name: String,
        /// Declared size.
        declared: u64,
    },
    /// Fewer bytes than declared.
    #[error("artifact {name}: {got} bytes, declared {declared}")]
    SizeMismatch {
        /// Artifact.
        name: String,
        /// Declared size.
        declared: u64,
        /// Bytes received.
        got: u64,
    },
    /// The digest differs (tampering, or an artifact from another release).
    #[error("artifact {name}: sha256 {got} does not match the declared {expected}")]
    HashMismatch {
        /// Artifact.
        name: String,
        /// Declared digest.
        expected: String,
        /// Digest of what arrived.
        got: String,
    },
    /// Decompression would pass the declared uncompressed size (zip bomb).
    #[error("artifact {name}: decompresses beyond the declared {declared} bytes")]
    DecompressedTooLarge {
        /// Artifact.
        name: String,
        /// Declared uncompressed size.
        declared: u64,
    },
    /// The compressed stream is corrupt.
    #[error("artifact {name}: {reason}")]
    Corrupt {
        /// Artifact.
        name: String,
        /// What failed.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("artifact {name}: {source}")]
    Io {
        /// Artifact.
        name: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl ArtifactError {
    /// A short stable name of the failure class.
    pub fn class(&self) -> &'static str {
        match self {
            ArtifactError::TooLong { .. } => "too_long",
            ArtifactError::SizeMismatch { .. } => "size_mismatch",
            ArtifactError::HashMismatch { .. } => "hash_mismatch",
            ArtifactError::DecompressedTooLarge { .. } => "decompression_bomb",
            ArtifactError::Corrupt { .. } => "corrupt",
            ArtifactError::Io { .. } => "io",
        }
    }
}

/// Streaming size + SHA-256 check: feed chunks as they arrive; refuses the first chunk that
/// passes the declared size, so an endless stream costs at most one chunk.
#[derive(Debug, Clone)]
pub struct StreamVerifier {
    name: String,
    declared: u64,
    expected: String,
    seen: u64,
    hasher: Sha256,
}

impl StreamVerifier {
    /// Expects exactly `size` bytes hashing to `sha256` (hex).
    pub fn new(name: &str, size: u64, sha256: &str) -> Self {
        StreamVerifier {
            name: name.into(),
            declared: size,
            expected: sha256.to_ascii_lowercase(),
            seen: 0,
            hasher: Sha256::new(),
        }
    }

    /// Continues a check over bytes already received (a resumed download): feeds `prefix`.
    pub fn resume(name: &str, size: u64, sha256: &str, prefix: impl Read) -> Result<Self, ArtifactError> {
        let mut v = Self::new(name, size, sha256);
        let mut reader = prefix;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|source| ArtifactError::Io { name: name.into(), source })?;
            if n == 0 {
                return Ok(v);
            }
            v.update(&buf[..n])?;
        }
    }

    /// Bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Feeds a chunk.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), ArtifactError> {
        self.seen += chunk.len() as u64;
        if self.seen > self.declared {
            return Err(ArtifactError::TooLong { name: self.name.clone(), declared: self.declared });
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Checks the total size and digest.
    pub fn finish(self) -> Result<(), ArtifactError> {
        if self.seen != self.declared {
            return Err(ArtifactError::SizeMismatch { name: self.name, declared: self.declared, got: self.seen });
        }
        let got = hex::encode(self.hasher.finalize());
        if got != self.expected {
            return Err(ArtifactError::HashMismatch { name: self.name, expected: self.expected, got });
        }
        Ok(())
    }
}

/// Verifies compressed artifact bytes (size and digest as transferred), decompresses them
/// through the capped decoder into `out`, and verifies the uncompressed size and digest.
pub fn verify_compressed_artifact(
    artifact: &DeployedArtifact,
    compressed: impl Read,
    out: impl Write,
) -> Result<(), ArtifactError> {
    let transfer = StreamVerifier::new(&artifact.name, artifact.compressed_size, &artifact.compressed_sha256);
    verify_decoded(artifact, transfer, compressed, out, |input, cap, out| decompress_capped(input, cap, out))
}

/// Verifies a delta as transferred (against its own size and digest in `artifact.delta`),
/// applies it to `base` through the capped decoder into `out`, and verifies the result against
/// the artifact's signed size and digest: a delta is accepted only if what it makes is exactly
/// the artifact. The caller checks that `base` is the delta's base (its digest).
pub fn verify_delta_artifact(
    artifact: &DeployedArtifact,
    base: &[u8],
    delta: impl Read,
    out: impl Write,
) -> Result<(), ArtifactError> {
    let Some(d) = &artifact.delta else {
        return Err(ArtifactError::Corrupt { name: artifact.name.clone(), reason: "no delta is declared".into() });
    };
    let transfer = StreamVerifier::new(&artifact.name, d.size, &d.sha256);
    verify_decoded(artifact, transfer, delta, out, |input, cap, out| {
        crate::compress::delta_decompress_capped(input, base, cap, out)
    })
}

fn verify_decoded(
    artifact: &DeployedArtifact,
    mut transfer: StreamVerifier,
    compressed: impl Read,
    out: impl Write,
    decode: impl FnOnce(&mut dyn Read, u64, &mut dyn Write) -> Result<u64, DecompressError>,
) -> Result<(), ArtifactError> {
    let mut content = StreamVerifier::new(&artifact.name, artifact.size, &artifact.sha256);
    let mut reader = VerifyingReader { inner: compressed, verifier: &mut transfer, error: None };
    let mut checked_out = VerifyingWriter { inner: out, verifier: &mut content };
    let result = decode(&mut reader, artifact.size, &mut checked_out);
    // Drain what the decoder did not read so the transfer digest covers every byte; a transfer
    // that is not the declared one (too long, wrong digest) is the precise diagnosis even when
    // it also fails to decompress.
    if reader.error.is_none() {
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    }
    let transfer_checked = match reader.error.take() {
        Some(e) => Err(e),
        None => transfer.finish(),
    };
    transfer_checked?;
    match result {
        Ok(_) => {}
        Err(DecompressError::TooLarge { .. }) => {
            return Err(ArtifactError::DecompressedTooLarge { name: artifact.name.clone(), declared: artifact.size });
        }
        Err(DecompressError::Corrupt(e)) => {
            return Err(ArtifactError::Corrupt { name: artifact.name.clone(), reason: e.to_string() });
        }
        Err(DecompressError::Write(source)) => return Err(ArtifactError::Io { name: artifact.name.clone(), source }),
    }
    content.finish()
}

/// Verifies uncompressed artifact bytes (size and digest), stopping early on excess.
pub fn verify_artifact(artifact: &DeployedArtifact, mut data: impl Read) -> Result<(), ArtifactError> {
    let mut v = StreamVerifier::new(&artifact.name, artifact.size, &artifact.sha256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = data.read(&mut buf).map_err(|source| ArtifactError::Io { name: artifact.name.clone(), source })?;
        if n == 0 {
            return v.finish();
        }
        v.update(&buf[..n])?;
    }
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct VerifyingReader<'a, R> {
    inner: R,
    verifier: &'a mut StreamVerifier,
    error: Option<ArtifactError>,
}

impl<R: Read> Read for VerifyingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Err(std::io::Error::other("artifact exceeds its declared size"));
        }
        let n = self.inner.read(buf)?;
        if let Err(e) = self.verifier.update(&buf[..n]) {
            self.error = Some(e);
            return Err(std::io::Error::other("artifact exceeds its declared size"));
        }
        Ok(n)
    }
}

struct VerifyingWriter<'a, W> {
    inner: W,
    verifier: &'a mut StreamVerifier,
}

impl<W: Write> Write for VerifyingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.verifier.update(&buf[..n]).map_err(std::io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
