//! Inference worker threads: a bounded queue per model and optional dynamic batching.
//!
//! The HTTP handlers never run a model. They put a [`Job`] on the model's bounded queue and
//! await its answer; dedicated OS threads take jobs off the queue and run them. A full queue is
//! refused at once (the caller answers 503), so overload degrades into fast errors rather than
//! unbounded memory and latency. With batching on, a worker that picks up a job waits up to
//! `max_queue_delay_us` for more, stacks compatible requests along the batch axis, runs them
//! once and splits the outputs back by rows.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use metrics::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::engine::{Engine, EngineError, Session};
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
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { workers: 1, queue_capacity: 64, batching: None }
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
}

/// Worker threads serving one loaded model.
#[derive(Debug)]
pub struct WorkerPool {
    tx: Option<Sender<Job>>,
    capacity: usize,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts the workers; each opens a session and runs the warm-up inputs once before this
    /// returns, so a pool that exists is warm. Blocks: call from a blocking context.
    /// `batch_rows` records the rows of every engine run.
    pub fn start(
        label: &str,
        engine: Arc<dyn Engine>,
        config: &PoolConfig,
        batch_rows: Histogram,
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
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for ix in 0..config.workers.max(1) {
            let engine = engine.clone();
            let rx = rx.clone();
            let ready = ready_tx.clone();
            let batch_rows = batch_rows.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("infer-{label}-{ix}"))
                .spawn(move || {
                    let warmed = engine.signature().warmup_inputs().and_then(|warmup| {
                        let mut session = engine.clone().session()?;
                        session.run(warmup)?;
                        Ok(session)
                    });
                    match warmed {
                        Ok(session) => {
                            let _ = ready.send(Ok(()));
                            Worker { rx, session, batching, batch_rows }.serve();
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
        let mut pool = WorkerPool { tx: Some(tx), capacity, threads };
        for _ in 0..pool.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
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
        Ok(pool)
    }

    /// Queues a job without waiting; refuses when the queue is full.
    pub fn try_submit(&self, job: Job) -> Result<(), SubmitError> {
        let tx = self.tx.as_ref().ok_or(SubmitError::Closed)?;
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full { capacity: self.capacity },
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })
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
    rx: Receiver<Job>,
    session: Box<dyn Session>,
    batching: Option<BatchingConfig>,
    batch_rows: Histogram,
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
            match self.batching {
                None => self.run_one(first),
                Some(b) => {
                    let (batch, rest) = self.gather(first, b);
                    carried = rest;
                    self.run_batch(batch);
                }
            }
        }
    }

    /// Collects jobs that fit beside `first`; a job that would overflow the batch is returned
    /// to run first next time.
    fn gather(&self, first: Job, b: BatchingConfig) -> (Vec<Job>, Option<Job>) {
        let deadline = Instant::now() + Duration::from_micros(b.max_queue_delay_us);
        let mut rows = rows_of(&first);
        let mut batch = vec![first];
        while rows < b.max_batch_size {
            match self.rx.recv_deadline(deadline) {
                Ok(job) => {
                    let n = rows_of(&job);
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
        self.batch_rows.record(rows_of(&job) as f64);
        let outputs = self.session.run(job.inputs);
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
        let sizes: Vec<usize> = jobs.iter().map(rows_of).collect();
        let stacked: Option<Vec<Tensor>> = (0..jobs[0].inputs.len())
            .map(|i| Tensor::concat(&jobs.iter().map(|j| &j.inputs[i]).collect::<Vec<_>>()))
            .collect();
        let Some(stacked) = stacked else {
            // Inner dimensions differ between requests: they cannot share a run.
            jobs.into_iter().for_each(|job| self.run_one(job));
            return;
        };
        let started = Instant::now();
        let total: usize = sizes.iter().sum();
        self.batch_rows.record(total as f64);
        let result = self.session.run(stacked);
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
                // The failed run was recorded as one; the retries record their own.
                tracing::warn!(error = %e, jobs = jobs.len(), "Batched run failed; retrying requests one by one.");
                jobs.into_iter().for_each(|job| self.run_one(job));
            }
        }
    }
}

fn rows_of(job: &Job) -> usize {
    job.inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(1)
}
