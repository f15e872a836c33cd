//! One inference, whatever the transport (HTTP or gRPC): check the inputs against the model,
//! queue them to its workers with the request deadline, and account for the outcome (metrics,
//! Triton statistics, telemetry, the shadow mirror). Transports only decode and encode.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use edgefleet_shared::inference::Datatype;
use tokio::sync::oneshot;

use crate::api::{ApiError, AppState};
use crate::engine::TensorSpec;
use crate::repository::ServedModel;
use crate::tensor::Tensor;
use crate::worker::{Job, JobResult, SubmitError};

/// Counts a request in `in_flight` for as long as it lives, however the handler exits.
#[derive(Debug)]
pub struct InFlight(metrics::Gauge);

impl InFlight {
    /// Enters `model`'s in-flight gauge.
    pub fn enter(model: &ServedModel) -> Self {
        model.metrics.in_flight.increment(1.0);
        InFlight(model.metrics.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Checks an input's declared datatype and shape against the model's `spec`.
pub fn check_input(
    name: &str,
    datatype: &str,
    shape: &[i64],
    spec: &TensorSpec,
) -> Result<(Datatype, Vec<usize>), ApiError> {
    let datatype: Datatype = datatype.parse().map_err(|e| ApiError::bad_request(format!("input {name:?}: {e}")))?;
    if datatype != spec.datatype {
        return Err(ApiError::unprocessable(format!(
            "input {name:?}: datatype {datatype} does not match the model's {}",
            spec.datatype
        )));
    }
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::bad_request(format!("input {name:?}: shape {shape:?} has a negative dimension")))?;
    if !spec.accepts(&dims) {
        return Err(ApiError::unprocessable(format!(
            "input {name:?}: shape mismatch: expected {:?}, got {shape:?}",
            spec.metadata().shape
        )));
    }
    Ok((datatype, dims))
}

/// Puts decoded `inputs` (one per model input, in the model's order) in order and checks that
/// every input is there once and that they agree on the batch size.
pub fn order_inputs(model: &ServedModel, given: Vec<(usize, Tensor)>) -> Result<Vec<Tensor>, ApiError> {
    let sig = model.engine.signature();
    let mut slots: Vec<Option<Tensor>> = vec![None; sig.inputs.len()];
    for (ix, tensor) in given {
        if slots[ix].replace(tensor).is_some() {
            return Err(ApiError::bad_request(format!("input {:?} is given twice", sig.inputs[ix].name)));
        }
    }
    let mut inputs = Vec::with_capacity(slots.len());
    for (slot, spec) in slots.into_iter().zip(&sig.inputs) {
        inputs.push(slot.ok_or_else(|| ApiError::unprocessable(format!("missing input {:?}", spec.name)))?);
    }
    let rows: Vec<usize> = inputs.iter().filter_map(|t| t.shape.first().copied()).collect();
    if sig.has_dynamic_batch() && rows.windows(2).any(|w| w[0] != w[1]) {
        return Err(ApiError::unprocessable(format!("inputs disagree on the batch size: {rows:?}")));
    }
    Ok(inputs)
}

/// The index of the model input called `name`.
pub fn input_index(model: &ServedModel, name: &str) -> Result<usize, ApiError> {
    let specs = &model.engine.signature().inputs;
    specs
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| ApiError::unprocessable(format!("unknown input {name:?} (model inputs: {})", names(specs))))
}

/// The index of the model output called `name`.
pub fn output_index(model: &ServedModel, name: &str) -> Result<usize, ApiError> {
    let specs = &model.engine.signature().outputs;
    specs
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| ApiError::unprocessable(format!("unknown output {name:?} (model outputs: {})", names(specs))))
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Counts a request refused as not fitting the model, and passes the error on.
pub fn refused(model: &ServedModel, e: ApiError) -> ApiError {
    model.metrics.bad_request.increment(1);
    e
}

/// A run's outputs, whose success is counted once the answer is encoded ([`Ran::answered`]).
#[derive(Debug)]
#[must_use = "count the answer with answered() once it is encoded"]
pub struct Ran {
    /// The model's outputs.
    pub tensors: Vec<Tensor>,
    started: Instant,
    queued: std::time::Duration,
    compute: std::time::Duration,
}

impl Ran {
    /// Counts the request as answered (metrics, statistics, latency).
    pub fn answered(&self, model: &ServedModel) {
        model.metrics.requests.increment(1);
        model.outcomes.ok.fetch_add(1, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        model.metrics.request_seconds.record(elapsed.as_secs_f64());
        model.outcomes.record_latency(elapsed);
        model.outcomes.timings.success(elapsed, self.queued, self.compute);
    }

    /// Counts the request as failed after the run (its answer could not be encoded).
    pub fn failed(&self, model: &ServedModel) {
        model.outcomes.failed.fetch_add(1, Ordering::Relaxed);
        model.outcomes.timings.failure(self.started.elapsed());
    }
}

/// Runs `inputs` on `model` within the request deadline and accounts for the run (the answer
/// is counted by the caller once encoded); `started` is when the request's body was read (its
/// decoding counts in the latency).
pub async fn run(
    state: &AppState,
    model: &Arc<ServedModel>,
    inputs: Vec<Tensor>,
    request_id: Option<&str>,
    started: Instant,
) -> Result<Ran, ApiError> {
    let name = &model.name;
    let shadow = state.shadows.get(name).filter(|s| s.sample());
    let recorder = model.telemetry.get();
    let rolled = recorder.is_some_and(|r| r.roll());
    let sampling = recorder.is_some_and(|r| r.keep_inputs(&inputs, rolled));
    // One copy of the inputs serves both the telemetry sample and the shadow mirror.
    let copy = (shadow.is_some() || sampling).then(|| inputs.clone());
    if let Some(r) = recorder {
        r.observe_inputs(&inputs);
    }
    let result = match model.pool.try_inline(inputs) {
        Ok(result) => result,
        Err(inputs) => queue(state, model, inputs, started).await?,
    };
    model.metrics.queue_seconds.record(result.queued.as_secs_f64());
    model.metrics.compute_seconds.record(result.compute.as_secs_f64());
    let tensors = result.outputs.map_err(|e| {
        model.metrics.engine_errors.increment(1);
        model.outcomes.failed.fetch_add(1, Ordering::Relaxed);
        model.outcomes.timings.failure(started.elapsed());
        ApiError::internal(e.to_string())
    })?;
    model.outcomes.record_classes(&tensors);
    if let Some(r) = recorder {
        r.observe_outputs(&tensors, request_id, copy.as_deref().filter(|_| sampling), rolled);
    }
    if let (Some(shadow), Some(inputs)) = (shadow, copy) {
        shadow.mirror(inputs, tensors.clone(), result.compute);
    }
    Ok(Ran { tensors, started, queued: result.queued, compute: result.compute })
}

/// Puts `inputs` on the model's bounded queue and waits for a worker's answer within the
/// request deadline; a full queue is refused at once (503).
async fn queue(
    state: &AppState,
    model: &ServedModel,
    inputs: Vec<Tensor>,
    started: Instant,
) -> Result<JobResult, ApiError> {
    let name = &model.name;
    let (reply, answer) = oneshot::channel();
    let job = Job { inputs, enqueued: Instant::now(), reply };
    if let Err(e) = model.pool.try_submit(job) {
        return Err(match e {
            SubmitError::Full { .. } => {
                model.metrics.queue_full.increment(1);
                ApiError::unavailable(format!("model {name:?} is overloaded: {e}; retry later"))
            }
            SubmitError::Closed => {
                model.metrics.queue_full.increment(1);
                ApiError::unavailable(format!("model {name:?} is shutting down"))
            }
            SubmitError::NoWorkers => {
                model.metrics.no_workers.increment(1);
                ApiError::unavailable(format!("model {name:?}: {e}"))
            }
        });
    }
    // Dropping `answer` on expiry tells the worker not to run the job if it is still queued.
    match tokio::time::timeout(state.request_timeout, answer).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(_)) => {
            model.metrics.no_workers.increment(1);
            Err(ApiError::unavailable(format!(
                "model {name:?}: the inference worker stopped before answering; retry later"
            )))
        }
        Err(_) => {
            model.metrics.timeouts.increment(1);
            model.outcomes.failed.fetch_add(1, Ordering::Relaxed);
            model.outcomes.timings.failure(started.elapsed());
            Err(ApiError::timeout(format!(
                "model {name:?} did not answer within {} ms (server.request_timeout_ms); the request was dropped",
                state.request_timeout.as_millis()
            )))
        }
    }
}
