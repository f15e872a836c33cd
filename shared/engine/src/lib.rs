//! Inference engines behind one trait: tract (cargo feature `tract`) and ONNX Runtime
//! (feature `ort`), and the engine-neutral tensors they run on.
//!
//! # Layout
//! - this module: the [`Engine`]/[`Session`] traits, [`Signature`], backend selection and
//!   [`isolate`] (a panicking engine call fails that call only).
//! - [`choice`]: `auto` on a CPU times both engines on a model and keeps the faster.
//! - [`tensor`]: typed tensors and their KServe JSON and binary encodings, batching helpers.
//! - `tract`, `ort`: the two backends.
//!
//! They live here, not in the agent, because the controller runs models too: it computes the
//! golden self-test outputs that agents later check, so both must run models the same way.
//!
//! An [`Engine`] is a loaded model: its [`Signature`] and a factory of [`Session`]s. Each
//! worker thread owns one session, because ONNX Runtime's `Session::run` needs `&mut self` and
//! tract keeps per-run scratch state that is cheapest to reuse on one thread.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgefleet_shared::inference::{Datatype, TensorMetadata};
use serde::{Deserialize, Serialize};

use crate::tensor::{Tensor, TensorError};

pub mod choice;
pub mod tensor;

#[cfg(feature = "ort")]
pub mod ort;
#[cfg(feature = "tract")]
pub mod tract;

/// Failure to load or run a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file could not be read or is not a model this engine can run.
    #[error("cannot load model {path}: {message}")]
    Load {
        /// File that was loaded.
        path: PathBuf,
        /// The engine's explanation.
        message: String,
    },
    /// The engine failed while running the model.
    #[error("inference failed: {0}")]
    Run(String),
    /// The engine panicked on this input (a bug in the engine or the model, or an input outside
    /// what the model handles, such as an index past the end of a table). The worker caught it
    /// and rebuilt its session; other requests are unaffected.
    #[error("the engine panicked on this input: {0}")]
    Panicked(String),
    /// The model uses a tensor type the agent cannot carry.
    #[error("model tensor {name:?} has element type {found}, which the agent cannot serve")]
    UnsupportedType {
        /// Tensor name.
        name: String,
        /// The engine's name for the type.
        found: String,
    },
    /// A tensor could not be built.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The requested backend is not compiled in or cannot start.
    #[error("backend {backend} is unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Why.
        reason: String,
    },
}

/// Runs `f`, turning a panic inside it into [`EngineError::Panicked`] with the panic's message.
///
/// Engines are large dependencies that panic on some inputs (tract's `Gather` on an index past
/// its table, for one). Every engine call that untrusted input reaches goes through here, so a
/// panic fails that one call instead of the thread that made it. Whatever state `f` touched may
/// be half-updated afterwards: callers drop the session it used and open a new one.
pub fn isolate<T>(f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(EngineError::Panicked(panic_message(payload.as_ref()))))
}

pub use edgefleet_shared::panic_message;

/// One model input or output as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name in the ONNX graph.
    pub name: String,
    /// Element type.
    pub datatype: Datatype,
    /// Dimensions; `None` where the graph leaves the size to run time.
    pub shape: Vec<Option<usize>>,
}

impl TensorSpec {
    /// Protocol metadata, with `-1` for dynamic dimensions.
    pub fn metadata(&self) -> TensorMetadata {
        TensorMetadata {
            name: self.name.clone(),
            datatype: self.datatype,
            shape: self.shape.iter().map(|d| d.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))).collect(),
        }
    }

    /// Whether a concrete shape fits this spec.
    pub fn accepts(&self, shape: &[usize]) -> bool {
        shape.len() == self.shape.len()
            && self.shape.iter().zip(shape).all(|(want, got)| want.is_none_or(|w| w == *got))
    }

    /// The shape used for warm-up: dynamic dimensions set to 1.
    pub fn warmup_shape(&self) -> Vec<usize> {
        self.shape.iter().map(|d| d.unwrap_or(1)).collect()
    }
}

/// Inputs and outputs of a model, in graph order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Graph inputs (initialisers excluded).
    pub inputs: Vec<TensorSpec>,
    /// Graph outputs.
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// Whether every input and output has a dynamic first dimension, so requests can be
    /// stacked into one batch and the results split back by rows.
    pub fn has_dynamic_batch(&self) -> bool {
        self.inputs.iter().chain(&self.outputs).all(|t| matches!(t.shape.first(), Some(None)))
    }

    /// Zero-filled inputs of batch 1, for warm-up.
    pub fn warmup_inputs(&self) -> Result<Vec<Tensor>, EngineError> {
        self.inputs.iter().map(|spec| Ok(Tensor::zeros(spec.datatype, spec.warmup_shape())?)).collect()
    }
}

/// A loaded model that can open sessions.
pub trait Engine: Send + Sync + fmt::Debug {
    /// Platform name reported in model metadata (e.g. `tract_onnx`).
    fn platform(&self) -> &'static str;
    /// The model's inputs and outputs.
    fn signature(&self) -> &Signature;
    /// A session for one worker thread.
    fn session(self: Arc<Self>) -> Result<Box<dyn Session>, EngineError>;
}

/// Runs a model; owned by one thread at a time.
pub trait Session: Send {
    /// Runs the model on inputs given in signature order; returns outputs in signature order.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError>;
}

/// Which engine serves models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tract, pure Rust, CPU.
    Tract,
    /// ONNX Runtime through the `ort` crate (cargo feature `ort`).
    Ort,
    /// ONNX Runtime with CUDA when it is available; on a CPU, whichever of tract and ONNX
    /// Runtime runs the model faster (both timed at load, [`choice`]); tract alone without the
    /// ONNX Runtime library.
    #[default]
    Auto,
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tract" => Ok(BackendKind::Tract),
            "ort" => Ok(BackendKind::Ort),
            "auto" => Ok(BackendKind::Auto),
            other => Err(format!("unknown backend {other:?} (tract, ort or auto)")),
        }
    }
}

/// An ONNX Runtime execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// NVIDIA CUDA.
    Cuda,
    /// The default CPU provider.
    Cpu,
}

/// Engine settings from the agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// `tract`, `ort` or `auto`.
    pub kind: BackendKind,
    /// ONNX Runtime settings (used when `kind` is `ort`, or `auto` finds CUDA).
    pub ort: OrtConfig,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig { kind: BackendKind::Auto, ort: OrtConfig::default() }
    }
}

/// ONNX Runtime settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrtConfig {
    /// Path of `libonnxruntime.so`; when empty, `ORT_DYLIB_PATH` is used.
    pub library_path: Option<PathBuf>,
    /// Providers to try, in order; CPU is always the last resort.
    pub execution_providers: Vec<ExecutionProvider>,
    /// Threads ONNX Runtime may use inside one inference.
    pub intra_threads: usize,
}

impl Default for OrtConfig {
    fn default() -> Self {
        OrtConfig {
            library_path: None,
            execution_providers: vec![ExecutionProvider::Cuda, ExecutionProvider::Cpu],
            intra_threads: 1,
        }
    }
}

/// Loads a model with the configured backend. `auto` resolves to ONNX Runtime when it can use
/// CUDA; on a CPU with both engines it times each on the model's warm-up inputs and keeps the
/// faster ([`choice::prefer_ort`]), and without the ONNX Runtime library it is tract.
pub fn load(path: &Path, config: &BackendConfig) -> Result<Arc<dyn Engine>, EngineError> {
    match config.kind {
        BackendKind::Tract => load_tract(path).map_err(explain_unsupported),
        BackendKind::Ort => load_ort(path, &config.ort),
        BackendKind::Auto if !cfg!(feature = "tract") || auto_prefers_ort(&config.ort) => load_ort(path, &config.ort),
        BackendKind::Auto => match load_tract(path) {
            Ok(tract) if ort_available(&config.ort) => Ok(faster(path, tract, &config.ort)),
            Ok(engine) => Ok(engine),
            // What tract cannot load, ONNX Runtime may: `auto` tries it before giving up.
            Err(tract @ EngineError::Load { .. }) if cfg!(feature = "ort") => match load_ort(path, &config.ort) {
                Ok(engine) => {
                    tracing::info!(model = %path.display(), tract = %tract, "tract cannot run this model; ONNX Runtime serves it.");
                    Ok(engine)
                }
                Err(ort) => {
                    let tract = explain_unsupported(tract);
                    Err(EngineError::Load {
                        path: path.to_owned(),
                        message: format!("{tract}; ONNX Runtime could not either: {ort}"),
                    })
                }
            },
            Err(e) => Err(explain_unsupported(e)),
        },
    }
}

/// Of tract (loaded) and ONNX Runtime, the engine that runs the model faster on this machine.
fn faster(path: &Path, tract: Arc<dyn Engine>, ort: &OrtConfig) -> Arc<dyn Engine> {
    let ort = match load_ort(path, ort) {
        Ok(engine) => engine,
        Err(e) => {
            tracing::info!(model = %path.display(), error = %e, "ONNX Runtime cannot load this model; tract serves it.");
            return tract;
        }
    };
    let timings = choice::Timings { tract: choice::time(&tract).ok(), ort: choice::time(&ort).ok() };
    let us = |d: Option<std::time::Duration>| d.map(|d| (d.as_secs_f64() * 1e7).round() / 10.0);
    let (engine, chosen) = if choice::prefer_ort(&timings) { (ort, ORT_PLATFORM) } else { (tract, TRACT_PLATFORM) };
    tracing::info!(
        model = %path.display(),
        tract_us = ?us(timings.tract),
        ort_us = ?us(timings.ort),
        engine = chosen,
        "Backend auto: timed both engines on the warm-up inputs; the faster serves."
    );
    engine
}

/// Platform names of the engines this build can run models on with `config`: tract when
/// compiled in, ONNX Runtime when compiled in and its library loads.
pub fn engines_available(config: &BackendConfig) -> Vec<&'static str> {
    let mut engines = Vec::new();
    if cfg!(feature = "tract") {
        engines.push(TRACT_PLATFORM);
    }
    if ort_available(&config.ort) {
        engines.push(ORT_PLATFORM);
    }
    engines
}

/// tract's platform name in model metadata.
pub const TRACT_PLATFORM: &str = "tract_onnx";
/// ONNX Runtime's platform name in model metadata.
pub const ORT_PLATFORM: &str = "onnxruntime_onnx";

#[cfg(feature = "ort")]
fn ort_available(config: &OrtConfig) -> bool {
    ort::available(config)
}

#[cfg(not(feature = "ort"))]
fn ort_available(_config: &OrtConfig) -> bool {
    false
}

/// A tract load error that names an operator tract does not implement, or a tensor type it
/// cannot carry, rewritten to say so and what to do; other errors unchanged.
fn explain_unsupported(e: EngineError) -> EngineError {
    let EngineError::Load { path, message } = e else { return e };
    match unsupported_hint(&message) {
        Some(hint) => EngineError::Load { path, message: format!("{hint} (tract: {message})") },
        None => EngineError::Load { path, message },
    }
}

/// What to tell the operator about a tract error, when it is one of the known limits.
pub fn unsupported_hint(message: &str) -> Option<String> {
    if let Some(start) = message.find("Unimplemented(") {
        let rest = &message[start + "Unimplemented(".len()..];
        let op = rest.split(')').next().unwrap_or_default();
        let way_out = match op {
            "ZipMap" => {
                "export without it (skl2onnx: `to_onnx(model, X, options={id(model): {'zipmap': False}})` gives \
                 plain probability tensors) or serve the model with ONNX Runtime"
            }
            _ => {
                "serve the model with ONNX Runtime (`--backend ort`, or `auto` with the library installed) or export it without that operator"
            }
        };
        return Some(format!("tract does not implement the ONNX operator {op}: {way_out}"));
    }
    if message.contains("String doesn't implement") {
        return Some(
            "the model has string tensors (e.g. scikit-learn class labels), which tract cannot run: export with \
             integer labels (fit on label indices) or serve the model with ONNX Runtime"
                .into(),
        );
    }
    None
}

#[cfg(feature = "tract")]
fn load_tract(path: &Path) -> Result<Arc<dyn Engine>, EngineError> {
    Ok(Arc::new(tract::TractEngine::load(path)?))
}

#[cfg(not(feature = "tract"))]
fn load_tract(_path: &Path) -> Result<Arc<dyn Engine>, EngineError> {
    Err(EngineError::Unavailable { backend: "tract", reason: "built without the `tract` feature".into() })
}

#[cfg(feature = "ort")]
fn load_ort(path: &Path, config: &OrtConfig) -> Result<Arc<dyn Engine>, EngineError> {
    Ok(Arc::new(ort::OrtEngine::load(path, config)?))
}

#[cfg(not(feature = "ort"))]
fn load_ort(_path: &Path, _config: &OrtConfig) -> Result<Arc<dyn Engine>, EngineError> {
    Err(EngineError::Unavailable { backend: "ort", reason: "built without the `ort` cargo feature".into() })
}

#[cfg(feature = "ort")]
fn auto_prefers_ort(config: &OrtConfig) -> bool {
    config.execution_providers.contains(&ExecutionProvider::Cuda) && ort::cuda_available(config)
}

#[cfg(not(feature = "ort"))]
fn auto_prefers_ort(_config: &OrtConfig) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tract_limits_are_named_with_the_way_out() {
        let zipmap =
            unsupported_hint("Translating node #3 \"ZipMap\" Unimplemented(ZipMap) ToTypedTranslator").expect("hint");
        assert!(zipmap.starts_with("tract does not implement the ONNX operator ZipMap"), "{zipmap}");
        assert!(zipmap.contains("'zipmap': False") && zipmap.contains("ONNX Runtime"), "{zipmap}");
        let det = unsupported_hint("Translating node #1 \"d\" Unimplemented(Det) ToTypedTranslator").expect("hint");
        assert!(det.contains("operator Det") && det.contains("--backend ort"), "{det}");
        let strings = unsupported_hint("LinearClassifier ToTypedTranslator: String doesn't implement num_traits::Zero");
        assert!(strings.is_some_and(|h| h.contains("string tensors")));
        assert_eq!(unsupported_hint("failed to decode Protobuf message"), None);
        let e = explain_unsupported(EngineError::Load { path: "m.onnx".into(), message: "Unimplemented(Det)".into() });
        assert!(
            e.to_string().starts_with("cannot load model m.onnx: tract does not implement the ONNX operator Det"),
            "{e}"
        );
    }
}
