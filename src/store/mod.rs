//! Everything stateful, behind one contract and two engines.
//!
//! - [`contract`]: the traits callers use, one per concern (inbound events, session steps,
//!   outbox and timer claims, idempotency keys, listing, OTP ledger, stats, templates, audit,
//!   locks), gathered in [`Storage`], with the guarantees both engines keep;
//! - [`embedded`] (the default): sled and the inbound journal, one process;
//! - `postgres`: one database shared by any number of instances.
//!
//! Callers speak only the contract and the types re-exported here; this is the only module
//! that knows sled, the journal or SQL.

pub mod contract;
pub mod embedded;
pub mod postgres;

pub use contract::{
    Audit, Cursor, DueTimer, Engine, Idempotency, InboundCounts, InboundEvents, Listing, LockGuard,
    LockKey, Locks, OtpStore, OutboxQueue, Sessions, Stats, Storage, StoreError, TemplateStatuses,
    TimerRef, Timers, Wakeups, CLAIM_LEASE, CLAIM_RENEWAL,
};

// The types the contract speaks, at one path for both engines and every caller.
pub use embedded::audit::{AuditEntry, AuditKind};
pub use embedded::idempotency::{
    IdempotencyKey, IdempotentRequest, IdempotentStart, StoredAnswer, IDEMPOTENCY_TTL,
};
pub use embedded::inbound::{Recorded, Release, StoredEvent};
pub use embedded::listing::{Liveness, MerchantFilter, SessionPage, SessionQuery};
pub use embedded::otp::{IssueKind, IssueOutcome, Issued, IssuedCode, LedgerError};
pub use embedded::sessions::{
    Delivery, MessageLink, OutboxEntry, OutboxPayload, OutboxState, SessionRecord, StepWrite,
};
pub use embedded::stats::{bucket_of, hour_of, Histogram, MerchantTotals, Metric, Totals, BUCKETS};
pub use embedded::templates::TemplateStatus;
pub use embedded::{FlushReport, Store, StoreOptions};
