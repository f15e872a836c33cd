//! The watch window after a swap, as a pure decision of the new version's outcomes and time:
//! keep watching, commit to the version, or roll back to the one before.
//!
//! The window is state in the fleet loop, not a sleep: the loop keeps serving documents,
//! status and shutdown meanwhile, and a newer document ends the window at once (judged on what
//! was seen so far).

use std::time::{Duration, Instant};

/// When a watched version is given up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchPolicy {
    /// How long a new version is watched.
    pub window: Duration,
    /// Error rate above which it is rolled back...
    pub max_error_rate: f64,
    /// ...once at least this many requests were seen.
    pub min_requests: u64,
}

/// What to do with a watched version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The window is still open.
    Watching,
    /// It served well enough: it becomes the active version.
    Commit,
    /// Too many of its requests failed: the previous version serves again.
    RollBack {
        /// Requests that failed.
        failed: u64,
        /// Requests seen.
        total: u64,
    },
}

/// Judges a version swapped in at `started`, at `now`, after `ok` answered and `failed` failed
/// requests. `superseded` means a newer document arrived: the window ends now.
pub fn judge(policy: &WatchPolicy, started: Instant, now: Instant, ok: u64, failed: u64, superseded: bool) -> Verdict {
    let total = ok + failed;
    let over = now.saturating_duration_since(started) >= policy.window || superseded;
    if !over {
        return Verdict::Watching;
    }
    if total >= policy.min_requests && total > 0 && failed as f64 / total as f64 > policy.max_error_rate {
        Verdict::RollBack { failed, total }
    } else {
        Verdict::Commit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: WatchPolicy = WatchPolicy { window: Duration::from_secs(30), max_error_rate: 0.05, min_requests: 20 };

    #[test]
    fn the_window_commits_a_healthy_version_when_it_ends() {
        let t0 = Instant::now();
        assert_eq!(judge(&POLICY, t0, t0 + Duration::from_secs(29), 100, 0, false), Verdict::Watching);
        assert_eq!(judge(&POLICY, t0, t0 + Duration::from_secs(30), 100, 0, false), Verdict::Commit);
        assert_eq!(judge(&POLICY, t0, t0 + Duration::from_secs(30), 0, 0, false), Verdict::Commit);
    }

    #[test]
    fn too_many_failures_roll_back_but_only_on_enough_requests() {
        let t0 = Instant::now();
        let end = t0 + POLICY.window;
        assert_eq!(judge(&POLICY, t0, end, 90, 10, false), Verdict::RollBack { failed: 10, total: 100 });
        assert_eq!(judge(&POLICY, t0, end, 95, 5, false), Verdict::Commit, "exactly at the limit");
        assert_eq!(judge(&POLICY, t0, end, 5, 10, false), Verdict::Commit, "15 requests are too few to judge");
    }

    #[test]
    fn a_newer_document_ends_the_window_at_once() {
        let t0 = Instant::now();
        assert_eq!(judge(&POLICY, t0, t0, 0, 0, true), Verdict::Commit);
        assert_eq!(judge(&POLICY, t0, t0, 0, 25, true), Verdict::RollBack { failed: 25, total: 25 });
    }
}
