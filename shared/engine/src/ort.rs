//! The ONNX Runtime backend (cargo feature `ort`), for nodes that have the library and
//! possibly a GPU.
//!
//! The library is loaded at run time (`load-dynamic`) from `ort.library_path` or
//! `ORT_DYLIB_PATH`; `agent/scripts/fetch-onnxruntime.sh` takes it from the PyPI wheel. One
//! ONNX Runtime environment exists per process. CUDA is tried when configured; if it cannot be
//! registered the engine logs a warning and runs on CPU.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use edgefleet_shared::inference::Datatype;
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider as _};
use ort::session::Session as OrtSession;
use ort::session::builder::SessionBuilder;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use super::{Engine, EngineError, ExecutionProvider, OrtConfig, Session, Signature, TensorSpec};
use crate::tensor::{Tensor, TensorData, for_each_element};

static ENVIRONMENT: OnceLock<Result<(Environment, PathBuf), String>> = OnceLock::new();

fn unavailable(reason: impl Into<String>) -> EngineError {
    EngineError::Unavailable { backend: "ort", reason: reason.into() }
}

/// The process-wide ONNX Runtime environment, loaded on first use.
fn environment(config: &OrtConfig) -> Result<&'static Environment, EngineError> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path =
            config.library_path.clone().or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from)).ok_or_else(
                || {
                    "no ONNX Runtime library: set ort.library_path or ORT_DYLIB_PATH \
                 (agent/scripts/fetch-onnxruntime.sh fetches one)"
                        .to_owned()
                },
            )?;
        let env = ort::init_from(&path)
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?
            .with_name("edgefleet-agent")
            .build()
            .map_err(|e| format!("cannot create environment from {}: {e}", path.display()))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded.");
        Ok((env, path))
    });
    match loaded {
        Ok((env, path)) => {
            if let Some(wanted) = &config.library_path
                && wanted != path
            {
                tracing::warn!(loaded = %path.display(), requested = %wanted.display(),
                    "ONNX Runtime is already loaded from another path; keeping it.");
            }
            Ok(env)
        }
        Err(reason) => Err(unavailable(reason.clone())),
    }
}

/// Whether the ONNX Runtime library loads.
pub fn available(config: &OrtConfig) -> bool {
    environment(config).is_ok()
}

/// Whether ONNX Runtime can load and accept the CUDA execution provider here.
pub fn cuda_available(config: &OrtConfig) -> bool {
    let Ok(env) = environment(config) else { return false };
    let Ok(mut builder) = OrtSession::builder(env) else { return false };
    ep::CUDA::default().register(&mut builder).is_ok()
}

/// A model loaded in ONNX Runtime.
#[derive(Debug)]
pub struct OrtEngine {
    path: PathBuf,
    config: OrtConfig,
    use_cuda: bool,
    signature: Signature,
    /// The session opened at load (to read the signature), handed to the first worker.
    first: std::sync::Mutex<Option<OrtSession>>,
}

impl OrtEngine {
    /// Opens the model once to check it and read its signature.
    pub fn load(path: &Path, config: &OrtConfig) -> Result<Self, EngineError> {
        let env = environment(config)?;
        let want_cuda = config.execution_providers.contains(&ExecutionProvider::Cuda);
        let (session, use_cuda) = open(env, path, config, want_cuda)?;
        if want_cuda && !use_cuda {
            tracing::warn!(path = %path.display(),
                "CUDA was requested but is not available to ONNX Runtime; running on CPU.");
        }
        let signature = Signature {
            inputs: session.inputs().iter().map(|o| spec(o.name(), o.dtype())).collect::<Result<_, _>>()?,
            outputs: session.outputs().iter().map(|o| spec(o.name(), o.dtype())).collect::<Result<_, _>>()?,
        };
        tracing::info!(path = %path.display(), cuda = use_cuda, "Model loaded in ONNX Runtime.");
        Ok(OrtEngine {
            path: path.to_owned(),
            config: config.clone(),
            use_cuda,
            signature,
            first: std::sync::Mutex::new(Some(session)),
        })
    }
}

fn open(env: &Environment, path: &Path, config: &OrtConfig, try_cuda: bool) -> Result<(OrtSession, bool), EngineError> {
    let load_err = |e: String| EngineError::Load { path: path.to_owned(), message: e };
    let mut builder: SessionBuilder = OrtSession::builder(env)
        .map_err(|e| load_err(e.to_string()))?
        .with_intra_threads(config.intra_threads.max(1))
        .map_err(|e| load_err(e.to_string()))?;
    let cuda = try_cuda && ep::CUDA::default().register(&mut builder).is_ok();
    let session = builder.commit_from_file(path).map_err(|e| load_err(e.to_string()))?;
    Ok((session, cuda))
}

impl Engine for OrtEngine {
    fn platform(&self) -> &'static str {
        crate::ORT_PLATFORM
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn session(self: Arc<Self>) -> Result<Box<dyn Session>, EngineError> {
        let reused = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        let session = match reused {
            Some(s) => s,
            None => open(environment(&self.config)?, &self.path, &self.config, self.use_cuda)?.0,
        };
        Ok(Box::new(OrtWorkerSession { engine: self, session }))
    }
}

struct OrtWorkerSession {
    engine: Arc<OrtEngine>,
    session: OrtSession,
}

impl Session for OrtWorkerSession {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let run_err = |e: ort::Error| EngineError::Run(e.to_string());
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for (tensor, spec) in inputs.into_iter().zip(&self.engine.signature.inputs) {
            values.push((spec.name.clone(), to_ort(tensor).map_err(run_err)?));
        }
        let outputs = self.session.run(values).map_err(run_err)?;
        self.engine
            .signature
            .outputs
            .iter()
            .map(|spec| {
                let value =
                    outputs.get(&spec.name).ok_or_else(|| EngineError::Run(format!("output {} missing", spec.name)))?;
                from_ort(value, spec)
            })
            .collect()
    }
}

// === conversions ===

fn to_ort(t: Tensor) -> ort::Result<DynValue> {
    let Tensor { shape, data } = t;
    let data = match data {
        // ONNX Runtime's strings are text: invalid UTF-8 is replaced.
        TensorData::Bytes(v) => {
            let text: Vec<String> = v.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
            return Ok(OrtTensor::from_string_array((shape, text.as_slice()))?.into_dyn());
        }
        numeric => numeric,
    };
    macro_rules! arm {
        ($variant:ident, $rt:ty, $dt:ident) => {
            if let TensorData::$variant(v) = data {
                return Ok(OrtTensor::from_array((shape, v))?.into_dyn());
            }
        };
    }
    for_each_element!(arm);
    unreachable!("every variant is listed in for_each_element")
}

fn from_ort(value: &DynValue, spec: &TensorSpec) -> Result<Tensor, EngineError> {
    let run_err = |e: ort::Error| EngineError::Run(format!("output {}: {e}", spec.name));
    macro_rules! arm {
        ($variant:ident, $rt:ty, $dt:ident) => {
            if spec.datatype == Datatype::$dt {
                let (shape, data) = value.try_extract_tensor::<$rt>().map_err(run_err)?;
                let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
                return Ok(Tensor::new(shape, TensorData::$variant(data.to_vec()))?);
            }
        };
    }
    for_each_element!(arm);
    if spec.datatype == Datatype::Bytes {
        let (shape, text) = value.try_extract_strings().map_err(run_err)?;
        let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
        return Ok(Tensor::new(shape, TensorData::Bytes(text.into_iter().map(String::into_bytes).collect()))?);
    }
    Err(EngineError::UnsupportedType { name: spec.name.clone(), found: spec.datatype.to_string() })
}

fn spec(name: &str, dtype: &ValueType) -> Result<TensorSpec, EngineError> {
    let unsupported = || EngineError::UnsupportedType { name: name.to_owned(), found: format!("{dtype:?}") };
    let ValueType::Tensor { ty, shape, .. } = dtype else { return Err(unsupported()) };
    let datatype = match ty {
        TensorElementType::Bool => Datatype::Bool,
        TensorElementType::Uint8 => Datatype::Uint8,
        TensorElementType::Uint16 => Datatype::Uint16,
        TensorElementType::Uint32 => Datatype::Uint32,
        TensorElementType::Uint64 => Datatype::Uint64,
        TensorElementType::Int8 => Datatype::Int8,
        TensorElementType::Int16 => Datatype::Int16,
        TensorElementType::Int32 => Datatype::Int32,
        TensorElementType::Int64 => Datatype::Int64,
        TensorElementType::Float16 => Datatype::Fp16,
        TensorElementType::Float32 => Datatype::Fp32,
        TensorElementType::Float64 => Datatype::Fp64,
        TensorElementType::String => Datatype::Bytes,
        _ => return Err(unsupported()),
    };
    let shape = shape.iter().map(|&d| usize::try_from(d).ok()).collect();
    Ok(TensorSpec { name: name.to_owned(), datatype, shape })
}
