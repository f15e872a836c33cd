//! TLS for the fleet links, with one stack everywhere: rustls and its ring provider.
//!
//! Clients (the agent, the CLI, the controller's MQTT client) trust either a provisioned CA file
//! or the system's roots. Servers (the controller's HTTPS API and its embedded broker) load a PEM
//! certificate chain and key. Plain TCP is for loopback; anything else needs TLS or an explicit
//! `insecure = true`, see [`check_plain`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use rustls::{ClientConfig, ServerConfig};

/// TLS set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {message}")]
    Pem {
        /// What was expected (certificates, private key).
        what: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        message: String,
    },
    /// rustls refused the material (e.g. a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |message: String| TlsError::Pem { what: "certificates", path: path.to_owned(), message };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// A client configuration trusting the CA certificates in `ca_file` (PEM), or the system's
/// roots when there is none.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let config = client_builder(ca_file)?.with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`client_config`] that also authenticates with a client certificate (PEM chain, leaf first)
/// and its PKCS#8 DER private key: a device towards a broker that checks certificates.
pub fn client_config_with_certificate(
    ca_file: Option<&Path>,
    certificate_pem: &str,
    key_pkcs8_der: Vec<u8>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let certs =
        CertificateDer::pem_slice_iter(certificate_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| {
            TlsError::Pem { what: "certificates", path: "(client certificate)".into(), message: e.to_string() }
        })?;
    let key = PrivateKeyDer::Pkcs8(key_pkcs8_der.into());
    let config = client_builder(ca_file)?.with_client_auth_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// [`client_config_with_certificate`] from PEM files: a certificate chain and its private key.
pub fn client_config_with_certificate_files(
    ca_file: Option<&Path>,
    certificate: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let certs = load_certs(certificate)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        what: "a private key",
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Arc::new(client_builder(ca_file)?.with_client_auth_cert(certs, key)?))
}

fn client_builder(
    ca_file: Option<&Path>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("No system CA certificates found: TLS connections need a provisioned CA file.");
            }
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots))
}

/// A server configuration from a PEM certificate chain (leaf first) and its PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        what: "a private key",
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Whether `host` (a name, an IP address, or a bracketed IPv6 literal) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The plain-TCP rule: `what` (e.g. "the controller URL http://10.0.0.5:7700") talks to `host`
/// without TLS. Loopback is always fine; anything else is refused unless `insecure` is set, and
/// then logged as a warning.
pub fn check_plain(what: &str, host: &str, insecure: bool) -> Result<(), String> {
    if is_loopback_host(host) {
        return Ok(());
    }
    if !insecure {
        return Err(format!(
            "{what} is plain TCP to a non-loopback host: use TLS, or set insecure = true to allow it (never in production)"
        ));
    }
    tracing::warn!(
        "INSECURE: {what} is plain TCP to a non-loopback host; traffic can be read and altered on the network."
    );
    Ok(())
}

/// An error and its causes on one line (`a: b: c`): HTTP client errors keep the TLS reason,
/// such as an unknown issuer, in their source chain.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The host of an `http://` or `https://` URL and whether it uses TLS.
pub fn http_url_host(url: &str) -> Result<(&str, bool), String> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, false)
    } else {
        return Err(format!("URL {url:?} must start with http:// or https://"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(format!("URL {url:?} has no host"));
    }
    Ok((host, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.3.2.1", "::1", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["10.0.0.5", "0.0.0.0", "controller.example", "::", "localhost.example"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn plain_tcp_needs_loopback_or_insecure() {
        assert!(check_plain("x", "127.0.0.1", false).is_ok());
        let err = check_plain("the controller URL", "10.0.0.5", false).expect_err("refused");
        assert!(err.contains("insecure = true"), "{err}");
        assert!(check_plain("x", "10.0.0.5", true).is_ok());
    }

    #[test]
    fn http_urls() {
        assert_eq!(http_url_host("https://controller.example:7700/api"), Ok(("controller.example", true)));
        assert_eq!(http_url_host("http://127.0.0.1:7700"), Ok(("127.0.0.1", false)));
        assert_eq!(http_url_host("http://[::1]:7700/"), Ok(("::1", false)));
        assert_eq!(http_url_host("https://host"), Ok(("host", true)));
        assert!(http_url_host("ftp://host").is_err());
        assert!(http_url_host("http:///path").is_err());
    }

    #[test]
    fn missing_and_empty_pem_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = client_config(Some(&empty)).expect_err("no certificates");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let err = server_config(&dir.path().join("missing.pem"), &empty).expect_err("missing");
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
