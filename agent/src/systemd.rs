//! systemd integration for `Type=notify` units.
//!
//! The agent tells systemd `READY=1` once its HTTP API is listening and it either serves a model
//! or waits for one (enrollment, a first deployment), keeps `STATUS=` current, says `STOPPING=1`
//! when it drains, and pets the watchdog (`WatchdogSec=`) from a task on its async runtime, so a
//! wedged runtime gets the agent restarted. Activations are not bound by the watchdog: a large
//! download may take longer than `WatchdogSec`. Outside systemd (no `NOTIFY_SOCKET`) every call
//! does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "Cannot notify systemd.");
    }
}

/// `READY=1` with a human-readable status line (shown by `systemctl status`).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the status line.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `STOPPING=1`: the agent is draining.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining in-flight requests")]);
}

/// Starts petting the watchdog at half its interval when the unit has `WatchdogSec=` set.
/// Needs a running tokio runtime.
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else { return };
    let period = (interval / 2).max(Duration::from_millis(100));
    tracing::info!(watchdog_ms = interval.as_millis() as u64, "systemd watchdog enabled.");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}
