//! Sessions and what a step writes with them; the merchant API's idempotency keys; listing.

use super::StoreError;
use crate::domain::DeliveryStatus;
use crate::store::{
    IdempotencyKey, IdempotentRequest, MessageLink, SessionPage, SessionQuery, SessionRecord,
    StepWrite, StoredAnswer,
};
use crate::tenants::Scope;
use chrono::{DateTime, Utc};

/// Sessions, the active index, customers' windows and default replies, delivery links,
/// statuses that came early, flow sources and sandbox messages.
///
/// "customer" below is always the scoped customer key ([`Scope::customer_key`]).
#[async_trait::async_trait]
pub trait Sessions: Send + Sync + std::fmt::Debug {
    async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// The active session of `customer` on `flow`, if any.
    async fn active(&self, customer: &str, flow: &str) -> Result<Option<String>, StoreError>;

    /// Every active session of `customer`.
    async fn active_for(&self, customer: &str) -> Result<Vec<SessionRecord>, StoreError>;

    /// Applies one step **atomically**: the session record (and its creation index at step
    /// 1, its end index once completed), the active index (`activate` / `deactivate`), the
    /// idempotency key of the request that starts it, the timer removed and the timer set, and
    /// every outbox entry (queued at its `due_ms`). After a crash either all of it is there or
    /// none. Writing the same step again (same record, same entry ids) changes nothing more:
    /// outbox ids are derived from the session and step, so a replayed step cannot queue a
    /// message twice. The caller holds the session's lock ([`crate::store::LockKey`]).
    async fn apply_step(&self, write: StepWrite) -> Result<(), StoreError>;

    /// Moves the records of a store written before merchants existed into `default` (once;
    /// 0 afterwards). Returns how many keys moved.
    async fn adopt_unscoped_keys(&self, default: &Scope) -> Result<usize, StoreError>;

    /// Records when `customer` last wrote to us (the 24-hour window).
    async fn touch_window(&self, customer: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    async fn last_customer_message(
        &self,
        customer: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// When `customer` last got the default reply, and noting that they got it now.
    async fn last_default_reply(&self, customer: &str)
        -> Result<Option<DateTime<Utc>>, StoreError>;
    async fn note_default_reply(&self, customer: &str, at: DateTime<Utc>)
        -> Result<(), StoreError>;

    /// The session and delivery state of a WhatsApp message we sent.
    async fn link(&self, message_id: &str) -> Result<Option<MessageLink>, StoreError>;
    /// Stores a link as given (the caller keeps delivery states moving forward).
    async fn put_link(&self, message_id: &str, link: &MessageLink) -> Result<(), StoreError>;

    /// Keeps a status that arrived before the message's link existed, until
    /// [`Sessions::take_parked`] (which returns and removes them, oldest first).
    async fn park_status(
        &self,
        message_id: &str,
        status: &DeliveryStatus,
    ) -> Result<(), StoreError>;
    async fn take_parked(&self, message_id: &str) -> Result<Vec<DeliveryStatus>, StoreError>;

    /// A flow file's name and text by its hash, so a session keeps its version across restarts
    /// and instances. Putting the same hash again changes nothing.
    async fn put_flow_source(&self, hash: &str, name: &str, text: &str) -> Result<(), StoreError>;
    async fn flow_source(&self, hash: &str) -> Result<Option<(String, String)>, StoreError>;

    /// Sandbox mode: a message we would have sent to `customer`, and reading them back in
    /// order.
    async fn record_sandbox(
        &self,
        customer: &str,
        at: DateTime<Utc>,
        entry_id: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError>;
    async fn sandbox_messages(&self, customer: &str) -> Result<Vec<serde_json::Value>, StoreError>;

    /// Removes sessions that ended before `cutoff` with their outbox entries, links, timers
    /// and stats; never an active session. Returns how many records went.
    async fn purge_completed_before(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError>;
}

/// The merchant API's idempotency keys. The request record is written by the step that
/// creates the session ([`StepWrite::idempotency`], atomically with it); the answer follows.
#[async_trait::async_trait]
pub trait Idempotency: Send + Sync + std::fmt::Debug {
    /// The first request that used `key`, unless it expired (24 hours) at `now`.
    async fn idempotent(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentRequest>, StoreError>;

    /// Keeps the first answer given for `key` (sealed at rest: it may carry a code). The first
    /// answer kept wins; keeping another afterwards changes nothing.
    async fn keep_answer(
        &self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError>;

    /// The answer kept for `key` of `record`, opened.
    async fn answer(
        &self,
        key: &IdempotencyKey,
        record: &IdempotentRequest,
    ) -> Result<Option<StoredAnswer>, StoreError>;

    /// Removes keys expired at `now`; returns how many.
    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;
}

/// A position in a listing, handed out by [`Listing::list`] as text (`next_cursor`) and taken
/// back in [`SessionQuery::starting_after`]. Only the engine that made it reads it; a cursor
/// it cannot read makes [`Listing::list`] answer [`StoreError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    /// The prefix every cursor's text starts with.
    pub const PREFIX: &'static str = "cur_";

    /// A cursor made by an engine: `PREFIX` followed by what the engine needs.
    pub fn new(engine_part: &str) -> Cursor {
        Cursor(format!("{}{engine_part}", Cursor::PREFIX))
    }

    /// The text handed to callers.
    pub fn encode(&self) -> String {
        self.0.clone()
    }

    /// A cursor's text from a caller: `None` for text no engine gives out (empty after the
    /// prefix, or no prefix).
    pub fn decode(text: &str) -> Option<Cursor> {
        let rest = text.strip_prefix(Cursor::PREFIX)?;
        (!rest.is_empty()).then(|| Cursor(text.to_owned()))
    }

    /// What the engine put after the prefix.
    pub fn engine_part(&self) -> &str {
        &self.0[Cursor::PREFIX.len()..]
    }
}

/// Listing sessions for the merchant API.
#[async_trait::async_trait]
pub trait Listing: Send + Sync + std::fmt::Debug {
    /// One page of sessions matching `query`, newest first (by creation time, then id).
    /// Sessions started after a page was read never shift the pages after it. A page may hold
    /// fewer sessions than asked (bounded work per call) with a cursor to go on; the cursor is
    /// `None` once no session can follow. A merchant's cursor never names another merchant's
    /// session.
    async fn list(&self, query: &SessionQuery) -> Result<SessionPage, StoreError>;
}
