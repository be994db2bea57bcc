//! Inbound events: each WhatsApp event recorded once, in arrival order, until handled.

use super::StoreError;
use crate::domain::InboundEvent;
use crate::store::{Recorded, Release, StoredEvent};

/// How many events the log holds, for the metrics and the idle check of a graceful stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundCounts {
    /// Events recorded and not yet purged (handled or not).
    pub recorded: usize,
    /// Events recorded and not yet handled.
    pub pending: usize,
}

/// The inbound event log and its deduplication records.
#[async_trait::async_trait]
pub trait InboundEvents: Send + Sync + std::fmt::Debug {
    /// Records `event` once, under its dedupe key ([`InboundEvent::dedupe_key`]) for 7 days,
    /// as an event of `customer_key` (the scoped customer key of the queue it belongs to).
    /// Returns [`Recorded::New`] with a sequence number the first time, [`Recorded::Duplicate`]
    /// ever after, even from another instance. Sequence numbers are unique and grow with arrival
    /// (per customer strictly so): they order one customer's events. `now` is Unix seconds.
    ///
    /// Durable once [`InboundEvents::durable`] resolves after the call (PostgreSQL: at once).
    /// This is the webhook's hot path: no lock beyond what the dedupe needs, no extra I/O.
    async fn record(
        &self,
        event: &InboundEvent,
        customer_key: &str,
        now: i64,
    ) -> Result<Recorded, StoreError>;

    /// Resolves once every event recorded before the call is durable; concurrent callers
    /// share one flush. Only then may the webhook answer `200`.
    async fn durable(&self) -> Result<(), StoreError>;

    /// Sets (or, with `None`, removes) the hook called with each event this instance records,
    /// once it is durable, in recording order: the runtime queues it behind its customer's
    /// earlier work. (Removing it lets the hook's captures go at shutdown.)
    fn on_durable(&self, release: Option<Release>);

    /// Every event recorded and not yet handled, in sequence order (at start: what the last
    /// run left).
    async fn pending(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError>;

    /// The unhandled events of one customer (`customer_key` as given to
    /// [`InboundEvents::record`]), in sequence order. With a shared database the handler of a
    /// customer's event takes [`crate::store::LockKey::Customer`] and handles these in turn,
    /// so one customer's events are handled in arrival order whichever instance received them.
    async fn pending_of(&self, customer_key: &str) -> Result<Vec<(u64, StoredEvent)>, StoreError>;

    /// Marks event `seq` handled: it is no longer pending (idempotent). A crash before this
    /// replays the event; the runtime's handling is idempotent (`last_inbound`, forward-only
    /// statuses, outbox ids derived from the sequence number). The embedded engine lets the
    /// mark reach disk only after the effects of handling it.
    async fn mark_handled(&self, seq: u64) -> Result<(), StoreError>;

    /// Whether event `seq` was marked handled (false for a pending event or a number not yet
    /// given out). Another instance may have handled it while this one waited for the
    /// customer's lock.
    async fn is_handled(&self, seq: u64) -> Result<bool, StoreError>;

    /// A number greater than every sequence number recorded so far: a session started now
    /// answers only events recorded after it.
    async fn next_seq(&self) -> Result<u64, StoreError>;

    /// Whether an event with this dedupe key was recorded (and not yet expired).
    async fn seen(&self, dedupe_key: &str) -> Result<bool, StoreError>;

    /// Every event kept (handled or not), in sequence order: for tests and tools.
    async fn all(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError>;

    /// How many events are kept and pending (may read the whole log: for tests and tools).
    async fn counts(&self) -> Result<InboundCounts, StoreError>;

    /// How many events are pending, cheaply: for the gauge and the idle check of a stop,
    /// polled.
    async fn pending_count(&self) -> Result<usize, StoreError>;

    /// Removes dedupe records and handled events received before `cutoff` (Unix seconds);
    /// never a pending event. Returns how many records went.
    async fn purge_before(&self, cutoff: i64) -> Result<usize, StoreError>;
}
