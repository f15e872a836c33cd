//! The typed client of the controller's REST API: one method per route, each taking and
//! returning the types of [`edgefleet_shared::api`] the server itself uses, so a renamed field
//! or route shape breaks this crate's build instead of a running command.
//!
//! Path segments (model names, aliases, device ids) are percent-encoded by the URL builder: a
//! name never changes which route is called.

use std::time::Duration;

use edgefleet_shared::api::ErrorBody;
use edgefleet_shared::api::fleet::{
    CreateEnrollmentToken, Decommission, DeployRequest, DeviceInfo, DeviceQuery, EnrollmentToken, EnrollmentTokenInfo,
    Issued, Relabel, UndeployRequest,
};
use edgefleet_shared::api::fleets::{CreateFleet, FleetInfo, UpdateFleet};
use edgefleet_shared::api::models::{AliasTarget, ModelSummary, PushMetadata, VersionInfo};
use edgefleet_shared::api::rollouts::{RolloutInfo, RolloutRequest};
use edgefleet_shared::api::telemetry::{DriftQuery, DriftReport, ListQuery, Policy, RetrainRequest};
use edgefleet_shared::api::tokens::{AuditEntry, AuditQuery, CreateToken, CreatedToken, TokenInfo};
use edgefleet_shared::fleet::{EnrollRequest, EnrollResponse};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// CLI failures, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The controller answered with an error (exit 1).
    #[error("{status}: {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The controller's `error` text.
        message: String,
    },
    /// The controller is unreachable, or its answer is not what this CLI expects (exit 69).
    #[error("cannot reach the controller at {url}: {}", edgefleet_service::tls::error_chain(source))]
    Unreachable {
        /// URL.
        url: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// Bad arguments or unreadable local files (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The MLflow server refused, or has no such model, version, run or artifact (exit 1).
    #[error("MLflow: {0}")]
    Mlflow(String),
    /// The MLflow server cannot be reached or failed (exit 69).
    #[error("cannot reach MLflow at {0}")]
    MlflowUnreachable(String),
}

impl CliError {
    /// Process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused { .. } | CliError::Mlflow(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } | CliError::MlflowUnreachable(_) => 69,
        }
    }
}

/// The operator actions on a rollout (`POST /rollouts/{id}/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    /// Stop issuing waves.
    Pause,
    /// Continue a paused rollout.
    Resume,
    /// Stop and send every changed device back.
    Abort,
}

impl RolloutAction {
    fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
        }
    }
}

/// A model file and its reference data, as a push uploads them.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The ONNX bytes.
    pub model: Vec<u8>,
    /// The file name sent with them.
    pub model_file: String,
    /// Reference data (CSV or .npy) and its file name.
    pub baseline: Option<(Vec<u8>, String)>,
}

/// A client bound to one controller and token.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (e.g. `https://controller.example:7700`), trusting the CA
    /// certificates in `ca_file` (else the system's roots) for HTTPS.
    pub fn new(base: &str, token: Option<String>, ca_file: Option<&std::path::Path>) -> Result<Self, CliError> {
        let base = Url::parse(base).map_err(|e| CliError::Usage(format!("controller URL {base:?}: {e}")))?;
        if base.cannot_be_a_base() {
            return Err(CliError::Usage(format!("controller URL {base} cannot have paths")));
        }
        let tls = edgefleet_service::tls::client_config(ca_file).map_err(|e| CliError::Usage(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client { base, token, http })
    }

    /// The controller's base URL as given.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `/api/v1/` followed by `segments`, each percent-encoded as one path segment. Empty, `.`
    /// and `..` segments are refused: URLs normalise them away (even percent-encoded), so they
    /// would call another route.
    fn url(&self, segments: &[&str]) -> Result<Url, CliError> {
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(CliError::Usage(format!("{bad:?} is not a valid name or id")));
        }
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        Ok(url)
    }

    fn request(&self, method: Method, segments: &[&str]) -> Result<reqwest::RequestBuilder, CliError> {
        let req = self.http.request(method, self.url(segments)?);
        Ok(match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        })
    }

    fn unreachable(&self, source: reqwest::Error) -> CliError {
        CliError::Unreachable { url: self.base().to_owned(), source }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text).map_or(text, |b| b.error);
        Err(CliError::Refused { status, message })
    }

    async fn call<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, CliError> {
        self.send(req).await?.json().await.map_err(|e| self.unreachable(e))
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, CliError> {
        self.call(self.request(Method::GET, segments)?).await
    }

    async fn get_query<T: DeserializeOwned>(&self, segments: &[&str], query: &impl Serialize) -> Result<T, CliError> {
        self.call(self.request(Method::GET, segments)?.query(query)).await
    }

    async fn with_body<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T, CliError> {
        self.call(self.request(method, segments)?.json(body)).await
    }

    /// `GET /models`.
    pub async fn models(&self) -> Result<Vec<ModelSummary>, CliError> {
        self.get(&["models"]).await
    }

    /// `GET /models/{name}`.
    pub async fn model(&self, name: &str) -> Result<ModelSummary, CliError> {
        self.get(&["models", name]).await
    }

    /// `GET /models/{name}/versions/{version}` (a number or an alias).
    pub async fn version(&self, name: &str, version: &str) -> Result<VersionInfo, CliError> {
        self.get(&["models", name, "versions", version]).await
    }

    /// `PUT /models/{name}/aliases/{alias}`.
    pub async fn set_alias(&self, name: &str, alias: &str, target: &AliasTarget) -> Result<ModelSummary, CliError> {
        self.with_body(Method::PUT, &["models", name, "aliases", alias], target).await
    }

    /// `POST /models/{name}/versions`: uploads a version, showing progress on a terminal.
    pub async fn push(&self, name: &str, upload: Upload, metadata: &PushMetadata) -> Result<VersionInfo, CliError> {
        let total = upload.model.len() as u64 + upload.baseline.as_ref().map_or(0, |(b, _)| b.len() as u64);
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("uploading {}", upload.model_file));
        let metadata = serde_json::to_string(metadata).map_err(|e| CliError::Usage(e.to_string()))?;
        let metadata = Part::text(metadata).mime_str("application/json").map_err(|e| CliError::Usage(e.to_string()))?;
        let mut form =
            Form::new().part("metadata", metadata).part("model", progress_part(upload.model, upload.model_file, &bar));
        if let Some((bytes, file)) = upload.baseline {
            form = form.part("baseline", progress_part(bytes, file, &bar));
        }
        let result = match self.request(Method::POST, &["models", name, "versions"]) {
            Ok(req) => self.call(req.multipart(form)).await,
            Err(e) => Err(e),
        };
        bar.finish_and_clear();
        result
    }

    /// `POST /tokens`.
    pub async fn create_token(&self, req: &CreateToken) -> Result<CreatedToken, CliError> {
        self.with_body(Method::POST, &["tokens"], req).await
    }

    /// `GET /tokens`.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, CliError> {
        self.get(&["tokens"]).await
    }

    /// `DELETE /tokens/{id}`.
    pub async fn revoke_token(&self, id: i64) -> Result<(), CliError> {
        self.send(self.request(Method::DELETE, &["tokens", &id.to_string()])?).await.map(drop)
    }

    /// `GET /audit`.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, CliError> {
        self.get_query(&["audit"], query).await
    }

    /// `POST /enrollment-tokens`.
    pub async fn create_enrollment_token(&self, req: &CreateEnrollmentToken) -> Result<EnrollmentToken, CliError> {
        self.with_body(Method::POST, &["enrollment-tokens"], req).await
    }

    /// `POST /enroll` (authenticated by the enrollment token in the body, not the bearer token).
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, CliError> {
        self.call(self.http.post(self.url(&["enroll"])?).json(req)).await
    }

    /// `GET /devices`.
    pub async fn devices(&self, query: &DeviceQuery) -> Result<Vec<DeviceInfo>, CliError> {
        self.get_query(&["devices"], query).await
    }

    /// `POST /devices/{id}/labels`.
    pub async fn relabel(&self, id: &str, change: &Relabel) -> Result<DeviceInfo, CliError> {
        self.with_body(Method::POST, &["devices", id, "labels"], change).await
    }

    /// `POST /devices/{id}/decommission`.
    pub async fn decommission(&self, id: &str, req: &Decommission) -> Result<DeviceInfo, CliError> {
        self.with_body(Method::POST, &["devices", id, "decommission"], req).await
    }

    /// `GET /enrollment-tokens`.
    pub async fn enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenInfo>, CliError> {
        self.get(&["enrollment-tokens"]).await
    }

    /// `DELETE /enrollment-tokens/{id}`.
    pub async fn revoke_enrollment_token(&self, id: i64) -> Result<(), CliError> {
        self.send(self.request(Method::DELETE, &["enrollment-tokens", &id.to_string()])?).await.map(drop)
    }

    /// `GET /devices/{id}`.
    pub async fn device(&self, id: &str) -> Result<DeviceInfo, CliError> {
        self.get(&["devices", id]).await
    }

    /// `POST /deployments`.
    pub async fn deploy(&self, req: &DeployRequest) -> Result<Vec<Issued>, CliError> {
        self.with_body(Method::POST, &["deployments"], req).await
    }

    /// `POST /fleets`.
    pub async fn create_fleet(&self, req: &CreateFleet) -> Result<FleetInfo, CliError> {
        self.with_body(Method::POST, &["fleets"], req).await
    }

    /// `GET /fleets`.
    pub async fn fleets(&self) -> Result<Vec<FleetInfo>, CliError> {
        self.get(&["fleets"]).await
    }

    /// `GET /fleets/{name}`.
    pub async fn fleet(&self, name: &str) -> Result<FleetInfo, CliError> {
        self.get(&["fleets", name]).await
    }

    /// `PATCH /fleets/{name}`.
    pub async fn update_fleet(&self, name: &str, req: &UpdateFleet) -> Result<FleetInfo, CliError> {
        self.with_body(Method::PATCH, &["fleets", name], req).await
    }

    /// `DELETE /fleets/{name}`.
    pub async fn delete_fleet(&self, name: &str) -> Result<(), CliError> {
        self.send(self.request(Method::DELETE, &["fleets", name])?).await.map(drop)
    }

    /// `POST /undeploy`.
    pub async fn undeploy(&self, req: &UndeployRequest) -> Result<Vec<Issued>, CliError> {
        self.with_body(Method::POST, &["undeploy"], req).await
    }

    /// `POST /rollouts`.
    pub async fn create_rollout(&self, req: &RolloutRequest) -> Result<RolloutInfo, CliError> {
        self.with_body(Method::POST, &["rollouts"], req).await
    }

    /// `GET /rollouts`.
    pub async fn rollouts(&self) -> Result<Vec<RolloutInfo>, CliError> {
        self.get(&["rollouts"]).await
    }

    /// `GET /rollouts/{id}`.
    pub async fn rollout(&self, id: i64) -> Result<RolloutInfo, CliError> {
        self.get(&["rollouts", &id.to_string()]).await
    }

    /// `POST /rollouts/{id}/{action}`.
    pub async fn rollout_action(&self, id: i64, action: RolloutAction) -> Result<RolloutInfo, CliError> {
        self.call(self.request(Method::POST, &["rollouts", &id.to_string(), action.as_str()])?).await
    }

    /// `GET /models/{name}/versions/{version}/drift`, or `/models/{name}/drift` (the latest
    /// version with telemetry) without a version.
    pub async fn drift(&self, name: &str, version: Option<&str>, query: &DriftQuery) -> Result<DriftReport, CliError> {
        match version {
            Some(v) => self.get_query(&["models", name, "versions", v, "drift"], query).await,
            None => self.get_query(&["models", name, "drift"], query).await,
        }
    }

    /// `GET /models/{name}/retrain-policy`.
    pub async fn policy(&self, name: &str) -> Result<Policy, CliError> {
        self.get(&["models", name, "retrain-policy"]).await
    }

    /// `PUT /models/{name}/retrain-policy`.
    pub async fn set_policy(&self, name: &str, policy: &Policy) -> Result<Policy, CliError> {
        self.with_body(Method::PUT, &["models", name, "retrain-policy"], policy).await
    }

    /// `GET /retrain`.
    pub async fn retrain_requests(&self, query: &ListQuery) -> Result<Vec<RetrainRequest>, CliError> {
        self.get_query(&["retrain"], query).await
    }

    /// `GET /retrain/{id}`.
    pub async fn retrain_request(&self, id: u64) -> Result<RetrainRequest, CliError> {
        self.get(&["retrain", &id.to_string()]).await
    }

    /// `GET /retrain/{id}/files/{file}`: a file of the request's dataset snapshot.
    pub async fn retrain_file(&self, id: u64, file: &str) -> Result<Vec<u8>, CliError> {
        let resp = self.send(self.request(Method::GET, &["retrain", &id.to_string(), "files", file])?).await?;
        Ok(resp.bytes().await.map_err(|e| self.unreachable(e))?.to_vec())
    }
}

/// A multipart file part whose bytes advance `bar` as they are sent.
fn progress_part(bytes: Vec<u8>, file_name: String, bar: &ProgressBar) -> Part {
    let len = bytes.len() as u64;
    let chunks: Vec<Vec<u8>> = bytes.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let bar = bar.clone();
    let stream = futures::stream::iter(chunks).map(move |c| {
        bar.inc(c.len() as u64);
        Ok::<_, std::io::Error>(c)
    });
    Part::stream_with_length(reqwest::Body::wrap_stream(stream), len).file_name(file_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_so_a_name_cannot_change_the_route() {
        let client = Client::new("http://127.0.0.1:7700/", None, None).expect("client");
        let url = |c: &Client, segments: &[&str]| c.url(segments).map(|u| u.to_string());
        assert_eq!(url(&client, &["models", "iris"]).expect("url"), "http://127.0.0.1:7700/api/v1/models/iris");
        assert_eq!(
            url(&client, &["models", "../tokens", "versions", "a/b?c#d"]).expect("url"),
            "http://127.0.0.1:7700/api/v1/models/..%2Ftokens/versions/a%2Fb%3Fc%23d"
        );
        for bad in ["..", ".", ""] {
            assert!(matches!(client.url(&["models", bad, "versions", "1"]), Err(CliError::Usage(_))), "{bad:?}");
        }
        let prefixed = Client::new("https://c.example/edgefleet", None, None).expect("client");
        assert_eq!(url(&prefixed, &["devices"]).expect("url"), "https://c.example/edgefleet/api/v1/devices");
        assert!(matches!(Client::new("not a url", None, None), Err(CliError::Usage(_))));
    }
}
