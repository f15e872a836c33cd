//! Triton's model configuration and statistics extensions, as tritonclient's
//! `get_model_config` and `get_inference_statistics` call them over HTTP:
//! `GET /v2/models/{m}[/versions/{v}]/config` and `GET /v2/models[/{m}[/versions/{v}]]/stats`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use edgefleet_shared::inference::Datatype;
use serde_json::{Value, json};

use super::{ApiError, AppState, resolve};
use crate::repository::{ModelState, ServedModel};

/// Triton's `TYPE_*` name of a datatype.
pub(crate) fn triton_type(d: Datatype) -> &'static str {
    match d {
        Datatype::Bool => "TYPE_BOOL",
        Datatype::Uint8 => "TYPE_UINT8",
        Datatype::Uint16 => "TYPE_UINT16",
        Datatype::Uint32 => "TYPE_UINT32",
        Datatype::Uint64 => "TYPE_UINT64",
        Datatype::Int8 => "TYPE_INT8",
        Datatype::Int16 => "TYPE_INT16",
        Datatype::Int32 => "TYPE_INT32",
        Datatype::Int64 => "TYPE_INT64",
        Datatype::Fp16 => "TYPE_FP16",
        Datatype::Fp32 => "TYPE_FP32",
        Datatype::Fp64 => "TYPE_FP64",
        Datatype::Bytes => "TYPE_STRING",
    }
}

/// The model's configuration as Triton writes it. Shapes are full shapes (`max_batch_size` 0:
/// the batch dimension, when there is one, is part of `dims`, -1 where dynamic).
fn config(model: &ServedModel) -> Value {
    let sig = model.engine.signature();
    let tensors = |specs: &[edgefleet_engine::TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|t| {
                let m = t.metadata();
                json!({"name": m.name, "data_type": triton_type(m.datatype), "dims": m.shape})
            })
            .collect()
    };
    let platform = model.engine.platform();
    json!({
        "name": model.name,
        "platform": platform,
        "backend": platform.trim_end_matches("_onnx"),
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 0,
        "input": tensors(&sig.inputs),
        "output": tensors(&sig.outputs),
    })
}

pub(super) async fn model_config(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(config(&*resolve(&state, &model, None)?)))
}

pub(super) async fn model_config_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(config(&*resolve(&state, &model, Some(&version))?)))
}

/// What Triton's statistics report of one model version, since it was loaded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatsSnapshot {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) last_inference_ms: u64,
    pub(crate) success_ns: u64,
    pub(crate) fail_ns: u64,
    pub(crate) queue_ns: u64,
    pub(crate) compute_ns: u64,
}

pub(crate) fn stats_snapshot(model: &ServedModel) -> StatsSnapshot {
    let (ok, failed) = model.outcomes.snapshot();
    let t = &model.outcomes.timings;
    let ns = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    StatsSnapshot {
        ok,
        failed,
        last_inference_ms: ns(&t.last_ms),
        success_ns: ns(&t.success_ns),
        fail_ns: ns(&t.fail_ns),
        queue_ns: ns(&t.queue_ns),
        compute_ns: ns(&t.compute_ns),
    }
}

/// One model version's statistics as Triton's HTTP API writes them.
fn stats(model: &ServedModel) -> Value {
    let s = stats_snapshot(model);
    let stage = |count: u64, total: u64| json!({"count": count, "ns": total});
    json!({
        "name": model.name,
        "version": model.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.ok,
        "execution_count": s.ok,
        "inference_stats": {
            "success": stage(s.ok, s.success_ns),
            "fail": stage(s.failed, s.fail_ns),
            "queue": stage(s.ok, s.queue_ns),
            "compute_input": stage(s.ok, 0),
            "compute_infer": stage(s.ok, s.compute_ns),
            "compute_output": stage(s.ok, 0),
            "cache_hit": stage(0, 0),
            "cache_miss": stage(0, 0),
        },
        "batch_stats": [],
    })
}

fn ready(state: &AppState) -> Vec<Arc<ServedModel>> {
    state
        .repository
        .list()
        .into_iter()
        .filter_map(|(_, s)| match s {
            ModelState::Ready(m) => Some(m),
            _ => None,
        })
        .collect()
}

pub(super) async fn all_stats(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"model_stats": ready(&state).iter().map(|m| stats(m)).collect::<Vec<_>>()}))
}

pub(super) async fn model_stats(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"model_stats": [stats(&*resolve(&state, &model, None)?)]})))
}

pub(super) async fn model_stats_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"model_stats": [stats(&*resolve(&state, &model, Some(&version))?)]})))
}
