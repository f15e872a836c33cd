//! Inference worker threads: a bounded queue per model and optional dynamic batching.
//!
//! The HTTP handlers never run a model. They put a [`Job`] on the model's bounded queue and
//! await its answer; dedicated OS threads take jobs off the queue and run them. A full queue is
//! refused at once (the caller answers 503), so overload degrades into fast errors rather than
//! unbounded memory and latency. With batching on, a worker that picks up a job waits up to
//! `max_queue_delay_us` for more, stacks compatible requests along the batch axis, runs them
//! once and splits the outputs back by rows. A model that runs in microseconds skips the
//! hand-off and runs on the request's own thread ([`inline`]).

mod inline;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use metrics::{Counter, Histogram};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use self::inline::Inline;
use crate::engine::{self, Engine, EngineError, Session};
use crate::tensor::Tensor;

/// Per-model execution settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Worker threads, each with its own engine session.
    pub workers: usize,
    /// Requests that may wait for a worker before new ones get 503.
    pub queue_capacity: usize,
    /// Dynamic batching; off unless set, and only used when the model has a dynamic batch axis.
    pub batching: Option<BatchingConfig>,
    /// A model whose warm-up runs take at most this long (microseconds) runs on the request's
    /// own thread, without the hand-off to a worker; 0 never does. Ignored with batching.
    pub inline_below_us: u64,
}

/// The default of [`PoolConfig::inline_below_us`].
pub const INLINE_BELOW_US: u64 = 100;

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { workers: 1, queue_capacity: 64, batching: None, inline_below_us: INLINE_BELOW_US }
    }
}

/// Dynamic batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most rows stacked into one run.
    pub max_batch_size: usize,
    /// How long a worker holding one job waits for others to join it.
    pub max_queue_delay_us: u64,
}

/// One inference request on its way to a worker.
#[derive(Debug)]
pub struct Job {
    /// Inputs in signature order.
    pub inputs: Vec<Tensor>,
    /// When the job was queued.
    pub enqueued: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<JobResult>,
}

/// A worker's answer to a [`Job`].
#[derive(Debug)]
pub struct JobResult {
    /// Outputs in signature order, or the engine's error.
    pub outputs: Result<Vec<Tensor>, EngineError>,
    /// Time spent waiting in the queue (and for a batch to fill).
    pub queued: Duration,
    /// Time the engine took for the run this job was part of.
    pub compute: Duration,
}

/// Why a job could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is at capacity.
    #[error("queue is full ({capacity} waiting)")]
    Full {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The pool is shutting down.
    #[error("model is shutting down")]
    Closed,
    /// Every worker thread has stopped (an engine failure no new session could recover from).
    #[error("no inference worker is running (see the agent log)")]
    NoWorkers,
}

/// Metric handles the workers of one model version update.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// Rows of every engine run.
    pub batch_rows: Histogram,
    /// Engine panics caught (each rebuilt the worker's session).
    pub panics: Counter,
}

/// Worker threads serving one loaded model.
#[derive(Debug)]
pub struct WorkerPool {
    tx: Option<Sender<Job>>,
    capacity: usize,
    threads: Vec<JoinHandle<()>>,
    alive: Arc<AtomicUsize>,
    inline: Option<Inline>,
}

/// Counts a worker thread as serving for as long as it lives, however it ends (an unwinding
/// panic included), so a pool whose threads are all gone is reported as not serving.
struct Serving(Arc<AtomicUsize>);

impl Serving {
    fn enter(alive: &Arc<AtomicUsize>) -> Self {
        alive.fetch_add(1, Ordering::SeqCst);
        Serving(alive.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WorkerPool {
    /// Starts the workers; each opens a session and runs the warm-up inputs once before this
    /// returns, so a pool that exists is warm. Blocks: call from a blocking context.
    pub fn start(
        label: &str,
        engine: Arc<dyn Engine>,
        config: &PoolConfig,
        metrics: WorkerMetrics,
    ) -> Result<Self, EngineError> {
        let capacity = config.queue_capacity.max(1);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(capacity);
        let batching = config.batching.filter(|b| b.max_batch_size > 1 && engine.signature().has_dynamic_batch());
        if config.batching.is_some() && batching.is_none() {
            tracing::warn!(
                model = label,
                "Dynamic batching needs a dynamic first dimension on every input and output; running requests one by one."
            );
        }
        let alive = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for ix in 0..config.workers.max(1) {
            let engine = engine.clone();
            let rx = rx.clone();
            let ready = ready_tx.clone();
            let metrics = metrics.clone();
            let alive = alive.clone();
            let label = label.to_owned();
            let spawned = std::thread::Builder::new()
                .name(format!("infer-{label}-{ix}"))
                .spawn(move || {
                    let warmed = engine.signature().warmup_inputs().and_then(|warmup| {
                        let mut session = engine.clone().session()?;
                        let started = Instant::now();
                        engine::isolate(|| session.run(warmup))?;
                        Ok((session, started.elapsed()))
                    });
                    match warmed {
                        Ok((session, took)) => {
                            let serving = Serving::enter(&alive);
                            let _ = ready.send(Ok(took));
                            Worker { label, rx, engine, session, batching, metrics, lost: false }.serve();
                            drop(serving);
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })
                .map_err(|e| EngineError::Run(format!("cannot start worker thread: {e}")))?;
            threads.push(spawned);
        }
        drop(ready_tx);
        let mut pool = WorkerPool { tx: Some(tx), capacity, threads, alive, inline: None };
        // The fastest worker's first (cold) warm-up run: a model slower than the inline path
        // allows at once is not timed again.
        let mut first_run = Duration::MAX;
        for _ in 0..pool.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(took)) => first_run = first_run.min(took),
                Ok(Err(e)) => {
                    pool.shutdown();
                    return Err(e);
                }
                Err(_) => {
                    pool.shutdown();
                    return Err(EngineError::Run("a worker thread died during warm-up".into()));
                }
            }
        }
        if batching.is_none() {
            match Inline::probe(label, &engine, Duration::from_micros(config.inline_below_us), first_run, metrics) {
                Ok(inline) => pool.inline = inline,
                Err(e) => {
                    pool.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// Runs `inputs` on the calling thread when the model is fast enough for it and a session
    /// is free ([`inline`]); gives them back to be queued otherwise.
    pub fn try_inline(&self, inputs: Vec<Tensor>) -> Result<JobResult, Vec<Tensor>> {
        match &self.inline {
            Some(inline) if self.tx.is_some() => inline.try_run(inputs),
            _ => Err(inputs),
        }
    }

    /// Whether requests may run on the calling thread.
    pub fn runs_inline(&self) -> bool {
        self.inline.as_ref().is_some_and(Inline::on)
    }

    /// Queues a job without waiting; refuses when the queue is full or no worker is left.
    pub fn try_submit(&self, job: Job) -> Result<(), SubmitError> {
        let tx = self.tx.as_ref().ok_or(SubmitError::Closed)?;
        if !self.serving() {
            return Err(SubmitError::NoWorkers);
        }
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full { capacity: self.capacity },
            TrySendError::Disconnected(_) => SubmitError::NoWorkers,
        })
    }

    /// Whether at least one worker thread is running (and the queue is open).
    pub fn serving(&self) -> bool {
        self.tx.is_some() && self.alive.load(Ordering::SeqCst) > 0
    }

    /// Worker threads running now.
    pub fn workers_alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    /// Jobs waiting for a worker.
    pub fn queue_len(&self) -> usize {
        self.tx.as_ref().map_or(0, Sender::len)
    }

    /// Closes the queue, lets workers finish what is queued, and joins them.
    pub fn shutdown(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // Closing the queue is enough for the threads to finish; joining here could block an
        // async caller behind a long inference, so only `shutdown` joins.
        self.tx = None;
    }
}

struct Worker {
    label: String,
    rx: Receiver<Job>,
    engine: Arc<dyn Engine>,
    session: Box<dyn Session>,
    batching: Option<BatchingConfig>,
    metrics: WorkerMetrics,
    /// No session could be opened after a panic: the worker stops.
    lost: bool,
}

impl Worker {
    fn serve(mut self) {
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match self.rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            // A caller that stopped waiting (its deadline passed, or it went away) gets nothing:
            // running its job would only delay the ones behind it.
            if first.reply.is_closed() {
                continue;
            }
            match self.batching {
                None => self.run_one(first),
                Some(b) => {
                    let (batch, rest) = self.gather(first, b);
                    carried = rest;
                    self.run_batch(batch);
                }
            }
            if self.lost {
                // The pool reports itself not serving once no worker is left; whatever is still
                // queued is answered by the remaining workers or dropped with the queue.
                return;
            }
        }
    }

    /// Runs the session on `inputs`; a panic fails this run only and the session is replaced
    /// by a fresh one (its scratch state may be half-written). When no new session can be
    /// opened the worker marks itself lost and stops after answering.
    fn run_engine(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let result = engine::isolate(|| self.session.run(inputs));
        if let Err(EngineError::Panicked(message)) = &result {
            self.metrics.panics.increment(1);
            tracing::warn!(model = %self.label, panic = %message, "The engine panicked; the request failed and the worker opens a new session.");
            match self.engine.clone().session() {
                Ok(session) => self.session = session,
                Err(e) => {
                    tracing::error!(model = %self.label, error = %e, "Cannot open a new session after a panic; the worker stops.");
                    self.lost = true;
                }
            }
        }
        result
    }

    /// Collects jobs that fit beside `first`; a job that would overflow the batch is returned
    /// to run first next time.
    fn gather(&self, first: Job, b: BatchingConfig) -> (Vec<Job>, Option<Job>) {
        let deadline = Instant::now() + Duration::from_micros(b.max_queue_delay_us);
        let mut rows = rows_of(&first.inputs);
        let mut batch = vec![first];
        while rows < b.max_batch_size {
            match self.rx.recv_deadline(deadline) {
                Ok(job) if job.reply.is_closed() => {}
                Ok(job) => {
                    let n = rows_of(&job.inputs);
                    if rows + n > b.max_batch_size {
                        return (batch, Some(job));
                    }
                    rows += n;
                    batch.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        (batch, None)
    }

    fn run_one(&mut self, job: Job) {
        let started = Instant::now();
        self.metrics.batch_rows.record(rows_of(&job.inputs) as f64);
        let outputs = self.run_engine(job.inputs);
        let _ = job.reply.send(JobResult {
            outputs,
            queued: started.duration_since(job.enqueued),
            compute: started.elapsed(),
        });
    }

    fn run_batch(&mut self, mut jobs: Vec<Job>) {
        if jobs.len() == 1 {
            if let Some(job) = jobs.pop() {
                self.run_one(job);
            }
            return;
        }
        let sizes: Vec<usize> = jobs.iter().map(|j| rows_of(&j.inputs)).collect();
        let stacked: Option<Vec<Tensor>> = (0..jobs[0].inputs.len())
            .map(|i| Tensor::concat(&jobs.iter().map(|j| &j.inputs[i]).collect::<Vec<_>>()))
            .collect();
        let Some(stacked) = stacked else {
            // Inner dimensions differ between requests: they cannot share a run.
            return self.run_each(jobs);
        };
        let started = Instant::now();
        let total: usize = sizes.iter().sum();
        self.metrics.batch_rows.record(total as f64);
        let result = self.run_engine(stacked);
        let compute = started.elapsed();
        let per_job: Result<Vec<Vec<Tensor>>, EngineError> = result.and_then(|outputs| {
            let mut per_job: Vec<Vec<Tensor>> = sizes.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
            for output in outputs {
                let parts = output.split(&sizes).ok_or_else(|| {
                    EngineError::Run(format!("batched output has shape {:?}, expected {total} rows", output.shape))
                })?;
                for (dst, part) in per_job.iter_mut().zip(parts) {
                    dst.push(part);
                }
            }
            Ok(per_job)
        });
        match per_job {
            Ok(per_job) => {
                for (job, outputs) in jobs.into_iter().zip(per_job) {
                    let _ = job.reply.send(JobResult {
                        outputs: Ok(outputs),
                        queued: started.duration_since(job.enqueued),
                        compute,
                    });
                }
            }
            Err(e) => {
                // One bad request (a panic, an engine error) must not fail the others it was
                // batched with: each runs alone, so only the one that fails again fails. The
                // failed run was recorded as one; the retries record their own.
                tracing::warn!(error = %e, jobs = jobs.len(), "Batched run failed; retrying requests one by one.");
                self.run_each(jobs);
            }
        }
    }

    /// Runs jobs one at a time until done or the worker is lost (the rest are dropped, so
    /// their callers learn at once that no answer comes).
    fn run_each(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            if self.lost {
                break;
            }
            self.run_one(job);
        }
    }
}

/// Rows of a request: the first input's batch dimension.
fn rows_of(inputs: &[Tensor]) -> usize {
    inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(1)
}

#[cfg(test)]
mod tests;
