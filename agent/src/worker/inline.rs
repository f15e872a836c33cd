//! Fast models on the request's own thread.
//!
//! Handing a request to a worker thread and its answer back costs two thread wake-ups, more
//! than a model that runs in microseconds takes to run. When a model's warm-up runs take no
//! more than `inline_below_us` (and batching is off), its pool also keeps a few sessions that
//! the thread handling a request (a runtime worker) uses directly. A request runs there only
//! when one of them is free and its estimated time (the warm-up median, scaled by the request's
//! element count) is within that budget; otherwise it takes the queue as before (bounded, 503
//! when full). When the moving average of its runs' CPU times (the thread's own clock, read on
//! one run in [`CPU_SAMPLE_EVERY`], weight 1/4 per reading) passes [`SLOW_FACTOR`] times the
//! budget, the path is off for the model: a model slower than its warm-up suggested does not
//! hold a runtime thread again, while runs stretched by the scheduler (a preempted thread on a
//! busy device: wall time, not CPU time) do not count. The thread's CPU clock is a system call
//! that takes the scheduler's lock (read twice around a run, about a tenth of a tiny model's
//! request in a VM), so it is read on a sample of the runs only.
//! A panic fails its request only; its session is dropped, not reopened on the runtime thread
//! (an ONNX Runtime session takes long to open), and once none is left every request takes the
//! queue, whose workers reopen theirs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{JobResult, WorkerMetrics, rows_of};
use crate::engine::{self, Engine, EngineError, Session};
use crate::tensor::Tensor;

/// Warm-up runs timed to decide.
const PROBE_RUNS: usize = 7;

/// A moving average of run times this many times over the budget turns the path off.
pub(super) const SLOW_FACTOR: u32 = 4;

/// One run in this many reads the thread's CPU clock for the moving average.
pub(super) const CPU_SAMPLE_EVERY: u64 = 8;

/// The sessions a fast model runs on in the request's thread.
pub(super) struct Inline {
    label: String,
    sessions: Mutex<Vec<Box<dyn Session>>>,
    budget: Duration,
    /// The warm-up median per input element, in nanoseconds.
    ns_per_element: f64,
    /// Moving average of the inline runs' CPU times, nanoseconds (updated without a lock: two
    /// racing updates lose one sample, which an average can afford).
    average_ns: AtomicU64,
    /// Runs so far, to pick the ones whose CPU time is read.
    runs: AtomicU64,
    on: AtomicBool,
    metrics: WorkerMetrics,
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline")
            .field("label", &self.label)
            .field("budget", &self.budget)
            .field("ns_per_element", &self.ns_per_element)
            .field("on", &self.on)
            .finish_non_exhaustive()
    }
}

impl Inline {
    /// Times the warm-up inputs on a fresh session; `None` when the budget is zero or the model
    /// is slower than it, without a run when the workers' first warm-up run (`first_run`,
    /// cold) was already too slow. Opens one session per CPU (the runtime's thread count). Blocks.
    pub(super) fn probe(
        label: &str,
        engine: &Arc<dyn Engine>,
        budget: Duration,
        first_run: Duration,
        metrics: WorkerMetrics,
    ) -> Result<Option<Self>, EngineError> {
        if budget.is_zero() || first_run > budget * (SLOW_FACTOR * 2) {
            return Ok(None);
        }
        let warmup = engine.signature().warmup_inputs()?;
        let mut session = engine.clone().session()?;
        let mut times = Vec::with_capacity(PROBE_RUNS);
        for _ in 0..PROBE_RUNS {
            let inputs = warmup.clone();
            let started = Instant::now();
            engine::isolate(|| session.run(inputs))?;
            let took = started.elapsed();
            if took > budget * (SLOW_FACTOR * 2) {
                return Ok(None);
            }
            times.push(took);
        }
        times.sort();
        let median = times[times.len() / 2];
        if median > budget {
            tracing::debug!(
                model = label,
                median_us = median.as_micros(),
                "Model runs on its worker threads (warm-up above the inline budget)."
            );
            return Ok(None);
        }
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let mut sessions = vec![session];
        for _ in 1..threads {
            let mut session = engine.clone().session()?;
            let inputs = warmup.clone();
            engine::isolate(|| session.run(inputs))?;
            sessions.push(session);
        }
        tracing::info!(
            model = label,
            median_us = median.as_micros(),
            budget_us = budget.as_micros(),
            "Model runs on the request's thread (warm-up within the inline budget)."
        );
        Ok(Some(Inline {
            label: label.to_owned(),
            sessions: Mutex::new(sessions),
            budget,
            ns_per_element: median.as_nanos() as f64 / elements(&warmup).max(1) as f64,
            average_ns: AtomicU64::new(nanos(median)),
            runs: AtomicU64::new(0),
            on: AtomicBool::new(true),
            metrics,
        }))
    }

    /// Whether requests may still run here.
    pub(super) fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Runs `inputs` here when the model is still fast, the request small enough and a session
    /// free; gives the inputs back otherwise.
    pub(super) fn try_run(&self, inputs: Vec<Tensor>) -> Result<JobResult, Vec<Tensor>> {
        if !self.on() || self.ns_per_element * elements(&inputs) as f64 > self.budget.as_nanos() as f64 {
            return Err(inputs);
        }
        let Some(mut session) = self.sessions.lock().unwrap_or_else(PoisonError::into_inner).pop() else {
            return Err(inputs);
        };
        self.metrics.batch_rows.record(rows_of(&inputs) as f64);
        let sampled = self.runs.fetch_add(1, Ordering::Relaxed).is_multiple_of(CPU_SAMPLE_EVERY);
        let started = Instant::now();
        let cpu_started = sampled.then(thread_cpu_time);
        let outputs = engine::isolate(|| session.run(inputs));
        let cpu = cpu_started.map(|at| thread_cpu_time().saturating_sub(at));
        let compute = started.elapsed();
        if let Err(EngineError::Panicked(message)) = &outputs {
            self.metrics.panics.increment(1);
            tracing::warn!(model = %self.label, panic = %message, "The engine panicked on the request's thread; the request failed and that session is dropped.");
        } else {
            self.sessions.lock().unwrap_or_else(PoisonError::into_inner).push(session);
        }
        if let Some(cpu) = cpu {
            self.account(cpu);
        }
        Ok(JobResult { outputs, queued: Duration::ZERO, compute })
    }

    /// Folds a run's CPU time into the moving average; turns the path off past the limit.
    fn account(&self, cpu: Duration) {
        let before = self.average_ns.load(Ordering::Relaxed);
        let average = before - before / 4 + nanos(cpu) / 4;
        self.average_ns.store(average, Ordering::Relaxed);
        if average > nanos(self.budget * SLOW_FACTOR) && self.on.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                model = %self.label,
                average_us = average / 1_000,
                budget_us = self.budget.as_micros(),
                "The model's runs take far longer than the inline budget; its requests now go to its worker threads."
            );
        }
    }
}

/// CPU time this thread has used.
pub(super) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn elements(tensors: &[Tensor]) -> usize {
    tensors.iter().map(|t| t.shape.iter().product::<usize>()).sum()
}
