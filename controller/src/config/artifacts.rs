//! `[artifacts]`: where artifacts are stored (the data directory, or an S3-compatible bucket).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Artifact storage: the data directory's filesystem unless `s3` is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsConfig {
    /// An S3-compatible bucket instead (shared by every replica).
    pub s3: Option<S3Config>,
}

/// An S3-compatible bucket (`[artifacts.s3]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The endpoint (`https://s3.example.com`, `http://127.0.0.1:8333`); AWS for `region` when
    /// absent.
    pub endpoint: Option<String>,
    /// The bucket (created by the operator beforehand).
    pub bucket: String,
    /// The region requests are signed for.
    pub region: String,
    /// Key prefix inside the bucket (`fleet-a/`), so controllers can share one bucket.
    pub prefix: String,
    /// Bucket URLs `https://BUCKET.endpoint/` instead of `https://endpoint/BUCKET/`.
    pub virtual_hosted_style: bool,
    /// The access key id (with `secret_access_key_file`); absent, the `AWS_*` environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, instance metadata).
    pub access_key_id: Option<String>,
    /// A file holding the secret access key.
    pub secret_access_key_file: Option<PathBuf>,
    /// Devices download artifacts straight from the bucket by a presigned URL valid this long
    /// (redirected to it by the controller); 0: through the controller, which streams them.
    pub presign_secs: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            bucket: String::new(),
            region: "us-east-1".into(),
            prefix: String::new(),
            virtual_hosted_style: false,
            access_key_id: None,
            secret_access_key_file: None,
            presign_secs: 600,
        }
    }
}

impl S3Config {
    pub(super) fn validate(&self, insecure: bool) -> Result<(), crate::Error> {
        let bad = |m: String| Err(crate::Error::Config(format!("artifacts.s3: {m}")));
        if self.bucket.is_empty() {
            return bad("bucket is required".into());
        }
        if self.access_key_id.is_some() != self.secret_access_key_file.is_some() {
            return bad("access_key_id and secret_access_key_file must be set together".into());
        }
        // SigV4 presigned URLs live at most 7 days.
        if self.presign_secs > 7 * 24 * 3600 {
            return bad(format!("presign_secs is {}: at most 604800 (7 days, the SigV4 limit)", self.presign_secs));
        }
        if let Some(endpoint) = &self.endpoint {
            let Some((scheme, rest)) = endpoint.split_once("://").filter(|(s, _)| matches!(*s, "http" | "https"))
            else {
                return bad(format!("endpoint {endpoint:?} is not an http:// or https:// URL"));
            };
            let authority = rest.split('/').next().unwrap_or_default();
            let host = match authority.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => authority,
            };
            if host.is_empty() {
                return bad(format!("endpoint {endpoint:?} names no host"));
            }
            if scheme == "http" {
                edgefleet_service::tls::check_plain(
                    &format!("the artifact store {endpoint}"),
                    host.trim_start_matches('[').trim_end_matches(']'),
                    insecure,
                )
                .map_err(crate::Error::Config)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ControllerConfig;

    #[test]
    fn an_s3_store_needs_a_bucket_a_url_and_tls_off_loopback() {
        let mut config = ControllerConfig::default();
        let s3 =
            |endpoint: &str| S3Config { endpoint: Some(endpoint.into()), bucket: "b".into(), ..S3Config::default() };
        config.artifacts.s3 = Some(s3("http://127.0.0.1:8333"));
        config.validate().expect("plain HTTP on loopback");
        config.artifacts.s3 = Some(s3("https://s3.example.com/"));
        config.validate().expect("TLS elsewhere");
        for (endpoint, says) in
            [("http://s3.example.com:8333", "insecure"), ("ftp://x", "http"), ("https://", "no host")]
        {
            config.artifacts.s3 = Some(s3(endpoint));
            let err = config.validate().expect_err(endpoint).to_string();
            assert!(err.contains(says), "{endpoint}: {err}");
        }
        config.artifacts.s3 = Some(S3Config { bucket: String::new(), ..s3("https://s3.example.com") });
        assert!(config.validate().expect_err("no bucket").to_string().contains("bucket"));
        config.artifacts.s3 = Some(S3Config { presign_secs: 8 * 24 * 3600, ..s3("https://s3.example.com") });
        assert!(config.validate().expect_err("too long").to_string().contains("7 days"));
        let parsed: ControllerConfig =
            toml::from_str("[artifacts.s3]\nbucket = \"edgefleet\"\nendpoint = \"http://127.0.0.1:8333\"\n")
                .expect("parses");
        assert_eq!(parsed.artifacts.s3.expect("s3").presign_secs, 600);
    }
}
