//! The agent's HTTP link to the controller: enrollment, and device-signed requests for the
//! desired state, artifacts (resumable) and status.

use std::path::Path;
use std::time::Duration;

use edgefleet_shared::deployment::DeployedArtifact;
use edgefleet_shared::fleet::{
    self, DEVICE_HEADER, DeviceStatus, EnrollRequest, EnrollResponse, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use edgefleet_shared::keys::{FileKey, Signer as _};
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::tls::ClientConfig;
use edgefleet_shared::verify::ArtifactError;
use tokio::io::AsyncWriteExt as _;

/// Link failures.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The controller is unreachable or the transfer broke (retry later).
    #[error("controller unreachable: {}", edgefleet_shared::tls::error_chain(.0))]
    Transport(#[from] reqwest::Error),
    /// The controller refused (its status and error text).
    #[error("controller answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// Its `error` text.
        message: String,
    },
    /// The artifact broke its declared size while downloading.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Local file error.
    #[error("download file {path}: {source}")]
    File {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A signed HTTP client for one device.
#[derive(Debug, Clone)]
pub struct Link {
    base: String,
    http: reqwest::Client,
    key: std::sync::Arc<FileKey>,
    device_id: String,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn refused(resp: reqwest::Response) -> LinkError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(text);
    LinkError::Refused { status, message }
}

fn client(tls: &ClientConfig) -> Result<reqwest::Client, LinkError> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .build()?)
}

/// Enrolls with a token; the answer's device id must match this key.
pub async fn enroll(
    base: &str,
    tls: &ClientConfig,
    key: &FileKey,
    token: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<EnrollResponse, LinkError> {
    let body =
        EnrollRequest { token: token.to_owned(), public_key: key.public_key().to_base64(), labels: labels.clone() };
    let resp = client(tls)?.post(format!("{}/api/v1/enroll", base.trim_end_matches('/'))).json(&body).send().await?;
    if !resp.status().is_success() {
        return Err(refused(resp).await);
    }
    Ok(resp.json().await?)
}

impl Link {
    /// A link for an enrolled device; HTTPS trusts the roots in `tls`.
    pub fn new(
        base: &str,
        tls: &ClientConfig,
        key: std::sync::Arc<FileKey>,
        device_id: String,
    ) -> Result<Self, LinkError> {
        Ok(Link { base: base.trim_end_matches('/').to_owned(), http: client(tls)?, key, device_id })
    }

    fn signed(&self, method: reqwest::Method, path: &str, body: &[u8]) -> reqwest::RequestBuilder {
        let at = now();
        let sig = fleet::sign_request(self.key.as_ref(), method.as_str(), path, at, body);
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(DEVICE_HEADER, &self.device_id)
            .header(TIMESTAMP_HEADER, at.to_string())
            .header(SIGNATURE_HEADER, sig)
    }

    /// The device's current signed document, if the controller has one.
    pub async fn desired(&self) -> Result<Option<SignedEnvelope>, LinkError> {
        let path = format!("/api/v1/devices/{}/desired", self.device_id);
        let resp = self.signed(reqwest::Method::GET, &path, b"").send().await?;
        match resp.status() {
            reqwest::StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => Ok(Some(resp.json().await?)),
            _ => Err(refused(resp).await),
        }
    }

    /// Downloads an artifact's compressed bytes into `part`, resuming from what `part` already
    /// holds, and stops at the first byte beyond the declared compressed size.
    pub async fn download(&self, artifact: &DeployedArtifact, part: &Path) -> Result<(), LinkError> {
        let file_err = |source| LinkError::File { path: part.display().to_string(), source };
        let have = tokio::fs::metadata(part).await.map(|m| m.len()).unwrap_or(0);
        if have >= artifact.compressed_size {
            return Ok(());
        }
        let path = format!("/api/v1/devices/{}/artifacts/{}", self.device_id, artifact.sha256);
        let mut req = self.signed(reqwest::Method::GET, &path, b"");
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = req.send().await?;
        let append = match resp.status() {
            reqwest::StatusCode::PARTIAL_CONTENT => true,
            reqwest::StatusCode::OK => false,
            _ => return Err(refused(resp).await),
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(part)
            .await
            .map_err(file_err)?;
        let mut total = if append { have } else { 0 };
        metrics::counter!("edgefleet_agent_download_resumes_total").increment(u64::from(append));
        while let Some(chunk) = resp.chunk().await? {
            total += chunk.len() as u64;
            if total > artifact.compressed_size {
                drop(file);
                let _ = tokio::fs::remove_file(part).await;
                return Err(
                    ArtifactError::TooLong { name: artifact.name.clone(), declared: artifact.compressed_size }.into()
                );
            }
            file.write_all(&chunk).await.map_err(file_err)?;
            metrics::counter!("edgefleet_agent_download_bytes_total").increment(chunk.len() as u64);
        }
        file.sync_all().await.map_err(file_err)?;
        Ok(())
    }

    /// Reports status.
    pub async fn report(&self, status: &DeviceStatus) -> Result<(), LinkError> {
        let path = format!("/api/v1/devices/{}/status", self.device_id);
        let body = serde_json::to_vec(status).unwrap_or_default();
        let resp = self
            .signed(reqwest::Method::POST, &path, &body)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        if resp.status().is_success() { Ok(()) } else { Err(refused(resp).await) }
    }
}
