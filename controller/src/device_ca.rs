//! The device CA: issues each enrolled device an X.509 client certificate for its own Ed25519
//! key (subject CN = the device id), and the controller one for itself, so an external broker
//! can authenticate every client by certificate and authorize topics by the certificate's name
//! (Mosquitto: `require_certificate`, `use_identity_as_username`, a dynamic-security role per
//! device).
//!
//! The CA's key (ECDSA P-256, PKCS#8 PEM, mode 0600) and certificate live in the data
//! directory's `keys/`, made at first use. Device certificates carry no secret: the device
//! proves it holds the key in the TLS handshake.

use std::path::{Path, PathBuf};

use edgefleet_shared::keys::PublicKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, PublicKeyData, SignatureAlgorithm,
};

/// The CN of the controller's own broker certificate (and its broker username).
pub const CONTROLLER_IDENTITY: &str = "edgefleet-controller";
/// Validity of a device certificate; agents ask for a new one a month before it ends.
pub const DEVICE_CERT_DAYS: u64 = 365;
const CA_DAYS: u64 = 20 * 365;

/// Device CA failures.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("device CA file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// rcgen refused (a corrupt key file, most likely).
    #[error("device CA: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// A certificate and, for the controller's own, its private key (PEM).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub certificate_pem: String,
    /// Its private key, when the CA generated one.
    pub key_pem: Option<String>,
    /// Unix seconds when it expires.
    pub expires_at: u64,
}

/// The device CA, loaded.
pub struct DeviceCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa").finish_non_exhaustive()
    }
}

/// A device's Ed25519 public key as rcgen takes a subject key.
struct DeviceKey([u8; 32]);

impl PublicKeyData for DeviceKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "edgefleet device CA");
    params.distinguished_name = name;
    params
}

fn validity(params: &mut CertificateParams, days: u64) -> u64 {
    let now = std::time::SystemTime::now();
    let start = now - std::time::Duration::from_secs(3600);
    let end = now + std::time::Duration::from_secs(days * 24 * 3600);
    params.not_before = start.into();
    params.not_after = end.into();
    end.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    let io = |source| CaError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&tmp).map_err(io)?, text.as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl DeviceCa {
    /// Loads the CA from `keys_dir`, creating it on first use.
    pub fn load_or_create(keys_dir: &Path) -> Result<Self, CaError> {
        let (key_path, cert_path) = (keys_dir.join("device-ca.key"), keys_dir.join("device-ca.crt"));
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|source| CaError::Io { path: p.to_owned(), source });
        if key_path.exists() && cert_path.exists() {
            let key = KeyPair::from_pem(&read(&key_path)?)?;
            return Ok(DeviceCa { issuer: Issuer::new(ca_params(), key), certificate_pem: read(&cert_path)? });
        }
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        validity(&mut params, CA_DAYS);
        let certificate_pem = params.self_signed(&key)?.pem();
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, &certificate_pem).map_err(|source| CaError::Io { path: cert_path, source })?;
        tracing::info!("Device CA created.");
        Ok(DeviceCa { issuer: Issuer::new(ca_params(), key), certificate_pem })
    }

    /// The CA certificate (what a broker verifies client certificates against).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// A client certificate for a device's key, CN = its id.
    pub fn issue_device(&self, device_id: &str, key: &PublicKey) -> Result<Issued, CaError> {
        let raw: [u8; 32] = key.to_bytes();
        let mut params = client_params(device_id);
        let expires_at = validity(&mut params, DEVICE_CERT_DAYS);
        let certificate = params.signed_by(&DeviceKey(raw), &self.issuer)?;
        Ok(Issued { certificate_pem: certificate.pem(), key_pem: None, expires_at })
    }

    /// A client certificate and new key for the controller's own broker connection.
    pub fn issue_controller(&self) -> Result<Issued, CaError> {
        let key = KeyPair::generate()?;
        let mut params = client_params(CONTROLLER_IDENTITY);
        let expires_at = validity(&mut params, CA_DAYS);
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { certificate_pem: certificate.pem(), key_pem: Some(key.serialize_pem()), expires_at })
    }
}

fn client_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

#[cfg(test)]
mod tests {
    use edgefleet_shared::keys::{FileKey, Signer as _};

    use super::*;

    #[test]
    fn the_ca_persists_and_issues_device_certificates_rustls_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DeviceCa::load_or_create(dir.path()).expect("create");
        let again = DeviceCa::load_or_create(dir.path()).expect("load");
        assert_eq!(ca.certificate_pem(), again.certificate_pem());
        let device = FileKey::from_seed([3; 32]);
        let issued = again.issue_device("dev-abc", &device.public_key()).expect("issue");
        assert!(issued.certificate_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // The device's own key and this certificate make a valid rustls client identity.
        edgefleet_service::tls::client_config_with_certificate(None, &issued.certificate_pem, device.pkcs8_der())
            .expect("rustls accepts the certificate with the device key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("device-ca.key")).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
