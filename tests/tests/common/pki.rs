//! A throwaway certificate authority (rcgen) and a server certificate it issues.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files: the CA certificate, and a server certificate and key it issued.
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// Writes a CA and a server certificate for `names` (DNS names or IP addresses) into `dir`.
    pub fn new(dir: &Path, names: &[&str]) -> TestPki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "edgefleet test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let server_params = CertificateParams::new(names).expect("server params");
        let server_cert = server_params.signed_by(&server_key, &issuer).expect("server certificate");
        let pki = TestPki { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") };
        std::fs::write(&pki.ca, ca_cert.pem()).expect("write CA");
        std::fs::write(&pki.cert, server_cert.pem()).expect("write certificate");
        std::fs::write(&pki.key, server_key.serialize_pem()).expect("write key");
        pki
    }

    /// `--tls-cert CERT --tls-key KEY` for the controller.
    pub fn controller_args(&self) -> Vec<String> {
        vec!["--tls-cert".into(), self.cert.display().to_string(), "--tls-key".into(), self.key.display().to_string()]
    }
}
