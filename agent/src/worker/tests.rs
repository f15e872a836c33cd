//! The worker pool against an engine that panics on demand and runs as slowly as told.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread::ThreadId;

use edgefleet_shared::inference::Datatype;

use super::*;
use crate::engine::{Signature, TensorSpec};
use crate::tensor::TensorData;

/// An engine whose sessions panic on a negative input and echo anything else; once
/// `broken` is set, no new session can be opened.
#[derive(Debug)]
struct Fragile {
    signature: Signature,
    broken: AtomicBool,
    runs: AtomicUsize,
    /// How long each run takes (spinning).
    delay_us: AtomicU64,
    /// The thread of the last run.
    last_thread: Mutex<Option<ThreadId>>,
}

struct FragileSession(Arc<Fragile>);

impl Session for FragileSession {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        self.0.runs.fetch_add(1, Ordering::SeqCst);
        *self.0.last_thread.lock().expect("lock") = Some(std::thread::current().id());
        // Busy for that much of the thread's CPU time, as a real engine is (the inline path judges
        // runs by it), however often a loaded test machine preempts the thread.
        let delay = Duration::from_micros(self.0.delay_us.load(Ordering::SeqCst));
        let started = inline::thread_cpu_time();
        while inline::thread_cpu_time().saturating_sub(started) < delay {
            std::hint::spin_loop();
        }
        if let TensorData::F32(v) = &inputs[0].data
            && v.iter().any(|x| *x < 0.0)
        {
            panic!("index {} out of range", v[0]);
        }
        Ok(inputs)
    }
}

impl Engine for Fragile {
    fn platform(&self) -> &'static str {
        "fragile"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn session(self: Arc<Self>) -> Result<Box<dyn Session>, EngineError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(EngineError::Run("cannot open a session".into()));
        }
        Ok(Box::new(FragileSession(self)))
    }
}

fn fragile() -> Arc<Fragile> {
    let spec = |name: &str| TensorSpec { name: name.into(), datatype: Datatype::Fp32, shape: vec![None, Some(1)] };
    Arc::new(Fragile {
        signature: Signature { inputs: vec![spec("x")], outputs: vec![spec("y")] },
        broken: AtomicBool::new(false),
        runs: AtomicUsize::new(0),
        delay_us: AtomicU64::new(0),
        last_thread: Mutex::new(None),
    })
}

/// A pool that always queues (the inline path off).
fn pool() -> (Arc<Fragile>, WorkerPool) {
    let engine = fragile();
    (engine.clone(), start(engine, 0))
}

fn start(engine: Arc<Fragile>, inline_below_us: u64) -> WorkerPool {
    let metrics = WorkerMetrics { batch_rows: Histogram::noop(), panics: Counter::noop() };
    let config = PoolConfig { inline_below_us, ..PoolConfig::default() };
    WorkerPool::start("fragile", engine, &config, metrics).expect("start")
}

fn inputs(value: f32) -> Vec<Tensor> {
    vec![Tensor { shape: vec![1, 1], data: TensorData::F32(vec![value]) }]
}

fn submit(pool: &WorkerPool, value: f32) -> Result<oneshot::Receiver<JobResult>, SubmitError> {
    let (reply, answer) = oneshot::channel();
    let inputs = vec![Tensor { shape: vec![1, 1], data: TensorData::F32(vec![value]) }];
    pool.try_submit(Job { inputs, enqueued: Instant::now(), reply }).map(|()| answer)
}

fn answer(rx: oneshot::Receiver<JobResult>) -> Result<Vec<Tensor>, EngineError> {
    rx.blocking_recv().expect("an answer").outputs
}

#[test]
fn a_panic_fails_its_request_only_and_the_worker_keeps_serving() {
    let (_engine, pool) = pool();
    let queued: Vec<_> = [1.0, -1.0, 2.0, 3.0].iter().map(|v| submit(&pool, *v).expect("queued")).collect();
    let results: Vec<_> = queued.into_iter().map(answer).collect();
    assert!(matches!(&results[1], Err(EngineError::Panicked(m)) if m.contains("out of range")), "{results:?}");
    for ix in [0, 2, 3] {
        assert!(results[ix].is_ok(), "request {ix}: {:?}", results[ix]);
    }
    assert!(pool.serving());
}

#[test]
fn a_worker_that_cannot_recover_leaves_the_pool_not_serving() {
    let (engine, pool) = pool();
    engine.broken.store(true, Ordering::SeqCst);
    assert!(matches!(answer(submit(&pool, -1.0).expect("queued")), Err(EngineError::Panicked(_))));
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.serving() {
        assert!(Instant::now() < deadline, "the pool still claims a worker");
        std::thread::yield_now();
    }
    assert!(matches!(submit(&pool, 1.0), Err(SubmitError::NoWorkers)));
}

#[test]
fn jobs_whose_caller_gave_up_are_not_run() {
    let (engine, pool) = pool();
    let (reply, answer_rx) = oneshot::channel();
    drop(answer_rx);
    let inputs = vec![Tensor { shape: vec![1, 1], data: TensorData::F32(vec![1.0]) }];
    pool.try_submit(Job { inputs, enqueued: Instant::now(), reply }).expect("queued");
    assert!(answer(submit(&pool, 5.0).expect("queued")).is_ok());
    // The warm-up and the last request ran; the abandoned one did not.
    assert_eq!(engine.runs.load(Ordering::SeqCst), 2);
}

#[test]
fn a_fast_model_runs_on_the_calling_thread() {
    let engine = fragile();
    let pool = start(engine.clone(), 50_000);
    assert!(pool.runs_inline());
    let result = pool.try_inline(inputs(1.5)).expect("ran inline");
    assert_eq!(result.queued, Duration::ZERO);
    assert_eq!(result.outputs.expect("outputs"), inputs(1.5));
    assert_eq!(*engine.last_thread.lock().expect("lock"), Some(std::thread::current().id()));
    // A request bigger than the warm-up's estimate allows is queued.
    let big = vec![Tensor { shape: vec![1_000_000, 1], data: TensorData::F32(vec![0.0; 1_000_000]) }];
    assert!(pool.try_inline(big).is_err());
}

#[test]
fn a_model_slower_than_the_budget_is_queued() {
    let engine = fragile();
    engine.delay_us.store(2_000, Ordering::SeqCst);
    let pool = start(engine, 100);
    assert!(!pool.runs_inline());
    assert_eq!(pool.try_inline(inputs(1.0)).expect_err("not inline"), inputs(1.0));
    assert!(answer(submit(&pool, 1.0).expect("queued")).is_ok());
}

#[test]
fn one_slow_run_does_not_but_slow_runs_do_send_the_model_to_its_workers() {
    let engine = fragile();
    let pool = start(engine.clone(), 1_000);
    assert!(pool.runs_inline());
    // One run stretched (a preempted thread): still inline.
    engine.delay_us.store(1_000 * u64::from(inline::SLOW_FACTOR) + 1_000, Ordering::SeqCst);
    assert!(pool.try_inline(inputs(1.0)).expect("ran inline").outputs.is_ok());
    assert!(pool.runs_inline());
    // Every run that slow: within a few dozen runs its requests go to the workers.
    let mut runs = 1;
    while pool.runs_inline() {
        assert!(pool.try_inline(inputs(1.0)).expect("ran inline").outputs.is_ok());
        runs += 1;
        assert!(runs <= 64, "a model 5x over its budget still runs inline after {runs} runs");
    }
    assert!(pool.try_inline(inputs(1.0)).is_err());
    assert!(answer(submit(&pool, 1.0).expect("queued")).is_ok());
}

#[test]
fn a_panic_on_the_calling_thread_fails_its_request_and_the_queue_takes_over() {
    let engine = fragile();
    let pool = start(engine, 50_000);
    let mut panicked = 0;
    while let Ok(result) = pool.try_inline(inputs(-1.0)) {
        assert!(matches!(result.outputs, Err(EngineError::Panicked(_))), "{:?}", result.outputs);
        panicked += 1;
        assert!(panicked <= 256, "sessions are never used up");
    }
    assert!(panicked >= 1);
    assert!(pool.try_inline(inputs(1.0)).is_err());
    assert!(answer(submit(&pool, 1.0).expect("queued")).is_ok());
}
