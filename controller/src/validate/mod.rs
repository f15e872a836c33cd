//! Validation on push: the model must load in tract, its schema becomes the manifest's, the
//! golden self-test outputs come from running it, and the baseline profile (with output
//! profiles) comes from the reference data.
//!
//! A pushed file may be hostile, so validation runs under an explicit budget: no input it
//! synthesises may exceed `max_tensor_bytes`, every engine call is isolated (a panic is the
//! model's problem, reported as such), and the controller runs all of it in a child process
//! ([`sandbox`]) under a memory limit and a deadline, so that even an allocation the engine
//! makes on its own (a 4 TiB `ConstantOfShape`) or a model that never finishes only fails the
//! push.

pub mod sandbox;
pub mod schema;
pub mod zipmap;

use std::collections::BTreeMap;
use std::path::Path;

use crate::analytics::dataset::Dataset;
use crate::analytics::profile::ProfileOptions;
use edgefleet_engine::tensor::{Tensor, TensorData, f16};
use edgefleet_engine::{self as engine, BackendConfig, BackendKind, Session, Signature, TensorSpec};
use edgefleet_shared::bundle::{GoldenTensor, SelfTest, SelfTestCase};
use edgefleet_shared::inference::{Datatype, TensorMetadata};
use edgefleet_shared::profile::{BaselineProfile, OutputProfile};
use rand::{RngExt as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a pushed version is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ValidationError {
    /// The file is not a model tract can load and run.
    #[error("not a valid ONNX model: {0}")]
    Model(String),
    /// A valid model the controller's engine (tract) cannot run: an operator or tensor type it
    /// lacks.
    #[error(
        "the controller validates models with tract, which cannot run this one: {0}; a model only ONNX Runtime runs is registered when the controller is built with its `ort` feature and finds the library (ORT_DYLIB_PATH)"
    )]
    Unsupported(String),
    /// The model runs, but its outputs differ between two runs on the same input.
    #[error("the model is not deterministic: {0}")]
    Nondeterministic(String),
    /// The reference data cannot be read or does not fit the model.
    #[error("invalid baseline: {0}")]
    Baseline(String),
    /// Validating the model would exceed its budget (tensor size, memory, time), or the
    /// validator died on it.
    #[error("the model cannot be validated within its budget: {0}")]
    Budget(String),
    /// The validator itself could not be run (the controller's fault, not the model's).
    #[error("cannot run the validator: {0}")]
    Validator(String),
}

/// Reference data as uploaded.
#[derive(Debug, Clone)]
pub enum BaselineData {
    /// CSV with a header row.
    Csv(Vec<u8>),
    /// A `.npy` array.
    Npy(Vec<u8>),
}

/// What validation found out about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validated {
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
    /// Golden self-test.
    pub self_test: SelfTest,
    /// Baseline profile with output profiles, if data was given.
    pub baseline: Option<BaselineProfile>,
    /// How the model's outputs varied between two fresh sessions on the golden inputs, if they
    /// did (the registry refuses such a push unless told otherwise).
    #[serde(default)]
    pub nondeterministic: Option<String>,
    /// The engines it was validated on when not tract (see `BundleManifest::engines`).
    #[serde(default)]
    pub engines: Vec<String>,
}

/// The model on ONNX Runtime (CPU), when the controller has it and it loads the model.
fn ort_engine(model_path: &Path) -> Option<std::sync::Arc<dyn edgefleet_engine::Engine>> {
    let config = BackendConfig {
        kind: BackendKind::Ort,
        ort: edgefleet_engine::OrtConfig {
            execution_providers: vec![edgefleet_engine::ExecutionProvider::Cpu],
            ..edgefleet_engine::OrtConfig::default()
        },
    };
    engine::isolate(|| engine::load(model_path, &config)).ok()
}

/// Golden cases stored per version.
const GOLDEN_CASES: usize = 3;
/// Relative-and-absolute tolerance devices apply to golden outputs.
const GOLDEN_TOLERANCE: f64 = 1e-4;
/// Rows per engine run when profiling outputs over the reference data.
const PROFILE_BATCH: usize = 256;

/// Limits on validating one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Largest input tensor validation synthesises.
    pub max_tensor_bytes: u64,
}

/// What an engine panic means to the operator.
fn panicked(stage: &str, e: edgefleet_engine::EngineError) -> ValidationError {
    match e {
        edgefleet_engine::EngineError::Panicked(m) => {
            ValidationError::Model(format!("the engine panicked while {stage}: {m}"))
        }
        other => ValidationError::Model(format!("{stage}: {other}")),
    }
}

/// Loads `model_path` in tract and validates it, with optional reference data, in this process
/// (see [`sandbox`] for the isolated form the controller uses).
pub fn validate(
    model_path: &Path,
    baseline: Option<&BaselineData>,
    options: &ProfileOptions,
    budget: &Budget,
) -> Result<Validated, ValidationError> {
    let loaded = engine::isolate(|| {
        engine::load(model_path, &BackendConfig { kind: BackendKind::Tract, ..BackendConfig::default() })
    });
    let mut engines = Vec::new();
    let engine = match loaded {
        Ok(engine) => engine,
        Err(e @ edgefleet_engine::EngineError::Panicked(_)) => return Err(panicked("loading it", e)),
        Err(edgefleet_engine::EngineError::Load { message, .. })
            if edgefleet_engine::unsupported_hint(&message).is_some() =>
        {
            // What tract cannot run, ONNX Runtime may (when the controller has its library): the
            // version then goes only to agents that report ONNX Runtime.
            match ort_engine(model_path) {
                Some(engine) => {
                    engines.push(edgefleet_engine::ORT_PLATFORM.to_owned());
                    engine
                }
                None => return Err(ValidationError::Unsupported(strip_path(&message, model_path))),
            }
        }
        Err(e) => return Err(ValidationError::Model(strip_path(&e.to_string(), model_path))),
    };
    let sig = engine.signature().clone();
    let mut session = engine.clone().session().map_err(|e| ValidationError::Model(e.to_string()))?;

    let data = baseline.map(|b| read_baseline(b, &sig)).transpose()?;
    let feature_input = feature_input(&sig);
    if let (Some(data), Some((_, spec))) = (&data, &feature_input) {
        let width = spec.shape[1].unwrap_or(data.columns.len());
        if data.columns.len() != width {
            return Err(ValidationError::Baseline(format!(
                "{} columns, but model input {:?} takes {width} features per row",
                data.columns.len(),
                spec.name
            )));
        }
    }

    let golden_inputs = match (&data, &feature_input) {
        (Some(d), Some((_, spec))) => vec![rows_tensor(&d.rows[..d.rows.len().min(GOLDEN_CASES)], spec)?],
        _ => synthetic_inputs(&sig, budget)?,
    };
    let source = if data.is_some() {
        "the baseline's first rows"
    } else {
        "synthetic inputs (push a baseline for realistic ones)"
    };
    let outputs = engine::isolate(|| session.run(golden_inputs.clone())).map_err(|e| match e {
        e @ edgefleet_engine::EngineError::Panicked(_) => panicked(&format!("running it on {source}"), e),
        e => ValidationError::Model(format!("the model loads but does not run on {source}: {e}")),
    })?;
    // A device runs the golden cases on its own fresh session: so does a second run here, and a
    // model whose outputs change between runs (random ops, uninitialised state) is refused now
    // rather than failing its self-test on every device.
    let mut fresh = engine.clone().session().map_err(|e| ValidationError::Model(e.to_string()))?;
    let again = engine::isolate(|| fresh.run(golden_inputs.clone()))
        .map_err(|e| panicked(&format!("running it a second time on {source}"), e))?;
    let nondeterministic = outputs.iter().zip(&again).zip(&sig.outputs).find_map(|((first, second), spec)| {
        first
            .matches_golden(second, GOLDEN_TOLERANCE)
            .err()
            .map(|why| format!("output {:?} differs between two runs on the same input ({why})", spec.name))
    });
    let self_test = SelfTest {
        tolerance: GOLDEN_TOLERANCE,
        cases: vec![SelfTestCase {
            inputs: golden_inputs.iter().zip(&sig.inputs).map(|(t, s)| golden(&s.name, t)).collect(),
            outputs: outputs.iter().zip(&sig.outputs).map(|(t, s)| golden(&s.name, t)).collect(),
        }],
    };

    let baseline = match data {
        Some(d) => {
            let mut profile = crate::analytics::profile::baseline(&d, options);
            if let Some((_, spec)) = &feature_input {
                profile.outputs = output_profiles(session.as_mut(), &sig, spec, &d, options.bins)?;
            }
            Some(profile)
        }
        None => None,
    };
    Ok(Validated {
        inputs: sig.inputs.iter().map(TensorSpec::metadata).collect(),
        outputs: sig.outputs.iter().map(TensorSpec::metadata).collect(),
        self_test,
        baseline,
        nondeterministic,
        engines,
    })
}

/// Engines quote the temp file's path; the operator knows the file by another name.
fn strip_path(message: &str, path: &Path) -> String {
    message.replace(&format!("cannot load model {}: ", path.display()), "")
}

fn read_baseline(b: &BaselineData, sig: &Signature) -> Result<Dataset, ValidationError> {
    let bad = |e: crate::analytics::dataset::DatasetError| ValidationError::Baseline(e.to_string());
    match b {
        BaselineData::Csv(bytes) => Dataset::from_csv(bytes.as_slice()).map_err(bad),
        BaselineData::Npy(bytes) => Dataset::from_npy(bytes, None).map_err(bad).map(|mut d| {
            if let Some((_, spec)) = feature_input(sig)
                && spec.shape[1] == Some(d.columns.len())
            {
                d.columns = (0..d.columns.len()).map(|i| format!("{}[{i}]", spec.name)).collect();
            }
            d
        }),
    }
}

/// The model's one row-of-features input (rank 2, dynamic batch, numeric), if it has exactly one.
fn feature_input(sig: &Signature) -> Option<(usize, &TensorSpec)> {
    match sig.inputs.as_slice() {
        [spec] if spec.shape.len() == 2 && spec.shape[0].is_none() && spec.datatype != Datatype::Bool => {
            Some((0, spec))
        }
        _ => None,
    }
}

fn rows_tensor(rows: &[Vec<f64>], spec: &TensorSpec) -> Result<Tensor, ValidationError> {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let shape = vec![rows.len(), rows.first().map_or(0, Vec::len)];
    let data = match spec.datatype {
        Datatype::Fp32 => TensorData::F32(flat.iter().map(|v| *v as f32).collect()),
        Datatype::Fp64 => TensorData::F64(flat),
        Datatype::Int32 => TensorData::I32(flat.iter().map(|v| *v as i32).collect()),
        Datatype::Int64 => TensorData::I64(flat.iter().map(|v| *v as i64).collect()),
        other => {
            return Err(ValidationError::Baseline(format!(
                "input {:?} is {other}; baselines need a numeric input",
                spec.name
            )));
        }
    };
    Tensor::new(shape, data).map_err(|e| ValidationError::Baseline(e.to_string()))
}

/// Deterministic pseudo-random inputs (batch 2 where the batch is dynamic) for models without
/// usable reference data; none larger than the budget.
fn synthetic_inputs(sig: &Signature, budget: &Budget) -> Result<Vec<Tensor>, ValidationError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x901d);
    sig.inputs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> =
                spec.shape.iter().enumerate().map(|(i, d)| d.unwrap_or(if i == 0 { 2 } else { 1 })).collect();
            let n = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d));
            let element = spec.datatype.element_size().unwrap_or(8) as u64;
            let Some(n) = n.filter(|n| (*n as u64).checked_mul(element).is_some_and(|b| b <= budget.max_tensor_bytes))
            else {
                return Err(ValidationError::Budget(format!(
                    "input {:?} has shape {shape:?} ({}): validating it would need more than the {} bytes \
                     allowed per tensor (registry.validation_max_tensor_bytes)",
                    spec.name, spec.datatype, budget.max_tensor_bytes
                )));
            };
            let data = match spec.datatype {
                Datatype::Fp16 => TensorData::F16((0..n).map(|_| f16::from_f32(rng.random_range(-1.0..1.0))).collect()),
                Datatype::Fp32 => TensorData::F32((0..n).map(|_| rng.random_range(-1.0..1.0)).collect()),
                Datatype::Fp64 => TensorData::F64((0..n).map(|_| rng.random_range(-1.0..1.0)).collect()),
                Datatype::Int8 => TensorData::I8((0..n).map(|_| rng.random_range(0..10)).collect()),
                Datatype::Int16 => TensorData::I16((0..n).map(|_| rng.random_range(0..10)).collect()),
                Datatype::Int32 => TensorData::I32((0..n).map(|_| rng.random_range(0..256)).collect()),
                Datatype::Int64 => TensorData::I64((0..n).map(|_| rng.random_range(0..10)).collect()),
                Datatype::Uint8 => TensorData::U8((0..n).map(|_| rng.random_range(0..=255)).collect()),
                Datatype::Uint16 => TensorData::U16((0..n).map(|_| rng.random_range(0..10)).collect()),
                Datatype::Uint32 => TensorData::U32((0..n).map(|_| rng.random_range(0..10)).collect()),
                Datatype::Uint64 => TensorData::U64((0..n).map(|_| rng.random_range(0..10)).collect()),
                Datatype::Bool => TensorData::Bool((0..n).map(|_| rng.random_bool(0.5)).collect()),
                Datatype::Bytes => {
                    TensorData::Bytes((0..n).map(|_| format!("w{}", rng.random_range(0..100)).into_bytes()).collect())
                }
            };
            Tensor::new(shape, data).map_err(|e| ValidationError::Model(e.to_string()))
        })
        .collect()
}

fn golden(name: &str, t: &Tensor) -> GoldenTensor {
    let data = match serde_json::to_value(t.json_data()) {
        Ok(Value::Array(v)) => v,
        _ => Vec::new(),
    };
    GoldenTensor { name: name.into(), datatype: t.datatype(), shape: t.shape.clone(), data }
}

/// Runs the model over the reference rows and profiles each output: integer outputs and
/// multi-column scores as class histograms (scores by their argmax), scalar floats as numbers.
fn output_profiles(
    session: &mut dyn Session,
    sig: &Signature,
    spec: &TensorSpec,
    data: &Dataset,
    bins: usize,
) -> Result<Vec<OutputProfile>, ValidationError> {
    let mut classes: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); sig.outputs.len()];
    let mut numbers: Vec<Vec<f64>> = vec![Vec::new(); sig.outputs.len()];
    for chunk in data.rows.chunks(PROFILE_BATCH) {
        let inputs = vec![rows_tensor(chunk, spec)?];
        let outputs = engine::isolate(|| session.run(inputs)).map_err(|e| match e {
            e @ edgefleet_engine::EngineError::Panicked(_) => panicked("running it over the baseline", e),
            e => ValidationError::Baseline(format!("running the model over the baseline failed: {e}")),
        })?;
        for (ix, out) in outputs.iter().enumerate() {
            let rows = out.shape.first().copied().unwrap_or(1).max(1);
            let width = out.data.len() / rows;
            let values = out.data.to_f64_vec();
            if is_integer(&out.data) {
                for v in values {
                    *classes[ix].entry(format!("{v}")).or_default() += 1;
                }
            } else if width > 1 {
                for row in values.chunks(width) {
                    let arg = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
                    *classes[ix].entry(arg.to_string()).or_default() += 1;
                }
            } else {
                numbers[ix].extend(values);
            }
        }
    }
    Ok(sig
        .outputs
        .iter()
        .enumerate()
        .map(|(ix, s)| {
            if numbers[ix].is_empty() {
                OutputProfile::Classes { name: s.name.clone(), classes: std::mem::take(&mut classes[ix]) }
            } else {
                OutputProfile::Numeric(crate::analytics::profile::feature(&s.name, numbers[ix].iter().copied(), bins))
            }
        })
        .collect())
}

fn is_integer(d: &TensorData) -> bool {
    !matches!(d, TensorData::F32(_) | TensorData::F64(_))
}
