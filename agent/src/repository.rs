//! The models this agent serves: name → version → loaded engine with its workers.
//!
//! Loading (parse, optimise, open sessions, warm up) runs on a blocking thread; the entry is
//! `Loading` meanwhile, so `/ready` answers truthfully while a big model warms up.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::config::ModelSource;
use crate::engine::{self, BackendConfig, Engine, EngineError};
use crate::predictions::{OUTPUT_CLASSES, for_each_prediction};
use crate::tensor::Tensor;
use crate::worker::{WorkerMetrics, WorkerPool};

/// A model ready to serve.
#[derive(Debug)]
pub struct ServedModel {
    /// Model name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// The loaded engine.
    pub engine: Arc<dyn Engine>,
    /// Its workers.
    pub pool: WorkerPool,
    /// Pre-registered metric handles, so the hot path does no label lookups.
    pub metrics: ModelMetrics,
    /// Answered and failed requests.
    pub outcomes: Outcomes,
    /// Telemetry recorder (fleet mode), attached once after loading.
    pub telemetry: std::sync::OnceLock<Arc<crate::telemetry::Recorder>>,
}

/// Metric handles for one model version.
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    /// Requests answered.
    pub requests: Counter,
    /// Engine failures.
    pub engine_errors: Counter,
    /// Requests refused by a full queue.
    pub queue_full: Counter,
    /// Requests refused as not fitting the model.
    pub bad_request: Counter,
    /// Requests not answered within `server.request_timeout_ms`.
    pub timeouts: Counter,
    /// Requests refused because no worker was left.
    pub no_workers: Counter,
    /// Engine panics caught by the workers.
    pub engine_panics: Counter,
    /// Time waiting for a worker.
    pub queue_seconds: Histogram,
    /// Engine time.
    pub compute_seconds: Histogram,
    /// Whole request time.
    pub request_seconds: Histogram,
    /// Rows per engine run.
    pub batch_rows: Histogram,
    /// Requests between decode and response.
    pub in_flight: Gauge,
}

impl ModelMetrics {
    fn new(name: &str, version: &str) -> Self {
        let labels = [("model", name.to_owned()), ("version", version.to_owned())];
        let error = |reason: &'static str| counter!(crate::metric::INFERENCE_ERRORS, "model" => name.to_owned(), "version" => version.to_owned(), "reason" => reason);
        ModelMetrics {
            requests: counter!(crate::metric::INFERENCE_REQUESTS, &labels),
            engine_errors: error("engine"),
            queue_full: error("queue_full"),
            bad_request: error("bad_request"),
            timeouts: error("timeout"),
            no_workers: error("no_workers"),
            engine_panics: counter!(crate::metric::ENGINE_PANICS, &labels),
            queue_seconds: histogram!(crate::metric::INFERENCE_QUEUE_SECONDS, &labels),
            compute_seconds: histogram!(crate::metric::INFERENCE_COMPUTE_SECONDS, &labels),
            request_seconds: histogram!(crate::metric::INFERENCE_REQUEST_SECONDS, &labels),
            batch_rows: histogram!(crate::metric::INFERENCE_BATCH_ROWS, &labels),
            in_flight: gauge!(crate::metric::INFERENCE_IN_FLIGHT, &labels),
        }
    }
}

/// Loads a model and warms its workers without publishing it (fleet mode self-tests it first).
pub async fn prepare(source: ModelSource, backend: &BackendConfig) -> Result<Arc<ServedModel>, EngineError> {
    let started = Instant::now();
    let backend = backend.clone();
    let src = source.clone();
    let loaded = tokio::task::spawn_blocking(move || -> Result<ServedModel, EngineError> {
        let engine = engine::load(&src.path, &backend)?;
        let metrics = ModelMetrics::new(&src.name, &src.version);
        let worker_metrics =
            WorkerMetrics { batch_rows: metrics.batch_rows.clone(), panics: metrics.engine_panics.clone() };
        let pool = WorkerPool::start(&src.name, engine.clone(), &src.pool, worker_metrics)?;
        Ok(ServedModel {
            metrics,
            name: src.name,
            version: src.version,
            engine,
            pool,
            outcomes: Outcomes::default(),
            telemetry: std::sync::OnceLock::new(),
        })
    })
    .await
    .unwrap_or_else(|e| Err(EngineError::Panicked(format!("while loading the model: {e}"))));
    match &loaded {
        Ok(model) => {
            counter!(crate::metric::MODEL_LOADS, "result" => "ok").increment(1);
            tracing::info!(model = %source.name, version = %source.version, platform = model.engine.platform(),
                millis = started.elapsed().as_millis() as u64, "Model loaded and warmed up.");
        }
        Err(e) => {
            counter!(crate::metric::MODEL_LOADS, "result" => "error").increment(1);
            tracing::error!(model = %source.name, path = %source.path.display(), error = %e, "Model failed to load.");
        }
    }
    loaded.map(Arc::new)
}

/// Latencies kept per model version for status quantiles.
const LATENCY_WINDOW: usize = 1024;

/// Requests this model version answered and failed (engine errors), for watch windows, and its
/// most recent request latencies, for status reports.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Answered.
    pub ok: AtomicU64,
    /// Failed in the engine.
    pub failed: AtomicU64,
    recent_us: std::sync::Mutex<std::collections::VecDeque<u32>>,
    classes: [AtomicU64; OUTPUT_CLASSES],
    /// Cumulative times since load, for Triton's statistics extension.
    pub timings: Timings,
}

/// Cumulative nanoseconds per stage (Triton's `inference_stats`), and when the last request
/// was answered.
#[derive(Debug, Default)]
pub struct Timings {
    /// Whole requests answered, decode to encode.
    pub success_ns: AtomicU64,
    /// Requests that failed after decoding (engine error, deadline).
    pub fail_ns: AtomicU64,
    /// Waiting for a worker.
    pub queue_ns: AtomicU64,
    /// Engine runs.
    pub compute_ns: AtomicU64,
    /// Unix milliseconds of the last answered request (0: none yet).
    pub last_ms: AtomicU64,
}

impl Timings {
    /// Adds one answered request.
    pub fn success(&self, total: std::time::Duration, queued: std::time::Duration, compute: std::time::Duration) {
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.success_ns.fetch_add(ns(total), Ordering::Relaxed);
        self.queue_ns.fetch_add(ns(queued), Ordering::Relaxed);
        self.compute_ns.fetch_add(ns(compute), Ordering::Relaxed);
        self.last_ms.store(edgefleet_shared::clock::unix_ms(), Ordering::Relaxed);
    }

    /// Adds one failed request.
    pub fn failure(&self, total: std::time::Duration) {
        self.fail_ns.fetch_add(u64::try_from(total.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl Outcomes {
    /// (answered, failed) so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    /// Records an answered request's latency.
    pub fn record_latency(&self, latency: std::time::Duration) {
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut recent = self.recent_us.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == LATENCY_WINDOW {
            recent.pop_front();
        }
        recent.push_back(us);
    }

    /// Counts each row's predicted class: the top class of the first `[N, C>1]` float output, or
    /// the value of the first integer `[N]`/`[N, 1]` output (a label). Other outputs (e.g. a
    /// regression) count nothing. Allocation-free: it runs on every request.
    pub fn record_classes(&self, outputs: &[Tensor]) {
        for_each_prediction(outputs, |_, class, _| {
            self.classes[class.min(OUTPUT_CLASSES - 1)].fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Rows counted per class, without trailing empty classes.
    pub fn class_counts(&self) -> Vec<u64> {
        let mut counts: Vec<u64> = self.classes.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        while counts.last() == Some(&0) {
            counts.pop();
        }
        counts
    }

    /// (p50, p99) in milliseconds over the recent window, if any request was answered.
    pub fn latency_quantiles_ms(&self) -> Option<(f64, f64)> {
        let mut v: Vec<u32> = self.recent_us.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let q = |p: usize| f64::from(v[(v.len() - 1) * p / 100]) / 1000.0;
        Some((q(50), q(99)))
    }
}

/// What a model entry is doing.
#[derive(Debug, Clone)]
pub enum ModelState {
    /// Being loaded or warmed up.
    Loading {
        /// Version being loaded.
        version: String,
    },
    /// Serving.
    Ready(Arc<ServedModel>),
    /// Load failed; the message says why.
    Failed {
        /// Version that failed.
        version: String,
        /// Why.
        error: String,
    },
}

impl ModelState {
    /// Whether this entry can answer requests: loaded, warm, and with a worker running.
    pub fn is_serving(&self) -> bool {
        matches!(self, ModelState::Ready(m) if m.pool.serving())
    }

    /// The version this state is about.
    pub fn version(&self) -> &str {
        match self {
            ModelState::Loading { version } | ModelState::Failed { version, .. } => version,
            ModelState::Ready(m) => &m.version,
        }
    }
}

/// All models, by name.
#[derive(Debug, Default)]
pub struct Repository {
    models: RwLock<BTreeMap<String, ModelState>>,
}

impl Repository {
    /// An empty repository.
    pub fn new() -> Arc<Self> {
        Arc::new(Repository::default())
    }

    /// The state of `name`, if the agent knows it.
    pub fn get(&self, name: &str) -> Option<ModelState> {
        self.read().get(name).cloned()
    }

    /// Every entry, sorted by name.
    pub fn list(&self) -> Vec<(String, ModelState)> {
        self.read().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Whether at least one model is loaded, warm and has workers running.
    pub fn any_ready(&self) -> bool {
        self.read().values().any(ModelState::is_serving)
    }

    /// Lists a model as `Loading` before its load starts, so the index shows every configured
    /// model from the first request on.
    pub fn announce(&self, name: &str, version: &str) {
        self.write().entry(name.to_owned()).or_insert_with(|| ModelState::Loading { version: version.to_owned() });
    }

    /// Loads, warms up and publishes a model; the entry reads `Loading` meanwhile and `Failed`
    /// if anything goes wrong (standalone serving).
    pub async fn load(&self, source: ModelSource, backend: &BackendConfig) -> Result<Arc<ServedModel>, EngineError> {
        self.write().insert(source.name.clone(), ModelState::Loading { version: source.version.clone() });
        match prepare(source.clone(), backend).await {
            Ok(model) => {
                self.install(model.clone());
                Ok(model)
            }
            Err(e) => {
                self.write().insert(
                    source.name.clone(),
                    ModelState::Failed { version: source.version.clone(), error: e.to_string() },
                );
                Err(e)
            }
        }
    }

    /// Publishes a prepared model under its name, atomically replacing what served before.
    /// Requests already holding the old model finish on it; new ones get this one. Returns the
    /// model it replaced.
    pub fn install(&self, model: Arc<ServedModel>) -> Option<Arc<ServedModel>> {
        let old = self.write().insert(model.name.clone(), ModelState::Ready(model));
        self.update_ready_gauge();
        match old {
            Some(ModelState::Ready(m)) => Some(m),
            _ => None,
        }
    }

    /// Stops serving `name`.
    pub fn remove(&self, name: &str) {
        self.write().remove(name);
        self.update_ready_gauge();
    }

    /// Removes every model, closing their queues. Requests already queued finish first.
    pub fn clear(&self) -> Vec<Arc<ServedModel>> {
        let drained = std::mem::take(&mut *self.write());
        self.update_ready_gauge();
        drained
            .into_values()
            .filter_map(|s| match s {
                ModelState::Ready(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Sets `edgefleet_agent_models_ready` to the number of models serving now.
    pub fn update_ready_gauge(&self) {
        let ready = self.read().values().filter(|s| s.is_serving()).count();
        gauge!(crate::metric::MODELS_READY).set(ready as f64);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ModelState>> {
        // Writers only swap whole entries, so a poisoned map is still consistent.
        self.models.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ModelState>> {
        self.models.write().unwrap_or_else(|p| p.into_inner())
    }
}
