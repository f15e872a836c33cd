//! A push's files and lineage flags, read into what the client uploads.

use std::collections::BTreeMap;

use edgefleet_shared::api::models::PushMetadata;

use crate::args::PushArgs;
use crate::client::{CliError, Upload};

/// Reads the files of a push and its lineage flags.
pub async fn push_request(args: &PushArgs) -> Result<(Upload, PushMetadata), CliError> {
    let read = async |path: &std::path::Path| {
        tokio::fs::read(path).await.map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
    };
    let file_name = |path: &std::path::Path, default: &str| {
        path.file_name().map_or(default.to_owned(), |n| n.to_string_lossy().into_owned())
    };
    let model = read(&args.path).await?;
    let baseline = match &args.baseline {
        Some(p) => Some((read(p).await?, file_name(p, "baseline.csv"))),
        None => None,
    };
    let mut metrics = BTreeMap::new();
    for (k, v) in &args.metrics {
        let n: f64 = v.parse().map_err(|_| CliError::Usage(format!("metric {k}={v:?} is not a number")))?;
        metrics.insert(k.clone(), n);
    }
    let metadata = PushMetadata {
        metrics,
        params: args.params.iter().cloned().collect(),
        dataset_sha256: args.dataset_hash.clone(),
        code_commit: args.code_commit.clone(),
        parent_version: args.parent,
        version: args.version,
        preprocessing: None,
        allow_schema_change: args.allow_schema_change,
        allow_nondeterministic: args.allow_nondeterministic,
        source: None,
    };
    Ok((Upload { model, model_file: file_name(&args.path, "model.onnx"), baseline }, metadata))
}
