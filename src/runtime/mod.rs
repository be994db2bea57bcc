//! The runtime: takes recorded inbound events and hands them on, one customer at a time.
//!
//! [`Inbox`] is the door the webhook (and later the sandbox) uses: it records an event once in
//! the store and queues it for its customer. Until the flow runtime lands, the handler records
//! the event as handled and logs it. Events recorded but unhandled when the process stopped are
//! replayed, in order, before the server accepts new ones.

pub mod ordering;

use crate::domain::{InboundEvent, WaId};
use crate::metrics::Metrics;
use crate::store::{Recorded, Store, StoreError};
use ordering::{CustomerQueues, Handler};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Dedupe records are kept this long: WhatsApp retries a delivery for up to 7 days.
pub const DEDUPE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Locks that make "record, then queue" one step per customer, so that two concurrent requests
/// for one customer are queued in the order they were recorded.
const STRIPES: usize = 64;

/// One recorded event on its way to the handler.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    pub seq: u64,
    pub event: InboundEvent,
}

/// Records inbound events once and queues them per customer.
#[derive(Debug)]
pub struct Inbox {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    queues: CustomerQueues<WaId, QueuedEvent>,
    stripes: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Inbox {
    /// An inbox whose handler runs on `runtime`.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, runtime: tokio::runtime::Handle) -> Inbox {
        let handler = log_handler(store.clone(), metrics.clone());
        Inbox {
            queues: CustomerQueues::new(runtime, handler),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
            store,
            metrics,
        }
    }

    /// Records `event` (not yet durable: call [`Store::durable`] before acknowledging) and,
    /// if it is new, queues it behind its customer's earlier events.
    pub fn accept(&self, event: InboundEvent, now: i64) -> Result<Recorded, StoreError> {
        let customer = event.customer().clone();
        let stripe = &self.stripes[(self.hasher.hash_one(&customer) as usize) % STRIPES];
        let _order = stripe.lock().unwrap_or_else(|p| p.into_inner());
        let recorded = self.store.inbound().record(&event, now)?;
        match recorded {
            Recorded::New { seq } => {
                self.metrics
                    .events_recorded
                    .get_or_create(&crate::metrics::KindLabel { kind: event.kind() })
                    .inc();
                self.metrics.inbound_pending.inc();
                self.queues.submit(customer, QueuedEvent { seq, event });
            }
            Recorded::Duplicate => {
                self.metrics.events_deduplicated.inc();
            }
        }
        Ok(recorded)
    }

    /// Queues every event left unhandled by the previous run, oldest first.
    pub fn replay_pending(&self) -> Result<usize, StoreError> {
        let pending = self.store.inbound().pending()?;
        let n = pending.len();
        for (seq, stored) in pending {
            self.metrics.inbound_pending.inc();
            self.queues.submit(
                stored.event.customer().clone(),
                QueuedEvent {
                    seq,
                    event: stored.event,
                },
            );
        }
        Ok(n)
    }

    /// Customers with events queued or in progress.
    pub fn busy_customers(&self) -> usize {
        self.queues.active_customers()
    }
}

/// The interim handler: the event is already in the log; mark it handled and say so.
fn log_handler(store: Arc<Store>, metrics: Arc<Metrics>) -> Handler<QueuedEvent> {
    Arc::new(move |queued: QueuedEvent| {
        let (store, metrics) = (store.clone(), metrics.clone());
        Box::pin(async move {
            let event = &queued.event;
            tracing::debug!(
                seq = queued.seq,
                customer = %event.customer(),
                kind = event.kind(),
                "inbound event"
            );
            match store.inbound().mark_handled(queued.seq) {
                Ok(()) => {
                    metrics.events_handled.inc();
                    metrics.inbound_pending.dec();
                }
                Err(e) => {
                    tracing::error!(seq = queued.seq, error = %e, "cannot mark event handled")
                }
            }
        })
    })
}

/// Removes expired dedupe records and old handled events every `every`, until the process ends.
pub async fn purge_forever(store: Arc<Store>, metrics: Arc<Metrics>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let cutoff = chrono::Utc::now().timestamp() - DEDUPE_RETENTION.as_secs() as i64;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.inbound().purge_before(cutoff)).await {
            Ok(Ok(n)) => {
                metrics.records_purged.inc_by(n as u64);
                if n > 0 {
                    tracing::info!(removed = n, "purged expired inbound records");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "purging expired records failed"),
            Err(e) => tracing::error!(error = %e, "purge task failed"),
        }
    }
}
