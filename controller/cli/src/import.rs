//! `edgefleet model import`: a model version from an MLflow registry (or a run's artifacts) into
//! ours with its lineage — params, metrics, the git commit tag, the run's dataset digests and
//! the MLflow source — once, or each time an alias moves, optionally rolled out.
//!
//! What was imported is read back from the registry (each version's `lineage.source`), not kept
//! in a local file: importing the same MLflow version twice, or restarting a follower, finds the
//! earlier import and starts no second rollout of it.

use edgefleet_shared::api::models::{PushMetadata, VersionInfo};
use edgefleet_shared::api::rollouts::RolloutInfo;
use edgefleet_shared::names::ModelName;
use reqwest::StatusCode;
use serde::Serialize;

use crate::args::{ImportArgs, Output};
use crate::client::{CliError, Client, Upload};
use crate::mlflow::{BASELINE_ARTIFACTS, Mlflow, Reference, Run, lineage};
use crate::output;

/// What one import did.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// The MLflow version or run artifact, pinned (`models:/NAME/VERSION`, `runs:/RUN/PATH`).
    pub source: String,
    /// The version here.
    pub version: VersionInfo,
    /// False when an earlier import had brought it in already.
    pub imported: bool,
    /// The rollout started for it (none without `--selector`, or when one existed).
    pub rollout: Option<RolloutInfo>,
}

/// Runs `model import`.
pub async fn run(client: &Client, out: Output, args: ImportArgs) -> Result<(), CliError> {
    let mlflow = Mlflow::new(&args.mlflow_uri)?;
    let reference = Reference::parse(&args.reference).map_err(CliError::Usage)?;
    match (args.follow_alias.clone(), reference) {
        (Some(alias), Reference::Model { name }) => follow(client, out, &mlflow, &args, &name, &alias).await,
        (Some(_), _) => Err(CliError::Usage(format!(
            "--follow-alias takes the registered model as models:/NAME, not {:?}",
            args.reference
        ))),
        (None, Reference::Model { name }) => Err(CliError::Usage(format!(
            "models:/{name} names no version: write models:/{name}/VERSION or models:/{name}@ALIAS, or follow an alias \
             with --follow-alias ALIAS"
        ))),
        (None, reference) => {
            let imported = import(client, &mlflow, &args, &reference).await?;
            report(out, &imported, false);
            Ok(())
        }
    }
}

/// Imports the version `alias` points at, then polls; each move imports (and rolls out) the new
/// target. Controller refusals of a version are reported once (the next move retries); MLflow or
/// controller outages are retried at the next poll.
async fn follow(
    client: &Client,
    out: Output,
    mlflow: &Mlflow,
    args: &ImportArgs,
    name: &str,
    alias: &str,
) -> Result<(), CliError> {
    let mut done: Option<String> = None;
    loop {
        let step = async {
            let target = mlflow.alias(name, alias).await?;
            if done.as_deref() == Some(target.version.as_str()) {
                return Ok((target.version, None));
            }
            let version = target.version.parse().map_err(|_| {
                CliError::Mlflow(format!("alias {name}@{alias} points at version {:?}, not a number", target.version))
            })?;
            let imported = import(client, mlflow, args, &Reference::Version { name: name.into(), version }).await?;
            Ok((target.version, Some(imported)))
        };
        match step.await {
            Ok((version, imported)) => {
                if let Some(imported) = imported {
                    report(out, &imported, true);
                }
                done = Some(version);
            }
            Err(e @ CliError::Usage(_)) => return Err(e),
            Err(e @ CliError::Refused { status, .. }) if status.is_client_error() => {
                eprintln!("edgefleet: {e}; waiting for {name}@{alias} to move");
                if let Ok(target) = mlflow.alias(name, alias).await {
                    done = Some(target.version);
                }
            }
            Err(e) => eprintln!("edgefleet: {e}; retrying in {}", humantime::format_duration(args.poll)),
        }
        tokio::select! {
            () = tokio::time::sleep(args.poll) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Where an MLflow reference's model files are, pinned to one version.
struct Resolved {
    /// `models:/NAME/VERSION` or `runs:/RUN/PATH`.
    pinned: String,
    /// The registered model's name, for a default `--name`.
    registered: Option<String>,
    /// The artifact directory (or, with `file`, the directory of the file).
    dir: String,
    /// A named `.onnx` file in `dir`; else the directory's model file is looked for.
    file: Option<String>,
    run: Option<Run>,
    link: Option<String>,
}

async fn resolve(mlflow: &Mlflow, reference: &Reference) -> Result<Resolved, CliError> {
    let (name, version) = match reference {
        Reference::Version { name, version } => (name.clone(), version.to_string()),
        Reference::Alias { name, alias } => (name.clone(), mlflow.alias(name, alias).await?.version),
        Reference::Run { run_id, path } => {
            let run = mlflow.run(run_id).await?;
            let root = run.info.artifact_uri.trim_end_matches('/').to_owned();
            let (dir, file) = match path.rsplit_once('/') {
                _ if !path.ends_with(".onnx") => (format!("{root}/{path}"), None),
                Some((d, f)) => (format!("{root}/{d}"), Some(f.to_owned())),
                None => (root, Some(path.clone())),
            };
            let link = Some(mlflow.run_link(&run));
            return Ok(Resolved {
                pinned: format!("runs:/{run_id}/{path}"),
                registered: None,
                dir,
                file,
                run: Some(run),
                link,
            });
        }
        Reference::Model { .. } => unreachable!("run() refuses models:/NAME without --follow-alias"),
    };
    let mv = mlflow.version(&name, &version).await?;
    if let Some(status) = mv.status.as_deref().filter(|s| *s != "READY") {
        return Err(CliError::MlflowUnreachable(format!(
            "{}: model version {name}/{version} is {status}, not READY yet",
            mlflow.uri()
        )));
    }
    let dir = mlflow.download_uri(&name, &version).await?;
    let run = match mv.run_id.as_deref().filter(|r| !r.is_empty()) {
        Some(id) => Some(mlflow.run(id).await?),
        None => None,
    };
    Ok(Resolved {
        pinned: format!("models:/{name}/{version}"),
        link: Some(mlflow.version_link(&name, &version)),
        registered: Some(name),
        dir,
        file: None,
        run,
    })
}

/// The `.onnx` file of a model directory: `model.onnx`, else the only `.onnx` file.
async fn model_file(mlflow: &Mlflow, dir: &str) -> Result<String, CliError> {
    let files = mlflow.list(dir).await?;
    let onnx: Vec<&str> =
        files.iter().filter(|f| !f.is_dir && f.path.ends_with(".onnx")).map(|f| f.path.as_str()).collect();
    let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    match onnx.as_slice() {
        _ if onnx.iter().any(|p| name(p) == "model.onnx") => Ok("model.onnx".into()),
        [one] => Ok(name(one)),
        [] => Err(CliError::Mlflow(format!(
            "{dir} holds no .onnx file ({}): log the model with mlflow.onnx.log_model, or name the file as \
             runs:/RUN_ID/PATH/FILE.onnx",
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        many => Err(CliError::Mlflow(format!(
            "{dir} holds several .onnx files ({}): name one as runs:/RUN_ID/PATH/FILE.onnx",
            many.join(", ")
        ))),
    }
}

/// The run's reference data: the named artifact, else the first of [`BASELINE_ARTIFACTS`] at
/// its root.
async fn baseline(
    mlflow: &Mlflow,
    run: Option<&Run>,
    named: Option<&str>,
) -> Result<Option<(Vec<u8>, String)>, CliError> {
    let Some(run) = run else {
        return match named {
            Some(n) => {
                Err(CliError::Usage(format!("--baseline-artifact {n}: the version names no run to take it from")))
            }
            None => Ok(None),
        };
    };
    let root = &run.info.artifact_uri;
    let file = match named {
        Some(n) => n.to_owned(),
        None => {
            let files = mlflow.list(root).await?;
            match BASELINE_ARTIFACTS.iter().find(|b| files.iter().any(|f| !f.is_dir && f.path == **b)) {
                Some(b) => (*b).to_owned(),
                None => return Ok(None),
            }
        }
    };
    let bytes = mlflow.download(root, &file).await?;
    Ok(Some((bytes, file.rsplit('/').next().unwrap_or(&file).to_owned())))
}

/// The version of `name` imported from `pinned` on `server`, if any.
async fn find_imported(
    client: &Client,
    name: &str,
    server: &str,
    pinned: &str,
) -> Result<Option<VersionInfo>, CliError> {
    let summary = match client.model(name).await {
        Ok(s) => s,
        Err(CliError::Refused { status: StatusCode::NOT_FOUND, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    for v in summary.versions.iter().rev() {
        let info = client.version(name, &v.to_string()).await?;
        let same = info
            .manifest
            .lineage
            .source
            .as_ref()
            .is_some_and(|s| s.system == "mlflow" && s.uri == server && s.reference == pinned);
        if same {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

/// Imports one pinned version (unless imported before) and starts its rollout when asked.
async fn import(
    client: &Client,
    mlflow: &Mlflow,
    args: &ImportArgs,
    reference: &Reference,
) -> Result<Imported, CliError> {
    let resolved = resolve(mlflow, reference).await?;
    let name = match (&args.name, &resolved.registered) {
        (Some(n), _) | (None, Some(n)) => n.clone(),
        (None, None) => {
            return Err(CliError::Usage(format!("{}: give the model's name here with --name", resolved.pinned)));
        }
    };
    ModelName::new(name.as_str())
        .map_err(|e| CliError::Usage(format!("{name:?} cannot name a model here ({e}): give another with --name")))?;
    let server = mlflow.uri();
    let (version, imported) = match find_imported(client, &name, &server, &resolved.pinned).await? {
        Some(existing) => (existing, false),
        None => {
            let file = match &resolved.file {
                Some(f) => f.clone(),
                None => model_file(mlflow, &resolved.dir).await?,
            };
            let model = mlflow.download(&resolved.dir, &file).await?;
            let baseline = baseline(mlflow, resolved.run.as_ref(), args.baseline_artifact.as_deref()).await?;
            if baseline.is_none() {
                eprintln!(
                    "edgefleet: warning: {} has no reference data, so drift has no baseline: log baseline.csv in its \
                     run or name an artifact with --baseline-artifact",
                    resolved.pinned
                );
            }
            let (lineage, warnings) = lineage(
                &server,
                &resolved.pinned,
                resolved.link.clone(),
                resolved.run.as_ref(),
                args.dataset_hash.clone(),
            );
            for w in warnings {
                eprintln!("edgefleet: warning: {w}");
            }
            let metadata = PushMetadata {
                metrics: lineage.metrics,
                params: lineage.params,
                dataset_sha256: lineage.dataset_sha256,
                code_commit: lineage.code_commit,
                allow_schema_change: args.allow_schema_change,
                source: Some(lineage.source),
                ..PushMetadata::default()
            };
            let pushed = client.push(&name, Upload { model, model_file: file, baseline }, &metadata).await?;
            for warning in &pushed.warnings {
                eprintln!("edgefleet: warning: {warning}");
            }
            (pushed, true)
        }
    };
    let rollout = if args.selector.is_empty() {
        None
    } else {
        let exists =
            client.rollouts().await?.iter().any(|r| r.model.name == version.name && r.model.version == version.version);
        if exists {
            None
        } else {
            let request = args.plan.clone().request(&version.name, &version.version.to_string(), args.selector.clone());
            Some(client.create_rollout(&request).await?)
        }
    };
    Ok(Imported { source: resolved.pinned, version, imported, rollout })
}

/// Prints an import: JSON (one line per import when following), or the version and rollout.
fn report(out: Output, imported: &Imported, following: bool) {
    if out == Output::Json {
        let text = if following { serde_json::to_string(imported) } else { serde_json::to_string_pretty(imported) };
        say!("{}", text.unwrap_or_default());
        return;
    }
    let v = &imported.version;
    if imported.imported {
        say!("imported {} as {}:{}", imported.source, v.name, v.version);
        output::version(out, v);
    } else {
        say!("{} was imported before as {}:{}", imported.source, v.name, v.version);
    }
    if let Some(r) = &imported.rollout {
        say!("started rollout {} of {}:{}", r.id, r.model.name, r.model.version);
    }
}
