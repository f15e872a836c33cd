//! `--backend auto` on a CPU: when tract and ONNX Runtime both load a model, each runs its
//! warm-up inputs a few times and the faster one serves it. Which engine is faster depends on the
//! model (tract wins on tiny graphs, ONNX Runtime on convolution-heavy ones like Magika), so it is
//! measured, not guessed. The verdict is a pure function of the timings ([`prefer_ort`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Engine, EngineError, isolate};

/// ONNX Runtime serves only when it is at least this many times faster: tract needs no shared
/// library and its sessions are cheaper, so a tie goes to tract.
pub const ORT_MARGIN: f64 = 1.1;

/// Timed runs per engine at least (after one untimed run), unless [`BUDGET`] runs out first.
pub const RUNS: usize = 7;

/// Timed runs go on until this much time has passed (a model that runs in microseconds is
/// timed over many runs), up to [`MAX_RUNS`].
pub const MIN_TIME: Duration = Duration::from_millis(50);

/// Timed runs per engine at most.
pub const MAX_RUNS: usize = 1000;

/// Time per engine after which no further run starts (at least one timed run is made).
pub const BUDGET: Duration = Duration::from_secs(2);

/// The warm-up timings of a model on both engines; `None` where the engine failed to run it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// Median of tract's runs.
    pub tract: Option<Duration>,
    /// Median of ONNX Runtime's runs.
    pub ort: Option<Duration>,
}

/// Whether ONNX Runtime should serve: it ran and tract did not, or it is [`ORT_MARGIN`] times
/// faster. Neither ran: tract (its error is the one the operator sees at warm-up).
pub fn prefer_ort(t: &Timings) -> bool {
    match (t.tract, t.ort) {
        (Some(tract), Some(ort)) => ort.as_secs_f64() * ORT_MARGIN < tract.as_secs_f64(),
        (None, Some(_)) => true,
        _ => false,
    }
}

/// The median time of one run of `engine` on its warm-up inputs: one untimed run, then at least
/// [`RUNS`] and [`MIN_TIME`] of timed runs (at most [`MAX_RUNS`]; none started after
/// [`BUDGET`]). A panic inside the engine is an error, not a crash.
pub fn time(engine: &Arc<dyn Engine>) -> Result<Duration, EngineError> {
    let mut session = engine.clone().session()?;
    let signature = engine.signature().clone();
    let mut run = || isolate(|| session.run(signature.warmup_inputs()?));
    run()?;
    let started = Instant::now();
    let mut times = Vec::with_capacity(RUNS);
    loop {
        let elapsed = started.elapsed();
        let enough = times.len() >= RUNS && elapsed >= MIN_TIME;
        if !times.is_empty() && (enough || times.len() >= MAX_RUNS || elapsed >= BUDGET) {
            break;
        }
        let at = Instant::now();
        run()?;
        times.push(at.elapsed());
    }
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn the_faster_engine_serves_and_a_near_tie_stays_on_tract() {
        assert!(prefer_ort(&Timings { tract: ms(63), ort: ms(42) }), "Magika-like: ONNX Runtime 1.5x faster");
        assert!(!prefer_ort(&Timings { tract: ms(5), ort: ms(9) }), "tiny MLP: tract faster");
        assert!(!prefer_ort(&Timings { tract: ms(100), ort: ms(95) }), "within the margin: tract");
        assert!(prefer_ort(&Timings { tract: ms(100), ort: ms(90) }), "just past the margin");
    }

    #[test]
    fn an_engine_that_cannot_run_the_model_never_serves_it() {
        assert!(prefer_ort(&Timings { tract: None, ort: ms(10) }));
        assert!(!prefer_ort(&Timings { tract: ms(10), ort: None }));
        assert!(!prefer_ort(&Timings { tract: None, ort: None }));
    }
}
