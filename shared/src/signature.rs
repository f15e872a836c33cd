//! Detached signatures over exact bytes, and the envelope that carries document + signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::keys::Signer;

/// A detached Ed25519 signature (`*.sig` files and the `signature` field of envelopes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentSignature {
    /// Id of the signing key. Only a hint for finding the key: the signed document repeats it.
    pub key_id: String,
    /// Base64 of the 64-byte signature.
    pub signature: String,
}

impl DocumentSignature {
    /// Signs `bytes` with `signer`.
    pub fn sign(bytes: &[u8], signer: &dyn Signer) -> Self {
        DocumentSignature { key_id: signer.key_id(), signature: B64.encode(signer.sign(bytes)) }
    }

    /// The raw signature, if the base64 decodes.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        B64.decode(&self.signature).ok()
    }
}

/// A signed document as it travels (MQTT retained message, HTTP body): the document's exact
/// bytes in base64, so no re-serialisation can change what was signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEnvelope {
    /// Base64 of the document bytes.
    pub document: String,
    /// Signature over those bytes.
    pub signature: DocumentSignature,
}

impl SignedEnvelope {
    /// Signs `document` bytes.
    pub fn sign(document: &[u8], signer: &dyn Signer) -> Self {
        SignedEnvelope { document: B64.encode(document), signature: DocumentSignature::sign(document, signer) }
    }

    /// The document bytes, if the base64 decodes.
    pub fn document_bytes(&self) -> Option<Vec<u8>> {
        B64.decode(&self.document).ok()
    }
}
