//! The storage contract: what the runtime, the outbox, the API, the webhook and the CLI may ask
//! of the database, in their own words — inbound events, session steps, outbox claims, due
//! timers, OTP limits and audit, idempotency keys, listings, stats and templates — never trees,
//! byte keys or SQL.
//!
//! One trait per concern, each object safe and held as an `Arc<dyn …>` in [`Storage`], the
//! bundle every caller holds. Two engines implement them: the embedded one (sled and the
//! inbound journal, one process) and the PostgreSQL one (any number of instances on one
//! database). The doc comment of each method is the contract both keep: what is atomic, what
//! is idempotent, in which order, and when a write is durable. The conformance suite
//! (`tests/store_conformance.rs`) checks the same cases against both.
//!
//! Durability, in general: a write is applied when its call returns, and durable once
//! [`Engine::durable`] (or [`InboundEvents::durable`]) resolves after it. The embedded engine
//! group-commits there (one journal `fdatasync` shared by every waiter); the PostgreSQL engine
//! commits in the call itself, so its `durable` resolves at once. Callers acknowledge nothing
//! (a webhook `200`, an API answer) before that wait.
//!
//! Nothing here names an engine: the contract's types are the runtime's, and a position the
//! engine needs to remember for a caller ([`TimerRef`], [`Cursor`]) is opaque to it.

mod inbound;
mod locks;
mod otp;
mod reports;
mod sessions;
mod work;

pub use inbound::{InboundCounts, InboundEvents};
pub use locks::{LockGuard, LockKey, Locks};
pub use otp::OtpStore;
pub use reports::{Audit, Stats, TemplateStatuses};
pub use sessions::{Cursor, Idempotency, Listing, Sessions};
pub use work::{DueTimer, OutboxQueue, TimerRef, Timers, CLAIM_LEASE, CLAIM_RENEWAL};

use std::sync::Arc;
use tokio::sync::Notify;

/// A storage failure. Callers answer 5xx (so WhatsApp and merchants retry) and log it. No
/// variant carries an engine's own error type: an engine turns its errors into these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a read or a write.
    #[error("database error: {0}")]
    Database(String),
    /// Making writes durable failed: nothing written since the last success may be trusted to
    /// survive a crash.
    #[error("database flush failed: {0}")]
    Flush(String),
    #[error("inbound journal error: {0}")]
    Journal(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("the key sealing stored records is unusable: {0}")]
    Key(String),
    /// A caller's argument the engine cannot read (a listing cursor it never gave out).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// The engine as a whole: durability, health, size, shutdown.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// A short name for logs and `/health`: `embedded` or `postgres`.
    fn name(&self) -> &'static str;

    /// Resolves once every write of every concern made before the call is durable (embedded:
    /// the journal's group `fdatasync`, which logs every write but the template statuses',
    /// themselves durable when `put` returns; PostgreSQL: at once, every call having
    /// committed). Concurrent callers share one flush. Called after each step, before its
    /// answer: it is on the hot path.
    async fn durable(&self) -> Result<(), StoreError>;

    /// Whether the database answers reads now.
    async fn healthy(&self) -> bool;

    /// Bytes the database occupies (embedded: on disk; PostgreSQL: the database's size as the
    /// server reports it), for the metrics. Approximate; 0 when unknown.
    async fn approximate_size(&self) -> u64;

    /// Makes everything durable and leaves the database ready for the next start (embedded:
    /// sled flushed and the journal checkpointed). Called once, at a graceful stop, after the
    /// last write.
    async fn flush(&self) -> Result<(), StoreError>;
}

/// How the engine wakes this instance's background loops when work was queued elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Wakeups {
    /// Notified when outbox entries may have become due (a step of this instance queued some,
    /// or — PostgreSQL — another instance's did: `LISTEN/NOTIFY`).
    pub outbox: Arc<Notify>,
    /// Notified when a timer may have been set or become due elsewhere. The timer loop also
    /// polls, so a missed notification only delays.
    pub timers: Arc<Notify>,
}

/// Everything stateful, one handle per concern. Cheap to clone; every clone is the same
/// database. Built by an engine's constructor (`Storage::embedded`, `Storage::postgres`).
#[derive(Clone)]
pub struct Storage {
    pub inbound: Arc<dyn InboundEvents>,
    pub sessions: Arc<dyn Sessions>,
    pub timers: Arc<dyn Timers>,
    pub outbox: Arc<dyn OutboxQueue>,
    pub idempotency: Arc<dyn Idempotency>,
    pub listing: Arc<dyn Listing>,
    pub otp: Arc<dyn OtpStore>,
    pub stats: Arc<dyn Stats>,
    pub templates: Arc<dyn TemplateStatuses>,
    pub audit: Arc<dyn Audit>,
    pub locks: Arc<dyn Locks>,
    pub engine: Arc<dyn Engine>,
    pub wakeups: Wakeups,
    /// Whether other instances may use the same database at the same time (PostgreSQL). When
    /// false (embedded), this process alone records and handles events, so its in-memory
    /// per-customer queues already give each customer's events in order and the handler need
    /// not read [`InboundEvents::pending_of`].
    pub shared: bool,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("engine", &self.engine.name())
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}
