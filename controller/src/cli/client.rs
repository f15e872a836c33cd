//! HTTP client for the REST API, with an upload progress bar for pushes.

use std::time::Duration;

use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use super::PushArgs;

/// CLI failures, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The controller answered with an error (exit 1).
    #[error("{status}: {message}")]
    Refused {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// The controller's `error` text.
        message: String,
    },
    /// The controller is unreachable (exit 69).
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
}

impl CliError {
    /// Process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused { .. } => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 69,
        }
    }
}

/// A client bound to one controller and token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (e.g. `https://controller.example:7700`), trusting the CA
    /// certificates in `ca_file` (else the system's roots) for HTTPS.
    pub fn new(base: &str, token: Option<String>, ca_file: Option<&std::path::Path>) -> Result<Self, CliError> {
        let tls = edgefleet_service::tls::client_config(ca_file).map_err(|e| CliError::Usage(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client { base: base.trim_end_matches('/').to_owned(), token, http })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = req.send().await.map_err(|source| CliError::Unreachable { url: self.base.clone(), source })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or(text);
        Err(CliError::Refused { status, message })
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let resp = self.send(req).await?;
        resp.json().await.map_err(|source| CliError::Unreachable { url: self.base.clone(), source })
    }

    /// `GET path` as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, CliError> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    /// `GET path` as raw bytes.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, CliError> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        let bytes = resp.bytes().await.map_err(|source| CliError::Unreachable { url: self.base.clone(), source })?;
        Ok(bytes.to_vec())
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.json(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.json(self.request(reqwest::Method::PUT, path).json(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.send(self.request(reqwest::Method::DELETE, path)).await.map(drop)
    }

    /// Uploads a model version, showing progress on a terminal.
    pub async fn push(&self, args: &PushArgs) -> Result<Value, CliError> {
        let model = tokio::fs::read(&args.path)
            .await
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", args.path.display())))?;
        let mut metrics = serde_json::Map::new();
        for (k, v) in &args.metrics {
            let n: f64 = v.parse().map_err(|_| CliError::Usage(format!("metric {k}={v:?} is not a number")))?;
            metrics.insert(k.clone(), Value::from(n));
        }
        let metadata = serde_json::json!({
            "metrics": metrics,
            "params": args.params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "dataset_sha256": args.dataset_hash,
            "code_commit": args.code_commit,
            "parent_version": args.parent,
            "version": args.version,
        });
        let mut total = model.len() as u64;
        let baseline = match &args.baseline {
            Some(p) => {
                let bytes = tokio::fs::read(p)
                    .await
                    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?;
                total += bytes.len() as u64;
                let file = p.file_name().map_or("baseline.csv".into(), |n| n.to_string_lossy().into_owned());
                Some((bytes, file))
            }
            None => None,
        };
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("uploading {}", args.path.display()));
        let model_name = args.path.file_name().map_or("model.onnx".into(), |n| n.to_string_lossy().into_owned());
        let mut form = Form::new()
            .part(
                "metadata",
                Part::text(metadata.to_string())
                    .mime_str("application/json")
                    .map_err(|e| CliError::Usage(e.to_string()))?,
            )
            .part("model", progress_part(model, model_name, bar.clone()));
        if let Some((bytes, file)) = baseline {
            form = form.part("baseline", progress_part(bytes, file, bar.clone()));
        }
        let result = self
            .json(
                self.request(reqwest::Method::POST, &format!("/api/v1/models/{}/versions", args.name)).multipart(form),
            )
            .await;
        bar.finish_and_clear();
        result
    }
}

/// A multipart file part whose bytes advance `bar` as they are sent.
fn progress_part(bytes: Vec<u8>, file_name: String, bar: ProgressBar) -> Part {
    let len = bytes.len() as u64;
    let chunks: Vec<Vec<u8>> = bytes.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let stream = futures::stream::iter(chunks).map(move |c| {
        bar.inc(c.len() as u64);
        Ok::<_, std::io::Error>(c)
    });
    Part::stream_with_length(reqwest::Body::wrap_stream(stream), len).file_name(file_name)
}
