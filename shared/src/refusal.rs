//! Why a signed document or trust step was refused, by attack class: the verifier
//! ([`crate::verify`]) and the trust store ([`crate::trust`]) both answer with a
//! [`VerifyError`].

use crate::names::NameError;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature does not match the bytes under the named key (tampering, or a key that
    /// merely claims a trusted id).
    #[error("bad signature: the document was not signed by trusted key {key_id} (tampered or forged)")]
    BadSignature {
        /// The key id the signature named.
        key_id: String,
    },
    /// The signature names a key the device does not trust.
    #[error("unknown key {key_id}: not in the trust store")]
    UnknownKey {
        /// The key id the signature named.
        key_id: String,
    },
    /// The document is for other devices.
    #[error("wrong device: the document is for {devices:?}, this device is {device_id:?}")]
    WrongDevice {
        /// This device.
        device_id: String,
        /// Devices the document names.
        devices: Vec<String>,
    },
    /// The same sequence was already accepted (a replay).
    #[error("replayed document: sequence {sequence} was already accepted")]
    Replayed {
        /// The document's sequence.
        sequence: u64,
    },
    /// The sequence is older than the last accepted one (a rollback attack).
    #[error("older sequence: {sequence} is below the last accepted {last} (rollback attempt)")]
    OlderSequence {
        /// The document's sequence.
        sequence: u64,
        /// Last accepted sequence.
        last: u64,
    },
    /// The document expired (a freeze attack, or a controller that stopped refreshing).
    #[error("expired document: expired at {expires_at}, now {now} (unix seconds)")]
    Expired {
        /// Expiry.
        expires_at: u64,
        /// Device time.
        now: u64,
    },
    /// A model or artifact name could escape the directory it is joined to.
    #[error("unsafe name {name:?}: {reason}")]
    UnsafeName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The bytes are signed but are not a valid document.
    #[error("malformed document: {0}")]
    Malformed(String),
}

impl VerifyError {
    /// A short stable name of the attack class, for logs, metrics and status reports.
    pub fn class(&self) -> &'static str {
        match self {
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::UnknownKey { .. } => "unknown_key",
            VerifyError::WrongDevice { .. } => "wrong_device",
            VerifyError::Replayed { .. } => "replayed",
            VerifyError::OlderSequence { .. } => "older_sequence",
            VerifyError::Expired { .. } => "expired",
            VerifyError::UnsafeName { .. } => "unsafe_name",
            VerifyError::Malformed(_) => "malformed",
        }
    }
}

impl From<NameError> for VerifyError {
    fn from(e: NameError) -> Self {
        VerifyError::UnsafeName { name: e.name, reason: e.reason }
    }
}
