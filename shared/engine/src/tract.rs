//! The tract backend: pure Rust, CPU, the default.
//!
//! Most models optimise once with a symbolic batch dimension and one plan serves every batch
//! size. Some (Magika, for one) only optimise once their shapes are concrete; for those the
//! engine builds a plan per distinct input shape on first use and keeps the most recent ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use edgefleet_shared::inference::Datatype;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{Factoid as _, InferenceFact};
use tract_onnx::tract_hir::internal::DimLike;

use super::{Engine, EngineError, Session, Signature, TensorSpec};
use crate::tensor::{Tensor as AgentTensor, TensorData, for_each_element};

/// Plans kept per engine for models that need concrete shapes.
const MAX_SHAPE_PLANS: usize = 16;

type Plan = Arc<TypedRunnableModel>;
type ShapeKey = Vec<Vec<usize>>;

/// A model loaded in tract.
#[derive(Debug)]
pub struct TractEngine {
    path: PathBuf,
    signature: Signature,
    /// The parsed graph, re-specialised for each concrete shape when `symbolic` is `None`.
    model: InferenceModel,
    symbolic: Option<Plan>,
    by_shape: Mutex<PlanCache>,
}

#[derive(Debug, Default)]
struct PlanCache {
    plans: HashMap<ShapeKey, Plan>,
    order: Vec<ShapeKey>,
}

impl TractEngine {
    /// Parses and optimises an ONNX file.
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        let load_err = |e: TractError| EngineError::Load { path: path.to_owned(), message: format!("{e:#}") };
        let model = tract_onnx::onnx().model_for_path(path).map_err(load_err)?;
        let signature = signature(&model).map_err(load_err)??;
        let symbolic = match model.clone().into_optimized().and_then(|m| m.into_runnable()) {
            Ok(plan) => Some(plan),
            Err(e) => {
                tracing::info!(path = %path.display(), error = %format!("{e:#}"),
                    "Model does not optimise with symbolic shapes; planning per input shape.");
                None
            }
        };
        Ok(TractEngine { path: path.to_owned(), signature, model, symbolic, by_shape: Mutex::default() })
    }

    fn plan_for(&self, inputs: &[AgentTensor]) -> Result<Plan, EngineError> {
        if let Some(plan) = &self.symbolic {
            return Ok(plan.clone());
        }
        let key: ShapeKey = inputs.iter().map(|t| t.shape.clone()).collect();
        if let Some(plan) = lock(&self.by_shape).plans.get(&key) {
            return Ok(plan.clone());
        }
        // Planning can take a while; it runs outside the lock so other shapes are not blocked.
        let plan = self.plan_concrete(&key, inputs)?;
        let mut cache = lock(&self.by_shape);
        if cache.order.len() >= MAX_SHAPE_PLANS {
            let oldest = cache.order.remove(0);
            cache.plans.remove(&oldest);
        }
        if cache.plans.insert(key.clone(), plan.clone()).is_none() {
            cache.order.push(key);
        }
        Ok(plan)
    }

    fn plan_concrete(&self, key: &ShapeKey, inputs: &[AgentTensor]) -> Result<Plan, EngineError> {
        let err = |e: TractError| EngineError::Load { path: self.path.clone(), message: format!("{e:#}") };
        let mut model = self.model.clone();
        for (ix, (shape, input)) in key.iter().zip(inputs).enumerate() {
            let fact = InferenceFact::dt_shape(datum_type(input.datatype())?, shape.iter().copied());
            model.set_input_fact(ix, fact).map_err(err)?;
        }
        model.into_optimized().and_then(|m| m.into_runnable()).map_err(err)
    }
}

fn lock(m: &Mutex<PlanCache>) -> std::sync::MutexGuard<'_, PlanCache> {
    // The cache holds no invariant a panicking holder could break half-way.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Engine for TractEngine {
    fn platform(&self) -> &'static str {
        crate::TRACT_PLATFORM
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn session(self: Arc<Self>) -> Result<Box<dyn Session>, EngineError> {
        Ok(Box::new(TractSession { engine: self, states: Vec::new() }))
    }
}

/// A worker's handle: keeps the run state of the plans it used last, so scratch buffers are
/// allocated once per worker rather than once per request.
struct TractSession {
    engine: Arc<TractEngine>,
    states: Vec<TypedSimpleState>,
}

impl Session for TractSession {
    fn run(&mut self, inputs: Vec<AgentTensor>) -> Result<Vec<AgentTensor>, EngineError> {
        let plan = self.engine.plan_for(&inputs)?;
        let run_err = |e: TractError| EngineError::Run(format!("{e:#}"));
        let pos = match self.states.iter().position(|s| Arc::ptr_eq(s.plan(), &plan)) {
            Some(pos) => pos,
            None => {
                if self.states.len() >= MAX_SHAPE_PLANS {
                    self.states.remove(0);
                }
                self.states.push(plan.spawn().map_err(run_err)?);
                self.states.len() - 1
            }
        };
        let values = inputs.into_iter().map(to_tract).collect::<Result<TVec<_>, _>>()?;
        let outputs = self.states[pos].run(values).map_err(run_err)?;
        outputs.into_iter().zip(&self.engine.signature.outputs).map(|(value, spec)| from_tract(&value, spec)).collect()
    }
}

// === conversions ===

fn datum_type(datatype: Datatype) -> Result<DatumType, EngineError> {
    macro_rules! arm {
        ($variant:ident, $t:ty, $dt:ident) => {
            if datatype == Datatype::$dt {
                return Ok(<$t>::datum_type());
            }
        };
    }
    for_each_element!(arm);
    match datatype {
        Datatype::Bytes => Ok(String::datum_type()),
        other => Err(EngineError::Tensor(crate::tensor::TensorError::Unsupported(other))),
    }
}

fn datatype_of(name: &str, dt: DatumType) -> Result<Datatype, EngineError> {
    macro_rules! arm {
        ($variant:ident, $t:ty, $dt:ident) => {
            if dt == <$t>::datum_type() {
                return Ok(Datatype::$dt);
            }
        };
    }
    for_each_element!(arm);
    match dt {
        // Shape arithmetic (e.g. skl2onnx's ArgMax label path) yields TDim; it is an integer.
        DatumType::TDim => Ok(Datatype::Int64),
        DatumType::F16 => Ok(Datatype::Fp16),
        DatumType::String => Ok(Datatype::Bytes),
        other => Err(EngineError::UnsupportedType { name: name.to_owned(), found: format!("{other:?}") }),
    }
}

fn to_tract(t: AgentTensor) -> Result<TValue, EngineError> {
    let AgentTensor { shape, data } = t;
    // tract's strings are text: BYTES elements must be UTF-8 for it.
    let data = match data {
        TensorData::Bytes(v) => {
            let text = v
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b).map_err(|_| {
                        EngineError::Run(format!("BYTES element {i} is not UTF-8 text, which tract needs"))
                    })
                })
                .collect::<Result<Vec<String>, _>>()?;
            let array =
                tract_ndarray::ArrayD::from_shape_vec(shape, text).map_err(|e| EngineError::Run(e.to_string()))?;
            return Ok(Tensor::from(array).into_tvalue());
        }
        numeric => numeric,
    };
    macro_rules! arm {
        ($variant:ident, $rt:ty, $dt:ident) => {
            if let TensorData::$variant(v) = data {
                let array =
                    tract_ndarray::ArrayD::from_shape_vec(shape, v).map_err(|e| EngineError::Run(e.to_string()))?;
                return Ok(Tensor::from(array).into_tvalue());
            }
        };
    }
    for_each_element!(arm);
    unreachable!("every variant is listed in for_each_element")
}

fn from_tract(value: &TValue, spec: &TensorSpec) -> Result<AgentTensor, EngineError> {
    let shape = value.shape().to_vec();
    let run_err = |e: TractError| EngineError::Run(format!("output {}: {e:#}", spec.name));
    let tensor: std::borrow::Cow<'_, Tensor> = if value.datum_type() == DatumType::TDim {
        value.cast_to::<i64>().map_err(run_err)?
    } else {
        std::borrow::Cow::Borrowed(&**value)
    };
    macro_rules! arm {
        ($variant:ident, $rt:ty, $dt:ident) => {
            if tensor.datum_type() == <$rt>::datum_type() {
                let view = tensor.to_plain_array_view::<$rt>().map_err(run_err)?;
                return Ok(AgentTensor { shape, data: TensorData::$variant(view.iter().copied().collect()) });
            }
        };
    }
    for_each_element!(arm);
    if tensor.datum_type() == DatumType::String {
        let view = tensor.to_plain_array_view::<String>().map_err(run_err)?;
        return Ok(AgentTensor {
            shape,
            data: TensorData::Bytes(view.iter().map(|s| s.as_bytes().to_vec()).collect()),
        });
    }
    Err(EngineError::UnsupportedType { name: spec.name.clone(), found: format!("{:?}", tensor.datum_type()) })
}

// === signature ===

/// Name, element type and dimensions of a graph input or output, where known.
type DeclaredFact = (String, Option<DatumType>, Option<Vec<Option<usize>>>);

/// Reads inputs and outputs from the typed graph when it types with symbolic shapes, else from
/// the facts the ONNX file declares (models such as Magika only type once shapes are concrete).
fn signature(model: &InferenceModel) -> TractResult<Result<Signature, EngineError>> {
    let inputs = model.input_outlets()?.to_vec();
    let outputs = model.output_outlets()?.to_vec();
    let input_name = |o: OutletId| model.node(o.node).name.clone();
    let output_name = |o: OutletId| model.outlet_label(o).map(str::to_owned).unwrap_or_else(|| input_name(o));
    let facts: Vec<DeclaredFact> = match model.clone().into_typed() {
        Ok(typed) => {
            let fact = |f: &TypedFact| (Some(f.datum_type), Some(f.shape.iter().map(|d| d.to_usize().ok()).collect()));
            let mut v = Vec::new();
            for (ix, o) in inputs.iter().enumerate() {
                let (dt, shape) = fact(typed.input_fact(ix)?);
                v.push((input_name(*o), dt, shape));
            }
            for (ix, o) in outputs.iter().enumerate() {
                let (dt, shape) = fact(typed.output_fact(ix)?);
                v.push((output_name(*o), dt, shape));
            }
            v
        }
        Err(_) => {
            // Inputs as declared; tract drops declared output types and shapes.
            let declared_shape = |f: &InferenceFact| -> Option<Vec<Option<usize>>> {
                (!f.shape.is_open())
                    .then(|| f.shape.dims().map(|d| d.concretize().and_then(|d| d.to_usize().ok())).collect())
            };
            // Output dimensions are found by typing the graph at batch 1 and batch 2 of the
            // inputs' dynamic dimensions: a dimension that changes between the two is dynamic.
            let mut v = Vec::new();
            let mut at = [model.clone(), model.clone()];
            for (ix, o) in inputs.iter().enumerate() {
                let f = model.input_fact(ix)?;
                let (dt, shape) = (f.datum_type.concretize(), declared_shape(f));
                if let (Some(dt), Some(shape)) = (dt, &shape) {
                    for (size, m) in [1usize, 2].into_iter().zip(at.iter_mut()) {
                        let dims: Vec<usize> = shape.iter().map(|d| d.unwrap_or(size)).collect();
                        m.set_input_fact(ix, InferenceFact::dt_shape(dt, dims))?;
                    }
                }
                v.push((input_name(*o), dt, shape));
            }
            let [one, two] = at;
            let (one, two) = (one.into_typed()?, two.into_typed()?);
            for (ix, o) in outputs.iter().enumerate() {
                let (a, b) = (one.output_fact(ix)?, two.output_fact(ix)?);
                let shape = a
                    .shape
                    .iter()
                    .zip(b.shape.iter())
                    .map(|(x, y)| match (x.to_usize().ok(), y.to_usize().ok()) {
                        (Some(x), Some(y)) if x == y => Some(x),
                        _ => None,
                    })
                    .collect();
                v.push((output_name(*o), Some(a.datum_type), Some(shape)));
            }
            v
        }
    };
    let mut specs = Vec::with_capacity(facts.len());
    for (name, dt, shape) in facts {
        let (Some(dt), Some(shape)) = (dt, shape) else {
            return Ok(Err(EngineError::UnsupportedType { name, found: "an undeclared type or rank".into() }));
        };
        match datatype_of(&name, dt) {
            Ok(datatype) => specs.push(TensorSpec { name, datatype, shape }),
            Err(e) => return Ok(Err(e)),
        }
    }
    let outputs = specs.split_off(inputs.len());
    Ok(Ok(Signature { inputs: specs, outputs }))
}
