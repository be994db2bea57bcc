//! The storage contract's traits for the PostgreSQL engine: each delegates to the engine's
//! queries (the other modules here), and [`PgEngine::storage`] bundles them.

use super::{LockClass, PgEngine};
use crate::domain::{DeliveryStatus, InboundEvent};
use crate::store::{
    DueTimer, Engine, Idempotency, IdempotencyKey, IdempotentRequest, InboundCounts, InboundEvents,
    Listing, LockGuard, LockKey, Locks, MessageLink, OutboxEntry, OutboxQueue, Recorded, Release,
    SessionPage, SessionQuery, SessionRecord, Sessions, StepWrite, StoreError, StoredAnswer,
    StoredEvent, TimerRef, Timers,
};
use crate::tenants::Scope;
use chrono::{DateTime, Utc};
use std::time::Duration;

#[async_trait::async_trait]
impl Engine for PgEngine {
    fn name(&self) -> &'static str {
        "postgres"
    }

    /// Every call committed before it returned.
    async fn durable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn healthy(&self) -> bool {
        PgEngine::healthy(self).await
    }

    async fn approximate_size(&self) -> u64 {
        self.size_on_disk().await.unwrap_or(0)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl InboundEvents for PgEngine {
    async fn record(
        &self,
        event: &InboundEvent,
        customer_key: &str,
        now: i64,
    ) -> Result<Recorded, StoreError> {
        self.record_event(event, customer_key, now).await
    }

    async fn durable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn on_durable(&self, release: Option<Release>) {
        self.on_recorded(release);
    }

    async fn pending(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        self.pending_events().await
    }

    async fn pending_of(&self, customer_key: &str) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        self.pending_events_of(customer_key).await
    }

    async fn mark_handled(&self, seq: u64) -> Result<(), StoreError> {
        self.mark_event_handled(seq).await
    }

    async fn is_handled(&self, seq: u64) -> Result<bool, StoreError> {
        self.is_event_handled(seq).await
    }

    async fn next_seq(&self) -> Result<u64, StoreError> {
        self.next_event_seq().await
    }

    async fn seen(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        self.event_seen(dedupe_key).await
    }

    async fn all(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        self.all_events().await
    }

    async fn pending_count(&self) -> Result<usize, StoreError> {
        Ok(self.pending_event_count().await? as usize)
    }

    async fn counts(&self) -> Result<InboundCounts, StoreError> {
        Ok(InboundCounts {
            recorded: self.event_count().await? as usize,
            pending: self.pending_event_count().await? as usize,
        })
    }

    async fn purge_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.purge_events_before(cutoff).await
    }
}

#[async_trait::async_trait]
impl Sessions for PgEngine {
    async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.get_session(id).await
    }

    async fn active(&self, customer: &str, flow: &str) -> Result<Option<String>, StoreError> {
        self.active_session(customer, flow).await
    }

    async fn active_for(&self, customer: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.active_sessions_of(customer).await
    }

    async fn apply_step(&self, write: StepWrite) -> Result<(), StoreError> {
        PgEngine::apply_step(self, write).await
    }

    /// A PostgreSQL database was never written before merchants existed.
    async fn adopt_unscoped_keys(&self, _default: &Scope) -> Result<usize, StoreError> {
        Ok(0)
    }

    async fn touch_window(&self, customer: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        PgEngine::touch_window(self, customer, at).await
    }

    async fn last_customer_message(
        &self,
        customer: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        PgEngine::last_customer_message(self, customer).await
    }

    async fn last_default_reply(
        &self,
        customer: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        PgEngine::last_default_reply(self, customer).await
    }

    async fn note_default_reply(
        &self,
        customer: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        PgEngine::note_default_reply(self, customer, at).await
    }

    async fn link(&self, message_id: &str) -> Result<Option<MessageLink>, StoreError> {
        PgEngine::link(self, message_id).await
    }

    async fn put_link(&self, message_id: &str, link: &MessageLink) -> Result<(), StoreError> {
        PgEngine::put_link(self, message_id, link).await
    }

    async fn park_status(
        &self,
        message_id: &str,
        status: &DeliveryStatus,
    ) -> Result<(), StoreError> {
        PgEngine::park_status(self, message_id, status).await
    }

    async fn take_parked(&self, message_id: &str) -> Result<Vec<DeliveryStatus>, StoreError> {
        PgEngine::take_parked(self, message_id).await
    }

    async fn put_flow_source(&self, hash: &str, name: &str, text: &str) -> Result<(), StoreError> {
        PgEngine::put_flow_source(self, hash, name, text).await
    }

    async fn flow_source(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        PgEngine::flow_source(self, hash).await
    }

    async fn record_sandbox(
        &self,
        customer: &str,
        at: DateTime<Utc>,
        entry_id: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        PgEngine::record_sandbox(self, customer, at, entry_id, body).await
    }

    async fn sandbox_messages(&self, customer: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        PgEngine::sandbox_messages(self, customer).await
    }

    async fn purge_completed_before(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        PgEngine::purge_completed_before(self, cutoff).await
    }
}

#[async_trait::async_trait]
impl Timers for PgEngine {
    async fn claim_due_timers(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueTimer>, StoreError> {
        self.claim_timers(now, limit, lease).await
    }

    async fn release_timer(&self, timer: &TimerRef) -> Result<(), StoreError> {
        PgEngine::release_timer(self, timer).await
    }

    async fn drop_timer(&self, timer: &TimerRef) -> Result<(), StoreError> {
        PgEngine::drop_timer(self, timer).await
    }

    async fn due_count(&self, now: DateTime<Utc>, limit: usize) -> Result<usize, StoreError> {
        self.due_timer_count(now, limit).await
    }
}

#[async_trait::async_trait]
impl OutboxQueue for PgEngine {
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.claim_outbox(now, limit, lease).await
    }

    async fn release(&self, entry_ids: &[String]) -> Result<(), StoreError> {
        self.release_outbox(entry_ids).await
    }

    async fn renew(&self, entry_ids: &[String], lease: Duration) -> Result<usize, StoreError> {
        self.renew_outbox(entry_ids, lease).await
    }

    async fn begin_send(
        &self,
        entry: &OutboxEntry,
        _old_due_ms: i64,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut entry = entry.clone();
        entry.state = crate::store::OutboxState::InFlight;
        self.update_if_held(&entry, Some(lease)).await
    }

    async fn update_held(&self, entry: &OutboxEntry, _old_due_ms: i64) -> Result<bool, StoreError> {
        self.update_if_held(entry, None).await
    }

    async fn update_outbox(
        &self,
        entry: &OutboxEntry,
        _old_due_ms: i64,
        link: Option<(&str, &MessageLink)>,
    ) -> Result<(), StoreError> {
        PgEngine::update_outbox(self, entry, link).await
    }

    async fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        PgEngine::outbox_entry(self, id).await
    }

    async fn in_flight(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_in_flight().await
    }

    async fn note_echo(&self, entry_id: &str, message_id: &str) -> Result<(), StoreError> {
        PgEngine::note_echo(self, entry_id, message_id).await
    }

    async fn echo(&self, entry_id: &str) -> Result<Option<String>, StoreError> {
        PgEngine::echo(self, entry_id).await
    }

    async fn pause_recipient(&self, recipient: &str, until_ms: i64) -> Result<(), StoreError> {
        PgEngine::pause_recipient(self, recipient, until_ms).await
    }

    async fn recipient_paused_until(&self, recipient: &str) -> Result<Option<i64>, StoreError> {
        PgEngine::recipient_paused_until(self, recipient).await
    }

    async fn depth(&self) -> Result<usize, StoreError> {
        Ok(self.outbox_depth().await? as usize)
    }
}

#[async_trait::async_trait]
impl Idempotency for PgEngine {
    async fn idempotent(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentRequest>, StoreError> {
        PgEngine::idempotent(self, key, now).await
    }

    async fn keep_answer(
        &self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        PgEngine::keep_answer(self, key, answer).await
    }

    async fn answer(
        &self,
        key: &IdempotencyKey,
        record: &IdempotentRequest,
    ) -> Result<Option<StoredAnswer>, StoreError> {
        PgEngine::answer(self, key, record)
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        PgEngine::purge_idempotency(self, now).await
    }
}

#[async_trait::async_trait]
impl Listing for PgEngine {
    async fn list(&self, query: &SessionQuery) -> Result<SessionPage, StoreError> {
        self.list_sessions(query).await
    }
}

#[async_trait::async_trait]
impl Locks for PgEngine {
    async fn lock(&self, key: LockKey) -> Result<LockGuard, StoreError> {
        let guard = match &key {
            LockKey::Customer(customer) => self.locks.lock(LockClass::Customer, customer).await?,
            // The separator cannot occur in a customer key or a flow id.
            LockKey::Start { customer, flow } => {
                self.locks
                    .lock(LockClass::Start, &format!("{customer}\0{flow}"))
                    .await?
            }
            LockKey::Session(id) => self.locks.lock(LockClass::Session, id).await?,
        };
        Ok(LockGuard::new(guard))
    }
}
