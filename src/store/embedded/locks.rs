//! The embedded engine's locks: striped tokio mutexes, one set per kind of key, so that one
//! process serialises what must be serialised at no I/O cost. (Only one process opens the
//! database, so nothing else can hold them.)

use crate::store::{LockGuard, LockKey, Locks, StoreError};
use std::hash::BuildHasher;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Stripes per kind: enough that unrelated keys rarely share one.
const STRIPES: usize = 256;

/// Striped locks per kind of key; keys of different kinds never share a stripe.
#[derive(Debug)]
pub struct StripedLocks {
    session: Vec<Arc<Mutex<()>>>,
    start: Vec<Arc<Mutex<()>>>,
    customer: Vec<Arc<Mutex<()>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for StripedLocks {
    fn default() -> Self {
        let stripes = || (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect();
        StripedLocks {
            session: stripes(),
            start: stripes(),
            customer: stripes(),
            hasher: Default::default(),
        }
    }
}

impl StripedLocks {
    fn stripe(&self, key: &LockKey) -> Arc<Mutex<()>> {
        let (set, hash) = match key {
            LockKey::Session(id) => (&self.session, self.hasher.hash_one(id)),
            LockKey::Start { customer, flow } => {
                (&self.start, self.hasher.hash_one((customer, flow)))
            }
            LockKey::Customer(key) => (&self.customer, self.hasher.hash_one(key)),
        };
        set[(hash as usize) % STRIPES].clone()
    }
}

#[async_trait::async_trait]
impl Locks for StripedLocks {
    async fn lock(&self, key: LockKey) -> Result<LockGuard, StoreError> {
        Ok(LockGuard::new(self.stripe(&key).lock_owned().await))
    }
}
