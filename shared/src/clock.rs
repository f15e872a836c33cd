//! Wall-clock time, read in one place. Decisions (rollout steps, retrain judging, window
//! assignment, document expiry) take the time as an argument; the services that call them
//! hold a [`Clock`], so a test drives them with a [`ManualClock`] instead of waiting.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of Unix time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Seconds since the Unix epoch.
    fn now(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// A shared clock, as services hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_ms()
    }
}

/// The system clock as a [`SharedClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Milliseconds since the Unix epoch on the system clock (0 before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch on the system clock (0 before 1970).
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// A clock that moves only when told to; clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at `secs` Unix seconds.
    pub fn at(secs: u64) -> Self {
        ManualClock { ms: Arc::new(AtomicU64::new(secs.saturating_mul(1000))) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ms.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `secs` Unix seconds (backwards too: a wrong device clock).
    pub fn set(&self, secs: u64) {
        self.ms.store(secs.saturating_mul(1000), Ordering::SeqCst);
    }

    /// This clock as a [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_follow() {
        let clock = ManualClock::at(1_000);
        let shared = clock.shared();
        assert_eq!((clock.now(), shared.now_ms()), (1_000, 1_000_000));
        clock.advance(Duration::from_millis(1_500));
        assert_eq!((shared.now(), shared.now_ms()), (1_001, 1_001_500));
        clock.set(10);
        assert_eq!(shared.now(), 10);
        assert!(SystemClock.now() > 1_700_000_000, "the system clock reads Unix time");
    }
}
