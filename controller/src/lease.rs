//! Background work runs once across controller replicas sharing one database: rollout steps,
//! document refresh and retrain judging run only in the replica holding the `background` lease,
//! a row in the database (no coordination service). The holder renews it well within its
//! lifetime; when it stops renewing (killed, cut off), another replica takes it over after it
//! expires, with the next epoch. Each rollout step checks, inside its own transaction, that this
//! replica still holds the lease at that epoch (a fence), so a replica that lost it cannot commit
//! a step the new holder also takes. A graceful shutdown releases the lease at once.

use crate::sql::{Connection, OptionalExtension as _, params};

/// The lease on the controller's background loops.
pub const BACKGROUND: &str = "background";

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What it is a lease on.
    pub name: String,
    /// The replica holding it.
    pub holder: String,
    /// Increases with every change of holder: the fence.
    pub epoch: u64,
    /// Unix seconds at which it lapses unless renewed.
    pub expires_at: u64,
}

/// What replica `me` holds after trying at `now` for `ttl` seconds, given the stored lease: a
/// renewal of its own (same epoch), a take-over of a lapsed or absent one (next epoch), or
/// nothing while another replica's lease runs.
pub fn claim(current: Option<&Lease>, name: &str, me: &str, now: u64, ttl: u64) -> Option<Lease> {
    let fresh = |epoch| Lease { name: name.to_owned(), holder: me.to_owned(), epoch, expires_at: now + ttl };
    match current {
        Some(l) if l.holder == me => Some(fresh(l.epoch)),
        Some(l) if l.expires_at > now => None,
        Some(l) => Some(fresh(l.epoch + 1)),
        None => Some(fresh(1)),
    }
}

fn read(conn: &Connection, name: &str) -> crate::sql::Result<Option<Lease>> {
    conn.query_row("SELECT holder, epoch, expires_at FROM leases WHERE name = ?1", params![name], |r| {
        Ok(Lease {
            name: name.to_owned(),
            holder: r.get(0)?,
            epoch: r.get::<_, i64>(1)? as u64,
            expires_at: r.get::<_, i64>(2)? as u64,
        })
    })
    .optional()
}

/// Takes or renews lease `name` for `me` at `now` ([`claim`]) in one transaction; the lease
/// this replica now holds, if any.
pub fn acquire(conn: &mut Connection, name: &str, me: &str, now: u64, ttl: u64) -> crate::sql::Result<Option<Lease>> {
    let tx = conn.transaction()?;
    let Some(lease) = claim(read(&tx, name)?.as_ref(), name, me, now, ttl) else { return Ok(None) };
    tx.execute(
        "INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch, expires_at = excluded.expires_at",
        params![name, lease.holder, lease.epoch as i64, lease.expires_at as i64],
    )?;
    tx.commit()?;
    Ok(Some(lease))
}

/// The fence: whether `lease` is still held, at its epoch, at `now` (run it in the transaction
/// whose work it guards).
pub fn holds(conn: &Connection, lease: &Lease, now: u64) -> crate::sql::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at > ?4)",
        params![lease.name, lease.holder, lease.epoch as i64, now as i64],
        |r| r.get(0),
    )
}

/// Lets `lease` lapse now, if it is still ours, so another replica takes over without waiting.
pub fn release(conn: &Connection, lease: &Lease) -> crate::sql::Result<()> {
    conn.execute(
        "UPDATE leases SET expires_at = 0 WHERE name = ?1 AND holder = ?2 AND epoch = ?3",
        params![lease.name, lease.holder, lease.epoch as i64],
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_renewed_by_its_holder_and_taken_over_only_once_lapsed() {
        let a = claim(None, BACKGROUND, "a", 100, 15).expect("free");
        assert_eq!((a.holder.as_str(), a.epoch, a.expires_at), ("a", 1, 115));
        assert_eq!(claim(Some(&a), BACKGROUND, "b", 114, 15), None, "running");
        let renewed = claim(Some(&a), BACKGROUND, "a", 110, 15).expect("renewed");
        assert_eq!((renewed.epoch, renewed.expires_at), (1, 125));
        let b = claim(Some(&renewed), BACKGROUND, "b", 125, 15).expect("lapsed");
        assert_eq!((b.holder.as_str(), b.epoch, b.expires_at), ("b", 2, 140));
        let back = claim(Some(&b), BACKGROUND, "a", 141, 15).expect("lapsed again");
        assert_eq!(back.epoch, 3);
    }

    #[test]
    fn the_fence_stops_a_replica_that_lost_its_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::Db::open(&dir.path().join("c.db")).expect("db");
        db.call_blocking(|conn| {
            let a = acquire(conn, BACKGROUND, "a", 100, 10).expect("a").expect("free");
            assert!(holds(conn, &a, 105).expect("fence"));
            assert_eq!(acquire(conn, BACKGROUND, "b", 105, 10).expect("b"), None);
            // a stops renewing; b takes over once it lapsed, and a's fence fails from then on.
            let b = acquire(conn, BACKGROUND, "b", 110, 10).expect("b").expect("lapsed");
            assert_eq!(b.epoch, 2);
            assert!(!holds(conn, &a, 111).expect("fence"));
            assert!(holds(conn, &b, 111).expect("fence"));
            // a's release of the lease it lost changes nothing; b's lets a take it at once.
            release(conn, &a).expect("release");
            assert!(holds(conn, &b, 111).expect("fence"));
            release(conn, &b).expect("release");
            assert_eq!(acquire(conn, BACKGROUND, "a", 112, 10).expect("a").map(|l| l.epoch), Some(3));
        });
    }
}
