//! Per-customer ordering: one customer's events are handled one at a time, in the order they
//! were submitted; different customers run in parallel.
//!
//! Each customer with work has a queue and exactly one task draining it. The task exits when the
//! queue is empty and the next event starts a new one, so idle customers cost nothing.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// The work done for one item.
pub type Handler<T> = Arc<dyn Fn(T) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Serial queues keyed by customer.
pub struct CustomerQueues<K, T> {
    queues: Arc<Mutex<HashMap<K, VecDeque<T>>>>,
    handler: Handler<T>,
    runtime: tokio::runtime::Handle,
}

impl<K, T> std::fmt::Debug for CustomerQueues<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerQueues").finish_non_exhaustive()
    }
}

impl<K, T> Clone for CustomerQueues<K, T> {
    fn clone(&self) -> Self {
        Self {
            queues: self.queues.clone(),
            handler: self.handler.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

impl<K, T> CustomerQueues<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
{
    /// Queues whose drain tasks run on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle, handler: Handler<T>) -> Self {
        Self {
            queues: Arc::new(Mutex::new(HashMap::new())),
            handler,
            runtime,
        }
    }

    /// Whether no customer has work queued or running.
    pub fn is_idle(&self) -> bool {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Queues `item` behind the customer's earlier items.
    pub fn submit(&self, customer: K, item: T) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get_mut(&customer) {
            queue.push_back(item);
            return;
        }
        // No task is draining this customer: register an empty queue (meaning "busy") and
        // start one with this item.
        queues.insert(customer.clone(), VecDeque::new());
        drop(queues);
        let (queues, handler) = (self.queues.clone(), self.handler.clone());
        self.runtime.spawn(async move {
            let mut next = item;
            loop {
                handler(next).await;
                let mut map = queues.lock().unwrap_or_else(|p| p.into_inner());
                match map.get_mut(&customer).and_then(VecDeque::pop_front) {
                    Some(item) => next = item,
                    None => {
                        map.remove(&customer);
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::{mpsc, Notify};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_order_per_customer() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handler: Handler<(u8, u32)> = Arc::new(move |(customer, n)| {
            let tx = tx.clone();
            Box::pin(async move {
                // Yield a varying number of times so that interleavings differ.
                for _ in 0..(n % 4) {
                    tokio::task::yield_now().await;
                }
                let _ = tx.send((customer, n));
            })
        });
        let queues = CustomerQueues::new(tokio::runtime::Handle::current(), handler);
        for n in 0..500u32 {
            queues.submit((n % 5) as u8, ((n % 5) as u8, n));
        }
        let mut seen: HashMap<u8, Vec<u32>> = HashMap::new();
        for _ in 0..500 {
            let (c, n) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("handled before the deadline")
                .expect("channel open");
            seen.entry(c).or_default().push(n);
        }
        for (c, ns) in seen {
            let mut sorted = ns.clone();
            sorted.sort_unstable();
            assert_eq!(ns, sorted, "customer {c} saw its events out of order");
            assert_eq!(ns.len(), 100);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_only_once_every_item_is_handled() {
        // Each item waits for a permit: the test decides when each may finish.
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let gate = permits.clone();
        let handler: Handler<u8> = Arc::new(move |_| {
            let gate = gate.clone();
            Box::pin(async move { gate.acquire().await.expect("open").forget() })
        });
        let queues = CustomerQueues::new(tokio::runtime::Handle::current(), handler);
        assert!(queues.is_idle());
        queues.submit("a", 1);
        queues.submit("a", 2);
        assert!(!queues.is_idle(), "work running");
        permits.add_permits(1);
        assert!(
            !queues.is_idle(),
            "the second item is still queued or running"
        );
        permits.add_permits(1);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !queues.is_idle() {
            assert!(std::time::Instant::now() < deadline, "never idle");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_customer_does_not_block_others() {
        let release = Arc::new(Notify::new());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let gate = release.clone();
        let handler: Handler<&'static str> = Arc::new(move |who| {
            let (gate, tx) = (gate.clone(), tx.clone());
            Box::pin(async move {
                if who == "slow" {
                    gate.notified().await;
                }
                let _ = tx.send(who);
            })
        });
        let queues = CustomerQueues::new(tokio::runtime::Handle::current(), handler);
        queues.submit("a", "slow");
        queues.submit("a", "after-slow");
        queues.submit("b", "fast");
        // "b" finishes while "a" is still blocked on its first event.
        let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("b is not blocked by a");
        assert_eq!(first, Some("fast"));
        release.notify_one();
        assert_eq!(rx.recv().await, Some("slow"));
        assert_eq!(rx.recv().await, Some("after-slow"));
    }
}
