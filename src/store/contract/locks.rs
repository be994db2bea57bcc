//! Mutual exclusion between steps, across tasks and (with a shared database) instances.

use super::StoreError;

/// What a lock protects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockKey {
    /// Steps of one session.
    Session(String),
    /// Starting a session for one customer (scoped key) on one flow: at most one active.
    Start { customer: String, flow: String },
    /// Handling one customer's inbound events (scoped key), in arrival order.
    Customer(String),
}

/// A held lock; dropping it releases the lock.
pub struct LockGuard {
    _held: Box<dyn Send + Sync>,
}

impl LockGuard {
    /// A guard that releases the lock when `held` is dropped.
    pub fn new(held: impl Send + Sync + 'static) -> LockGuard {
        LockGuard {
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

/// Locks by key. Two holders of the same key exclude each other (whichever instance they run
/// on, with a shared database); different keys never wait for each other — in particular a
/// held `Start` lock never blocks a `Session` lock, nor the reverse. A lock is fair enough that
/// a waiter is not starved, and is released when its guard drops, or when its holder dies.
/// Lock keys may share a stripe (an unrelated key then waits a little), so a holder takes at
/// most one lock of each kind, in the order `Customer`, `Start`, `Session`.
#[async_trait::async_trait]
pub trait Locks: Send + Sync + std::fmt::Debug {
    async fn lock(&self, key: LockKey) -> Result<LockGuard, StoreError>;
}
