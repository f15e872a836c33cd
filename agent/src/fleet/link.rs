//! The agent's HTTP link to the controller: enrollment, and device-signed requests for the
//! desired state, trust rotations, the broker certificate, artifacts (resumable) and status.
//!
//! Nothing the controller (or whoever sits between it and the device) sends can stall or grow
//! the agent: every connection has a connect timeout and an idle read timeout, every control
//! request a total deadline, and every answer is read up to a cap (the desired document gets the
//! same 1 MiB as over MQTT). Artifact downloads have no total deadline (models are big and links
//! slow) but stop at their declared size and when the link goes idle.

use std::path::Path;
use std::time::Duration;

use edgefleet_service::tls::ClientConfig;
use edgefleet_shared::deployment::DeployedArtifact;
use edgefleet_shared::fleet::{
    self, DEVICE_HEADER, DeviceStatus, EnrollRequest, EnrollResponse, MqttCertificate, SIGNATURE_HEADER,
    TIMESTAMP_HEADER, VIA_HEADER,
};
use edgefleet_shared::keys::{FileKey, Signer as _};
use edgefleet_shared::signature::SignedEnvelope;
use edgefleet_shared::trust::{MAX_TRUST_CHAIN_BYTES, TrustChain};
use edgefleet_shared::verify::ArtifactError;
use tokio::io::AsyncWriteExt as _;

/// What the link tasks deliver to the control loop.
#[derive(Debug)]
pub enum Incoming {
    /// A signed desired-state envelope (MQTT or HTTP).
    Desired(SignedEnvelope),
    /// The fleet's trust rotations.
    Trust(TrustChain),
}

/// Link failures.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The controller is unreachable or the transfer broke (retry later).
    #[error("controller unreachable: {}", edgefleet_service::tls::error_chain(.0))]
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
    /// An answer was larger than the agent reads for it.
    #[error("controller answer for {what} exceeds {limit} bytes; refused")]
    TooLarge {
        /// Which answer.
        what: &'static str,
        /// The cap.
        limit: usize,
    },
    /// An answer was not the JSON the agent expects.
    #[error("controller answer for {what} is malformed: {message}")]
    Malformed {
        /// Which answer.
        what: &'static str,
        /// The parser's explanation.
        message: String,
    },
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
    timeouts: Timeouts,
}

/// How long the link waits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Total deadline of a control request (desired state, status, trust, enrollment).
    pub control: Duration,
    /// Longest silence on any connection before it is dropped (downloads included).
    pub idle: Duration,
}

impl Timeouts {
    /// From the fleet configuration.
    pub fn from_config(config: &crate::config::FleetConfig) -> Self {
        Timeouts {
            control: Duration::from_secs(config.request_timeout_secs),
            idle: Duration::from_secs(config.idle_timeout_secs),
        }
    }
}

/// What `GET .../desired` answered.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The device's current signed document, if the controller has one.
    pub envelope: Option<SignedEnvelope>,
    /// The controller's current trust set version, when it said.
    pub trust_version: Option<u64>,
}

/// Largest error or enrollment answer read.
const MAX_SMALL_ANSWER_BYTES: usize = 64 * 1024;

/// Reads an answer's body up to `limit` bytes; more is refused, not buffered.
async fn read_capped(mut resp: reqwest::Response, what: &'static str, limit: usize) -> Result<Vec<u8>, LinkError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(LinkError::TooLarge { what, limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(LinkError::TooLarge { what, limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    what: &'static str,
    limit: usize,
) -> Result<T, LinkError> {
    let body = read_capped(resp, what, limit).await?;
    serde_json::from_slice(&body).map_err(|e| LinkError::Malformed { what, message: e.to_string() })
}

/// How far this device's clock is ahead of the controller's (seconds; negative: behind), from
/// the `Date` header of the controller's answer received at `local` (Unix seconds).
pub fn clock_skew(local: u64, date_header: Option<&str>) -> Option<i64> {
    let remote = httpdate::parse_http_date(date_header?).ok()?;
    let remote = remote.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(local as i64 - remote as i64)
}

/// The refusal message, with the cause named when the device clock is too far off for signed
/// requests (a board without a real-time clock before time sync).
pub fn explain_refusal(message: String, status: reqwest::StatusCode, skew: Option<i64>) -> String {
    let max = edgefleet_shared::fleet::MAX_CLOCK_SKEW_SECS as i64;
    match skew {
        Some(skew) if status == reqwest::StatusCode::UNAUTHORIZED && skew.abs() > max => format!(
            "{message} (this device's clock is {skew:+} s off the controller's; signed requests allow ±{max} s: \
             enable time sync, e.g. systemd-timesyncd with systemd-time-wait-sync.service, or set the clock)"
        ),
        _ => message,
    }
}

async fn refused(resp: reqwest::Response) -> LinkError {
    let status = resp.status();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let skew = clock_skew(now, resp.headers().get(reqwest::header::DATE).and_then(|v| v.to_str().ok()));
    let text = match read_capped(resp, "an error", MAX_SMALL_ANSWER_BYTES).await {
        Ok(body) => String::from_utf8_lossy(&body).into_owned(),
        Err(e) => e.to_string(),
    };
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(text);
    LinkError::Refused { status, message: explain_refusal(message, status, skew) }
}

fn client(tls: &ClientConfig, timeouts: Timeouts) -> Result<reqwest::Client, LinkError> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .connect_timeout(timeouts.control.min(Duration::from_secs(10)))
        .read_timeout(timeouts.idle)
        // Downloads may be redirected to an object store: followed by hand, without the device's
        // signed headers (see `Link::download_to`); nothing else redirects.
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Enrolls with a token; the answer's device id must match this key.
pub async fn enroll(
    base: &str,
    tls: &ClientConfig,
    timeouts: Timeouts,
    key: &FileKey,
    token: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<EnrollResponse, LinkError> {
    let body =
        EnrollRequest { token: token.to_owned(), public_key: key.public_key().to_base64(), labels: labels.clone() };
    let resp = client(tls, timeouts)?
        .post(format!("{}/api/v1/enroll", base.trim_end_matches('/')))
        .timeout(timeouts.control)
        .json(&body)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(refused(resp).await);
    }
    read_json(resp, "enrollment", MAX_SMALL_ANSWER_BYTES).await
}

impl Link {
    /// A link for an enrolled device; HTTPS trusts the roots in `tls`.
    pub fn new(
        base: &str,
        tls: &ClientConfig,
        timeouts: Timeouts,
        key: std::sync::Arc<FileKey>,
        device_id: String,
    ) -> Result<Self, LinkError> {
        Ok(Link { base: base.trim_end_matches('/').to_owned(), http: client(tls, timeouts)?, key, device_id, timeouts })
    }

    fn signed(&self, method: reqwest::Method, path: &str, body: &[u8]) -> reqwest::RequestBuilder {
        let at = edgefleet_shared::clock::unix_secs();
        let sig = fleet::sign_request(self.key.as_ref(), method.as_str(), path, at, body);
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(DEVICE_HEADER, &self.device_id)
            .header(TIMESTAMP_HEADER, at.to_string())
            .header(SIGNATURE_HEADER, sig)
    }

    /// A signed control request: bounded in time.
    fn control(&self, method: reqwest::Method, path: &str, body: &[u8]) -> reqwest::RequestBuilder {
        self.signed(method, path, body).timeout(self.timeouts.control)
    }

    /// The device's current signed document, if the controller has one, and the controller's
    /// trust set version.
    pub async fn desired(&self) -> Result<Desired, LinkError> {
        let path = format!("/api/v1/devices/{}/desired", self.device_id);
        let resp = self.control(reqwest::Method::GET, &path, b"").send().await?;
        let trust_version =
            resp.headers().get(fleet::TRUST_VERSION_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let envelope = match resp.status() {
            reqwest::StatusCode::NO_CONTENT => None,
            s if s.is_success() => Some(read_json(resp, "the desired state", fleet::MAX_DESIRED_BYTES).await?),
            _ => return Err(refused(resp).await),
        };
        Ok(Desired { envelope, trust_version })
    }

    /// Every trust rotation the controller has made (empty before the first).
    pub async fn trust(&self) -> Result<TrustChain, LinkError> {
        self.device_json(reqwest::Method::GET, "trust", "the trust chain", MAX_TRUST_CHAIN_BYTES).await
    }

    /// A broker client certificate for this device's key, issued by the controller's device CA.
    pub async fn mqtt_certificate(&self) -> Result<MqttCertificate, LinkError> {
        self.device_json(reqwest::Method::POST, "mqtt-certificate", "the broker certificate", MAX_SMALL_ANSWER_BYTES)
            .await
    }

    /// A control request to `/api/v1/devices/{id}/{leaf}` whose answer is JSON of at most `limit`.
    async fn device_json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        leaf: &str,
        what: &'static str,
        limit: usize,
    ) -> Result<T, LinkError> {
        let path = format!("/api/v1/devices/{}/{leaf}", self.device_id);
        let resp = self.control(method, &path, b"").send().await?;
        if !resp.status().is_success() {
            return Err(refused(resp).await);
        }
        read_json(resp, what, limit).await
    }

    /// Downloads an artifact's compressed bytes into `part`, resuming from what `part` already
    /// holds, and stops at the first byte beyond the declared compressed size.
    pub async fn download(&self, artifact: &DeployedArtifact, part: &Path) -> Result<(), LinkError> {
        let path = format!("/api/v1/devices/{}/artifacts/{}", self.device_id, artifact.sha256);
        self.download_to(&path, &artifact.name, artifact.compressed_size, part).await
    }

    /// Downloads the delta the document offers for `artifact`, as [`Link::download`] does.
    pub async fn download_delta(
        &self,
        artifact: &DeployedArtifact,
        delta: &edgefleet_shared::deployment::ArtifactDelta,
        part: &Path,
    ) -> Result<(), LinkError> {
        let path = format!("/api/v1/devices/{}/deltas/{}", self.device_id, delta.sha256);
        self.download_to(&path, &artifact.name, delta.size, part).await
    }

    async fn download_to(&self, path: &str, name: &str, declared: u64, part: &Path) -> Result<(), LinkError> {
        let file_err = |source| LinkError::File { path: part.display().to_string(), source };
        let have = tokio::fs::metadata(part).await.map(|m| m.len()).unwrap_or(0);
        if have >= declared {
            return Ok(());
        }
        let ranged = |req: reqwest::RequestBuilder| match have {
            0 => req,
            _ => req.header(reqwest::header::RANGE, format!("bytes={have}-")),
        };
        let mut resp = ranged(self.signed(reqwest::Method::GET, path, b"")).send().await?;
        if resp.status().is_redirection() {
            // A presigned URL of the controller's object store: fetched as it is, with no device
            // headers. Whatever answers, the bytes must match the signed document's digests.
            match self.follow(&resp, ranged).await {
                Ok(direct) => {
                    metrics::counter!(crate::metric::DOWNLOADS_DIRECT, "result" => "ok").increment(1);
                    resp = direct;
                }
                Err(why) => {
                    tracing::warn!(artifact = name, error = %why, "The object store could not be reached; downloading through the controller.");
                    metrics::counter!(crate::metric::DOWNLOADS_DIRECT, "result" => "fallback").increment(1);
                    let req = self.signed(reqwest::Method::GET, path, b"").header(VIA_HEADER, "controller");
                    resp = ranged(req).send().await?;
                }
            }
        }
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
        metrics::counter!(crate::metric::DOWNLOAD_RESUMES).increment(u64::from(append));
        while let Some(chunk) = resp.chunk().await? {
            total += chunk.len() as u64;
            if total > declared {
                drop(file);
                let _ = tokio::fs::remove_file(part).await;
                return Err(ArtifactError::TooLong { name: name.to_owned(), declared }.into());
            }
            file.write_all(&chunk).await.map_err(file_err)?;
            metrics::counter!(crate::metric::DOWNLOAD_BYTES).increment(chunk.len() as u64);
        }
        file.sync_all().await.map_err(file_err)?;
        Ok(())
    }

    /// Follows a download's redirect (one hop, `http(s)` only).
    async fn follow(
        &self,
        redirect: &reqwest::Response,
        ranged: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, String> {
        let location = redirect
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("a {} without a Location", redirect.status()))?;
        let url = reqwest::Url::parse(location).map_err(|e| format!("redirect to a bad URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("redirect to a {} URL", url.scheme()));
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let resp = ranged(self.http.get(url)).send().await.map_err(|e| format!("{host}: {e}"))?;
        match resp.status() {
            reqwest::StatusCode::OK | reqwest::StatusCode::PARTIAL_CONTENT => Ok(resp),
            status => Err(format!("{host} answered {status}")),
        }
    }

    /// Reports status.
    pub async fn report(&self, status: &DeviceStatus) -> Result<(), LinkError> {
        let path = format!("/api/v1/devices/{}/status", self.device_id);
        let body = serde_json::to_vec(status).unwrap_or_default();
        let resp = self
            .control(reqwest::Method::POST, &path, &body)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        if resp.status().is_success() { Ok(()) } else { Err(refused(resp).await) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_far_off_the_controllers_is_named_as_the_cause() {
        let date = "Tue, 01 Dec 2026 13:00:00 GMT";
        let at = 1_796_130_000; // 2026-12-01T13:00:00Z
        assert_eq!(clock_skew(at + 5, Some(date)), Some(5));
        assert_eq!(clock_skew(at - 3_600, Some(date)), Some(-3_600));
        assert_eq!(clock_skew(at, Some("yesterday")), None);
        assert_eq!(clock_skew(at, None), None);
        let unauthorized = reqwest::StatusCode::UNAUTHORIZED;
        let told = explain_refusal("stale timestamp".into(), unauthorized, Some(-3_600));
        assert!(told.contains("clock is -3600 s off") && told.contains("systemd-time-wait-sync"), "{told}");
        assert_eq!(explain_refusal("stale timestamp".into(), unauthorized, Some(20)), "stale timestamp");
        assert_eq!(explain_refusal("no".into(), reqwest::StatusCode::FORBIDDEN, Some(-3_600)), "no");
    }
}
