//! Locks that hold across instances: PostgreSQL advisory locks, transaction-scoped.
//!
//! A lock is `pg_advisory_xact_lock(class, key)` inside a transaction opened on a connection of
//! its own, held for as long as the guard lives; dropping the guard rolls the transaction back,
//! which releases the lock (and should that fail, the connection is closed, which releases it
//! too). A process killed while holding one loses its connection, and the server releases it.
//!
//! The two-int form keeps each kind of key in its own class, so a session id can never collide
//! with a customer key; the key is the first four bytes of the SHA-256 of the string — stable
//! across processes and releases, unlike Rust's randomized hasher. Two strings sharing a key
//! only wait for each other, which costs time, never correctness.
//!
//! Each class has its own small pool. The runtime nests locks in one order (customer, then start,
//! then session): a holder of an outer lock only ever waits for a connection of an inner class,
//! and the innermost holders wait for nothing, so pools drain however many tasks queue up. With
//! one pool for all, a burst of customers could take every connection for outer locks and wait
//! forever for the inner ones. Queries never use these pools, so holders cannot starve the steps
//! they guard.

use crate::store::StoreError;
use deadpool_postgres::{Object, Pool};
use sha2::{Digest, Sha256};

/// The first argument of the two-int advisory lock: what kind of thing is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockClass {
    /// The schema migration at start.
    Migrations,
    /// Recording a customer's inbound event (keeps their sequence numbers in commit order).
    Record,
    /// One customer's events, handled one at a time.
    Customer,
    /// Starting a customer's session on a flow.
    Start,
    /// One session's steps.
    Session,
    /// A recipient's outbox queue, while one claim reads it (keyed by the server's own hash:
    /// taken and released inside one statement's transaction, by every instance on one server).
    Recipient,
}

impl LockClass {
    /// The class number; distinct per class and fixed forever (other releases share locks).
    pub fn id(self) -> i32 {
        // A prefix unlikely to be used by other applications' advisory locks.
        const BASE: i32 = 0x7761_0000; // "wa"
        BASE + match self {
            LockClass::Migrations => 1,
            LockClass::Record => 2,
            LockClass::Customer => 3,
            LockClass::Start => 4,
            LockClass::Session => 5,
            LockClass::Recipient => 6,
        }
    }
}

/// The second argument of the advisory lock for `name`.
pub fn lock_key(name: &str) -> i32 {
    let digest = Sha256::digest(name.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The lock pools of one instance.
#[derive(Clone)]
pub struct PgLocks {
    customer: Pool,
    start: Pool,
    session: Pool,
}

impl std::fmt::Debug for PgLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLocks")
            .field("per_class", &self.session.status().max_size)
            .finish()
    }
}

impl PgLocks {
    pub(super) fn new(config: &tokio_postgres::Config, size: usize) -> Result<PgLocks, StoreError> {
        // A connection is only handed out again outside any transaction, whatever became of
        // the guard that last held it (a drop whose roll back never ran, at shutdown say).
        // After a guard's own roll back that second one finds no transaction, and the server's
        // warning saying so would reach the log at every release: these connections only log
        // errors.
        let mut config = config.clone();
        let quiet = "-c client_min_messages=error";
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {quiet}"),
            _ => quiet.to_owned(),
        };
        config.options(&options);
        let pool = || {
            super::pool_recycled(
                &config,
                size,
                deadpool_postgres::RecyclingMethod::Custom("ROLLBACK".into()),
            )
        };
        Ok(PgLocks {
            customer: pool()?,
            start: pool()?,
            session: pool()?,
        })
    }

    /// Waits until this instance holds the lock of `class` and `name` (no other holder in any
    /// instance), and returns the guard that releases it when dropped.
    pub async fn lock(&self, class: LockClass, name: &str) -> Result<PgLockGuard, StoreError> {
        let pool = match class {
            LockClass::Customer => &self.customer,
            LockClass::Start => &self.start,
            _ => &self.session,
        };
        let conn = pool
            .get()
            .await
            .map_err(|e| super::db_error(format!("no connection for a lock: {e}")))?;
        // From here on, however this future ends (an error, or dropped mid-wait), the guard's
        // drop ends the transaction.
        let guard = PgLockGuard { conn: Some(conn) };
        let conn = guard
            .conn
            .as_ref()
            .ok_or_else(|| super::db_error("a lock guard lost its connection".into()))?;
        conn.batch_execute("BEGIN")
            .await
            .map_err(|e| super::query_error("cannot begin a lock", e))?;
        let statement = conn
            .prepare_cached("SELECT pg_advisory_xact_lock($1, $2)")
            .await
            .map_err(|e| super::query_error("cannot prepare a lock", e))?;
        conn.execute(&statement, &[&class.id(), &lock_key(name)])
            .await
            .map_err(|e| super::query_error("cannot take a lock", e))?;
        Ok(guard)
    }
}

/// A held advisory lock; dropping it releases the lock.
pub struct PgLockGuard {
    conn: Option<Object>,
}

impl std::fmt::Debug for PgLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLockGuard").finish_non_exhaustive()
    }
}

impl Drop for PgLockGuard {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    // Queued behind the lock query when that is still waiting, so a lock taken
                    // after its waiter gave up is released at once.
                    if conn.batch_execute("ROLLBACK").await.is_err() {
                        // Never hand a connection back still in the transaction: closing it
                        // releases the lock.
                        drop(Object::take(conn));
                    }
                });
            }
            // No runtime to roll back on: closing the connection releases the lock.
            Err(_) => drop(Object::take(conn)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_classes_distinct() {
        // Fixed forever: instances of different releases must agree on them.
        assert_eq!(
            lock_key("abc"),
            i32::from_be_bytes([0xba, 0x78, 0x16, 0xbf])
        );
        let classes = [
            LockClass::Migrations,
            LockClass::Record,
            LockClass::Customer,
            LockClass::Start,
            LockClass::Session,
            LockClass::Recipient,
        ];
        let ids: std::collections::HashSet<i32> = classes.iter().map(|c| c.id()).collect();
        assert_eq!(ids.len(), classes.len());
    }
}
