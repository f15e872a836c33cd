//! The device's trust set: provisioned once out of band (`--trust`), changed only by rotations
//! signed by a key it trusts at the time, and kept in the data directory as the chain of
//! rotations it accepted (written atomically, so a `kill -9` mid-write leaves the old chain or
//! the new one). At every start the chain is verified again from the provisioned set: a chain
//! file that does not verify (edited, or for another fleet) is ignored, never trusted.

use std::path::{Path, PathBuf};

use edgefleet_shared::trust::{TrustChain, TrustStore};
use edgefleet_shared::verify::VerifyError;

use super::state::write_atomic;

/// File in the data directory holding the accepted rotations.
const CHAIN_FILE: &str = "trust-chain.json";

/// Why the trust set could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The provisioned trust file is unreadable or invalid.
    #[error("trust file {path}: {message}")]
    Provisioned {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The accepted chain could not be written.
    #[error("cannot persist the trust chain {path}: {source}")]
    Persist {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The trust set in force and the rotations that led to it.
#[derive(Debug)]
pub struct Trust {
    current: TrustStore,
    accepted: TrustChain,
    path: PathBuf,
}

impl Trust {
    /// The provisioned set at `provisioned`, advanced by the chain kept in `data_dir`.
    pub fn load(provisioned: &Path, data_dir: &Path) -> Result<Self, TrustError> {
        let bad = |message: String| TrustError::Provisioned { path: provisioned.to_owned(), message };
        let bytes = std::fs::read(provisioned).map_err(|e| bad(e.to_string()))?;
        let base = TrustStore::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        let path = data_dir.join(CHAIN_FILE);
        let kept = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<TrustChain>(&b).ok(),
            Err(_) => None,
        };
        let (current, accepted) = match kept.map(|chain| (base.apply_chain(&chain), chain)) {
            Some((Ok((store, _)), chain)) => (store, chain),
            Some((Err(e), _)) => {
                tracing::error!(file = %path.display(), error = %e,
                    "The kept trust chain does not verify against the provisioned trust file; ignoring it.");
                (base, TrustChain::default())
            }
            None => (base, TrustChain::default()),
        };
        Ok(Trust { current, accepted, path })
    }

    /// The set documents are verified against.
    pub fn store(&self) -> &TrustStore {
        &self.current
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.current.version()
    }

    /// Applies the rotations of `chain` newer than the current set (each signed by the set
    /// before it) and persists them before they take effect. Returns how many were applied.
    pub fn apply(&mut self, chain: &TrustChain) -> Result<usize, ApplyError> {
        let (next, applied) = self.current.apply_chain(chain).map_err(ApplyError::Refused)?;
        if applied.is_empty() {
            return Ok(0);
        }
        let mut accepted = self.accepted.clone();
        accepted.rotations.extend(applied.iter().cloned());
        let bytes = serde_json::to_vec_pretty(&accepted).unwrap_or_default();
        write_atomic(&self.path, &bytes)
            .map_err(|source| ApplyError::Persist(TrustError::Persist { path: self.path.clone(), source }))?;
        tracing::info!(from = self.current.version(), to = next.version(), keys = ?next.key_ids().collect::<Vec<_>>(),
            "Trust set rotated.");
        self.current = next;
        self.accepted = accepted;
        Ok(applied.len())
    }
}

/// Why a rotation was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A rotation in the chain is not signed by the set before it (or is malformed).
    #[error("trust rotation refused: {0}")]
    Refused(VerifyError),
    /// Verified, but could not be persisted; the current set stays.
    #[error(transparent)]
    Persist(TrustError),
}

#[cfg(test)]
mod tests {
    use edgefleet_shared::keys::{FileKey, Signer as _};
    use edgefleet_shared::trust::TrustRotation;

    use super::*;

    fn provisioned(dir: &Path, key: &FileKey) -> PathBuf {
        let path = dir.join("trust.json");
        std::fs::write(&path, TrustStore::new(1, [key.public_key()]).to_bytes()).expect("write");
        path
    }

    #[test]
    fn rotations_persist_and_a_tampered_chain_file_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (k1, k2) = (FileKey::from_seed([1; 32]), FileKey::from_seed([2; 32]));
        let trust_file = provisioned(dir.path(), &k1);
        let mut trust = Trust::load(&trust_file, dir.path()).expect("load");
        let v2 = TrustStore::new(2, [k2.public_key()]).to_bytes();
        let chain = TrustChain { rotations: vec![TrustRotation::sign(&v2, &k1)] };
        assert_eq!(trust.apply(&chain).expect("rotate"), 1);
        assert_eq!(trust.apply(&chain).expect("again"), 0);
        let reloaded = Trust::load(&trust_file, dir.path()).expect("reload");
        assert_eq!((reloaded.version(), reloaded.store().get(&k2.key_id()).is_some()), (2, true));

        // An attacker with write access to the data dir cannot add a key of their own.
        let evil = FileKey::from_seed([66; 32]);
        let forged = TrustChain {
            rotations: vec![TrustRotation::sign(&TrustStore::new(2, [evil.public_key()]).to_bytes(), &evil)],
        };
        std::fs::write(dir.path().join(CHAIN_FILE), serde_json::to_vec(&forged).expect("json")).expect("write");
        assert_eq!(Trust::load(&trust_file, dir.path()).expect("reload").version(), 1);
    }

    #[test]
    fn a_rotation_not_signed_by_the_current_set_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k1 = FileKey::from_seed([1; 32]);
        let mut trust = Trust::load(&provisioned(dir.path(), &k1), dir.path()).expect("load");
        let evil = FileKey::from_seed([66; 32]);
        let v2 = TrustStore::new(2, [evil.public_key()]).to_bytes();
        let err = trust.apply(&TrustChain { rotations: vec![TrustRotation::sign(&v2, &evil)] }).expect_err("refused");
        assert!(matches!(err, ApplyError::Refused(VerifyError::UnknownKey { .. })), "{err}");
        assert_eq!(trust.version(), 1);
        assert!(!dir.path().join(CHAIN_FILE).exists());
    }
}
