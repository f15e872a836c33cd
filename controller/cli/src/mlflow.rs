//! A client of an MLflow tracking server's REST API (2.x and 3.x): model versions and aliases,
//! runs with their params, metrics, tags and dataset inputs, and artifacts served by the
//! server's artifact proxy (`mlflow-artifacts:` URIs, `mlflow server`'s default). What an import
//! fetches is turned into a push by [`lineage`], a pure function of the MLflow records.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_shared::bundle::{LineageSource, SourceDataset};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::client::CliError;

/// The run tag naming the SHA-256 of the training data (an edgefleet snapshot's dataset hash).
pub const DATASET_TAG: &str = "edgefleet.dataset_sha256";
/// The run tag MLflow records the training code's commit in.
pub const COMMIT_TAG: &str = "mlflow.source.git.commit";
/// Baseline artifacts looked for at a run's artifact root when none is named.
pub const BASELINE_ARTIFACTS: [&str; 2] = ["baseline.csv", "baseline.npy"];
/// Largest artifact an import downloads.
const MAX_ARTIFACT_BYTES: u64 = 2 << 30;

/// What `model import` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `models:/NAME/VERSION`.
    Version { name: String, version: u64 },
    /// `models:/NAME@ALIAS`.
    Alias { name: String, alias: String },
    /// `models:/NAME` (with `--follow-alias`).
    Model { name: String },
    /// `runs:/RUN_ID/PATH`: a model directory or an `.onnx` file among the run's artifacts.
    Run { run_id: String, path: String },
}

impl Reference {
    /// Parses an MLflow model URI.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let bad = || {
            format!(
                "{text:?} is not an MLflow model URI: models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH"
            )
        };
        if let Some(rest) = text.strip_prefix("models:/") {
            if let Some((name, alias)) = rest.rsplit_once('@') {
                return match (name.is_empty(), alias.is_empty() || alias.contains('/')) {
                    (false, false) => Ok(Reference::Alias { name: name.into(), alias: alias.into() }),
                    _ => Err(bad()),
                };
            }
            return match rest.rsplit_once('/') {
                Some((name, v)) if !name.is_empty() => match v.parse::<u64>() {
                    Ok(version) if version > 0 => Ok(Reference::Version { name: name.into(), version }),
                    _ => Err(format!(
                        "{text:?}: MLflow versions are numbers from 1 (for an alias write models:/NAME@ALIAS)"
                    )),
                },
                None if !rest.is_empty() => Ok(Reference::Model { name: rest.into() }),
                _ => Err(bad()),
            };
        }
        if let Some(rest) = text.strip_prefix("runs:/") {
            return match rest.split_once('/') {
                Some((run, path)) if !run.is_empty() && !path.trim_matches('/').is_empty() => {
                    Ok(Reference::Run { run_id: run.into(), path: path.trim_matches('/').into() })
                }
                _ => Err(bad()),
            };
        }
        Err(bad())
    }
}

/// A registered model version (`model_version`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelVersion {
    /// Registered model name.
    pub name: String,
    /// Version (MLflow sends it as a string).
    pub version: String,
    /// Where the model was logged (`models:/m-...`, `runs:/...`, an artifact URI).
    #[serde(default)]
    pub source: String,
    /// Training run.
    #[serde(default)]
    pub run_id: Option<String>,
    /// `READY` once its files are in place.
    #[serde(default)]
    pub status: Option<String>,
}

/// A key and a value, as MLflow lists params and tags.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// A metric's latest value; MLflow may send NaN or infinities as strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Metric {
    /// Key.
    pub key: String,
    /// Value.
    pub value: serde_json::Value,
}

/// A run (`run`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Run {
    /// Ids and where its artifacts live.
    pub info: RunInfo,
    /// Params, metrics and tags.
    #[serde(default)]
    pub data: RunData,
    /// Datasets it consumed.
    #[serde(default)]
    pub inputs: RunInputs,
}

/// `run.info`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RunInfo {
    /// Run id.
    pub run_id: String,
    /// Experiment.
    #[serde(default)]
    pub experiment_id: String,
    /// Root of its artifacts.
    #[serde(default)]
    pub artifact_uri: String,
}

/// `run.data`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RunData {
    /// Latest value of each metric.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Params.
    #[serde(default)]
    pub params: Vec<KeyValue>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// `run.inputs`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RunInputs {
    /// Dataset inputs.
    #[serde(default)]
    pub dataset_inputs: Vec<DatasetInput>,
}

/// One dataset input of a run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DatasetInput {
    /// Its tags (`mlflow.data.context`).
    #[serde(default)]
    pub tags: Vec<KeyValue>,
    /// The dataset.
    pub dataset: Dataset,
}

/// A dataset as MLflow records it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dataset {
    /// Name.
    pub name: String,
    /// MLflow's digest.
    pub digest: String,
}

/// A file in an artifact listing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FileInfo {
    /// Path relative to the listed directory.
    pub path: String,
    /// Whether it is a directory.
    #[serde(default)]
    pub is_dir: bool,
}

/// The lineage of an imported version, from the MLflow records; `dataset_hash` (the operator's
/// `--dataset-hash`) wins over the run's [`DATASET_TAG`]. Returns the lineage and what the
/// import should say about values it could not keep.
pub fn lineage(
    server: &str,
    pinned: &str,
    link: Option<String>,
    run: Option<&Run>,
    dataset_hash: Option<String>,
) -> (Lineage, Vec<String>) {
    let mut warnings = Vec::new();
    let mut out = Lineage {
        source: LineageSource {
            system: "mlflow".into(),
            uri: server.into(),
            reference: pinned.into(),
            run_id: run.map(|r| r.info.run_id.clone()),
            link,
            datasets: Vec::new(),
        },
        ..Lineage::default()
    };
    if let Some(run) = run {
        out.params = run.data.params.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
        for m in &run.data.metrics {
            match m.value.as_f64().filter(|v| v.is_finite()) {
                Some(v) => {
                    out.metrics.insert(m.key.clone(), v);
                }
                None => warnings.push(format!("metric {} = {} is not a finite number; left out", m.key, m.value)),
            }
        }
        let tag = |key: &str| run.data.tags.iter().find(|t| t.key == key).map(|t| t.value.clone());
        out.code_commit = tag(COMMIT_TAG);
        out.dataset_sha256 = dataset_hash.or_else(|| tag(DATASET_TAG));
        out.source.datasets = run
            .inputs
            .dataset_inputs
            .iter()
            .map(|d| SourceDataset {
                name: d.dataset.name.clone(),
                digest: d.dataset.digest.clone(),
                context: d.tags.iter().find(|t| t.key == "mlflow.data.context").map(|t| t.value.clone()),
            })
            .collect();
    } else {
        out.dataset_sha256 = dataset_hash;
    }
    (out, warnings)
}

/// What [`lineage`] maps into a push.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lineage {
    /// Run params.
    pub params: BTreeMap<String, String>,
    /// Run metrics (finite values).
    pub metrics: BTreeMap<String, f64>,
    /// The git commit tag.
    pub code_commit: Option<String>,
    /// Training data hash.
    pub dataset_sha256: Option<String>,
    /// The MLflow source.
    pub source: LineageSource,
}

/// The path under the artifact proxy of an `mlflow-artifacts:` URI.
pub fn proxied_path(artifact_uri: &str) -> Result<String, String> {
    let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
        return Err(format!(
            "the artifacts are at {artifact_uri}, which the tracking server does not serve: run `mlflow server` \
             with its artifact proxy (--serve-artifacts, the default, and --artifacts-destination)"
        ));
    };
    // `mlflow-artifacts://host:port/path` names the server too; only the path matters here.
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path.split_once('/').map_or("", |(_, p)| p),
        None => rest.trim_start_matches('/'),
    };
    Ok(path.trim_end_matches('/').to_owned())
}

/// An MLflow tracking server.
#[derive(Debug, Clone)]
pub struct Mlflow {
    base: Url,
    http: reqwest::Client,
    auth: Auth,
}

#[derive(Debug, Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

#[derive(Deserialize)]
struct VersionBody {
    model_version: ModelVersion,
}

#[derive(Deserialize)]
struct RunBody {
    run: Run,
}

#[derive(Deserialize)]
struct DownloadUri {
    artifact_uri: String,
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    files: Vec<FileInfo>,
}

impl Mlflow {
    /// A client of the server at `uri`; credentials come from the URL's user info, else
    /// `MLFLOW_TRACKING_TOKEN`, else `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`
    /// (as MLflow's own clients read them).
    pub fn new(uri: &str) -> Result<Mlflow, CliError> {
        let mut base = Url::parse(uri).map_err(|e| CliError::Usage(format!("MLflow tracking URI {uri:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::Usage(format!("MLflow tracking URI {uri:?} is not an http(s) server address")));
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let auth = if !base.username().is_empty() {
            let user = base.username().to_owned();
            let password = base.password().unwrap_or_default().to_owned();
            Auth::Basic(user, password)
        } else if let Some(token) = env("MLFLOW_TRACKING_TOKEN") {
            Auth::Bearer(token)
        } else if let Some(user) = env("MLFLOW_TRACKING_USERNAME") {
            Auth::Basic(user, env("MLFLOW_TRACKING_PASSWORD").unwrap_or_default())
        } else {
            Auth::None
        };
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Mlflow { base, http, auth })
    }

    /// The server's address without credentials, as recorded in lineage.
    pub fn uri(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// The UI page of a model version.
    pub fn version_link(&self, name: &str, version: &str) -> String {
        format!("{}/#/models/{name}/versions/{version}", self.uri())
    }

    /// The UI page of a run.
    pub fn run_link(&self, run: &Run) -> String {
        format!("{}/#/experiments/{}/runs/{}", self.uri(), run.info.experiment_id, run.info.run_id)
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(&self, url: Url, what: &str) -> Result<reqwest::Response, CliError> {
        let req = self.http.get(url);
        let req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        };
        let unreachable = |e: reqwest::Error| {
            CliError::MlflowUnreachable(format!("{}: {what}: {}", self.uri(), edgefleet_service::tls::error_chain(&e)))
        };
        let resp = req.send().await.map_err(unreachable)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        #[derive(Deserialize)]
        struct MlflowError {
            message: String,
        }
        let message = serde_json::from_str::<MlflowError>(&text).map_or(text, |e| e.message);
        let message = message.chars().take(500).collect::<String>();
        Err(match status {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                CliError::Mlflow(format!("{what}: {status}: {message}"))
            }
            _ => CliError::MlflowUnreachable(format!("{}: {what}: {status}: {message}", self.uri())),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<T, CliError> {
        let mut url = self.url(segments);
        url.query_pairs_mut().extend_pairs(query);
        let resp = self.send(url, what).await?;
        resp.json().await.map_err(|e| CliError::Mlflow(format!("{what}: not an MLflow answer: {e}")))
    }

    /// A registered model version.
    pub async fn version(&self, name: &str, version: &str) -> Result<ModelVersion, CliError> {
        let what = format!("model version {name}/{version}");
        let body: VersionBody = self
            .get(&["api", "2.0", "mlflow", "model-versions", "get"], &[("name", name), ("version", version)], &what)
            .await?;
        Ok(body.model_version)
    }

    /// The version an alias points at.
    pub async fn alias(&self, name: &str, alias: &str) -> Result<ModelVersion, CliError> {
        let what = format!("alias {name}@{alias}");
        let body: VersionBody = self
            .get(&["api", "2.0", "mlflow", "registered-models", "alias"], &[("name", name), ("alias", alias)], &what)
            .await?;
        Ok(body.model_version)
    }

    /// Where a version's files are.
    pub async fn download_uri(&self, name: &str, version: &str) -> Result<String, CliError> {
        let what = format!("files of model version {name}/{version}");
        let body: DownloadUri = self
            .get(
                &["api", "2.0", "mlflow", "model-versions", "get-download-uri"],
                &[("name", name), ("version", version)],
                &what,
            )
            .await?;
        Ok(body.artifact_uri)
    }

    /// A run.
    pub async fn run(&self, run_id: &str) -> Result<Run, CliError> {
        let body: RunBody =
            self.get(&["api", "2.0", "mlflow", "runs", "get"], &[("run_id", run_id)], &format!("run {run_id}")).await?;
        Ok(body.run)
    }

    /// The files of an artifact directory.
    pub async fn list(&self, artifact_uri: &str) -> Result<Vec<FileInfo>, CliError> {
        let path = proxied_path(artifact_uri).map_err(CliError::Mlflow)?;
        let listing: Listing = self
            .get(
                &["api", "2.0", "mlflow-artifacts", "artifacts"],
                &[("path", &path)],
                &format!("listing {artifact_uri}"),
            )
            .await?;
        Ok(listing.files)
    }

    /// An artifact's bytes: `file` (a relative path) under `artifact_uri`.
    pub async fn download(&self, artifact_uri: &str, file: &str) -> Result<Vec<u8>, CliError> {
        let dir = proxied_path(artifact_uri).map_err(CliError::Mlflow)?;
        let mut segments: Vec<&str> = vec!["api", "2.0", "mlflow-artifacts", "artifacts"];
        segments.extend(dir.split('/').chain(file.split('/')).filter(|s| !s.is_empty()));
        if segments.iter().any(|s| matches!(*s, "." | "..")) {
            return Err(CliError::Usage(format!("artifact path {file:?} leaves its directory")));
        }
        let what = format!("artifact {artifact_uri}/{file}");
        let resp = self.send(self.url(&segments), &what).await?;
        if resp.content_length().is_some_and(|n| n > MAX_ARTIFACT_BYTES) {
            return Err(CliError::Mlflow(format!("{what} is over {MAX_ARTIFACT_BYTES} bytes")));
        }
        let bytes = resp.bytes().await.map_err(|e| CliError::MlflowUnreachable(format!("{what}: {e}")))?;
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_or_say_what_is_expected() {
        let ok = |s: &str| Reference::parse(s).expect(s);
        assert_eq!(ok("models:/iris/3"), Reference::Version { name: "iris".into(), version: 3 });
        assert_eq!(ok("models:/iris@champion"), Reference::Alias { name: "iris".into(), alias: "champion".into() });
        assert_eq!(ok("models:/iris"), Reference::Model { name: "iris".into() });
        assert_eq!(ok("runs:/abc/model/"), Reference::Run { run_id: "abc".into(), path: "model".into() });
        assert_eq!(ok("runs:/abc/out/m.onnx"), Reference::Run { run_id: "abc".into(), path: "out/m.onnx".into() });
        for bad in [
            "iris",
            "models:/",
            "models:/iris/0",
            "models:/iris/x",
            "models:/@a",
            "models:/i@",
            "runs:/abc",
            "runs://x",
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn proxied_artifact_uris_map_to_paths_and_others_are_refused() {
        assert_eq!(proxied_path("mlflow-artifacts:/1/models/m-1/artifacts").as_deref(), Ok("1/models/m-1/artifacts"));
        assert_eq!(proxied_path("mlflow-artifacts://host:5000/1/r/artifacts/").as_deref(), Ok("1/r/artifacts"));
        let err = proxied_path("s3://bucket/1/r/artifacts").expect_err("not proxied");
        assert!(err.contains("s3://bucket") && err.contains("--serve-artifacts"), "{err}");
    }

    #[test]
    fn lineage_maps_params_metrics_tags_and_datasets() {
        let run: Run = serde_json::from_value(serde_json::json!({
            "info": {"run_id": "r1", "experiment_id": "7", "artifact_uri": "mlflow-artifacts:/7/r1/artifacts"},
            "data": {
                "metrics": [{"key": "accuracy", "value": 0.97}, {"key": "loss", "value": "NaN"}],
                "params": [{"key": "C", "value": "1.0"}],
                "tags": [{"key": COMMIT_TAG, "value": "abc123"}, {"key": DATASET_TAG, "value": "ff".repeat(32)}]
            },
            "inputs": {"dataset_inputs": [{
                "tags": [{"key": "mlflow.data.context", "value": "training"}],
                "dataset": {"name": "iris", "digest": "9e010c66", "source_type": "code"}
            }]}
        }))
        .expect("run");
        let (l, warnings) =
            lineage("http://mlflow:5000", "models:/iris/2", Some("http://mlflow:5000/#/m".into()), Some(&run), None);
        assert_eq!(l.params["C"], "1.0");
        assert_eq!(l.metrics, BTreeMap::from([("accuracy".to_owned(), 0.97)]));
        assert!(warnings[0].contains("loss"), "{warnings:?}");
        assert_eq!(l.code_commit.as_deref(), Some("abc123"));
        assert_eq!(l.dataset_sha256, Some("ff".repeat(32)));
        assert_eq!(l.source.run_id.as_deref(), Some("r1"));
        assert_eq!(
            l.source.datasets,
            vec![SourceDataset { name: "iris".into(), digest: "9e010c66".into(), context: Some("training".into()) }]
        );
        l.source.check().expect("a valid source");
        let (given, _) = lineage("http://m", "models:/iris/2", None, Some(&run), Some("ab".repeat(32)));
        assert_eq!(given.dataset_sha256, Some("ab".repeat(32)), "--dataset-hash wins over the tag");
    }

    #[test]
    fn credentials_in_the_uri_are_not_recorded() {
        let m = Mlflow::new("https://user:secret@mlflow.example/prefix/").expect("client");
        assert_eq!(m.uri(), "https://mlflow.example/prefix");
        assert!(matches!(m.auth, Auth::Basic(ref u, ref p) if u == "user" && p == "secret"));
        assert!(Mlflow::new("ftp://mlflow.example").is_err());
    }
}
