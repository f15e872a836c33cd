//! The controller's background loops — document refresh, rollout steps, retrain judging — and
//! the lease ([`crate::lease`]) that runs them in one replica at a time: every replica keeps
//! trying to hold it, and only the holder steps.

use std::time::Duration;

use tokio::sync::watch;

use crate::db::Db;
use crate::fleet::Fleet;
use crate::lease::{self, Lease};
use crate::publish::Publisher;

/// Whether this replica holds the background lease now (and which).
pub(crate) type Held = watch::Receiver<Option<Lease>>;

/// Keeps trying to take or renew the background lease as `me`, every third of `ttl`, and says
/// in `held` whether this replica holds it; lets it lapse when stopping.
pub(crate) async fn hold_lease(
    db: Db,
    me: String,
    ttl: u64,
    held: watch::Sender<Option<Lease>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs((ttl / 3).max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while next_tick(&mut tick, &mut stop).await {
        let (who, now) = (me.clone(), crate::db::now() as u64);
        let got = db
            .call(move |conn| lease::acquire(conn, lease::BACKGROUND, &who, now, ttl).map_err(crate::db::DbError::from))
            .await;
        let lease = match got {
            Ok(lease) => lease,
            Err(e) => {
                tracing::error!(error = %e, "Cannot renew the background lease.");
                // Held only while it has not lapsed: another replica may take it from then on.
                held.borrow().clone().filter(|l| l.expires_at > now)
            }
        };
        let before = held.borrow().as_ref().map(|l| l.epoch);
        match (before, &lease) {
            (None, Some(l)) => tracing::info!(replica = %me, epoch = l.epoch,
                "This replica runs the background work (rollout steps, document refresh, retrain judging)."),
            (Some(_), None) => tracing::warn!(replica = %me, "Another replica runs the background work now."),
            _ => {}
        }
        held.send_replace(lease);
    }
    if let Some(lease) = held.send_replace(None)
        && let Err(e) = db.call(move |conn| lease::release(conn, &lease).map_err(crate::db::DbError::from)).await
    {
        tracing::warn!(error = %e, "Cannot release the background lease; another replica takes it when it lapses.");
    }
}

/// How often the controller looks for a key rotation recorded by `rotate-key`.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Re-signs documents past half their lifetime or signed by a key the device should no longer
/// get, forever, and publishes the new ones; picks up key rotations and publishes the trust
/// chain.
pub(crate) async fn refresh_documents(
    fleet: Fleet,
    db: Db,
    publisher: Publisher,
    every: Duration,
    held: Held,
    mut stop: watch::Receiver<bool>,
) {
    let mut keys = tokio::time::interval(KEY_CHECK_INTERVAL);
    keys.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_refresh: Option<std::time::Instant> = None;
    loop {
        if !next_tick(&mut keys, &mut stop).await {
            return;
        }
        let rotated = match fleet.keys().reload(&db).await {
            Ok(rotated) => rotated,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the trust sets.");
                false
            }
        };
        if rotated {
            publisher.trust(&fleet.keys().chain()).await;
        }
        let overlap_ending = fleet.keys().overlap_ended(crate::db::now() as u64);
        if held.borrow().is_none() || (!rotated && !overlap_ending && last_refresh.is_some_and(|t| t.elapsed() < every))
        {
            continue;
        }
        last_refresh = Some(std::time::Instant::now());
        match fleet.refresh_expiring().await {
            Ok(devices) if devices.is_empty() => {}
            Ok(devices) => {
                tracing::info!(documents = devices.len(), "Deployment documents refreshed before expiry.");
                publisher.documents(&devices).await;
            }
            Err(e) => tracing::error!(error = %e, "Refreshing deployment documents failed."),
        }
    }
}

/// Every this many rollout steps, every device is reconciled to its fleet (changes made through
/// this replica's API are reconciled at once; this catches the rest, e.g. a finished rollout).
const RECONCILE_EVERY_TICKS: u64 = 5;

/// Steps every running rollout once a second while this replica holds the lease, reconciles
/// devices to their fleets every few seconds, and publishes the documents either issues.
pub(crate) async fn drive_rollouts(
    rollouts: crate::rollout::Rollouts,
    fleet: Fleet,
    publisher: Publisher,
    held: Held,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        if !next_tick(&mut tick, &mut stop).await {
            return;
        }
        let Some(lease) = held.borrow().clone() else { continue };
        match rollouts.tick_fenced(Some(lease)).await {
            Ok(devices) => publisher.documents(&devices).await,
            Err(e) => tracing::error!(error = %e, "Rollout step failed."),
        }
        ticks += 1;
        if ticks.is_multiple_of(RECONCILE_EVERY_TICKS) {
            match fleet.reconcile_fleets().await {
                Ok(devices) => publisher.documents(&devices).await,
                Err(e) => tracing::error!(error = %e, "Reconciling devices to their fleets failed."),
            }
        }
    }
}

/// Judges retraining policies as windows close (every half window, at most a minute apart)
/// and prunes telemetry past its retention every hour, while this replica holds the lease.
pub(crate) async fn judge_telemetry(
    telemetry: crate::telemetry::Telemetry,
    held: Held,
    mut stop: watch::Receiver<bool>,
) {
    let every = Duration::from_secs((telemetry.window_secs() / 2).clamp(1, 60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<std::time::Instant> = None;
    loop {
        if !next_tick(&mut tick, &mut stop).await {
            return;
        }
        if held.borrow().is_none() {
            continue;
        }
        if let Err(e) = telemetry.evaluate().await {
            tracing::error!(error = %e, "Judging retraining policies failed.");
        }
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            last_prune = Some(std::time::Instant::now());
            match telemetry.prune().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "Telemetry past its retention deleted."),
                Err(e) => tracing::error!(error = %e, "Pruning telemetry failed."),
            }
        }
    }
}

/// Waits for the next tick; false once the controller is stopping.
async fn next_tick(tick: &mut tokio::time::Interval, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tick.tick() => true,
        _ = stop.changed() => false,
    }
}
